"""svcdns following a live API server: DNS answers track creates, updates and deletes,
and converge after every fault the API can throw at a client. Real HTTP, real DNS."""

from __future__ import annotations

import time

import pytest

from tests.kubeapi import objects as o
from tests.sources.conftest import answer, converges, eventually, metrics_text, ready, sample, seed

FRONTEND = "frontend.web.svc.cluster.local."


def test_answers_follow_creates_updates_deletes(kubeapi, live):
    seed(kubeapi)
    srv = live()
    assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])
    assert answer(srv, "db.web.svc.cluster.local.") == ("NOERROR", ["10.244.1.20"])

    kubeapi.put(o.service("web", "api", "10.0.10.2"))
    assert converges(srv, "api.web.svc.cluster.local.", "A", ("NOERROR", ["10.0.10.2"]), timeout=1.0) < 1.0

    kubeapi.put(o.service("web", "api", "10.0.10.3"))
    converges(srv, "api.web.svc.cluster.local.", "A", ("NOERROR", ["10.0.10.3"]), timeout=1.0)
    assert answer(srv, "3.10.0.10.in-addr.arpa.", "PTR") == ("NOERROR", ["api.web.svc.cluster.local."])

    kubeapi.put(o.endpoint_slice("web", "db", ["10.244.1.20", "10.244.3.30"], ports=(("pg", 5432),)))
    converges(srv, "db.web.svc.cluster.local.", "A", ("NOERROR", ["10.244.1.20", "10.244.3.30"]), timeout=1.0)

    kubeapi.delete("Service", "web", "api")
    converges(srv, "api.web.svc.cluster.local.", "A", ("NXDOMAIN", []), timeout=1.0)
    assert answer(srv, "3.10.0.10.in-addr.arpa.", "PTR")[1] == []  # not a cluster address any more


def _dropped(api):
    api.drop_watches()


def _errors_500(api):
    api.fail(6, 500)
    api.drop_watches()


def _throttled(api):
    api.fail(4, 429, retry_after=1)
    api.drop_watches()


def _stalled_watches(api):
    assert api.stall_watches() >= 3


def _stalled_requests(api):
    api.fail(4, 0)  # hang without answering, until the client gives up
    api.drop_watches()


def _expired_error_event(api):
    api.expire(close_watches=True)


def _expired_status(api):
    api.gone_as_status = True
    api.fail(10**6, 500)
    api.drop_watches()
    time.sleep(0.2)
    api.expire()
    api.clear_faults()


FAULTS = [
    ("watch dropped mid-stream", _dropped),
    ("500 responses", _errors_500),
    ("429 with Retry-After", _throttled),
    ("watch stalls silently", _stalled_watches),
    ("requests hang", _stalled_requests),
    ("410 as ERROR event", _expired_error_event),
    ("410 as status response", _expired_status),
]


@pytest.mark.parametrize("fault", [f for _, f in FAULTS], ids=[name for name, _ in FAULTS])
def test_answers_converge_after_fault(kubeapi, live, fault):
    seed(kubeapi)
    srv = live()
    fault(kubeapi)
    kubeapi.put(o.service("web", "frontend", "10.0.10.9"))
    kubeapi.delete("Service", "web", "db")
    kubeapi.put(o.service("web", "new", "10.0.10.10"))
    converges(srv, FRONTEND, "A", ("NOERROR", ["10.0.10.9"]), timeout=3.0)
    converges(srv, "new.web.svc.cluster.local.", "A", ("NOERROR", ["10.0.10.10"]), timeout=3.0)
    converges(srv, "db.web.svc.cluster.local.", "A", ("NXDOMAIN", []), timeout=3.0)
    assert answer(srv, "db-0.db.web.svc.cluster.local.")[0] == "NXDOMAIN"
    assert answer(srv, "9.10.0.10.in-addr.arpa.", "PTR") == ("NOERROR", ["frontend.web.svc.cluster.local."])
    assert not any(t.done() for t in srv.server._tasks), "the source stopped"


@pytest.mark.parametrize("gone_as_status", [False, True], ids=["error-event", "status"])
def test_objects_deleted_while_disconnected_vanish_after_relist(kubeapi, live, gone_as_status):
    """The deletes happen while no watch is open and their history is compacted away:
    only a relist can reveal them, and the reconcile must drop them."""
    seed(kubeapi)
    srv = live()
    kubeapi.gone_as_status = gone_as_status
    kubeapi.fail(10**6, 503)
    kubeapi.drop_watches()
    kubeapi.delete("Service", "web", "frontend")
    kubeapi.delete("EndpointSlice", "web", "db-abcde")
    kubeapi.delete("Namespace", "", "default")
    time.sleep(0.3)
    kubeapi.expire()
    assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])  # API down: last good state
    kubeapi.clear_faults()
    converges(srv, FRONTEND, "A", ("NXDOMAIN", []), timeout=3.0)
    converges(srv, "db-0.db.web.svc.cluster.local.", "A", ("NXDOMAIN", []), timeout=3.0)
    assert answer(srv, "db.web.svc.cluster.local.")[1] == []  # headless, its only slice gone
    assert answer(srv, "10.1.244.10.in-addr.arpa.", "PTR")[1] == []
    metrics = metrics_text(srv)
    assert sample(metrics, 'svcdns_source_relists_total{kind="Service"}') >= 1
    assert sample(metrics, 'svcdns_source_relists_total{kind="EndpointSlice"}') >= 1


def test_api_outage_keeps_last_good_state_and_logs_once(kubeapi, live, caplog):
    seed(kubeapi)
    srv = live()
    caplog.set_level("DEBUG", logger="svcdns")
    kubeapi.fail(10**6, 500)
    kubeapi.drop_watches()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # every answer during the outage is the last good one
        assert answer(srv, FRONTEND) == ("NOERROR", ["10.0.10.1"])
        time.sleep(0.1)
    assert ready(srv), "an API outage must not take DNS out of service"
    metrics = metrics_text(srv)
    assert sample(metrics, 'svcdns_source_sync_age_seconds{kind="Service"}') >= 1.5
    assert sample(metrics, 'svcdns_source_api_errors_total{kind="Service"}') >= 3
    kubeapi.clear_faults()
    kubeapi.put(o.service("web", "frontend", "10.0.10.7"))
    converges(srv, FRONTEND, "A", ("NOERROR", ["10.0.10.7"]), timeout=3.0)
    # the outage ends when every kind is back (the last may still be in its backoff sleep)
    eventually(lambda: any("reachable again" in r.getMessage() for r in caplog.records), 2.0, "end of outage logged")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "Kubernetes API" in r.getMessage()]
    assert len([m for m in warnings if "serving the last good state" in m]) == 1, warnings
    assert len([m for m in warnings if "reachable again" in m]) == 1, warnings
    retries = [r for r in caplog.records if r.levelname == "DEBUG" and "still failing" in r.getMessage()]
    assert len(retries) >= 5  # the retries happened, at debug level
    assert sample(metrics_text(srv), 'svcdns_source_sync_age_seconds{kind="Service"}') == 0
