"""JSON message streams as dockerd writes them (pull, push, load, import, events).

dockerd only commits to a 200 once something was written: an error before that is
an ordinary HTTP error (`docker pull nosuch` gets a 404), an error after it is an
`{"errorDetail": ..., "error": ...}` line in the stream. JSONStream does the same:
it holds the response back until `commit()` or the first line written after it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(n: float) -> str:
    """go-units HumanSize: decimal units, four significant digits."""
    i = 0
    while n >= 1000 and i < len(_UNITS) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.4g}{_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    """The `progress` text dockerd adds to a message with progressDetail."""
    if total <= 0:
        return f"{human_size(current):>8}" if current else ""
    pct = min(50, int(current / total * 100) // 2)
    bar = f"[{'=' * pct}>{' ' * (50 - pct)}] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


def with_progress(event: dict[str, Any]) -> dict[str, Any]:
    """EVENT with the `progress` string when its detail has numbers, keys in dockerd's order."""
    out: dict[str, Any] = {"status": event.get("status", "")}
    detail = event.get("progressDetail")
    if detail is not None:
        out["progressDetail"] = detail
        cur, tot = detail.get("current"), detail.get("total")
        if isinstance(cur, int):
            text = progress_bar(cur, tot if isinstance(tot, int) else 0)
            if text:
                out["progress"] = text
    if event.get("id"):
        out["id"] = event["id"]
    for k, v in event.items():
        if k not in out and k not in ("status", "progressDetail", "id"):
            out[k] = v
    return out


def error_message(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


class JSONStream:
    """A streamed application/json response of one JSON document per line."""

    def __init__(self, request: web.Request, content_type: str = "application/json") -> None:
        self.request = request
        self.response = web.StreamResponse(status=200)
        self.response.content_type = content_type
        self.committed = False
        self._pending: list[bytes] = []

    async def commit(self) -> None:
        if not self.committed:
            self.committed = True
            await self.response.prepare(self.request)
            for line in self._pending:
                await self.response.write(line)
            self._pending.clear()

    async def send(self, doc: dict[str, Any], *, hold: bool = False) -> None:
        """Write DOC; with HOLD, keep it back until the stream commits."""
        line = json.dumps(doc).encode() + b"\r\n"
        if not self.committed and hold:
            self._pending.append(line)
            return
        await self.commit()
        await self.response.write(line)

    async def fail(self, message: str) -> None:
        await self.send(error_message(message))

    async def finish(self) -> web.StreamResponse:
        await self.commit()
        await self.response.write_eof()
        return self.response
