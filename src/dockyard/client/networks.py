"""Network endpoints."""

from __future__ import annotations

from dockyard.client.objects import NamedObjects


class Networks(NamedObjects):
    """list() answers the networks' documents."""

    path = "/networks"

    def remove(self, network: str) -> None:
        self._remove(network)
