"""Change trackers: what changed since the last sync, per service (kube-proxy's
``ServiceChangeTracker`` / ``EndpointsChangeTracker``).

A tracker remembers, per service, the value last synced and the latest value seen. When
the latest equals the synced one again (A -> B -> A between two syncs), the entry is
dropped: flapping costs nothing. ``checkout`` hands the sync the services that really
changed and makes the latest values the synced ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from .model import EndpointInfo, Key, ServicePortInfo, ServicePortName

V = TypeVar("V", bound=Mapping)


class ChangeTracker(Generic[V]):
    """Pending per-service changes of one kind of value (service ports or endpoints)."""

    def __init__(self) -> None:
        self.synced: dict[Key, V] = {}  # value as of the last checkout
        self._pending: dict[Key, V] = {}

    def update(self, key: Key, current: V) -> bool:
        """Record the latest value for a service ({} = gone). Returns True if anything
        is pending. A->B->A leaves nothing pending."""
        if current == self.synced.get(key, {}):
            self._pending.pop(key, None)
        else:
            self._pending[key] = current
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def checkout(self) -> dict[Key, tuple[V, V]]:
        """Take the pending changes: ``{key: (previous, current)}``; current becomes synced."""
        out = {}
        for key, current in self._pending.items():
            previous = self.synced.get(key) or {}
            if current:
                self.synced[key] = current
            else:
                self.synced.pop(key, None)
            out[key] = (previous, current)
        self._pending = {}
        return out


class ServiceChangeTracker(ChangeTracker[dict[ServicePortName, ServicePortInfo]]):
    """Service port changes, per service."""


class EndpointsChangeTracker(ChangeTracker[dict[ServicePortName, tuple[EndpointInfo, ...]]]):
    """Endpoint changes, per service."""


def apply_changes(flat: dict, changes: Mapping[Key, tuple[Mapping, Mapping]]) -> None:
    """Fold checked-out changes into a flat ``ServicePortName -> value`` map."""
    for previous, current in changes.values():
        for name in previous.keys() - current.keys():
            flat.pop(name, None)
        flat.update(current)
