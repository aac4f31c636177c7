"""What networks and volumes share in the Engine API: objects named under one path,
listed, inspected, created, removed and pruned the same way."""

from __future__ import annotations

from dockyard.client.http import HTTPClient

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class NamedObjects:
    """The endpoints under PATH ("/networks", "/volumes")."""

    path = ""

    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, filters: dict[str, list[str]] | None = None) -> Any:
        return self.http.get_json(self.path, {"filters": filters or None})

    def inspect_raw(self, name: str) -> bytes:
        with self.http.request("GET", f"{self.path}/{name}") as r:
            return r.read()

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.http.post_json(f"{self.path}/create", json_body=config)

    def _remove(self, name: str, params: dict[str, Any] | None = None) -> None:
        with self.http.request("DELETE", f"{self.path}/{name}", params) as r:
            r.read()

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.post_json(f"{self.path}/prune", {"filters": filters or None})
