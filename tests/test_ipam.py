"""ClusterIP allocation (--service-cluster-ip-range): range geometry as kube-apiserver
computes it, validation of requested addresses, stability across reloads, what DNS and
`svcdns ipam` show, and a property test that allocations never collide."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcdns.ipam import ClusterIPAllocator, RangeError, ServiceCIDR, allocate, parse_service_cidrs
from svcdns.model import Service
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState
from tests.conftest import rrset_texts


def svc(ns: str, name: str, *ips: str, created: str = "", **spec) -> Service:
    spec = {"ports": [{"port": 80}], **spec}
    if ips:
        spec["clusterIPs"] = list(ips)
    meta = {"namespace": ns, "name": name, **({"creationTimestamp": created} if created else {})}
    return Service.from_raw({"kind": "Service", "metadata": meta, "spec": spec})


def manifest(*services: str) -> str:
    """Manifest text for `ns/name[=ip[,ip]]` shorthands."""
    docs = []
    for item in services:
        key, _, ips = item.partition("=")
        ns, name = key.split("/")
        ip_line = f"  clusterIPs: [{ips}]\n" if ips else ""
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{ip_line}  ports: [{{port: 80}}]\n")
    return "---\n".join(docs)


def addresses(alloc) -> dict[str, tuple[str, ...]]:
    return {f"{s.namespace}/{s.name}": s.cluster_ips for s in alloc.services}


# --- range geometry ------------------------------------------------------------------

# (range, usage line of an empty range): usable size, static band, dynamic band
GEOMETRY = [
    ("10.0.0.0/28", ("10.0.0.0/28 (IPv4): 0 of 14 addresses allocated; no static band (ranges of 16 addresses or fewer have none); "
     "dynamic band 10.0.0.1-10.0.0.14: 0 of 14; 10.0.0.1 held back for default/kubernetes")),
    ("10.0.0.0/27", ("10.0.0.0/27 (IPv4): 0 of 30 addresses allocated; static band 10.0.0.1-10.0.0.16: 0 of 16; "
     "dynamic band 10.0.0.17-10.0.0.30: 0 of 14; 10.0.0.1 held back for default/kubernetes")),
    ("10.0.0.0/24", ("10.0.0.0/24 (IPv4): 0 of 254 addresses allocated; static band 10.0.0.1-10.0.0.16: 0 of 16; "
     "dynamic band 10.0.0.17-10.0.0.254: 0 of 238; 10.0.0.1 held back for default/kubernetes")),
    ("10.0.0.0/21", ("10.0.0.0/21 (IPv4): 0 of 2046 addresses allocated; static band 10.0.0.1-10.0.0.128: 0 of 128; "
     "dynamic band 10.0.0.129-10.0.7.254: 0 of 1918; 10.0.0.1 held back for default/kubernetes")),
    ("10.0.0.0/20", ("10.0.0.0/20 (IPv4): 0 of 4094 addresses allocated; static band 10.0.0.1-10.0.1.0: 0 of 256; "
     "dynamic band 10.0.1.1-10.0.15.254: 0 of 3838; 10.0.0.1 held back for default/kubernetes")),
    ("10.96.0.0/12", ("10.96.0.0/12 (IPv4): 0 of 1048574 addresses allocated; static band 10.96.0.1-10.96.1.0: 0 of 256; "
     "dynamic band 10.96.1.1-10.111.255.254: 0 of 1048318; 10.96.0.1 held back for default/kubernetes")),
    ("fd00::/112", ("fd00::/112 (IPv6): 0 of 65535 addresses allocated; static band fd00::1-fd00::100: 0 of 256; "
     "dynamic band fd00::101-fd00::ffff: 0 of 65279; fd00::1 held back for default/kubernetes")),
    ("fd00:10::/64", (f"fd00:10::/64 (IPv6): 0 of {2**64 - 1} addresses allocated; static band fd00:10::1-fd00:10::100: 0 of 256; "
     f"dynamic band fd00:10::101-fd00:10::ffff:ffff:ffff:ffff: 0 of {2**64 - 257}; fd00:10::1 held back for default/kubernetes")),
]


@pytest.mark.parametrize("cidr,usage", GEOMETRY, ids=[g[0] for g in GEOMETRY])
def test_range_geometry(cidr, usage):
    assert [str(u) for u in allocate([], parse_service_cidrs(cidr)).usage()] == [usage]


@pytest.mark.parametrize("cidr", [g[0] for g in GEOMETRY])
def test_every_range_size_allocates_in_range(cidr):
    (c,) = parse_service_cidrs(cidr)
    count = min(c.size - 1, 100)
    services = [svc("default", "kubernetes")] + [svc("ns", f"s{i}") for i in range(count)]
    alloc = allocate(services, (c,))
    assert alloc.errors == []
    got = [ipaddress.ip_address(a.address) for a in alloc.assignments]
    assert len(set(got)) == count + 1
    assert addresses(alloc)["default/kubernetes"] == (c.address(0),)
    for a in alloc.assignments:
        index, why = c.locate(a.address)
        assert why == "" and 0 <= index < c.size
        if a.key != ("default", "kubernetes") and count <= c.size - c.dynamic_start:
            assert index >= c.dynamic_start, f"{a} is in the static band while the dynamic band has room"


RANGE_ERRORS = [
    ("10.0.0.5/16", "'10.0.0.5/16' has host bits set; did you mean 10.0.0.0/16?"),
    ("10.0.0.0/8", "10.0.0.0/8 is too large: IPv4 service ranges may hold at most 2^20 addresses (/12), as in kube-apiserver"),
    ("fd00::/48", "fd00::/48 is too large: IPv6 service ranges must be /64 or longer"),
    ("10.0.0.0/31", "10.0.0.0/31 is too small: no address would be left besides the one reserved for default/kubernetes"),
    ("fd00::/127", "fd00::/127 is too small: no address would be left besides the one reserved for default/kubernetes"),
    ("10.0.0.0", "'10.0.0.0' needs a prefix length (for example 10.0.0.0/16)"),
    ("cluster", "'cluster' is not a CIDR (for example 10.96.0.0/12 or fd00:10:96::/112)"),
    ("10.0.0.0/24,10.1.0.0/24", "'10.0.0.0/24,10.1.0.0/24': give at most one IPv4 and one IPv6 range"),
    ("10.0.0.0/24,", "'10.0.0.0/24,': expected CIDR or CIDR,CIDR"),
]


@pytest.mark.parametrize("value,message", RANGE_ERRORS, ids=[e[0] for e in RANGE_ERRORS])
def test_bad_ranges_are_refused(value, message):
    with pytest.raises(RangeError) as e:
        parse_service_cidrs(value)
    assert str(e.value) == message


def test_bad_range_flag_names_the_flag():
    result = subprocess.run([sys.executable, "-m", "svcdns", "serve", "--service-cluster-ip-range", "10.0.0.0/8"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "argument --service-cluster-ip-range: 10.0.0.0/8 is too large" in result.stderr


# --- reserved address and bands ------------------------------------------------------


def test_first_address_is_held_back_without_kubernetes():
    (c,) = parse_service_cidrs("10.0.0.0/28")
    alloc = allocate([svc("ns", f"s{i}") for i in range(14)], (c,))
    assert "10.0.0.1" not in {a.address for a in alloc.assignments}
    assert len(alloc.assignments) == 13
    assert [str(e) for e in alloc.errors] == [
        f"ns/{alloc.errors[0].key[1]}: -: --service-cluster-ip-range 10.0.0.0/28 is full (13 addresses besides the reserved one)"
    ]


def test_kubernetes_asking_elsewhere_leaves_first_address_reserved():
    cidrs = parse_service_cidrs("10.0.0.0/24")
    alloc = allocate([svc("default", "kubernetes", "10.0.0.10"), svc("ns", "a", "10.0.0.1")], cidrs)
    assert addresses(alloc) == {"default/kubernetes": ("10.0.0.10",)}
    assert [str(e) for e in alloc.errors] == ["ns/a: 10.0.0.1: reserved for default/kubernetes (the first address of 10.0.0.0/24)"]


def test_dynamic_band_first_then_static_band():
    (c,) = parse_service_cidrs("10.0.0.0/24")  # static 10.0.0.1-16, dynamic 10.0.0.17-254 (238)
    fits = allocate([svc("ns", f"s{i}") for i in range(238)], (c,))
    assert all(c.locate(a.address)[0] >= 16 for a in fits.assignments)
    spills = allocate([svc("ns", f"s{i}") for i in range(250)], (c,))
    bands = [c.band(c.locate(a.address)[0]) for a in spills.assignments]
    assert bands.count("dynamic") == 238 and bands.count("static") == 12
    assert spills.errors == []


def test_requested_addresses_may_use_either_band():
    cidrs = parse_service_cidrs("10.0.0.0/24")
    alloc = allocate([svc("ns", "low", "10.0.0.2"), svc("ns", "high", "10.0.0.200")], cidrs)
    assert [str(a) for a in alloc.assignments] == ["ns/low IPv4 10.0.0.2 static", "ns/high IPv4 10.0.0.200 static"]


def test_last_ipv6_address_is_usable_ipv4_broadcast_is_not():
    cidrs = parse_service_cidrs("10.0.0.0/24,fd00::/112")
    alloc = allocate([svc("ns", "v6", "fd00::ffff"), svc("ns", "v4", "10.0.0.255")], cidrs)
    assert addresses(alloc) == {"ns/v6": ("fd00::ffff",)}
    assert [str(e) for e in alloc.errors] == ["ns/v4: 10.0.0.255: the broadcast address of 10.0.0.0/24"]


# --- requested addresses: every refusal, with its message -------------------------------

OLD, NEW = "2020-01-01T00:00:00Z", "2024-06-01T00:00:00Z"
V4, DUAL = "10.0.0.0/24", "10.0.0.0/24,fd00::/112"

# (case, ranges, services, error lines, served services)
REFUSALS = [
    ("outside the range", V4, [svc("web", "a", "10.1.0.5")], ["web/a: 10.1.0.5: not in --service-cluster-ip-range 10.0.0.0/24"], {}),
    ("network address", V4, [svc("web", "a", "10.0.0.0")], ["web/a: 10.0.0.0: the network address of 10.0.0.0/24"], {}),
    ("broadcast address", V4, [svc("web", "a", "10.0.0.255")], ["web/a: 10.0.0.255: the broadcast address of 10.0.0.0/24"], {}),
    ("IPv6 network address", DUAL, [svc("web", "a", "fd00::")], ["web/a: fd00::: the network address of fd00::/112"], {}),
    ("reserved for kubernetes", V4, [svc("web", "a", "10.0.0.1")],
     ["web/a: 10.0.0.1: reserved for default/kubernetes (the first address of 10.0.0.0/24)"], {}),
    ("family without a range", V4, [svc("web", "a", "fd00::5")], ["web/a: fd00::5: no IPv6 --service-cluster-ip-range is configured"], {}),
    ("taken: file order decides", V4, [svc("web", "a", "10.0.0.7"), svc("web", "b", "10.0.0.7")],
     ["web/b: 10.0.0.7: already allocated to web/a, defined earlier in the manifests"], {"web/a": ("10.0.0.7",)}),
    ("taken: creationTimestamp beats file order", V4, [svc("web", "a", "10.0.0.7", created=NEW), svc("web", "b", "10.0.0.7", created=OLD)],
     [f"web/a: 10.0.0.7: already allocated to web/b, created earlier ({OLD})"], {"web/b": ("10.0.0.7",)}),
    ("taken: a timestamp beats none", V4, [svc("web", "a", "10.0.0.7"), svc("other", "b", "10.0.0.7", created=OLD)],
     [f"web/a: 10.0.0.7: already allocated to other/b, which has a creationTimestamp ({OLD}) and this one none"], {"other/b": ("10.0.0.7",)}),
    ("taken by kubernetes", V4, [svc("web", "a", "10.0.0.9"), svc("default", "kubernetes", "10.0.0.9")],
     ["web/a: 10.0.0.9: already allocated to default/kubernetes"], {"default/kubernetes": ("10.0.0.9",)}),
    ("dual-stack: one bad address refuses the service", DUAL, [svc("web", "a", "10.0.0.8", "fd01::8")],
     ["web/a: fd01::8: not in --service-cluster-ip-range fd00::/112"], {}),
    ("RequireDualStack with one range", V4, [svc("web", "a", ipFamilyPolicy="RequireDualStack")],
     ["web/a: -: ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 --service-cluster-ip-range"], {}),
    ("SingleStack with two addresses", DUAL, [svc("web", "a", "10.0.0.8", "fd00::8", ipFamilyPolicy="SingleStack")],
     ["web/a: 10.0.0.8,fd00::8: ipFamilyPolicy SingleStack allows addresses of one IP family only"], {}),
    ("ipFamilies that contradict clusterIPs", DUAL, [svc("web", "a", "10.0.0.8", ipFamilies=["IPv6"])],
     ["web/a: 10.0.0.8: spec.ipFamilies ['IPv6'] does not match the families of spec.clusterIPs"], {}),
    ("IPv6 asked for, only IPv4 configured", V4, [svc("web", "a", ipFamilies=["IPv6"])],
     ["web/a: -: no IPv6 --service-cluster-ip-range is configured"], {}),
]


@pytest.mark.parametrize("ranges,services,errors,served", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_requested_address_refusals(ranges, services, errors, served):
    alloc = allocate(services, parse_service_cidrs(ranges))
    assert [str(e) for e in alloc.errors] == errors
    assert addresses(alloc) == served


def test_headless_and_external_name_get_nothing():
    alloc = allocate([svc("ns", "h", "None"), svc("ns", "x", type="ExternalName", externalName="db.example.com")], parse_service_cidrs(V4))
    assert addresses(alloc) == {"ns/h": (), "ns/x": ()} and alloc.assignments == [] and alloc.errors == []


FAMILIES = [
    ("default: primary family only", {}, ["IPv4"]),
    ("PreferDualStack: both, primary first", {"ipFamilyPolicy": "PreferDualStack"}, ["IPv4", "IPv6"]),
    ("PreferDualStack, IPv6 first", {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"]}, ["IPv6", "IPv4"]),
    ("RequireDualStack", {"ipFamilyPolicy": "RequireDualStack"}, ["IPv4", "IPv6"]),
    ("two ipFamilies imply RequireDualStack", {"ipFamilies": ["IPv6", "IPv4"]}, ["IPv6", "IPv4"]),
    ("SingleStack IPv6", {"ipFamilies": ["IPv6"]}, ["IPv6"]),
]


@pytest.mark.parametrize("spec,families", [f[1:] for f in FAMILIES], ids=[f[0] for f in FAMILIES])
def test_ip_families(spec, families):
    alloc = allocate([svc("ns", "a", **spec)], parse_service_cidrs(DUAL))
    (served,) = alloc.services
    assert [f"IPv{ipaddress.ip_address(ip).version}" for ip in served.cluster_ips] == families


def test_requested_primary_gets_the_missing_family_allocated():
    alloc = allocate([svc("ns", "a", "fd00::42", ipFamilyPolicy="PreferDualStack")], parse_service_cidrs(DUAL))
    assert [str(a).rsplit(" ", 1)[1] for a in sorted(alloc.assignments, key=lambda a: a.family)] == ["dynamic", "static"]
    assert alloc.services[0].cluster_ips[0] == "fd00::42"


# --- stability ----------------------------------------------------------------------


def test_same_manifests_same_addresses_after_restart():
    cidrs = parse_service_cidrs("10.0.0.0/27")  # small: hash collisions are certain
    services = [svc("ns", f"s{i}") for i in range(25)]
    assert addresses(allocate(services, cidrs)) == addresses(allocate(list(services), cidrs))


def source_with(tmp_path, text: str, cidrs: str) -> tuple[ClusterState, ManifestSource]:
    path = tmp_path / "svc.yaml"
    path.write_text(text)
    state = ClusterState(implicit_namespaces=True)
    source = ManifestSource([str(path)], state, services_hook=ClusterIPAllocator(parse_service_cidrs(cidrs)))
    source.load()
    return state, source


def reload(source: ManifestSource, text: str) -> None:
    path = source.paths[0]
    with open(path, "w") as f:
        f.write(text)
    import os

    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a new mtime even on coarse clocks
    assert source.poll()


def ips(state: ClusterState) -> dict[str, tuple[str, ...]]:
    return {f"{ns}/{name}": s.cluster_ips for (ns, name), s in state.services.items()}


def test_addresses_stay_put_across_reloads(tmp_path):
    """New services earlier in the file (so 'older' by file order) must not push the
    running ones off their addresses; a fresh start then keeps those addresses too, since
    only the newcomers' probing changed."""
    old = [f"ns/old{i}" for i in range(10)]
    state, source = source_with(tmp_path, manifest(*old), "10.0.0.0/27")
    before = ips(state)
    reload(source, manifest(*[f"ns/new{i}" for i in range(10)], *old))
    after = ips(state)
    assert {k: after[k] for k in before} == before
    assert len(set(after.values())) == 20


def test_reload_reports_only_the_services_that_changed(tmp_path):
    """Allocation runs over all services, but DNS must recompile only what changed."""
    state, source = source_with(tmp_path, manifest(*[f"ns/s{i}" for i in range(50)]), V4)
    deltas = []
    state.subscribe(deltas.append)
    reload(source, manifest(*[f"ns/s{i}" for i in range(50)], "ns/newcomer"))
    assert [d.services for d in deltas] == [{("ns", "newcomer")}]


def test_deleted_service_frees_its_address(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    state, source = source_with(tmp_path, manifest("ns/a=10.0.0.7", "ns/b=10.0.0.7"), V4)
    assert ips(state) == {"ns/a": ("10.0.0.7",)}
    assert "ns/b: 10.0.0.7: already allocated to ns/a, defined earlier in the manifests; service not served" in caplog.text
    reload(source, manifest("ns/b=10.0.0.7"))
    assert ips(state) == {"ns/b": ("10.0.0.7",)}


def test_bad_edit_keeps_serving_the_last_good_version(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    state, source = source_with(tmp_path, manifest("ns/a=10.0.0.5", "ns/b"), V4)
    b = ips(state)["ns/b"]
    reload(source, manifest("ns/a=10.0.0.1", "ns/b"))
    assert ips(state) == {"ns/a": ("10.0.0.5",), "ns/b": b}
    assert "ns/a: 10.0.0.1: reserved for default/kubernetes (the first address of 10.0.0.0/24); serving its previous version" in caplog.text
    reload(source, manifest("ns/a=10.0.0.6", "ns/b"))
    assert ips(state)["ns/a"] == ("10.0.0.6",)


def test_request_for_a_dynamic_address_moves_the_dynamic_one(tmp_path, caplog):
    """A hand-written address wins over one svcdns chose (the user cannot see ours in the files)."""
    state, source = source_with(tmp_path, manifest("ns/a"), V4)
    (taken,) = ips(state)["ns/a"]
    reload(source, manifest("ns/a", f"ns/b={taken}"))
    assert ips(state)["ns/b"] == (taken,)
    assert ips(state)["ns/a"] != (taken,)
    assert f"ns/a: ClusterIP moved from {taken} to {ips(state)['ns/a'][0]}" in caplog.text


# --- what users see: DNS and `svcdns ipam` --------------------------------------------

CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  ports: [{name: https, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: pinned, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: thief, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: typo, namespace: shop}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: pets, namespace: shop}
spec:
  clusterIP: None
  ports: [{port: 80}]
"""


def run_ipam(path, ranges: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svcdns", "ipam", "--manifests", str(path), "--service-cluster-ip-range", ranges],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_ipam_command_table_usage_and_errors(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    result = run_ipam(path, "10.96.0.0/16")
    (api,) = [s.cluster_ips[0] for s in allocate([svc("shop", "api")], parse_service_cidrs("10.96.0.0/16")).services]
    assert result.stdout.splitlines() == [
        "default/kubernetes IPv4 10.96.0.1 dynamic",
        "shop/pinned IPv4 10.96.0.10 static",
        f"shop/api IPv4 {api} dynamic",
        (
            "usage: 10.96.0.0/16 (IPv4): 3 of 65534 addresses allocated; static band 10.96.0.1-10.96.1.0: 2 of 256; "
            "dynamic band 10.96.1.1-10.96.255.254: 1 of 65278"
        ),
    ]
    assert result.stderr.splitlines() == [
        f"error: shop/typo: 10.96.0.300: malformed, not an IP address ({path}: document 5, spec.clusterIP)",
        "error: shop/thief: 10.96.0.10: already allocated to shop/pinned, defined earlier in the manifests",
    ]
    assert result.returncode == 1


def test_ipam_command_clean_set_exits_zero(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(manifest("default/kubernetes", "ns/a", "ns/b=fd00::b"))
    result = run_ipam(path, "10.0.0.0/24,fd00::/112")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = result.stdout.splitlines()
    assert rows[0] == "default/kubernetes IPv4 10.0.0.1 dynamic"
    assert rows[2] == "ns/b IPv6 fd00::b static"
    assert rows[3].startswith("usage: 10.0.0.0/24 (IPv4): 2 of 254") and rows[4].startswith("usage: fd00::/112 (IPv6): 1 of 65535")


def test_dns_answers_the_allocated_address(tmp_path, serve):
    """`svcdns serve --service-cluster-ip-range` serves what `svcdns ipam` prints."""
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    rows = dict(line.split()[0::2] for line in run_ipam(path, "10.96.0.0/16").stdout.splitlines() if not line.startswith("usage:"))
    srv = serve(manifests=(str(path),), service_cidrs=parse_service_cidrs("10.96.0.0/16"))
    for name in ("shop/api", "default/kubernetes", "shop/pinned"):
        ns, svc_name = name.split("/")
        reply = srv.query(f"{svc_name}.{ns}.svc.cluster.local.", "A")
        assert rrset_texts(reply.answer) == [f"{svc_name}.{ns}.svc.cluster.local. 5 IN A {rows[name]}"]
    assert rrset_texts(srv.query("thief.shop.svc.cluster.local.", "A").answer) == []  # refused: not served
    ptr = srv.query(ipaddress.ip_address(rows["shop/api"]).reverse_pointer + ".", "PTR")
    assert rrset_texts(ptr.answer) == [f"{ipaddress.ip_address(rows['shop/api']).reverse_pointer}. 5 IN PTR api.shop.svc.cluster.local."]


def test_serve_without_range_keeps_manifests_as_they_are(tmp_path, serve):
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    srv = serve(manifests=(str(path),))
    assert rrset_texts(srv.query("api.shop.svc.cluster.local.", "A").answer) == []
    both = srv.query("thief.shop.svc.cluster.local.", "A")
    assert rrset_texts(both.answer) == ["thief.shop.svc.cluster.local. 5 IN A 10.96.0.10"]  # no validation without a range


# --- property: never a collision, always in range ------------------------------------

PREFIXES = [("10.20.0.0", p) for p in range(24, 31)] + [("fd00:20::", p) for p in range(116, 127)]


@st.composite
def scenario(draw):
    base, prefix = draw(st.sampled_from(PREFIXES))
    cidr = ServiceCIDR.parse(f"{base}/{prefix}")
    net = cidr.network
    count = draw(st.integers(0, min(40, cidr.size + 4)))
    services = []
    for i in range(count):
        ns = draw(st.sampled_from(["default", "a", "b"]))
        name = "kubernetes" if i == 0 and draw(st.booleans()) else f"s{i}"
        if ns != "default" and name == "kubernetes":
            name = f"s{i}"
        request = draw(st.one_of(st.none(), st.integers(-2, net.num_addresses + 1)))
        created = draw(st.sampled_from(["", OLD, NEW]))
        ips = () if request is None else (str(ipaddress.ip_address(int(net.network_address) + request)),)
        services.append(svc(ns, name, *ips, created=created))
    unique = list({s.key: s for s in services}.values())
    return cidr, unique


def check_allocation(cidr: ServiceCIDR, services: list[Service], alloc) -> None:
    held = [a.address for a in alloc.assignments]
    assert len(held) == len(set(held)), "two services share an address"
    for a in alloc.assignments:
        index, why = cidr.locate(a.address)
        assert why == "" and 0 <= index < cidr.size, f"{a} outside the usable range: {why}"
        assert index != 0 or a.key == ("default", "kubernetes"), f"{a} holds the reserved address"
    refused = {e.key for e in alloc.errors}
    served = {s.key: s for s in alloc.services}
    for s in services:
        if s.key in refused:
            assert s.key not in served
        else:
            assert served[s.key].cluster_ips, f"{s.key} neither served with an address nor refused"
            assert served[s.key].cluster_ips == tuple(a.address for a in alloc.assignments if a.key == s.key)
    if alloc.errors:
        # refusals are for bad requests or a full range, never for no reason
        # the first address is held back for default/kubernetes whoever holds it (and
        # kubernetes may hold another address by request), so it only counts when used
        full = len(alloc.assignments) >= cidr.size - (0 if any(cidr.locate(a.address)[0] == 0 for a in alloc.assignments) else 1)
        assert all(e.address or full for e in alloc.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.data())
def test_allocations_never_collide_and_stay_in_range(case, data):
    cidr, services = case
    alloc = allocate(services, (cidr,))
    check_allocation(cidr, services, alloc)
    assert addresses(allocate(services, (cidr,))) == addresses(alloc)  # deterministic
    # a reload with some services gone and the rest reordered keeps every invariant
    kept = data.draw(st.permutations(services))[: data.draw(st.integers(0, len(services)))]
    check_allocation(cidr, kept, allocate(kept, (cidr,), previous=alloc))
