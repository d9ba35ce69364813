"""The wire decoder and the whole query path (DnsHandler.handle) under generated and
mutated packets: every input gets a well-formed reply or a silent drop, never an
exception, and real queries are still answered afterwards."""

from __future__ import annotations

import dns.message
from hypothesis import HealthCheck, given, settings

from svcdns.dns.compiler import decode_key
from svcdns.dns.wire import compact, expand
from tests.fuzz.packets import VALID, check_reply, generated, mutated, packets

SETTINGS = settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
GOOD = dns.message.make_query("redis-master.default.svc.cluster.local.", "A").to_wire()


def assert_still_answers(handler) -> None:
    reply = dns.message.from_wire(handler.handle(GOOD, "127.0.0.1", False))
    assert reply.answer[0][0].address == "10.0.0.11"


def run_on(srv, strategy, tcp: bool) -> None:
    handler = srv.server.handler

    @SETTINGS
    @given(strategy)
    def check(packet):
        check_reply(packet, handler.handle(packet, "127.0.0.1", tcp), tcp=tcp)

    srv.call(check)
    srv.call(assert_still_answers, handler)


def test_generated_packets_udp(example_server):
    run_on(example_server, generated(), tcp=False)


def test_mutated_queries_udp(example_server):
    run_on(example_server, mutated(), tcp=False)


def test_any_packet_tcp(example_server):
    run_on(example_server, packets, tcp=True)


def test_pod_client_takes_the_autopath_branch(example_server):
    """The same packets from a pod's address (autopath, namespace-relative names);
    answers that walk the search path are finished on the server's loop and checked too."""
    import asyncio
    import time

    handler = example_server.server.handler
    pod_ip = next(iter(example_server.server.state.pod_by_ip))
    deferred: list[tuple[bytes, asyncio.Future]] = []

    @SETTINGS
    @given(packets)
    def check(packet):
        reply = handler.handle(packet, pod_ip, False)
        if reply is not None and not isinstance(reply, (bytes, list)):
            deferred.append((packet, asyncio.ensure_future(reply)))
            return
        check_reply(packet, reply, tcp=False)

    example_server.call(check)
    deadline = time.monotonic() + 10
    while not all(f.done() for _, f in deferred) and time.monotonic() < deadline:
        time.sleep(0.05)
    for packet, future in deferred:
        check_reply(packet, example_server.call(future.result), tcp=False)


def test_stored_answers_round_trip(example_server):
    """compact/expand, the stored-answer codec every hot-path answer goes through, on
    every answer of the example cluster's table."""
    answers = example_server.call(lambda: dict(example_server.server.table.answers))
    assert len(answers) > 20, "the table is populated"
    for key, stored in answers.items():
        template = expand(stored, key)
        assert compact(template, key) == stored
        qname, qtype = decode_key(key)
        assert dns.message.from_wire(template).question[0].name.to_text().rstrip(".") == qname


def test_valid_corpus_is_answered(example_server):
    """The seeds the mutators start from are themselves answered with a parseable reply."""
    handler = example_server.server.handler

    def check():
        for wire in VALID:
            reply = handler.handle(wire, "127.0.0.1", False)
            check_reply(wire, reply, tcp=False)
            assert reply is not None

    example_server.call(check)
