"""The forwarding flags of ``svcdns serve``: what they parse to, and the errors a user
sees for values that cannot work."""

from __future__ import annotations

import pytest

from svcdns.cli import build_parser, serve_config
from svcdns.config import PRIVATE_NETWORKS, ConfigError
from svcdns.dns.upstream import ResolvConf, parse_resolv_conf


def config(*argv: str):
    return serve_config(build_parser().parse_args(["serve", *argv]))


RESOLV_CONF_CASES = [
    ("plain", "nameserver 10.0.0.2\nnameserver 10.0.0.3\n", ResolvConf((("10.0.0.2", 53), ("10.0.0.3", 53)), ())),
    ("search and options", "search corp.example.com example.com\noptions ndots:2 timeout:1\nnameserver 192.168.1.1\n",
     ResolvConf((("192.168.1.1", 53),), ("corp.example.com", "example.com"))),
    ("comments; last search line wins", "# hi\ndomain a.example\nsearch b.example. ; c\nnameserver ::1 # local\n",
     ResolvConf((("::1", 53),), ("b.example",))),
    ("nothing useful", "options edns0\n", ResolvConf((), ())),
]


@pytest.mark.parametrize("text,want", [c[1:] for c in RESOLV_CONF_CASES], ids=[c[0] for c in RESOLV_CONF_CASES])
def test_parse_resolv_conf(text, want):
    assert parse_resolv_conf(text) == want


def test_upstream_addresses_and_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search corp.example\nnameserver 127.0.0.53\nnameserver ::1\n")
    cfg = config("--upstream", "127.0.0.1:5300", "--upstream", str(conf), "--upstream", "[::1]:54")
    assert cfg.upstreams == (("127.0.0.1", 5300), ("127.0.0.53", 53), ("::1", 53), ("::1", 54))
    assert cfg.search == ("corp.example",)


def test_defaults():
    cfg = config()
    assert cfg.upstreams == () and cfg.stub_domains == ()
    assert (cfg.cache_size, cfg.cache_max_ttl, cfg.serve_stale, cfg.autopath) == (10000, 3600, 3600, True)
    assert cfg.allow_recursion == PRIVATE_NETWORKS and cfg.allow_transfer == ()


def test_forwarding_flags():
    cfg = config(
        "--stub-domain", "corp.internal=10.1.0.1,10.1.0.2:5353", "--stub-domain", "Acme.Local.=127.0.0.1",
        "--cache-size", "0", "--cache-max-ttl", "60", "--serve-stale", "0", "--no-autopath",
        "--allow-recursion", "10.0.0.0/8,127.0.0.1", "--allow-transfer", "192.0.2.0/24",
        "--upstream-timeout", "0.5", "--query-timeout", "3",
    )
    assert cfg.stub_domains == (("corp.internal", (("10.1.0.1", 53), ("10.1.0.2", 5353))), ("acme.local", (("127.0.0.1", 53),)))
    assert (cfg.cache_size, cfg.cache_max_ttl, cfg.serve_stale, cfg.autopath) == (0, 60, 0, False)
    assert cfg.allow_recursion == ("10.0.0.0/8", "127.0.0.1/32")
    assert cfg.allow_transfer == ("192.0.2.0/24",)
    assert (cfg.upstream_timeout, cfg.query_timeout) == (0.5, 3.0)


ERRORS = [
    ("missing resolv.conf", ["--upstream", "/nonexistent/resolv.conf"], "--upstream: cannot read /nonexistent/resolv.conf"),
    ("not an address", ["--upstream", "dns.google"], "--upstream: 'dns.google' is not an IP address"),
    ("stub without servers", ["--stub-domain", "corp.internal"], "--stub-domain: 'corp.internal' is not DOMAIN=ADDR"),
    ("stub inside the cluster zone", ["--stub-domain", "x.cluster.local=10.0.0.1"], "x.cluster.local is inside a cluster zone"),
    ("bad CIDR", ["--allow-recursion", "10.0.0.0/33"], "--allow-recursion: '10.0.0.0/33' is not an address or CIDR"),
]


@pytest.mark.parametrize("argv,message", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_errors_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(*argv)


def test_resolv_conf_without_nameservers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.com\n")
    with pytest.raises(ConfigError, match=f"--upstream: {conf} has no nameserver lines"):
        config("--upstream", str(conf))
