"""Golden rendering, table-driven: every case in tests/proxy/cases/*.yaml, rendered in
every mode, must equal tests/proxy/golden/<case>.<mode> (what ``--dry-run`` prints for a
fresh node). Regenerate after a deliberate change with ``UPDATE_GOLDEN=1 pytest
tests/proxy/test_render.py`` and review the diff.

Beside the whole-text goldens, a few assertions spell out the kube-proxy facts the
goldens must embody, so a regenerated golden cannot silently lose them."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from svcdns.proxy.backends.iptables import IptablesBackend, render
from svcdns.proxy.backends.ipvs import IpvsBackend
from svcdns.proxy.backends.loopback import loop_back_restore
from svcdns.proxy.backends.nftables import NftablesBackend
from svcdns.proxy.backends.userspace import UserspaceBackend
from svcdns.proxy.proxier import Proxier
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

HERE = Path(__file__).parent
CASES = sorted(p.stem for p in (HERE / "cases").glob("*.yaml"))
BACKENDS = {
    "iptables": IptablesBackend,
    "nftables": NftablesBackend,
    "ipvs": lambda: IpvsBackend("rr"),
    "userspace": lambda: UserspaceBackend("rr"),
}
CIDRS = ("10.180.0.0/16", "fd00:180::/64")


def proxier_for(case: str, backend) -> Proxier:
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    ManifestSource([str(HERE / "cases" / f"{case}.yaml")], state).load()
    proxier = Proxier(state, backend, "node-a", CIDRS)
    proxier.checkout()
    return proxier


@pytest.mark.parametrize("mode", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_golden(case, mode):
    proxier = proxier_for(case, BACKENDS[mode]())
    got = proxier.backend.render_all(proxier.view)
    path = HERE / "golden" / f"{case}.{mode}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    want = path.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(path), "rendered"))
        pytest.fail(f"{case} in {mode} mode differs from its golden file:\n{diff}")


def lines(text: str, needle: str) -> list[str]:
    return [ln for ln in text.splitlines() if needle in ln]


def test_iptables_even_split_probabilities():
    text = render(proxier_for("cluster-ip", None).view).text
    dispatch = lines(text, "-A KUBE-SVC-")
    probs = [ln.split("--probability ")[1].split()[0] for ln in dispatch if "--probability" in ln]
    assert probs == ["0.3333333333", "0.5000000000"]
    assert "--probability" not in dispatch[-1]


def test_iptables_uses_kube_proxy_chain_names():
    text = render(proxier_for("cluster-ip", None).view).text
    # the names kube-proxy gives ns1/svc1:p80 and its endpoint 10.180.0.1:80 (its own tests)
    assert "-j KUBE-SVC-XPGD46QRK7WJZT7O" in text


SERVICE_CHAIN = re.compile(r"KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}")


@pytest.mark.parametrize("case", CASES)
def test_iptables_full_sync_declares_each_service_just_before_its_rules(case):
    """A full sync writes service by service in descending order of the chain hash,
    each chain declared before any rule in or to it: iptables-nft walks a name-sorted
    list from the head for every rule, so this order keeps a 10,000-service restore
    from spending seconds in that walk (docs/performance.md)."""
    nat = render(proxier_for(case, None).view).text.split("*nat\n")[1].splitlines()
    declared: dict[str, int] = {}
    order: list[str] = []
    for i, line in enumerate(nat):
        if line.startswith(":") and SERVICE_CHAIN.fullmatch(line[1:].split()[0]):
            declared[chain := line[1:].split()[0]] = i
            if not chain.startswith("KUBE-SEP-") and (not order or order[-1] != chain[-16:]):
                order.append(chain[-16:])
        for chain in SERVICE_CHAIN.findall(line):
            assert declared.get(chain, len(nat)) <= i, f"{chain} used before it is declared: {line}"
    assert order == sorted(set(order), reverse=True)


def test_iptables_dnats_in_the_service_chain_without_affinity():
    """No per-endpoint chains (110,000 of them at 10k x 10 made a full sync take 11 s):
    the split rules DNAT themselves, and hairpin traffic is masqueraded by KUBE-LOOP-BACK."""
    text = render(proxier_for("cluster-ip", None).view).text
    assert "KUBE-SEP-" not in text
    assert ('-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" '
            "-m statistic --mode random --probability 0.3333333333 -p tcp -j DNAT --to-destination 10.180.0.1:80") in text
    assert "-m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE" in lines(text, "-A KUBE-POSTROUTING")[0]


def test_iptables_affinity_keeps_kube_proxys_endpoint_chains():
    text = render(proxier_for("affinity", None).view).text
    seps = lines(text, "-j DNAT")
    assert seps and all(ln.startswith("-A KUBE-SEP-") and "-m recent" in ln and "--set" in ln for ln in seps)


@pytest.mark.parametrize(
    ("case", "family", "entries"),
    [
        ("cluster-ip", 4, {"10.180.0.1,tcp:80,10.180.0.1"}),  # node-a's endpoint only: others hairpin on their own node
        ("udp-dual-stack", 6, {"fd00:180::5,udp:53,fd00:180::5", "fd00:180::5,tcp:53,fd00:180::5"}),
    ],
)
def test_iptables_loop_back_set_holds_this_nodes_endpoints(case, family, entries):
    assert set(render(proxier_for(case, None).view, family).loop_back) == entries


def test_loop_back_restore_full_swaps_a_filled_set_in():
    full = loop_back_restore(4, {"10.0.0.1,tcp:80,10.0.0.1"}, previous=None, existing_sets=["KUBE-LOOP-BACK", "KUBE-LOOP-BACK-new"])
    assert full.splitlines() == [
        "destroy KUBE-LOOP-BACK-new",
        "create KUBE-LOOP-BACK-new hash:ip,port,ip family inet hashsize 1024 maxelem 65536",
        "add KUBE-LOOP-BACK-new 10.0.0.1,tcp:80,10.0.0.1",
        "swap KUBE-LOOP-BACK-new KUBE-LOOP-BACK",
        "destroy KUBE-LOOP-BACK-new",
    ]
    big = loop_back_restore(6, {f"fd00::{i:x},tcp:80,fd00::{i:x}" for i in range(40000)}, previous=None)
    assert "family inet6" in big and "maxelem 131072" in big and big.rstrip().endswith("rename KUBE-6-LOOP-BACK-new KUBE-6-LOOP-BACK")


def test_loop_back_restore_partial_sends_the_difference():
    text = loop_back_restore(4, {"a", "b"}, previous=frozenset({"b", "c"}))
    assert text.splitlines() == ["del KUBE-LOOP-BACK c -exist", "add KUBE-LOOP-BACK a -exist"]
    assert loop_back_restore(4, {"a"}, previous=frozenset({"a"})) == ""


def test_iptables_affinity_checks_come_before_the_split():
    text = render(proxier_for("affinity", None).view).text
    dispatch = lines(text, "-A KUBE-SVC-")
    recent = [i for i, ln in enumerate(dispatch) if "--rcheck --seconds 10800 --reap" in ln]
    split = [i for i, ln in enumerate(dispatch) if "-j KUBE-SEP-" in ln and "--rcheck" not in ln]
    assert split
    assert len(recent) == 2 and max(recent) < min(split)
    assert len(lines(text, "-m recent --name KUBE-SEP-")) == 4  # 2 checks + 2 --set


def test_no_endpoints_reject_and_local_without_local_endpoints_drop():
    text = render(proxier_for("no-endpoints", None).view).text
    assert lines(text, '"ns1/empty:p80 has no endpoints"')[0].endswith("-j REJECT")
    assert lines(text, '"ns1/elsewhere:p80 has no local endpoints"')[0].endswith("-j DROP")
    assert "172.30.0.43" not in text.split("*nat")[1]


def test_partial_render_writes_only_changed_service_chains():
    view = proxier_for("udp-dual-stack", None).view
    full = render(view)
    partial = render(view, changed=set(), existing=full.nat_chains, jumps=())
    assert partial.written == 0 and ":KUBE-SVC-" not in partial.text
    assert "-j KUBE-SVC-" in partial.text  # KUBE-SERVICES is always rewritten
    assert partial.nat_chains == full.nat_chains


def partial_after(case: str, change) -> tuple[str, str]:
    """(full, partial) iptables input: the case rendered, ``change(state)`` applied, then
    rendered again as the partial sync that follows."""
    proxier = proxier_for(case, None)
    full = render(proxier.view)
    change(proxier.state)
    proxier.state.commit()
    proxier.need_full_sync = False
    proxier.last_full = float("inf")
    changed = proxier.checkout()
    return full.text, render(proxier.view, changed=changed, existing=full.nat_chains, jumps=(), previous=full).text


def _drop_endpoint(state):
    from dataclasses import replace

    old = state.slices[("ns1", "svc1-abc")]
    state.apply(replace(old, endpoints=old.endpoints[1:]))


def _move_cluster_ip(state):
    from dataclasses import replace

    old = state.services[("ns1", "svc1")]
    state.apply(replace(old, cluster_ips=("172.30.0.99",)))


def test_iptables_partial_sync_leaves_kube_services_alone_on_an_endpoint_change():
    full, partial = partial_after("cluster-ip", _drop_endpoint)
    assert "KUBE-SERVICES" not in partial and "*filter" not in partial
    assert partial.splitlines()[:2] == ["*nat", ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]"]
    assert len(lines(partial, "-j DNAT")) == 2


def test_iptables_partial_sync_swaps_a_changed_services_rules_one_by_one():
    full, partial = partial_after("cluster-ip", _move_cluster_ip)
    old = lines(full, "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\"")[0]
    assert lines(partial, "-D KUBE-SERVICES") == ["-D" + old[2:]]
    [added] = lines(partial, "-I KUBE-SERVICES 1 ")
    assert "-d 172.30.0.99 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O" in added
    assert "KUBE-NODEPORTS" not in partial  # the last rule stays where it is


def test_iptables_partial_sync_removes_a_deleted_service_before_its_chain():
    full, partial = partial_after("cluster-ip", lambda state: state.remove("Service", ("ns1", "svc1")))
    text = partial.splitlines()
    delete = text.index(next(ln for ln in text if ln.startswith("-D KUBE-SERVICES")))
    assert text.index("-X KUBE-SVC-XPGD46QRK7WJZT7O") > delete


def test_iptables_partial_syncs_add_up_to_a_full_render():
    """After a run of partial (delta) renders, what svcdns believes the kernel holds is
    what a full render of the same cluster would write."""
    from dataclasses import replace

    proxier = proxier_for("udp-dual-stack", None)
    state = proxier.state
    proxier.need_full_sync, proxier.last_full = False, float("inf")
    rendered = {f: render(proxier.view, f) for f in (4, 6)}
    key = ("kube-system", "dns")
    changes = [
        lambda: state.apply(replace(state.services[key], cluster_ips=("172.30.0.77", "fd00:10::77"))),
        lambda: state.remove("EndpointSlice", ("kube-system", "dns-v6")),
        lambda: state.remove("Service", key),
    ]
    for change in changes:
        change()
        state.commit()
        changed = proxier.checkout()
        for f in (4, 6):
            rendered[f] = render(proxier.view, f, changed=changed, existing=rendered[f].nat_chains, jumps=(), previous=rendered[f])
        for f in (4, 6):
            fresh = render(proxier.view, f)
            assert rendered[f].nat_chains == fresh.nat_chains
            assert +rendered[f].loop_back == fresh.loop_back
            assert {k: (r.top, r.filter, r.rules) for k, r in rendered[f].cache.items()} == {k: (r.top, r.filter, r.rules) for k, r in fresh.cache.items()}
