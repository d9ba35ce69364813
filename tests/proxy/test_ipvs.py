"""ipvs mode's pure parts: the virtual servers wanted, the ipvsadm-restore diff that
gets there without touching what stays, and reading ipvsadm-save back. (This machine's
kernel has no IPVS; the traffic tests check the fallback to iptables mode.)"""

from __future__ import annotations

from pathlib import Path

from svcdns.proxy.backends.ipvs import VirtualConfig, desired, diff_ipvs, parse_ipvsadm_save, render_ipvs
from svcdns.proxy.proxier import Proxier
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

LAB = Path(__file__).parent / "testdata" / "lab.yaml"


def lab_view():
    state = ClusterState()
    ManifestSource([str(LAB)], state).load()
    proxier = Proxier(state, None, "node-a", ("10.244.0.0/16",))
    proxier.checkout()
    return proxier.view


def test_virtual_servers_follow_categorisation():
    vss = desired(lab_view(), "sed")
    assert vss[("TCP", "10.96.0.10", 80)] == VirtualConfig("sed", 0, ("10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"))
    assert vss[("TCP", "10.96.0.11", 80)].persistence == 300  # ClientIP affinity = persistence
    assert vss[("TCP", "10.96.0.12", 80)].reals == ("10.244.1.1:8080",)  # Local: this node's only
    assert vss[("TCP", "10.96.0.17", 80)].reals == ("10.244.1.2:8080",)  # terminating fallback
    assert vss[("UDP", "10.96.0.16", 53)].reals == ("10.244.1.1:8080", "10.244.1.2:8080")
    assert ("TCP", "10.96.0.14", 80) not in vss and ("TCP", "10.96.0.13", 80) not in vss  # rejected / dropped by iptables


def test_restore_input_round_trips_through_ipvsadm_save_format():
    vss = desired(lab_view(), "rr")
    text = render_ipvs(vss)
    assert "-A -t 10.96.0.11:80 -s rr -p 300\n" in text
    assert "-a -u 10.96.0.16:53 -r 10.244.1.1:8080 -m -w 1\n" in text
    assert parse_ipvsadm_save(text) == vss


def test_diff_touches_only_what_changed():
    a = {("TCP", "10.96.0.1", 80): VirtualConfig("rr", 0, ("10.0.0.1:80", "10.0.0.2:80")), ("UDP", "10.96.0.2", 53): VirtualConfig("rr", 0, ("10.0.0.3:53",))}
    b = {("TCP", "10.96.0.1", 80): VirtualConfig("lc", 0, ("10.0.0.2:80", "10.0.0.4:80")), ("TCP", "10.96.0.3", 443): VirtualConfig("rr", 10, ("10.0.0.5:443",))}
    assert diff_ipvs(a, b).splitlines() == [
        "-D -u 10.96.0.2:53",
        "-E -t 10.96.0.1:80 -s lc",
        "-d -t 10.96.0.1:80 -r 10.0.0.1:80",
        "-a -t 10.96.0.1:80 -r 10.0.0.4:80 -m -w 1",
        "-A -t 10.96.0.3:443 -s rr -p 10",
        "-a -t 10.96.0.3:443 -r 10.0.0.5:443 -m -w 1",
    ]
    assert diff_ipvs(b, b) == ""
