"""explain against real nameservers: the CLI forwarding to a Knot upstream, the CHAOS
TXT form over real UDP and TCP, the access list, and the per-namespace metrics and query
log of a running server. Pod clients are real: the query's source is a 127.x address a
manifest pod has as its IP."""

from __future__ import annotations

import json
import logging

import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest

from svcdns.cli import main
from tests.conftest import RunningServer, base_config
from tests.dns.nameservers import SlowServer, metric

POD_SHOP = "127.0.5.5"
NOT_A_POD = "127.0.0.1"
CLUSTER = f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  clusterIP: 10.96.0.20
  selector: {{app: web}}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop}}
spec: {{nodeName: node-a, containers: [{{name: c, image: busybox}}]}}
status: {{phase: Running, podIP: {POD_SHOP}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: shop, labels: {{app: web}}}}
spec: {{nodeName: node-a, containers: [{{name: c, image: nginx}}]}}
status: {{phase: Running, podIP: 10.244.1.5, conditions: [{{type: Ready, status: "True"}}]}}
"""


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    path = tmp_path_factory.mktemp("manifests") / "cluster.yaml"
    path.write_text(CLUSTER)
    return str(path)


def run_cli(capsys, *argv) -> dict:
    # Generous upstream timeouts: a busy CI machine must not turn Knot's answer into SERVFAIL.
    assert main(["explain", *argv, "--format", "json", "--upstream-timeout", "10", "--query-timeout", "20"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_external_name_forwarded_upstream_wastes_three_queries(capsys, knot, manifests):
    doc = run_cli(capsys, "www.example.test", "--pod", "shop/client", "--manifests", manifests,
                  "--upstream", f"{knot.host}:{knot.port}", "--no-autopath")
    assert [(q["qname"], q["rcode"], q["via"]) for q in doc["queries"]] == [
        ("www.example.test.shop.svc.cluster.local", "NXDOMAIN", "svcdns"),
        ("www.example.test.svc.cluster.local", "NXDOMAIN", "svcdns"),
        ("www.example.test.cluster.local", "NXDOMAIN", "svcdns"),
        ("www.example.test", "NOERROR", "upstream"),
    ]
    assert doc["queries"][3]["records"] == ["www.example.test. 300 IN A 192.0.2.10"]
    assert doc["queries"][3]["rule"] == f"not a cluster name: forwarded upstream to {knot.host}:{knot.port}"
    assert doc["wasted"] == 3 and doc["pod"] == "shop/client"
    advice = {a["remedy"].split(" (")[0]: a["queries"] for a in doc["advice"]}
    assert advice == {
        "ask for the absolute name www.example.test.": 1,
        "lower ndots to 2 in the pod's dnsConfig.options": 1,
        "autopath: svcdns walks the search path itself": 1,
    }


def test_cli_with_autopath_one_query(capsys, knot, manifests):
    doc = run_cli(capsys, "www.example.test", "--namespace", "shop", "--manifests", manifests, "--upstream", f"{knot.host}:{knot.port}")
    [q] = doc["queries"]
    assert (q["qname"], q["rcode"], q["via"]) == ("www.example.test.shop.svc.cluster.local", "NOERROR", "autopath")
    assert q["records"] == [
        "www.example.test.shop.svc.cluster.local. 300 IN CNAME www.example.test.",
        "www.example.test. 300 IN A 192.0.2.10",
    ]
    assert doc["wasted"] == 0


def test_cli_text_and_errors(capsys, manifests):
    assert main(["explain", "web", "--namespace", "shop", "--manifests", manifests]) == 0
    out = capsys.readouterr().out
    assert "1. web.shop.svc.cluster.local A -> NOERROR" in out
    assert "service shop/web: ClusterIP" in out
    assert main(["explain", "web", "--pod", "shop/ghost", "--manifests", manifests]) == 1
    assert "--pod shop/ghost: no such pod" in capsys.readouterr().err


@pytest.fixture(scope="module")
def silent():
    """An upstream that never answers: names under dead.test get SERVFAIL."""
    with SlowServer(None) as server:
        yield server


@pytest.fixture(scope="module")
def server(knot, silent, manifests):
    config = base_config(
        manifests=(manifests,), upstreams=(knot.address,), stub_domains=(("dead.test", (silent.address,)),),
        upstream_timeout=0.2, query_timeout=0.5, serve_stale=0, autopath=False, log_queries=True,
    )
    with RunningServer(config) as srv:
        yield srv


def chaos(srv, name: str, *, source: str, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, "TXT", rdclass=dns.rdataclass.CH, use_edns=0, payload=1232)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, "127.0.0.1", port=srv.port, timeout=5, source=source)


def txt_lines(reply) -> list[str]:
    return [b"".join(rd.strings).decode() for rrset in reply.answer for rd in rrset]


def test_chaos_txt_from_a_pod_over_udp(server):
    reply = chaos(server, "web.explain.svcdns.", source=POD_SHOP)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.TC
    lines = txt_lines(reply)
    assert lines[0] == "web A, looked up by pod shop/client"
    assert "  1. web.shop.svc.cluster.local A -> NOERROR" in lines
    assert "service shop/web: ClusterIP" in lines
    assert reply.answer[0].rdclass == dns.rdataclass.CH


def test_chaos_txt_too_big_for_udp_is_truncated_then_whole_over_tcp(server):
    udp = chaos(server, "www.example.test.explain.svcdns.", source=POD_SHOP)
    assert udp.flags & dns.flags.TC and not udp.answer and udp.question[0].name.to_text() == "www.example.test.explain.svcdns."
    lines = txt_lines(chaos(server, "www.example.test.explain.svcdns.", source=POD_SHOP, tcp=True))
    assert "wasted: 3 of 4 queries found nothing" in lines
    assert any(line.startswith("     why: not a cluster name: forwarded upstream to 127.0.0.1:") for line in lines)


def test_chaos_refused_outside_allow_explain(serve, manifests):
    srv = serve(manifests=(manifests,), allow_explain=("10.0.0.0/8",))
    assert chaos(srv, "web.explain.svcdns.", source=NOT_A_POD).rcode() == dns.rcode.REFUSED
    q = dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
    assert dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5).rcode() == dns.rcode.REFUSED  # other CH names


def test_metrics_by_client_namespace(server):
    def ask(name, source):
        return server.query(name, source=source).rcode()

    before = {
        (name, ns): metric(server, name, namespace=ns)
        for name in ("svcdns_dns_namespace_requests_total", "svcdns_dns_namespace_nxdomain_total",
                     "svcdns_dns_search_path_misses_total", "svcdns_dns_namespace_servfail_total")
        for ns in ("shop", "unknown")
    }
    assert ask("web.shop.svc.cluster.local.", POD_SHOP) == dns.rcode.NOERROR
    for _ in range(2):  # what ndots:5 makes a pod send first for github.com
        assert ask("nothing.example.test.shop.svc.cluster.local.", POD_SHOP) == dns.rcode.NXDOMAIN
    assert ask("web.nowhere.svc.cluster.local.", POD_SHOP) == dns.rcode.NXDOMAIN  # a miss, not a search-path miss
    assert ask("nothing.example.test.shop.svc.cluster.local.", NOT_A_POD) == dns.rcode.NXDOMAIN
    assert ask("www.dead.test.", POD_SHOP) == dns.rcode.SERVFAIL  # its only upstream never answers

    def delta(name, ns):
        return metric(server, name, namespace=ns) - before[(name, ns)]

    assert delta("svcdns_dns_namespace_requests_total", "shop") == 5
    assert delta("svcdns_dns_namespace_nxdomain_total", "shop") == 3
    assert delta("svcdns_dns_search_path_misses_total", "shop") == 2
    assert delta("svcdns_dns_namespace_requests_total", "unknown") == 1
    assert delta("svcdns_dns_namespace_nxdomain_total", "unknown") == 1
    assert delta("svcdns_dns_namespace_servfail_total", "shop") == 1
    assert delta("svcdns_dns_namespace_servfail_total", "unknown") == 0


def test_query_log_when_on(server, caplog):
    with caplog.at_level(logging.INFO, logger="svcdns.query"):
        server.query("web.shop.svc.cluster.local.", source=POD_SHOP)
        server.query("www.example.test.", source=POD_SHOP)  # forwarded: logged when the answer comes
    records = [r for r in caplog.records if r.name == "svcdns.query"]
    assert [(r.client, r.namespace, r.qname, r.qtype, r.rcode) for r in records] == [
        (POD_SHOP, "shop", "web.shop.svc.cluster.local.", "A", "NOERROR"),
        (POD_SHOP, "shop", "www.example.test.", "A", "NOERROR"),
    ]


def test_query_log_off_leaves_the_hot_path_alone(serve, manifests):
    srv = serve(manifests=(manifests,))
    assert "handle" not in vars(srv.server.handler)  # the class's handle(), no wrapper


def test_cli_reads_a_live_cluster(capsys, tmp_path):
    """`svcdns explain --kubeconfig` lists the cluster once (services, slices, pods) from
    an API server speaking list/watch, and explains from that."""
    from tests.kubeapi import objects as o
    from tests.kubeapi.server import KubeApi

    with KubeApi() as api:
        api.put(
            o.namespace("web"),
            o.service("web", "db", "None", ports=(("pg", 5432),)),
            o.endpoint_slice("web", "db", ["10.244.1.10", "10.244.2.11"], ports=(("pg", 5432),),
                             mutate=lambda s: s["endpoints"][1]["conditions"].update(ready=False, serving=False)),
            o.pod("web", "client", "10.244.3.3"),
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        doc = run_cli(capsys, "db", "--pod", "web/client", "--kubeconfig", kubeconfig)
    assert doc["queries"][0]["records"] == ["db.web.svc.cluster.local. 5 IN A 10.244.1.10"]
    assert [(e["address"], e["in_dns"]) for e in doc["service"]["endpoints"]] == [("10.244.1.10", True), ("10.244.2.11", False)]


def test_serve_flags_reach_the_config():
    from svcdns.cli import build_parser, serve_config
    from svcdns.config import PRIVATE_NETWORKS, ConfigError

    cfg = serve_config(build_parser().parse_args(["serve", "--log-queries", "--allow-explain", "10.0.0.0/8", "--allow-explain", "::1"]))
    assert cfg.log_queries and cfg.allow_explain == ("10.0.0.0/8", "::1/128")
    default = serve_config(build_parser().parse_args(["serve"]))
    assert not default.log_queries and default.allow_explain == PRIVATE_NETWORKS
    with pytest.raises(ConfigError, match="--allow-explain: 'nonsense' is not an address or CIDR"):
        serve_config(build_parser().parse_args(["serve", "--allow-explain", "nonsense"]))
