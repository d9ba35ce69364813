"""What the live source serves: readiness gating, --namespaces, --labels, legacy
Endpoints, pods for --pods verified, and bad API objects."""

from __future__ import annotations

import dns.rcode

from tests.kubeapi import objects as o
from tests.sources.conftest import answer, converges, eventually, metrics_text, ready, sample, seed

FRONTEND = "frontend.web.svc.cluster.local."


def test_servfail_and_not_ready_until_every_kind_synced(kubeapi, live):
    seed(kubeapi)
    kubeapi.fail(10**6, 500, plurals=("endpointslices",))  # services list fine, slices never
    srv = live(wait=False)
    eventually(lambda: kubeapi.requests("services"), 2, "a service LIST")
    for _ in range(5):
        assert answer(srv, FRONTEND)[0] == "SERVFAIL"  # never NXDOMAIN, never half a cluster
        assert answer(srv, "nope.web.svc.cluster.local.")[0] == "SERVFAIL"
        assert not ready(srv)
    assert sample(metrics_text(srv), 'svcdns_source_synced{kind="Service"}') == 1
    assert sample(metrics_text(srv), 'svcdns_source_synced{kind="EndpointSlice"}') == 0
    kubeapi.clear_faults()
    eventually(lambda: ready(srv), 3, "/ready")
    assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])
    assert answer(srv, "nope.web.svc.cluster.local.")[0] == "NXDOMAIN"


def test_namespaces_flag_serves_only_those_namespaces(kubeapi, live):
    seed(kubeapi)
    srv = live(namespaces=("web",))
    assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])
    assert answer(srv, "kubernetes.default.svc.cluster.local.")[0] == "NXDOMAIN"
    kubeapi.put(o.service("default", "other", "10.0.0.50"), o.service("web", "other", "10.0.10.50"))
    converges(srv, "other.web.svc.cluster.local.", "A", ("NOERROR", ["10.0.10.50"]), timeout=1.0)
    assert answer(srv, "other.default.svc.cluster.local.")[0] == "NXDOMAIN"
    # one reflector per namespace: requests name the namespace
    assert all("/namespaces/web/" in r.path for r in kubeapi.requests("services"))


def test_labels_flag_selects_services_and_follows_label_changes(kubeapi, live):
    seed(kubeapi)
    kubeapi.put(o.service("web", "internal", "10.0.10.30", labels={"tier": "internal"}))
    srv = live(labels="tier!=internal")
    assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])
    assert answer(srv, "internal.web.svc.cluster.local.")[0] == "NXDOMAIN"
    kubeapi.put(o.service("web", "internal", "10.0.10.30", labels={"tier": "public"}))  # enters the selector
    converges(srv, "internal.web.svc.cluster.local.", "A", ("NOERROR", ["10.0.10.30"]), timeout=1.0)
    kubeapi.put(o.service("web", "frontend", "10.0.10.1", labels={"tier": "internal"}))  # leaves it
    converges(srv, FRONTEND, "A", ("NXDOMAIN", []), timeout=1.0)
    assert {r.query.get("labelSelector") for r in kubeapi.requests("services")} == {"tier!=internal"}


def test_endpoints_used_when_api_serves_no_endpointslices(kubeapi, live):
    kubeapi.disabled.add("endpointslices")
    kubeapi.put(o.namespace("web"), o.service("web", "db", "None", ports=(("pg", 5432),)),
                o.endpoints("web", "db", ["10.244.1.20", "10.244.1.21"], ports=(("pg", 5432),)))
    srv = live()
    assert answer(srv, "db.web.svc.cluster.local.") == ("NOERROR", ["10.244.1.20", "10.244.1.21"])
    kubeapi.put(o.endpoints("web", "db", ["10.244.1.22"], ports=(("pg", 5432),)))
    converges(srv, "db.web.svc.cluster.local.", "A", ("NOERROR", ["10.244.1.22"]), timeout=1.0)
    kubeapi.delete("Endpoints", "web", "db")
    converges(srv, "db.web.svc.cluster.local.", "A", ("NXDOMAIN", []), timeout=1.0)  # headless without endpoints


def test_endpoints_shadowed_by_slices_are_not_held(kubeapi, live):
    """Endpoints beside EndpointSlices (the usual case) are not parsed or kept; once the
    slices are gone the Endpoints take over, fetched again by name."""
    kubeapi.put(o.namespace("web"), o.service("web", "db", "None", ports=(("pg", 5432),)),
                o.endpoint_slice("web", "db", ["10.244.1.20"], ports=(("pg", 5432),)),
                o.endpoints("web", "db", ["10.244.9.9"], ports=(("pg", 5432),)),
                o.service("web", "legacy", "None"), o.endpoints("web", "legacy", ["10.244.8.8"]))
    srv = live()
    assert answer(srv, "db.web.svc.cluster.local.") == ("NOERROR", ["10.244.1.20"])
    assert answer(srv, "legacy.web.svc.cluster.local.") == ("NOERROR", ["10.244.8.8"])
    assert srv.call(lambda: sorted(srv.server.state.endpoints)) == [("web", "legacy")]
    kubeapi.delete("EndpointSlice", "web", "db-abcde")
    converges(srv, "db.web.svc.cluster.local.", "A", ("NOERROR", ["10.244.9.9"]), timeout=2.0)
    assert any(r.query.get("fieldSelector") == "metadata.name=db" for r in kubeapi.requests("endpoints"))
    kubeapi.put(o.endpoint_slice("web", "db", ["10.244.1.21"], ports=(("pg", 5432),)))
    converges(srv, "db.web.svc.cluster.local.", "A", ("NOERROR", ["10.244.1.21"]), timeout=1.0)
    assert srv.call(lambda: sorted(srv.server.state.endpoints)) == [("web", "legacy")]


def test_pods_watched_only_when_a_feature_needs_them(kubeapi, live):
    seed(kubeapi)
    kubeapi.put(o.pod("web", "frontend-1", "10.244.1.10"))
    srv = live(pods="verified")
    assert answer(srv, "10-244-1-10.web.pod.cluster.local.") == ("NOERROR", ["10.244.1.10"])
    assert answer(srv, "10-244-1-99.web.pod.cluster.local.")[0] == "NXDOMAIN"
    kubeapi.put(o.pod("web", "frontend-2", "10.244.1.99"))
    converges(srv, "10-244-1-99.web.pod.cluster.local.", "A", ("NOERROR", ["10.244.1.99"]), timeout=1.0)
    kubeapi.delete("Pod", "web", "frontend-1")
    converges(srv, "10-244-1-10.web.pod.cluster.local.", "A", ("NXDOMAIN", []), timeout=1.0)

    pod_requests = len(kubeapi.requests("pods"))
    insecure = live(autopath=False)  # insecure pod records need no pods, so none are watched
    assert answer(insecure, "10-244-1-10.web.pod.cluster.local.") == ("NOERROR", ["10.244.1.10"])
    assert len(kubeapi.requests("pods")) == pod_requests
    assert 'kind="Pod"' not in metrics_text(insecure)
    autopath = live()  # autopath (on by default) finds a client's namespace by its pod's address
    assert sample(metrics_text(autopath), 'svcdns_source_synced{kind="Pod"}') == 1


def test_bad_object_keeps_last_good_version(kubeapi, live):
    seed(kubeapi)
    srv = live()
    bad = o.service("web", "frontend", "10.0.10.5", mutate=lambda s: s["spec"]["ports"][0].update(port="eighty"))
    kubeapi.put(bad)
    kubeapi.put(o.service("web", "after", "10.0.10.6"))  # later events still flow
    converges(srv, "after.web.svc.cluster.local.", "A", ("NOERROR", ["10.0.10.6"]), timeout=1.0)
    assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])
    assert sample(metrics_text(srv), 'svcdns_source_errors_total{source="kube"}') == 1
    kubeapi.put(o.service("web", "frontend", "10.0.10.5"))
    converges(srv, FRONTEND, "A", ("NOERROR", ["10.0.10.5"]), timeout=1.0)


def test_namespace_objects_decide_nxdomain_vs_nodata(kubeapi, live):
    seed(kubeapi)
    srv = live()
    assert answer(srv, "nothing.web.svc.cluster.local.")[0] == "NXDOMAIN"
    msg = srv.query("web.svc.cluster.local.", "A")
    assert dns.rcode.to_text(msg.rcode()) == "NOERROR"  # namespace exists: NODATA
    kubeapi.put(o.namespace("empty"))
    eventually(lambda: dns.rcode.to_text(srv.query("empty.svc.cluster.local.", "A").rcode()) == "NOERROR", 1.0, "namespace empty")
    kubeapi.delete("Namespace", "", "empty")
    eventually(lambda: dns.rcode.to_text(srv.query("empty.svc.cluster.local.", "A").rcode()) == "NXDOMAIN", 1.0, "namespace gone")
