"""Exec instances: create, start (hijacked or detached), inspect, resize."""

from __future__ import annotations


from dockyard.client.http import HTTPClient, Response

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Execs:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def create(self, container: str, config: dict[str, Any]) -> str:
        return self.http.post_json(f"/containers/{container}/exec", json_body=config)["Id"]

    def start(self, exec_id: str, detach: bool = False, tty: bool = False,
              console_size: list[int] | None = None) -> Response | None:
        """Detached: None once started. Attached: the hijacked stream, to read with
        Response.iter_frames(tty) and to write stdin on. CONSOLE_SIZE is the TTY's
        initial [height, width]."""
        body: dict[str, Any] = {"Detach": detach, "Tty": tty}
        if console_size is not None:
            body["ConsoleSize"] = console_size
        if detach:
            with self.http.request("POST", f"/exec/{exec_id}/start", json_body=body) as r:
                r.read()
            return None
        return self.http.request("POST", f"/exec/{exec_id}/start", json_body=body,
                                 upgrade=True)

    def inspect(self, exec_id: str) -> dict[str, Any]:
        return self.http.get_json(f"/exec/{exec_id}/json")

    def resize(self, exec_id: str, height: int, width: int) -> None:
        with self.http.request("POST", f"/exec/{exec_id}/resize", {"h": height, "w": width}) as r:
            r.read()
