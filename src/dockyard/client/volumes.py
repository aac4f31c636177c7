"""Volume endpoints."""

from __future__ import annotations

from dockyard.client.objects import NamedObjects


class Volumes(NamedObjects):
    """list() answers {"Volumes": [...], "Warnings": [...]}."""

    path = "/volumes"

    def remove(self, name: str, force: bool = False) -> None:
        self._remove(name, {"force": force or None})
