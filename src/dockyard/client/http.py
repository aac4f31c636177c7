"""HTTP/1.1 to the Engine API over a unix socket or TCP (optionally TLS).

Written on the socket module rather than http.client: http.client pulls in the email
package to parse headers, which costs about 30 ms of start-up on every `dockyard` call,
three times what the whole docker CLI takes to answer. The subset of HTTP/1.1 the Engine
API needs is small: Content-Length and chunked bodies, bodies read until close, and
connections hijacked for attach and exec.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, Unsupported

# typing costs more to import than this module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The newest API version this client speaks; older daemons are met at their version.
API_VERSION = "1.45"
DEFAULT_HOST = "unix:///run/dockyard.sock"
_USER_AGENT = "Dockyard-Client/0.1.0 (linux)"


class DaemonUnreachable(DockyardError):
    """Nothing answers at the daemon's address."""

    def __init__(self, host: str) -> None:
        super().__init__(f"Cannot connect to the Dockyard daemon at {host}. Is the dockyard "
                         "daemon running? (start it with: dockyardd)")
        self.host = host


class ConnectFailed(DockyardError):
    """The daemon's address answers, but not with a usable connection (TLS, resets)."""


class APIError(DockyardError):
    """An error answer from the daemon that none of the specific classes covers."""


def error_from_response(status: int, message: str) -> DockyardError:
    """The DockyardError class matching an HTTP status, carrying the daemon's message;
    `status` on the error tells the daemon's refusals from the client's own failures."""
    base: type[DockyardError] = {400: InvalidArgument, 404: NotFound, 409: Conflict,
                                 501: Unsupported}.get(status, APIError)
    err = base(message)
    err.status = status  # type: ignore[attr-defined]
    return err


def is_api_error(exc: BaseException) -> bool:
    return isinstance(getattr(exc, "status", None), int)


@dataclass
class Host:
    url: str                # as the user gave it, normalised, for messages
    scheme: str             # "unix" or "tcp"
    path: str = ""          # unix socket path
    address: str = ""       # tcp host
    port: int = 0


def parse_host(text: str, tls: bool = False) -> Host:
    """A docker-style daemon address: unix:///path, tcp://host[:port], or a bare path."""
    text = text.strip()
    if text.startswith("/"):
        text = "unix://" + text
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme == "unix":
        if not rest:
            raise InvalidArgument(f"invalid bind address format: {text}")
        return Host(url=f"unix://{rest}", scheme="unix", path=rest)
    if scheme in ("tcp", "http", "https"):
        hostport = rest.split("/", 1)[0]
        default_port = 2376 if tls or scheme == "https" else 2375
        if hostport.startswith("["):
            addr, _, tail = hostport[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            addr, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        addr = addr or "127.0.0.1"
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise InvalidArgument(f"invalid bind address format: {text}") from None
        if not 0 < port < 65536:
            raise InvalidArgument(f"invalid bind address format: {text}")
        return Host(url=f"tcp://{hostport if port_text else f'{addr}:{port}'}", scheme="tcp",
                    address=addr, port=port)
    raise InvalidArgument(f"invalid bind address format: {text}")


@dataclass
class TLSConfig:
    verify: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> Any:
        import ssl

        if self.verify:
            ctx = ssl.create_default_context(cafile=self.ca)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


class Response:
    """A response whose body is read lazily: whole, as chunks, or as JSON lines."""

    def __init__(self, sock: socket.socket, reader: Any, status: int, reason: str,
                 headers: dict[str, str], method: str) -> None:
        self.sock = sock
        self.reader = reader
        self.status = status
        self.reason = reason
        self.headers = headers
        self._method = method
        self._done = False
        # A hijacked connection (attach, exec start) carries a raw stream until close.
        self.hijacked = status == 101 or headers.get("content-type", "").startswith(
            "application/vnd.docker.")

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def _no_body(self) -> bool:
        if self.hijacked:
            return False
        return self._method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200

    def iter_raw(self, size: int = 65536) -> Iterator[bytes]:
        """The body as it arrives, de-chunked."""
        if self._done or self._no_body():
            self._done = True
            return
        te = self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        if self.hijacked and self.status in (101, 200) and self._method == "POST":
            te, length = "", None
        if "chunked" in te:
            while True:
                line = self.reader.readline()
                if not line:
                    break
                n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if n == 0:
                    # Trailers, then the blank line that ends the message.
                    while self.reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = n
                while left:
                    data = self.reader.read1(min(left, size))
                    if not data:
                        self._done = True
                        return
                    left -= len(data)
                    yield data
                self.reader.readline()
        elif length is not None:
            left = int(length)
            while left:
                data = self.reader.read1(min(left, size))
                if not data:
                    break
                left -= len(data)
                yield data
        else:
            while True:
                data = self.reader.read1(size)
                if not data:
                    break
                yield data
        self._done = True

    def read(self) -> bytes:
        return b"".join(self.iter_raw())

    def json(self) -> Any:
        data = self.read()
        return json.loads(data) if data.strip() else None

    def iter_json(self) -> Iterator[Any]:
        """A stream of JSON documents, one a line (pull, push, load, events)."""
        buf = b""
        for data in self.iter_raw():
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)

    def iter_frames(self, tty: bool | None = None) -> Iterator[tuple[int, bytes]]:
        """stdcopy: (stream, data) for a multiplexed stream, (1, data) for a raw one (a
        container with a TTY); without `tty` the content type decides."""
        if tty is None:
            tty = "multiplexed" not in self.headers.get("content-type", "")
        if tty:
            for data in self.iter_raw():
                yield 1, data
            return
        buf = b""
        for data in self.iter_raw():
            buf += data
            while len(buf) >= 8:
                size = int.from_bytes(buf[4:8], "big")
                if len(buf) < 8 + size:
                    break
                yield buf[0], buf[8:8 + size]
                buf = buf[8 + size:]

    def close_write(self) -> None:
        """Half-close a hijacked connection: no more stdin."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class HTTPClient:
    """Requests to one daemon; the API version is negotiated on the first request."""

    def __init__(self, host: str | None = None, tls: TLSConfig | None = None,
                 version: str | None = None, timeout: float | None = None) -> None:
        self.tls = tls
        self.host = parse_host(host or DEFAULT_HOST, tls is not None)
        self.version = version or os.environ.get("DOCKYARD_API_VERSION") or None
        self.timeout = timeout
        self.server_headers: dict[str, str] = {}

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        h = self.host
        try:
            if h.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(h.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((h.address, h.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            raise DaemonUnreachable(h.url) from None
        if self.tls is not None:
            try:
                sock = self.tls.context().wrap_socket(sock, server_hostname=h.address or None)
            except (OSError, ValueError) as exc:
                sock.close()
                raise ConnectFailed(f"error during connect: {exc}") from None
        return sock

    def negotiate(self) -> str:
        """The API version to speak: the daemon's, capped at ours (as docker's client)."""
        if self.version is None:
            with self.request("GET", "/_ping", versioned=False, check=False) as r:
                r.read()
                server = r.headers.get("api-version", "")
            self.version = API_VERSION
            if server and _vtuple(server) < _vtuple(API_VERSION):
                self.version = server
        return self.version

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, *,
                body: bytes | Iterator[bytes] | None = None, json_body: Any = None,
                headers: dict[str, str] | None = None, versioned: bool = True,
                check: bool = True, upgrade: bool = False) -> Response:
        if versioned:
            path = f"/v{self.negotiate()}{path}"
        if params:
            query = {k: _param(v) for k, v in params.items() if v is not None}
            if query:
                path += "?" + urlencode(query)
        hdrs = {"Host": "api.moby.localhost" if self.host.scheme == "unix"
                else f"{self.host.address}:{self.host.port}",
                "User-Agent": _USER_AGENT}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if upgrade:
            hdrs["Connection"] = "Upgrade"
            hdrs["Upgrade"] = "tcp"
        else:
            hdrs["Connection"] = "close"
        hdrs.update(headers or {})
        chunked = body is not None and not isinstance(body, bytes)
        if isinstance(body, bytes):
            hdrs["Content-Length"] = str(len(body))
        elif chunked:
            hdrs["Transfer-Encoding"] = "chunked"
        elif method in ("POST", "PUT"):
            hdrs["Content-Length"] = "0"
        head = f"{method} {_escape(path, b'/?&=%:@+,;')} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        sock = self._connect()
        try:
            sock.sendall(head.encode("latin-1"))
            if isinstance(body, bytes):
                sock.sendall(body)
            elif body is not None:
                for chunk in _BodyChunks(body):
                    if chunk:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.sendall(b"0\r\n\r\n")
            reader = sock.makefile("rb")
            status, reason, rheaders = _read_head(reader)
        except _BodyError as exc:
            sock.close()
            raise exc.error from None
        except OSError as exc:
            sock.close()
            raise ConnectFailed(f"error during connect: {exc}") from None
        except BaseException:
            sock.close()
            raise
        resp = Response(sock, reader, status, reason, rheaders, method)
        self.server_headers = rheaders
        if check and status >= 400:
            with resp:
                raise error_from_response(status, _message(resp.read(), status, reason))
        return resp

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        with self.request("GET", path, params) as r:
            return r.json()

    def post_json(self, path: str, params: dict[str, Any] | None = None,
                  json_body: Any = None) -> Any:
        with self.request("POST", path, params, json_body=json_body) as r:
            return r.json()


class _BodyError(Exception):
    """An error of the caller's body iterator (a file it reads), kept apart from the
    connection's own errors."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _BodyChunks:
    def __init__(self, body: Iterator[bytes]) -> None:
        self.it = iter(body)

    def __iter__(self) -> _BodyChunks:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.it)
        except StopIteration:
            raise
        except Exception as exc:
            raise _BodyError(exc) from exc


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _escape(text: str, safe: bytes = b"") -> str:
    # urllib.parse would cost ~4 ms of start-up (it imports ipaddress) for this.
    return "".join(chr(b) if b in _UNRESERVED or b in safe else f"%{b:02X}"
                   for b in text.encode("utf-8"))


def urlencode(pairs: dict[str, str] | list[tuple[str, str]]) -> str:
    """A query string as Go's url.Values.Encode writes it (space as %20 is fine too)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return "&".join(f"{_escape(k)}={_escape(v)}" for k, v in items)


def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _read_head(reader: Any) -> tuple[int, str, dict[str, str]]:
    line = reader.readline(65537)
    if not line:
        raise ConnectionResetError("the daemon closed the connection without an answer")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ConnectionError(f"malformed HTTP response {line[:40]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    while True:
        h = reader.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, reason, headers


def _message(body: bytes, status: int, reason: str) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return text or f"{status} {reason}".strip()
