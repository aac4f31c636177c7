"""Container endpoints."""

from __future__ import annotations

from collections.abc import Iterator

from dockyard.client.http import HTTPClient, Response, urlencode

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Containers:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def _post(self, path: str, params: dict[str, Any] | None = None) -> int:
        with self.http.request("POST", path, params) as r:
            r.read()
            return r.status

    def list(self, all: bool = False, limit: int | None = None, size: bool = False,
             filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return self.http.get_json("/containers/json", {
            "all": all or None, "limit": limit if limit and limit > 0 else None,
            "size": size or None, "filters": filters or None})

    def inspect(self, container: str, size: bool = False) -> dict[str, Any]:
        return self.http.get_json(f"/containers/{container}/json", {"size": size or None})

    def inspect_raw(self, container: str, size: bool = False) -> bytes:
        """The daemon's JSON as sent, for output that keeps its order and escapes."""
        with self.http.request("GET", f"/containers/{container}/json",
                               {"size": size or None}) as r:
            return r.read()

    def create(self, config: dict[str, Any], name: str | None = None,
               platform: str | None = None) -> dict[str, Any]:
        return self.http.post_json("/containers/create",
                                   {"name": name or None, "platform": platform or None},
                                   json_body=config)

    def start(self, container: str) -> bool:
        """False when the container was running already (304)."""
        return self._post(f"/containers/{container}/start") != 304

    def stop(self, container: str, timeout: int | None = None,
             signal: str | None = None) -> None:
        self._post(f"/containers/{container}/stop", {"t": timeout, "signal": signal or None})

    def restart(self, container: str, timeout: int | None = None,
                signal: str | None = None) -> None:
        self._post(f"/containers/{container}/restart", {"t": timeout, "signal": signal or None})

    def kill(self, container: str, signal: str | None = None) -> None:
        self._post(f"/containers/{container}/kill", {"signal": signal or None})

    def remove(self, container: str, force: bool = False, volumes: bool = False,
               link: bool = False) -> None:
        with self.http.request("DELETE", f"/containers/{container}",
                               {"force": force or None, "v": volumes or None,
                                "link": link or None}) as r:
            r.read()

    def pause(self, container: str) -> None:
        self._post(f"/containers/{container}/pause")

    def unpause(self, container: str) -> None:
        self._post(f"/containers/{container}/unpause")

    def rename(self, container: str, name: str) -> None:
        self._post(f"/containers/{container}/rename", {"name": name})

    def wait_request(self, container: str, condition: str | None = None) -> Response:
        """The wait request, sent: the daemon answers its headers at once and the body
        when the condition is met, so a caller can start the container in between."""
        return self.http.request("POST", f"/containers/{container}/wait",
                                 {"condition": condition or None})

    def wait(self, container: str, condition: str | None = None) -> dict[str, Any]:
        with self.wait_request(container, condition) as r:
            return r.json()

    def attach(self, container: str, stdin: bool = False, stdout: bool = True,
               stderr: bool = True, stream: bool = True, logs: bool = False,
               detach_keys: str | None = None) -> Response:
        """The hijacked connection: Response.iter_frames(tty) reads the output."""
        return self.http.request("POST", f"/containers/{container}/attach", {
            "stdin": stdin, "stdout": stdout, "stderr": stderr, "stream": stream,
            "logs": logs or None, "detachKeys": detach_keys or None}, upgrade=True)

    def logs(self, container: str, stdout: bool = True, stderr: bool = True,
             follow: bool = False, since: str | None = None, until: str | None = None,
             timestamps: bool = False, tail: str | None = None,
             details: bool = False) -> Response:
        return self.http.request("GET", f"/containers/{container}/logs", {
            "stdout": stdout, "stderr": stderr, "follow": follow or None, "since": since,
            "until": until, "timestamps": timestamps or None, "tail": tail,
            "details": details or None})

    def resize(self, container: str, height: int, width: int) -> None:
        self._post(f"/containers/{container}/resize", {"h": height, "w": width})

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        return self.http.post_json("/containers/prune", {"filters": filters or None})

    def get_archive(self, container: str, path: str) -> Response:
        """A tar of PATH in the container; its stat is in stat_of(response)."""
        return self.http.request("GET", f"/containers/{container}/archive", {"path": path})

    def stat_path(self, container: str, path: str) -> dict[str, Any] | None:
        """The stat of PATH in the container (name, size, mode, mtime, linkTarget), or None
        when it does not exist."""
        from dockyard.errors import NotFound

        try:
            with self.http.request("HEAD", f"/containers/{container}/archive",
                                   {"path": path}) as r:
                return stat_of(r)
        except NotFound:
            return None

    def put_archive(self, container: str, path: str, data: Iterator[bytes],
                    no_overwrite_dir_non_dir: bool = True, copy_uid_gid: bool = False) -> None:
        with self.http.request("PUT", f"/containers/{container}/archive", {
                "path": path, "noOverwriteDirNonDir": no_overwrite_dir_non_dir,
                "copyUIDGID": copy_uid_gid or None},
                body=data, headers={"Content-Type": "application/x-tar"}) as r:
            r.read()

    def export(self, container: str) -> Response:
        """The container's filesystem as a tar stream, to read with Response.iter_raw()."""
        return self.http.request("GET", f"/containers/{container}/export")

    def commit(self, container: str, repo: str | None = None, tag: str | None = None,
               comment: str | None = None, author: str | None = None, pause: bool = True,
               changes: list[str] | None = None) -> dict[str, Any]:
        query = [("container", container), ("pause", "1" if pause else "0")]
        for key, value in (("repo", repo), ("tag", tag), ("comment", comment),
                           ("author", author)):
            if value:
                query.append((key, value))
        query += [("changes", c) for c in changes or []]
        with self.http.request("POST", "/commit?" + urlencode(query)) as r:
            return r.json()

    def update(self, container: str, config: dict[str, Any]) -> dict[str, Any]:
        return self.http.post_json(f"/containers/{container}/update", json_body=config)

    def changes(self, container: str) -> list[dict[str, Any]]:
        """The container's filesystem changes: [{"Path": ..., "Kind": 0|1|2}]."""
        return self.http.get_json(f"/containers/{container}/changes") or []

    def top(self, container: str, ps_args: str | None = None) -> dict[str, Any]:
        return self.http.get_json(f"/containers/{container}/top", {"ps_args": ps_args})

    def stats(self, container: str, stream: bool = False) -> Iterator[dict[str, Any]]:
        with self.http.request("GET", f"/containers/{container}/stats",
                               {"stream": stream}) as r:
            yield from r.iter_json()


def stat_of(resp: Response) -> dict[str, Any]:
    """The X-Docker-Container-Path-Stat header: base64 of JSON."""
    import base64
    import json

    raw = resp.headers.get("x-docker-container-path-stat", "")
    return json.loads(base64.b64decode(raw)) if raw else {}
