"""The wire formats between dockyardd (MonitorClient) and the container monitor.

Control socket (EXEC_ROOT/monitor.sock, unix SOCK_STREAM): one JSON object per line each
way. A request is {"op": NAME, ...arguments}; its answer is {"ok": true, ...results} or
{"ok": false, "error": {"kind": CLASS, "message": TEXT}}, CLASS being a DockyardError
subclass name that the client raises again. A connection answers its requests in order;
`wait`, `attach` and `exec` are best given a connection of their own (the client does):
`wait` holds its connection until the container exits, `attach`/`exec` hand over a
socket with SCM_RIGHTS in their answer.

Attach stream (the socket handed over, AF_UNIX SOCK_SEQPACKET, so message boundaries
are kept and no length prefix is needed): every message is one stream-id byte then the
payload, with Docker's stream ids:
  monitor -> client: 1 = stdout (all of a TTY's output), 2 = stderr;
  client -> monitor: 0 = stdin data; a message that is only the byte 0 closes the
  container's stdin (EOF; ignored for a TTY, whose stdin is the terminal).
The monitor closes its end when the process has exited and its output is drained, so the
client reads end-of-file; the client closing its end detaches.
"""

from __future__ import annotations

import json
from typing import Any

from dockyard import errors

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
MAX_MESSAGE = 32 * 1024  # an attach message's payload, well under a socket buffer

_KINDS: dict[str, type[errors.DockyardError]] = {
    c.__name__: c for c in (errors.DockyardError, errors.InvalidArgument, errors.NotFound,
                            errors.Conflict, errors.Unsupported, errors.SystemFailure)
}


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    msg = json.loads(line)
    if not isinstance(msg, dict):
        raise ValueError("a message must be a JSON object")
    return msg


def error_answer(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.DockyardError):
        kind = type(exc).__name__ if type(exc).__name__ in _KINDS else "DockyardError"
        return {"ok": False, "error": {"kind": kind, "message": str(exc)}}
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename:
            text = f"{text}: {exc.filename}"
        return {"ok": False, "error": {"kind": "SystemFailure", "message": text}}
    return {"ok": False, "error": {"kind": "SystemFailure", "message": f"{type(exc).__name__}: {exc}"}}


def raise_error(answer: dict[str, Any]) -> None:
    err = answer.get("error") or {}
    raise _KINDS.get(err.get("kind", ""), errors.SystemFailure)(err.get("message", "monitor error"))
