"""Client access lists (``--allow-recursion``, ``--allow-transfer``), answered from a
per-address memo so the query hot path pays a dictionary lookup, not a CIDR walk."""

from __future__ import annotations

import ipaddress
from typing import Iterable


class AccessList:
    def __init__(self, networks: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(n) for n in networks)
        self._memo: dict[str, bool] = {}

    def __call__(self, client: str) -> bool:
        ok = self._memo.get(client)
        if ok is None:
            ok = self._check(client)
            if len(self._memo) > 65536:  # a scan from many addresses must not grow us forever
                self._memo.clear()
            self._memo[client] = ok
        return ok

    def _check(self, client: str) -> bool:
        try:
            ip = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:  # a v4 client on a dual-stack socket
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)
