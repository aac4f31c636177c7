"""/_ping, /version, /info, /events, /system/df."""

from __future__ import annotations

from collections.abc import Iterator

from dockyard.client.http import HTTPClient

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class System:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def ping(self) -> dict[str, str]:
        """The daemon's answer headers (Api-Version, Ostype, ...)."""
        with self.http.request("GET", "/_ping", versioned=False) as r:
            r.read()
            return r.headers

    def version(self) -> dict[str, Any]:
        return self.http.get_json("/version")

    def info(self) -> dict[str, Any]:
        return self.http.get_json("/info")

    def df(self) -> dict[str, Any]:
        return self.http.get_json("/system/df")

    def build_prune(self, all: bool = False,
                    filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.post_json("/build/prune", {"all": all or None,
                                                    "filters": filters or None})

    def events(self, since: str | None = None, until: str | None = None,
               filters: dict[str, list[str]] | None = None) -> Iterator[dict[str, Any]]:
        with self.http.request("GET", "/events", {"since": since, "until": until,
                                                  "filters": filters or None}) as r:
            yield from r.iter_json()
