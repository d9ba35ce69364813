#!/usr/bin/env python3
"""Check that two DNS servers give the same answers for a sample of a dnsperf query file.

    bench/compare_answers.py QUERIES PORT_A PORT_B [--sample 300]

Compares rcode, answer records and additional records (sorted; TTLs kept) and the type of
the authority records (SOA serials differ by design). Exits 1 and prints the differences
if any answer disagrees. Used by vs_knot.sh before it measures anything."""

from __future__ import annotations

import argparse
import random
import sys

import dns.message
import dns.query
import dns.rcode


def summary(reply: dns.message.Message) -> tuple:
    def texts(section):
        return sorted(f"{r.name} {r.ttl} {dns.rdatatype.to_text(r.rdtype)} {rd}".lower() for r in section for rd in r)

    return (dns.rcode.to_text(reply.rcode()), texts(reply.answer), sorted(dns.rdatatype.to_text(r.rdtype) for r in reply.authority), texts(reply.additional))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("queries")
    parser.add_argument("port_a", type=int)
    parser.add_argument("port_b", type=int)
    parser.add_argument("--sample", type=int, default=300)
    args = parser.parse_args()
    lines = [ln.split() for ln in open(args.queries) if ln.strip()]
    sample = random.Random(1).sample(lines, min(args.sample, len(lines)))
    bad = 0
    for name, qtype in sample:
        q = dns.message.make_query(name, qtype)
        a = summary(dns.query.tcp(q, "127.0.0.1", port=args.port_a, timeout=5))
        b = summary(dns.query.tcp(q, "127.0.0.1", port=args.port_b, timeout=5))
        if a != b:
            bad += 1
            if bad <= 5:
                print(f"DIFFERENT {name} {qtype}:\n  A: {a}\n  B: {b}", file=sys.stderr)
    print(f"{len(sample) - bad} of {len(sample)} sampled answers agree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
