"""Volume endpoints."""

from __future__ import annotations


from dockyard.client.http import HTTPClient

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Volumes:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.get_json("/volumes", {"filters": filters or None})

    def inspect_raw(self, name: str) -> bytes:
        with self.http.request("GET", f"/volumes/{name}") as r:
            return r.read()

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.http.post_json("/volumes/create", json_body=config)

    def remove(self, name: str, force: bool = False) -> None:
        with self.http.request("DELETE", f"/volumes/{name}", {"force": force or None}) as r:
            r.read()

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.post_json("/volumes/prune", {"filters": filters or None})
