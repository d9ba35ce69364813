"""ClusterIP allocation for Services from manifests, done the way the API server does it.

A Service applied to a real cluster without ``spec.clusterIP`` gets one from
``--service-cluster-ip-range``; manifests on disk have nobody to do that, so svcdns does.
The rules follow kube-apiserver's ipallocator:

- Usable addresses: IPv4 drops the network and broadcast addresses, IPv6 only the network
  (subnet-router anycast) address.
- The first usable address belongs to ``default/kubernetes``; it is held back even when no
  such service exists, and given to it when it asks for none.
- KEP-3070 band split: the lowest ``min(max(16, size/16), 256)`` addresses (none for
  ranges of 16 addresses or fewer) are the *static* band, kept for addresses written by
  hand; dynamic allocation uses the upper band and falls back to the lower one only when
  the upper band is full.

Unlike the API server (random start, state in etcd), the choice is a pure function of the
service's namespace/name: a hash picks the start, linear probing resolves collisions. The
same manifests therefore give the same addresses after a restart, and
:class:`ClusterIPAllocator` keeps addresses stable across reloads of a running server.

Requested addresses are validated (outside the range, network/broadcast, the reserved
address, taken by another service); on a clash the older service keeps the address
(creationTimestamp, then manifest order) and the other is refused, naming both.

Wiring: any command that loads manifests passes the allocator as the source's hook,
``ManifestSource(paths, state, services_hook=ClusterIPAllocator(cidrs))``, with
``cidrs`` from ``--service-cluster-ip-range`` (``cli.add_service_cidr_flag``). A live
API source needs none: the API server has allocated already.
"""

from .allocator import (
    Allocation,
    AllocationError,
    Assignment,
    ClusterIPAllocator,
    Usage,
    allocate,
    wanted_families,
)
from .ranges import FLAG, KUBERNETES, RangeError, ServiceCIDR, family_name, parse_service_cidrs

__all__ = [
    "FLAG",
    "KUBERNETES",
    "Allocation",
    "AllocationError",
    "Assignment",
    "ClusterIPAllocator",
    "RangeError",
    "ServiceCIDR",
    "Usage",
    "allocate",
    "family_name",
    "parse_service_cidrs",
    "wanted_families",
]
