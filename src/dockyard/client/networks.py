"""Network endpoints."""

from __future__ import annotations


from dockyard.client.http import HTTPClient

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Networks:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return self.http.get_json("/networks", {"filters": filters or None})

    def inspect_raw(self, network: str) -> bytes:
        with self.http.request("GET", f"/networks/{network}") as r:
            return r.read()

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.http.post_json("/networks/create", json_body=config)

    def remove(self, network: str) -> None:
        with self.http.request("DELETE", f"/networks/{network}") as r:
            r.read()

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.post_json("/networks/prune", {"filters": filters or None})
