"""The fast endpoint parser agrees with the careful one: same record for every input
both accept, and it declines (returns None) everything the careful one rejects."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcdns.model import ObjectError, _endpoint_from_raw, _fast_endpoint

ANY = st.one_of(st.none(), st.booleans(), st.integers(-1, 3), st.text(max_size=5), st.lists(st.integers(0, 1), max_size=2), st.dictionaries(st.text(max_size=3), st.none(), max_size=1))
ADDRESS = st.sampled_from(["10.0.0.1", "10.0.0.300", "fd00::1", "FD00:0::1", "010.1.1.1", "", "x", "192.0.2.5"])
HOSTNAME = st.one_of(st.sampled_from(["web-0", "Web-1", "-bad", "a" * 63, "a" * 64, "", "x.y"]), ANY)
CONDITIONS = st.one_of(
    st.none(), ANY,
    st.dictionaries(st.sampled_from(["ready", "serving", "terminating"]), st.one_of(st.none(), st.booleans(), st.integers(0, 2), st.text(max_size=2)), max_size=3),
)
TARGET = st.one_of(st.none(), ANY, st.fixed_dictionaries({}, optional={"kind": st.sampled_from(["Pod", "Node", None, 3]), "name": st.one_of(st.text(max_size=8), ANY)}))
VALID = st.fixed_dictionaries(
    {"addresses": st.sampled_from([["10.0.0.1"], ["192.0.2.5", "10.0.0.2"], ["fd00::1"]])},
    optional={
        "conditions": st.sampled_from([{"ready": True}, {"ready": False, "serving": True, "terminating": True}, {}, None]),
        "hostname": st.sampled_from(["web-0", "db-1"]),
        "nodeName": st.just("node-a"),
        "zone": st.just("zone-a"),
        "targetRef": st.sampled_from([{"kind": "Pod", "name": "web-0"}, {"kind": "Node", "name": "n"}]),
    },
)
FIELDS = {
    "addresses": st.one_of(st.lists(ADDRESS, max_size=3), ANY),
    "conditions": CONDITIONS,
    "hostname": HOSTNAME,
    "nodeName": ANY,
    "zone": ANY,
    "targetRef": TARGET,
    "hints": st.one_of(st.none(), st.just({}), st.just({"forZones": [{"name": "zone-a"}]})),
}
ENDPOINT = st.one_of(ANY, VALID)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(ENDPOINT, st.sampled_from(["IPv4", "IPv6"]))
def test_fast_endpoint_agrees_with_the_careful_parser(raw, address_type):
    fast = _fast_endpoint(raw, 4 if address_type == "IPv4" else 6)
    try:
        careful = _endpoint_from_raw(raw, "endpoints[0]", address_type)
    except ObjectError:
        assert fast is None, f"the fast path accepted what the careful one rejects: {raw!r}"
        return
    assert fast is None or fast == careful, f"different records for {raw!r}"


@pytest.mark.parametrize("field", sorted(FIELDS))
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fast_endpoint_agrees_with_one_field_mutated(field, data):
    """Well-formed endpoints with one field replaced: every branch of both parsers runs
    on otherwise valid input, where a disagreement would show."""
    raw = {**data.draw(VALID), field: data.draw(FIELDS[field])}
    test_fast_endpoint_agrees_with_the_careful_parser.hypothesis.inner_test(raw, data.draw(st.sampled_from(["IPv4", "IPv6"])))


def test_fast_path_takes_the_common_shape():
    raw = {"addresses": ["10.0.0.1"], "conditions": {"ready": True, "serving": True, "terminating": False},
           "hostname": "web-0", "nodeName": "node-a", "zone": "zone-a", "targetRef": {"kind": "Pod", "name": "web-0"}}
    assert _fast_endpoint(raw, 4) == _endpoint_from_raw(raw, "endpoints[0]", "IPv4")
