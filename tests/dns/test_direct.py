"""Answers written directly (svcdns.dns.direct) are byte for byte what the general path
(Resolver + wire writer) gives, for random clusters: colliding addresses, dual stack,
not-ready and duplicate endpoints, odd port and pod names, nested and reverse zones."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcdns.dns.compiler import AnswerTable
from svcdns.dns.direct import DROP, DirectAnswers
from svcdns.dns.records import NOERROR, Resolver, ResolverConfig
from svcdns.dns.wire import pack_stored, question_key
from svcdns.model import Endpoint, EndpointPort, EndpointSlice, Namespace, Service, ServicePort
from svcdns.store import ClusterState

NAMES = ["web", "db", "svc", "pod", "x-1"]
NAMESPACES = ["default", "web", "svc"]
# Few addresses, so that services share them (a ClusterIP that is also an endpoint, a pod in two services).
V4 = ["10.0.0.1", "10.0.0.2", "10.96.0.1", "10.96.0.2"]
V6 = ["fd00::1", "fd00::2", "fd00::96:1"]
PORT_NAMES = ["", "http", "dns", "Http", "a.b"]
HOSTNAMES = ["", "", "web-0", "db-1"]
TARGET_NAMES = ["", "pod-a", "pod.with.dots", "_x"]
ZONES = [("cluster.local",), ("cluster.local", "corp.example"), ("example", "svc.example"), ("cluster.local", "arpa")]

SERVICE_PORT = st.builds(
    ServicePort, st.sampled_from(PORT_NAMES), st.sampled_from(["TCP", "UDP"]), st.sampled_from([53, 80, 443]), st.just(80), st.just(0)
)
ENDPOINT_PORT = st.builds(EndpointPort, st.sampled_from(PORT_NAMES), st.sampled_from(["TCP", "UDP"]), st.sampled_from([0, 53, 8080]))


@st.composite
def services(draw):
    kind = draw(st.sampled_from(["clusterip", "clusterip", "headless", "headless", "external", "no-ip"]))
    ips: tuple[str, ...] = ()
    if kind == "clusterip":
        family = draw(st.sampled_from(["4", "6", "46", "64"]))
        ips = tuple(draw(st.sampled_from(V4 if f == "4" else V6)) for f in family)
    return Service(
        namespace=draw(st.sampled_from(NAMESPACES)),
        name=draw(st.sampled_from(NAMES)),
        type="ExternalName" if kind == "external" else draw(st.sampled_from(["ClusterIP", "NodePort"])),
        cluster_ips=ips,
        headless=kind == "headless",
        external_name=draw(st.sampled_from(["web.default.svc.cluster.local", "example.com"])) if kind == "external" else "",
        ports=tuple(draw(st.lists(SERVICE_PORT, max_size=3, unique_by=lambda p: (p.name, p.protocol)))),
        selector=(),
        publish_not_ready=draw(st.booleans()),
        session_affinity_timeout=0,
        internal_local=False,
        external_local=False,
        external_ips=(),
        load_balancer_ips=(),
        labels=(),
        creation="",
    )


@st.composite
def slices(draw, svc: Service, index: int):
    address_type = draw(st.sampled_from(["IPv4", "IPv4", "IPv6", "FQDN"]))
    pool = {"IPv4": V4, "IPv6": V6, "FQDN": ["10.0.0.1", "db.example"]}[address_type]
    endpoints = draw(st.lists(st.builds(
        Endpoint,
        addresses=st.lists(st.sampled_from(pool), min_size=1, max_size=2).map(tuple),
        ready=st.booleans(), serving=st.just(True), terminating=st.just(False),
        hostname=st.sampled_from(HOSTNAMES), node_name=st.just(""), zone=st.just(""),
        hint_zones=st.just(()), hint_nodes=st.just(()), target_name=st.sampled_from(TARGET_NAMES),
    ), max_size=5))
    ports = tuple(draw(st.lists(ENDPOINT_PORT, max_size=2)))
    return EndpointSlice(svc.namespace, f"{svc.name}-{index}", svc.name, address_type, ports, tuple(endpoints))


@st.composite
def clusters(draw):
    implicit = draw(st.booleans())
    state = ClusterState(derive_endpoints=False, implicit_namespaces=implicit)
    for ns in draw(st.lists(st.sampled_from(NAMESPACES), max_size=3)):
        state.apply(Namespace(ns))
    for svc in draw(st.lists(services(), min_size=1, max_size=5, unique_by=lambda s: s.key)):
        state.apply(svc)
        for i in range(draw(st.integers(0, 2))):
            state.apply(draw(slices(svc, i)))
    config = ResolverConfig(zones=draw(st.sampled_from(ZONES)), ttl=draw(st.sampled_from([0, 5, 3600])), endpoint_pod_names=draw(st.booleans()))
    return state, config, draw(st.booleans())


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(clusters())
def test_direct_answers_equal_the_general_path(cluster):
    state, config, recursion = cluster
    state.mark_synced()
    state.commit()
    resolver = Resolver(state, config)
    direct = DirectAnswers(resolver)
    table = AnswerTable(state, resolver, recursion_available=recursion)
    for svc in state.services.values():
        planned = direct.plan(svc, recursion)
        if planned is None:
            continue
        assert {key for key, *_ in planned} == {question_key(n, t) for n, t in table.questions(svc)}, "the same questions"
        for key, name, qtype, stored in planned:
            assert key == question_key(name, qtype)
            if stored is None:
                continue
            answer = resolver.resolve(name, qtype)
            if stored == DROP:
                assert answer is None or answer.rcode != NOERROR, f"{name} {qtype}: dropped, but the resolver says {answer}"
            else:
                assert answer is not None and answer.rcode == NOERROR, f"{name} {qtype}: {answer}"
                assert stored == pack_stored(name, qtype, answer, recursion_available=recursion, key=key), f"{name} {qtype}: {answer}"


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(clusters())
def test_a_table_compiled_directly_equals_one_compiled_by_the_resolver(cluster):
    state, config, recursion = cluster
    resolver = Resolver(state, config)
    fast = AnswerTable(state, resolver, recursion_available=recursion)
    general = AnswerTable(state, resolver, recursion_available=recursion)
    general.direct.plan = lambda svc, ra: None
    state.mark_synced()
    state.commit()
    assert fast.answers == general.answers


def _cluster_ip(name: str) -> Service:
    return Service("default", name, "ClusterIP", ("10.96.0.10",), False, "", (ServicePort("http", "TCP", 80, 8080, 0), ServicePort("grpc", "TCP", 9090, 9090, 0)),
                   (), False, 0, False, False, (), (), (), "")


def test_the_common_shapes_take_the_direct_path():
    """The shapes of a real cluster (and of bench/dataset.py) are written directly, not
    deferred to the general path: otherwise the direct path would be dead code."""
    state = ClusterState(implicit_namespaces=True)
    state.apply(_cluster_ip("web"))
    headless = Service("default", "db", "ClusterIP", (), True, "", (ServicePort("pg", "TCP", 5432, 5432, 0),), (), False, 0, False, False, (), (), (), "")
    state.apply(headless)
    endpoints = tuple(Endpoint((f"10.1.0.{i}",), True, True, False, f"db-{i}" if i % 2 else "", "", "", (), (), f"db-{i}") for i in range(1, 11))
    state.apply(EndpointSlice("default", "db-x", "db", "IPv4", (EndpointPort("pg", "TCP", 5432),), endpoints))
    state.mark_synced()
    state.commit()
    direct = DirectAnswers(Resolver(state, ResolverConfig()))
    for svc in state.services.values():
        planned = direct.plan(svc, False)
        assert planned, svc.name
        assert all(stored for *_, stored in planned), [(name, qtype) for _, name, qtype, stored in planned if not stored]


def test_a_statefulset_past_the_compression_limit_equals_the_general_path():
    """An SRV answer over 1,000 endpoints outgrows the offsets a compression pointer can
    reach (16 KiB); the writer then stops recording names, so that answer is left to it."""
    state = ClusterState(implicit_namespaces=True)
    state.apply(Service("default", "big", "ClusterIP", (), True, "", (ServicePort("peer", "TCP", 7000, 7000, 0),), (), False, 0, False, False, (), (), (), ""))
    endpoints = tuple(Endpoint((f"10.2.{i // 250}.{i % 250 + 1}",), True, True, False, f"big-{i}", "", "", (), (), "") for i in range(1000))
    state.apply(EndpointSlice("default", "big-x", "big", "IPv4", (EndpointPort("peer", "TCP", 7000),), endpoints))
    resolver = Resolver(state, ResolverConfig())
    fast = AnswerTable(state, resolver)
    general = AnswerTable(state, resolver)
    general.direct.plan = lambda svc, ra: None
    state.mark_synced()
    state.commit()
    assert fast.answers == general.answers
    planned = {name: stored for _, name, qtype, stored in fast.direct.plan(state.services[("default", "big")], False) if qtype == 33}
    assert planned["big.default.svc.cluster.local"] is None, "left to the writer"
    assert len(fast.answers[question_key("big.default.svc.cluster.local", 33)]) > 0x3FFF
