"""Image endpoints."""

from __future__ import annotations

from collections.abc import Iterator

from dockyard.client.http import HTTPClient, Response, urlencode

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Images:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, all: bool = False, digests: bool = False,
             filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return self.http.get_json("/images/json", {"all": all or None,
                                                   "digests": digests or None,
                                                   "filters": filters or None})

    def inspect(self, name: str) -> dict[str, Any]:
        return self.http.get_json(f"/images/{name}/json")

    def inspect_raw(self, name: str) -> bytes:
        with self.http.request("GET", f"/images/{name}/json") as r:
            return r.read()

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.http.get_json(f"/images/{name}/history")

    def pull(self, image: str, tag: str | None = None, platform: str | None = None,
             auth: str | None = None) -> Iterator[dict[str, Any]]:
        """The daemon's progress messages; an {"error": ...} message ends a failed pull."""
        headers = {"X-Registry-Auth": auth} if auth else None
        with self.http.request("POST", "/images/create",
                               {"fromImage": image, "tag": tag or None,
                                "platform": platform or None}, headers=headers) as r:
            yield from r.iter_json()

    def push(self, name: str, tag: str | None = None,
             auth: str | None = None) -> Iterator[dict[str, Any]]:
        # dockerd refuses a push without the header, even for an anonymous registry.
        with self.http.request("POST", f"/images/{name}/push", {"tag": tag or None},
                               headers={"X-Registry-Auth": auth or "e30="}) as r:
            yield from r.iter_json()

    def tag(self, source: str, repo: str, tag: str | None = None) -> None:
        with self.http.request("POST", f"/images/{source}/tag",
                               {"repo": repo, "tag": tag or None}) as r:
            r.read()

    def remove(self, name: str, force: bool = False, noprune: bool = False) -> list[dict[str, Any]]:
        with self.http.request("DELETE", f"/images/{name}", {"force": force or None,
                                                           "noprune": noprune or None}) as r:
            return r.json() or []

    def save(self, names: list[str]) -> Response:
        """The tar stream of the images, to read with Response.iter_raw()."""
        return self.http.request("GET", "/images/get?" + urlencode([("names", n) for n in names]))

    def load(self, data: Iterator[bytes], quiet: bool = False) -> Iterator[dict[str, Any]]:
        with self.http.request("POST", "/images/load", {"quiet": quiet or None}, body=data,
                               headers={"Content-Type": "application/x-tar"}) as r:
            yield from r.iter_json()

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.post_json("/images/prune", {"filters": filters or None})

    def import_image(self, source: str, data: Iterator[bytes] | None, repo: str | None = None,
                     message: str | None = None, changes: list[str] | None = None,
                     platform: str | None = None) -> Iterator[dict[str, Any]]:
        """POST /images/create?fromSrc=SOURCE: "-" with the archive as DATA, or a URL the
        daemon fetches; the daemon answers the new image's id as a status message."""
        query = [("fromSrc", source)]
        for key, value in (("repo", repo), ("message", message),
                           ("platform", platform.lower() if platform else None)):
            if value:
                query.append((key, value))
        query += [("changes", c) for c in changes or []]
        headers = {"Content-Type": "application/x-tar"} if data is not None else None
        with self.http.request("POST", "/images/create?" + urlencode(query), body=data,
                               headers=headers) as r:
            yield from r.iter_json()

    def auth(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.http.post_json("/auth", json_body=config)
