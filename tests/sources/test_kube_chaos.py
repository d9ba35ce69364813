"""Scripted chaos between svcdns and the API server, CI-sized (a few seconds): while
objects keep changing, watches are dropped and stalled, requests fail with 500 and 429,
resourceVersions expire (410) and the API server restarts. Throughout, every answer is a
state the API really held, never older than one already served (no flapping back), and
a service that exists throughout is never NXDOMAIN; at the end the served state equals
the API's."""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import dns.message
import dns.query
import dns.rcode

from tests.kubeapi import objects as o
from tests.sources.conftest import converges

NS = "chaos"
STABLE = [f"stable-{i}" for i in range(3)]  # exist throughout, never change
CHURN = [f"churn-{i}" for i in range(4)]  # headless: endpoints change every generation
BLINK = "blink"  # deleted and created again
FAULTS = ["drop", "stall", "500", "429", "410", "restart"]
STEPS = int(os.environ.get("SVCDNS_CHAOS_STEPS", "120"))  # 50 ms each; longer runs: see docs/reliability.md


def churn_addresses(k: int, generation: int) -> list[str]:
    return [f"10.250.{k}.{generation % 250 + 1}", f"10.251.{k}.{generation % 250 + 1}"]


@dataclass
class History:
    """What the API held for each name: states in order (frozenset of addresses; None =
    the name does not exist), each with the time it was written."""

    states: dict[str, list[tuple[float, frozenset | None]]] = field(default_factory=dict)

    def record(self, name: str, state: frozenset | None, at: float | None = None) -> None:
        """``at``: taken just before the write, so no answer can precede it."""
        self.states.setdefault(name, []).append((time.monotonic() if at is None else at, state))

    def index_of(self, name: str, state: frozenset | None, written_before: float) -> int | None:
        """The latest generation of ``name`` equal to ``state`` written before the time."""
        found = None
        for i, (at, s) in enumerate(self.states[name]):
            if at > written_before:
                break
            if s == state:
                found = i
        return found


def observe(port: int, name: str) -> tuple[int, frozenset | None]:
    query = dns.message.make_query(f"{name}.{NS}.svc.cluster.local.", "A")
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    if reply.rcode() == dns.rcode.NXDOMAIN:
        return reply.rcode(), None
    return reply.rcode(), frozenset(rr.address for rrset in reply.answer for rr in rrset)


def test_chaos_answers_never_contradict_the_api(kubeapi, live):
    rnd = random.Random(7)
    history = History()
    objs = [o.namespace(NS)]
    for i, name in enumerate(STABLE):
        objs += [o.service(NS, name, f"10.0.60.{i + 1}"), o.endpoint_slice(NS, name, [f"10.244.60.{i + 1}"])]
        history.record(name, frozenset({f"10.0.60.{i + 1}"}))
    for k, name in enumerate(CHURN):
        objs += [o.service(NS, name, "None"), o.endpoint_slice(NS, name, churn_addresses(k, 0))]
        history.record(name, frozenset(churn_addresses(k, 0)))
    objs += [o.service(NS, BLINK, "10.0.61.1"), o.endpoint_slice(NS, BLINK, ["10.244.61.1"])]
    history.record(BLINK, frozenset({"10.0.61.1"}))
    kubeapi.put(*objs)
    srv = live()
    generations = [0] * len(CHURN)
    blink_present = True

    observations: list[tuple[str, float, float, int, frozenset | None]] = []
    stop = threading.Event()

    def poll() -> None:
        names = STABLE + CHURN + [BLINK]
        while not stop.is_set():
            for name in names:
                sent = time.monotonic()
                rcode, state = observe(srv.port, name)
                observations.append((name, sent, time.monotonic(), rcode, state))

    poller = threading.Thread(target=poll)
    poller.start()
    faults = FAULTS * (STEPS // 60 + 1)  # every kind of fault, shuffled, one every 10 changes
    rnd.shuffle(faults)
    try:
        for step in range(STEPS):
            k = rnd.randrange(len(CHURN))
            at = time.monotonic()
            if rnd.random() < 0.15:
                if blink_present:
                    kubeapi.delete("Service", NS, BLINK)
                    history.record(BLINK, None, at)
                else:
                    kubeapi.put(o.service(NS, BLINK, "10.0.61.1"))
                    history.record(BLINK, frozenset({"10.0.61.1"}), at)
                blink_present = not blink_present
            else:
                generations[k] += 1
                kubeapi.put(o.endpoint_slice(NS, CHURN[k], churn_addresses(k, generations[k])))
                history.record(CHURN[k], frozenset(churn_addresses(k, generations[k])), at)
            if step % 10 == 5 and faults:
                inject(kubeapi, faults.pop())
            time.sleep(0.05)
    finally:
        kubeapi.clear_faults()
        stop.set()
        poller.join(timeout=10)

    # At the end, with the faults healed, the served state equals the API's.
    for name in STABLE + CHURN + [BLINK]:
        final = history.states[name][-1][1]
        want = ("NXDOMAIN", []) if final is None else ("NOERROR", sorted(final))
        converges(srv, f"{name}.{NS}.svc.cluster.local.", "A", want, timeout=10)

    # During the chaos: only states the API held, never going back, no NXDOMAIN for a
    # service that existed throughout.
    assert len(observations) > 200
    last_seen: dict[str, int] = {}
    for name, sent, received, rcode, state in observations:
        assert rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), f"{name}: rcode {dns.rcode.to_text(rcode)}"
        if name in STABLE:
            assert state is not None, f"NXDOMAIN for {name}, which existed throughout"
        index = history.index_of(name, state, written_before=received)
        assert index is not None, f"{name}: answered {state}, a state the API never held (by then)"
        assert index >= last_seen.get(name, 0), f"{name}: went back from generation {last_seen[name]} to {index}"
        last_seen[name] = index
    changed = sum(1 for name in CHURN if last_seen.get(name, 0) > 0)
    assert changed == len(CHURN), "the churning services were seen to change"
    lists = [r for r in kubeapi.requests("endpointslices") if r.query.get("watch") not in ("true", "1", "True")]
    assert len(lists) >= 5, "the faults forced relists"
    changes = sum(len(v) - 1 for v in history.states.values())
    print(f"chaos: {STEPS} steps, {changes} changes, {len(FAULTS * (STEPS // 60 + 1)) - len(faults)} faults, "
          f"{len(lists)} slice LISTs, {len(observations)} answers checked")


def inject(api, fault: str) -> None:
    if fault == "drop":
        api.drop_watches()
    elif fault == "stall":
        api.stall_watches()  # the idle timeout (1 s in FAST) finds them dead
    elif fault == "500":
        api.fail(3, 500)
    elif fault == "429":
        api.fail(3, 429, retry_after=1)
    elif fault == "410":
        api.expire(close_watches=True)
    elif fault == "restart":
        api.restart(down=0.3)
