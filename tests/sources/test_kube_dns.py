"""svcdns following a live API server: DNS answers track creates, updates and deletes,
and converge after every fault the API can throw at a client. Real HTTP, real DNS."""

from __future__ import annotations

import time

import pytest

from tests.kubeapi import objects as o
from tests.sources.conftest import answer, converges, eventually, ready, seed

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
