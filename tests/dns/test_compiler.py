"""The precompiled answers agree with the resolver, and a change recompiles only what it touches."""

from __future__ import annotations

import dns.message

from svcdns.dns.compiler import AnswerTable, decode_key
from svcdns.dns.records import Resolver, ResolverConfig
from svcdns.dns.wire import expand, pack
from svcdns.model import Service
from tests.conftest import example_state, state_from_yaml


def test_every_precompiled_answer_is_what_the_resolver_says():
    state = example_state()
    resolver = Resolver(state, ResolverConfig())
    table = AnswerTable(state, resolver)
    table.on_change(type("D", (), {"services": set(state.services), "namespaces": set()})())
    assert len(table.answers) > 30, "the example compiles to a few dozen answers"
    for key, template in table.answers.items():
        name, qtype = decode_key(key)
        assert expand(template, key) == pack(name, qtype, resolver.resolve(name, qtype)), name


def test_change_recompiles_only_the_touched_service(tmp_path):
    state = example_state()
    resolver = Resolver(state, ResolverConfig())
    table = AnswerTable(state, resolver)
    state.mark_synced()
    state.commit()
    compiled = []
    original = table._compile
    table._compile = lambda key, name, qtype: (compiled.append(name), original(key, name, qtype))
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
    resolver = Resolver(state, ResolverConfig())
    table = AnswerTable(state, resolver)
    table.on_change(type("D", (), {"services": set(state.services), "namespaces": set()})())
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
