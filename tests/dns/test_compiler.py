"""The precompiled answers agree with the resolver, and a change recompiles only what it touches."""

from __future__ import annotations

import dns.message
import pytest

from svcdns.dns.compiler import AnswerTable, decode_key
from svcdns.dns.records import Resolver, ResolverConfig
from svcdns.dns.wire import expand, pack, question_key
from svcdns.model import Service
from tests.conftest import example_state, state_from_yaml


def compiled(state, **options) -> tuple[AnswerTable, Resolver]:
    """Every service of ``state`` compiled, and the table checked against the resolver:
    each precompiled answer is byte for byte what the slow path would say."""
    resolver = Resolver(state, ResolverConfig(**options))
    table = AnswerTable(state, resolver)
    table.on_change(type("D", (), {"services": set(state.services), "namespaces": set()})())
    for key, template in table.answers.items():
        name, qtype = decode_key(key)
        assert expand(template, key) == pack(name, qtype, resolver.resolve(name, qtype)), name
    return table, resolver


def test_every_precompiled_answer_is_what_the_resolver_says():
    table, _ = compiled(example_state())
    assert len(table.answers) > 30, "the example compiles to a few dozen answers"


HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{name: pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: late}
spec: {clusterIP: None, publishNotReadyAddresses: true, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: shared}
spec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-a, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5432}]
endpoints:
  - {addresses: [10.1.0.1], hostname: db-0, targetRef: {kind: Pod, name: db-0}}
  - {addresses: [10.1.0.2, 10.1.0.3], hostname: db-1}
  - {addresses: [10.1.0.4], conditions: {ready: false}, hostname: db-2}
  - {addresses: [10.1.0.5], targetRef: {kind: Pod, name: db-xyz}}
  - {addresses: [10.1.0.6], hostname: db-0}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-b, labels: {kubernetes.io/service-name: db}}
addressType: IPv6
endpoints:
  - {addresses: ["fd00::1"], hostname: db-0}
  - {addresses: ["fd00::2"], hostname: db-6}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: late-a, labels: {kubernetes.io/service-name: late}}
addressType: IPv4
endpoints:
  - {addresses: [10.2.0.1], conditions: {ready: false}}
  - {addresses: [10.1.0.5]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: shared-a, labels: {kubernetes.io/service-name: shared}}
addressType: IPv4
endpoints:
  - {addresses: [10.1.0.1]}
"""


@pytest.mark.parametrize("options", [{}, {"endpoint_pod_names": True}, {"zones": ("cluster.local", "corp.example")}], ids=["default", "pod-names", "two-zones"])
def test_headless_answers_built_in_one_pass_equal_the_resolvers(tmp_path, options):
    """Endpoint names and PTRs of headless services are compiled in one pass, not through
    the resolver: for every shape (several addresses, IPv6, not ready, published not
    ready, duplicate hostnames, a pod shared with other services) the bytes agree."""
    state = state_from_yaml(HEADLESS, tmp_path)
    table, resolver = compiled(state, **options)
    assert len(table.answers) > 15
    for svc in state.services.values():  # nothing the resolver answers is missing
        for name, qtype in table.questions(svc):
            answer = resolver.resolve(name, qtype)
            assert (question_key(name, qtype) in table.answers) == (answer is not None and answer.rcode == 0), name


def test_change_recompiles_only_the_touched_service(tmp_path):
    state = example_state()
    resolver = Resolver(state, ResolverConfig())
    table = AnswerTable(state, resolver)
    state.mark_synced()
    state.commit()
    compiled = []
    original = table._compile
    table._compile = lambda key, name, qtype, *rest: (compiled.append(name), original(key, name, qtype, *rest))
    redis = state.services[("default", "redis-master")]
    state.apply(Service(**{**{f: getattr(redis, f) for f in Service.__slots__}, "cluster_ips": ("10.0.0.12",)}))
    state.commit()
    assert compiled and all("redis-master" in n or n.endswith("in-addr.arpa") for n in compiled), compiled
    key = b"\x0credis-master\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
    reply = dns.message.from_wire(expand(table.answers[key], key))
    assert reply.answer[0][0].address == "10.0.0.12"
    assert b"\x0211\x010\x010\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01" not in table.answers, "the old PTR is gone"


SHARED_POD = """
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: None, selector: {app: x}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: None, selector: {app: x}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: x}}
status: {podIP: 10.9.0.1}
"""


def test_ptr_shared_by_two_services_survives_one_deletion(tmp_path):
    state = state_from_yaml(SHARED_POD, tmp_path)
    table, _ = compiled(state)
    key = b"\x011\x010\x019\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01"
    names = sorted(r.target.to_text() for r in dns.message.from_wire(expand(table.answers[key], key)).answer[0])
    assert names == ["10-9-0-1.a.default.svc.cluster.local.", "10-9-0-1.b.default.svc.cluster.local."]
    state.remove("Service", ("default", "a"))
    state.commit()
    names = sorted(r.target.to_text() for r in dns.message.from_wire(expand(table.answers[key], key)).answer[0])
    assert names == ["10-9-0-1.b.default.svc.cluster.local."]
    state.remove("Service", ("default", "b"))
    state.commit()
    assert key not in table.answers
