"""An OCI Distribution Spec v1.1 registry on aiohttp.

`make_app(root)` builds the aiohttp application; `serve()` runs it (the CLI's
`dockyard registry serve`); `RegistryThread` runs it in a background thread for tests
and for embedding. Behaviour follows the spec (opencontainers/distribution-spec
spec.md) and, where the spec leaves room, distribution's reference registry:

* `GET /v2/` says hello with `Docker-Distribution-API-Version: registry/2.0`, which
  every response carries.
* Blobs: `HEAD/GET/DELETE /v2/<name>/blobs/<digest>` with single-range reads (206).
* Uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or
  cross-repository `?mount=&from=`), `PATCH` (chunked or streamed), `PUT ?digest=`,
  `GET` (status), `DELETE` (cancel). Bytes go straight into a ContentStore ingest, so an
  upload survives a restart and resumes where it stopped.
* Manifests: `HEAD/GET/PUT/DELETE /v2/<name>/manifests/<tag-or-digest>`, stored byte for
  byte with the media type they were pushed as; PUT checks the references exist.
* `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n`, `last` and `Link`.
* `GET /v2/<name>/referrers/<digest>` (OCI 1.1), with `artifactType` filtering.

Errors are the spec's JSON bodies: `{"errors":[{"code":...,"message":...,"detail":...}]}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp
from aiohttp import web

from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, Unsupported
from dockyard.image.content import Writer
from dockyard.image.digest import ALGORITHMS, Digest
from dockyard.image.manifest import (INDEX_TYPES, MANIFEST_TYPES, NONDISTRIBUTABLE_TYPES,
                                     OCI_INDEX, Index, Manifest, parse_manifest)

from dockyard.distribution.auth import (Access, AuthChallenge, Authenticator, BasicAuth,
                                        Htpasswd, TokenAuth, TokenKey)
from dockyard.distribution.gc import purge_uploads
from dockyard.distribution.storage import (ManifestLink, RegistryStore, UploadSession,
                                           valid_name, valid_tag)

log = logging.getLogger(__name__)

API_VERSION = "registry/2.0"
MAX_MANIFEST_SIZE = 4 << 20  # the spec's "at least 4 megabytes"
CHUNK = 1 << 20
CATALOG_MAX = 1000           # entries per catalog page when the client does not ask
IDLE_WRITER_SECONDS = 600    # open ingests idle this long give back their descriptors
MAX_OPEN_UPLOADS = 256       # beyond this, the least recently used ingests are closed
UPLOAD_MAX_AGE = 7 * 24 * 3600  # distribution purges uploads a week old, so do we
GENERIC_TYPES = frozenset(("", "application/json", "application/octet-stream", "text/plain"))

# The spec's error codes with their usual messages (code-1 .. code-14).
MESSAGES = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "manifest references a manifest or blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown to registry",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "the operation is unsupported",
    "TOOMANYREQUESTS": "too many requests",
    # distribution's, for a bad `n`; the spec has no code for it
    "PAGINATION_NUMBER_INVALID": "invalid number of results requested",
}


class RegistryError(Exception):
    """One or more spec errors with the HTTP status to send them with."""

    def __init__(self, status: int, code: str, message: str | None = None, detail: Any = None,
                 *, headers: dict[str, str] | None = None,
                 more: list[tuple[str, str, Any]] | None = None) -> None:
        self.status = status
        self.errors = [(code, message or MESSAGES.get(code, code), detail), *(more or [])]
        self.headers = headers or {}
        super().__init__(self.errors[0][1])

    def response(self) -> web.Response:
        body = {"errors": [{"code": c, "message": m, **({"detail": d} if d is not None else {})}
                           for c, m, d in self.errors]}
        return web.json_response(body, status=self.status, headers=self.headers)


def _parse_digest(text: str | None) -> Digest:
    if not text:
        raise RegistryError(400, "DIGEST_INVALID", "digest missing")
    try:
        return Digest(text)
    except InvalidArgument as e:
        raise RegistryError(400, "DIGEST_INVALID", str(e), {"digest": text}) from None


def _range(offset: int) -> str:
    # distribution's form: "0-0" for an empty upload, else the last byte received.
    return f"0-{max(offset - 1, 0)}"


_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end) of a single-range `Range` header; None to send everything.

    Raises 416 for a syntactically valid range that misses the blob. Multiple ranges
    and malformed headers are ignored, as RFC 9110 allows.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if m[1]:
        start = int(m[1])
        end = int(m[2]) if m[2] else size - 1
        if m[2] and end < start:
            return None  # invalid, so ignored
        if start >= size:
            raise RegistryError(416, "SIZE_INVALID", "requested range not satisfiable",
                                headers={"Content-Range": f"bytes */{size}"})
        return start, min(end, size - 1)
    suffix = int(m[2])
    if suffix == 0 or size == 0:
        raise RegistryError(416, "SIZE_INVALID", "requested range not satisfiable",
                            headers={"Content-Range": f"bytes */{size}"})
    return max(0, size - suffix), size - 1


# (kind, pattern) in match order: uploads before blobs, as "blobs/uploads/" is also
# "blobs/<something>". Names are greedy, so a repository may itself contain a
# component called "blobs" or "manifests".
_ROUTES = [
    ("upload", re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<upload>[^/]*)$")),
    ("blob", re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$")),
    ("manifest", re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$")),
    ("tags", re.compile(r"^(?P<name>.+)/tags/list$")),
    ("referrers", re.compile(r"^(?P<name>.+)/referrers/(?P<digest>[^/]+)$")),
]
_METHODS = {
    "base": ("GET", "HEAD"),
    "catalog": ("GET",),
    "upload": ("POST", "PATCH", "PUT", "GET", "DELETE"),
    "blob": ("GET", "HEAD", "DELETE"),
    "manifest": ("GET", "HEAD", "PUT", "DELETE"),
    "tags": ("GET",),
    "referrers": ("GET",),
}


def _pagination(request: web.Request) -> tuple[int | None, str | None]:
    n_text = request.query.get("n")
    n = None
    if n_text is not None and n_text != "":
        try:
            n = int(n_text)
        except ValueError:
            n = -1
        if n < 0:
            raise RegistryError(400, "PAGINATION_NUMBER_INVALID", detail={"n": n_text})
    return n, request.query.get("last") or None


def _page(items: list[str], n: int | None, last: str | None, default: int | None,
          path: str) -> tuple[list[str], dict[str, str]]:
    """Entries after LAST, at most N of them, and the `Link` header for the next page."""
    if last is not None:
        key = last.encode()
        items = [i for i in items if i.encode() > key]
    limit = default if n is None else n
    if limit is None or len(items) <= limit:
        return items, {}
    page = items[:limit]
    if not page:
        return [], {}  # n=0: an empty list and, the spec says, no Link
    link = f'<{path}?n={limit}&last={quote(page[-1], safe="")}>; rel="next"'
    return page, {"Link": link}


@dataclass
class _Upload:
    writer: Writer
    used: float = field(default_factory=time.monotonic)


class Registry:
    """The request handlers and the state they share."""

    def __init__(self, root: str, *, auth: Authenticator | None = None,
                 delete_enabled: bool = True, max_manifest_size: int = MAX_MANIFEST_SIZE,
                 upload_max_age: float = UPLOAD_MAX_AGE,
                 housekeeping_interval: float = 300.0) -> None:
        self.store = RegistryStore(root)
        self.content = self.store.content
        self.auth = auth
        self.delete_enabled = delete_enabled
        self.max_manifest_size = max_manifest_size
        self.upload_max_age = upload_max_age
        self.housekeeping_interval = housekeeping_interval
        # Open ingests of live uploads: reopening one re-hashes everything received,
        # so a chunked push would be quadratic without them.
        self._uploads: dict[str, _Upload] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._housekeeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ plumbing

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            kind, params = self._route(request)
            if request.method not in _METHODS[kind]:
                raise RegistryError(405, "UNSUPPORTED", f"method {request.method} not allowed",
                                    headers={"Allow": ", ".join(_METHODS[kind])})
            name = params.get("name")
            if name is not None and not valid_name(name):
                raise RegistryError(400, "NAME_INVALID", detail={"name": name})
            if self.auth is not None:
                await self.auth.authorize(request, self._accesses(kind, request.method, name))
            method = "get" if request.method == "HEAD" else request.method.lower()
            handler: Callable[..., Awaitable[web.StreamResponse]] = getattr(
                self, f"_{kind}_{method}")
            return await handler(request, **params)
        except RegistryError as e:
            if e.status >= 500:
                log.error("%s %s: %s", request.method, request.path, e)
            return e.response()
        except AuthChallenge as e:
            headers = {"WWW-Authenticate": e.challenge} if e.challenge else {}
            return RegistryError(e.status, e.code, e.message, e.detail, headers=headers).response()
        except DockyardError as e:
            # A check below the handlers (storage) refused; its class carries the status.
            log.warning("%s %s: %s", request.method, request.path, e)
            code = "UNSUPPORTED" if e.http_status < 500 else "UNKNOWN"
            return RegistryError(e.http_status, code, str(e)).response()
        except (web.HTTPException, asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return RegistryError(500, "UNKNOWN", "internal server error").response()

    def _route(self, request: web.Request) -> tuple[str, dict[str, str]]:
        tail = request.match_info.get("tail", "")
        if tail == "":
            return "base", {}
        if tail == "_catalog":
            return "catalog", {}
        for kind, pattern in _ROUTES:
            m = pattern.match(tail)
            if m:
                return kind, m.groupdict()
        raise RegistryError(404, "UNSUPPORTED", "no such endpoint", {"path": request.path})

    def _accesses(self, kind: str, method: str, name: str | None) -> list[Access]:
        if kind == "base":
            return []
        if kind == "catalog":
            return [Access("registry", "catalog", frozenset({"*"}))]
        assert name is not None
        if method in ("GET", "HEAD"):
            actions = {"pull"}
        elif method == "DELETE" and kind != "upload":
            actions = {"delete"}
        else:
            # distribution asks for both on writes: a push reads back what it wrote
            actions = {"pull", "push"}
        return [Access("repository", name, frozenset(actions))]

    async def _may(self, request: web.Request, access: Access) -> bool:
        if self.auth is None:
            return True
        try:
            await self.auth.authorize(request, [access])
        except AuthChallenge:
            return False
        return True

    def _lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    @staticmethod
    async def _stream(request: web.Request, writer: Writer) -> int:
        received = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            writer.write(chunk)
            received += len(chunk)
        return received

    async def _read_manifest_body(self, request: web.Request) -> bytes:
        limit = self.max_manifest_size
        if request.content_length is not None and request.content_length > limit:
            raise RegistryError(413, "MANIFEST_INVALID", f"manifest over the {limit}-byte limit")
        parts, total = [], 0
        async for chunk in request.content.iter_chunked(CHUNK):
            total += len(chunk)
            if total > limit:
                raise RegistryError(413, "MANIFEST_INVALID",
                                    f"manifest over the {limit}-byte limit")
            parts.append(chunk)
        return b"".join(parts)

    # ------------------------------------------------------------------ base, catalog

    async def _base_get(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    async def _catalog_get(self, request: web.Request) -> web.StreamResponse:
        n, last = _pagination(request)
        repos, headers = _page(self.store.repositories(), n, last, CATALOG_MAX, "/v2/_catalog")
        return web.json_response({"repositories": repos}, headers=headers)

    # ------------------------------------------------------------------ blobs

    async def _blob_get(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        d = _parse_digest(digest)
        if not self.store.blob_linked(name, d):
            raise RegistryError(404, "BLOB_UNKNOWN", detail={"digest": str(d)})
        try:
            f = self.content.open(d)
        except NotFound:
            raise RegistryError(404, "BLOB_UNKNOWN", detail={"digest": str(d)}) from None
        with f:
            size = f.seek(0, 2)
            rng = _byte_range(request.headers.get("Range"), size)
            headers = {"Docker-Content-Digest": str(d), "Content-Type": "application/octet-stream",
                       "Accept-Ranges": "bytes", "ETag": f'"{d}"',
                       "Cache-Control": "max-age=31536000"}
            start, end = (0, size - 1) if rng is None else rng
            if rng is not None:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            resp = web.StreamResponse(status=200 if rng is None else 206, headers=headers)
            resp.content_length = end - start + 1
            await resp.prepare(request)
            if request.method == "HEAD":
                return resp
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    break  # the blob cannot shrink; a truncated file is disk damage
                await resp.write(chunk)
                remaining -= len(chunk)
            await resp.write_eof()
            return resp

    async def _blob_delete(self, request: web.Request, name: str,
                           digest: str) -> web.StreamResponse:
        if not self.delete_enabled:
            raise RegistryError(405, "UNSUPPORTED", "deletion is disabled")
        d = _parse_digest(digest)
        # Unlink only: the bytes may be linked elsewhere; gc() frees what nothing uses.
        if not self.store.unlink_blob(name, d):
            raise RegistryError(404, "BLOB_UNKNOWN", detail={"digest": str(d)})
        log.info("blob %s unlinked from %s", d, name)
        return web.Response(status=202, headers={"Content-Length": "0"})

    # ------------------------------------------------------------------ uploads

    def _upload_headers(self, session: UploadSession, offset: int) -> dict[str, str]:
        return {"Location": f"/v2/{session.repository}/blobs/uploads/{session.uuid}",
                "Range": _range(offset), "Docker-Upload-UUID": session.uuid,
                "Content-Length": "0"}

    def _created(self, name: str, d: Digest) -> web.Response:
        return web.Response(status=201, headers={
            "Location": f"/v2/{name}/blobs/{d}", "Docker-Content-Digest": str(d),
            "Content-Length": "0"})

    def _session(self, name: str, upload: str) -> UploadSession:
        session = self.store.session(upload)
        if session is None or session.repository != name:
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload})
        return session

    def _writer(self, session: UploadSession) -> Writer:
        cached = self._uploads.get(session.uuid)
        if cached is not None:
            cached.used = time.monotonic()
            return cached.writer
        try:
            writer = self.content.writer(session.ref)
        except Conflict:
            raise RegistryError(409, "BLOB_UPLOAD_INVALID",
                                "the upload is being written by another process") from None
        self._uploads[session.uuid] = _Upload(writer)
        if len(self._uploads) > MAX_OPEN_UPLOADS:
            # Many abandoned sessions must not exhaust descriptors: the oldest are closed
            # (their bytes stay, a later request reopens them).
            idle = sorted(self._uploads.items(), key=lambda kv: kv[1].used)
            for key, up in idle[:len(self._uploads) - MAX_OPEN_UPLOADS]:
                if key != session.uuid and not self._lock(key).locked():
                    up.writer.close()
                    del self._uploads[key]
                    self._locks.pop(key, None)
        return writer

    def _end_upload(self, session: UploadSession, *, abort: bool) -> None:
        cached = self._uploads.pop(session.uuid, None)
        self._locks.pop(session.uuid, None)
        if abort:
            writer = cached.writer if cached is not None else None
            if writer is None:
                try:
                    writer = self.content.writer(session.ref)
                except Conflict:
                    writer = None
            if writer is not None:
                writer.abort()
        self.store.remove_session(session.uuid)

    async def _upload_post(self, request: web.Request, name: str,
                           upload: str) -> web.StreamResponse:
        if upload:
            raise RegistryError(405, "UNSUPPORTED", "POST starts an upload; use PATCH or PUT")
        q = request.query
        if "mount" in q:
            mounted = await self._mount(request, name, q.get("mount", ""), q.get("from", ""))
            if mounted is not None:
                return mounted
        if "digest" in q:
            return await self._monolithic(request, name, _parse_digest(q.get("digest")))
        algorithm = q.get("digest-algorithm", "sha256")
        if algorithm not in ALGORITHMS:
            raise RegistryError(400, "UNSUPPORTED", f"digest algorithm {algorithm!r} unsupported",
                                {"algorithm": algorithm})
        session = self.store.new_session(name, algorithm)
        writer = self._writer(session)
        log.debug("upload %s started in %s", session.uuid, name)
        return web.Response(status=202, headers=self._upload_headers(session, writer.offset))

    async def _mount(self, request: web.Request, name: str, mount: str,
                     source: str) -> web.Response | None:
        """201 when the blob can be linked from SOURCE; None to fall back to an upload."""
        try:
            d = Digest(mount)
        except InvalidArgument:
            return None
        if not (source and valid_name(source) and self.store.blob_linked(source, d)):
            return None
        # Mounting must not reveal another repository's blobs to someone who cannot pull them.
        if not await self._may(request, Access("repository", source, frozenset({"pull"}))):
            log.info("mount of %s from %s into %s refused: no pull access", d, source, name)
            return None
        self.store.link_blob(name, d)
        log.info("blob %s mounted from %s into %s", d, source, name)
        return self._created(name, d)

    async def _monolithic(self, request: web.Request, name: str, d: Digest) -> web.StreamResponse:
        writer = self.content.writer(f"post:{uuidlib.uuid4()}", expected=d)
        try:
            await self._stream(request, writer)
            actual = writer.commit()
        except InvalidArgument as e:
            writer.abort()
            raise RegistryError(400, "DIGEST_INVALID", str(e), {"digest": str(d)}) from None
        except BaseException:
            writer.abort()
            raise
        self.store.link_blob(name, actual)
        return self._created(name, actual)

    def _check_content_range(self, request: web.Request, session: UploadSession,
                             offset: int) -> int | None:
        """The chunk length a Content-Range announces (None without one); 416 out of order."""
        header = request.headers.get("Content-Range")
        if header is None:
            return None
        m = _CONTENT_RANGE.match(header.strip())
        if m is None or int(m[1]) != offset or int(m[2]) < int(m[1]):
            headers = self._upload_headers(session, offset)
            headers["Content-Range"] = f"bytes */{offset}"
            raise RegistryError(416, "BLOB_UPLOAD_INVALID",
                                f"Content-Range {header!r} does not continue at offset {offset}",
                                {"offset": offset}, headers=headers)
        length = int(m[2]) - int(m[1]) + 1
        if request.content_length is not None and request.content_length != length:
            raise RegistryError(400, "SIZE_INVALID",
                                f"Content-Range announces {length} bytes, Content-Length "
                                f"{request.content_length}")
        return length

    async def _receive_chunk(self, request: web.Request, session: UploadSession,
                             writer: Writer) -> None:
        expected = self._check_content_range(request, session, writer.offset)
        try:
            received = await self._stream(request, writer)
        except (aiohttp.ClientPayloadError, ConnectionError, asyncio.IncompleteReadError) as e:
            # What arrived is kept: the client can ask for the offset and resume.
            log.info("upload %s: chunk cut short at offset %d: %s", session.uuid,
                     writer.offset, e)
            raise RegistryError(400, "BLOB_UPLOAD_INVALID", "chunk incomplete",
                                headers=self._upload_headers(session, writer.offset)) from None
        if expected is not None and received != expected:
            raise RegistryError(400, "SIZE_INVALID",
                                f"Content-Range announced {expected} bytes, got {received}",
                                headers=self._upload_headers(session, writer.offset))

    async def _upload_patch(self, request: web.Request, name: str,
                            upload: str) -> web.StreamResponse:
        session = self._session(name, upload)
        async with self._lock(session.uuid):
            writer = self._writer(session)
            await self._receive_chunk(request, session, writer)
            return web.Response(status=202, headers=self._upload_headers(session, writer.offset))

    async def _upload_put(self, request: web.Request, name: str,
                          upload: str) -> web.StreamResponse:
        session = self._session(name, upload)
        d = _parse_digest(request.query.get("digest"))
        async with self._lock(session.uuid):
            writer = self._writer(session)
            await self._receive_chunk(request, session, writer)
            if writer.digest().algorithm != d.algorithm:
                # The ingest hashed as sha256 (the hash is chosen when it opens); reopening
                # it with the expected digest re-hashes the bytes with that algorithm.
                writer.close()
                self._uploads.pop(session.uuid, None)
                writer = self.content.writer(session.ref, expected=d)
                self._uploads[session.uuid] = _Upload(writer)
            try:
                actual = writer.commit(expected=d)
            except InvalidArgument as e:
                # commit() discarded the bytes; the session goes too, leaving nothing.
                log.info("upload %s to %s rejected: %s", session.uuid, name, e)
                self._end_upload(session, abort=True)
                raise RegistryError(400, "DIGEST_INVALID", str(e), {"digest": str(d)}) from None
            self._end_upload(session, abort=False)
        self.store.link_blob(name, actual)
        log.info("blob %s pushed to %s", actual, name)
        return self._created(name, actual)

    async def _upload_get(self, request: web.Request, name: str,
                          upload: str) -> web.StreamResponse:
        session = self._session(name, upload)
        async with self._lock(session.uuid):
            offset = self._writer(session).offset
        return web.Response(status=204, headers=self._upload_headers(session, offset))

    async def _upload_delete(self, request: web.Request, name: str,
                             upload: str) -> web.StreamResponse:
        session = self._session(name, upload)
        async with self._lock(session.uuid):
            self._end_upload(session, abort=True)
        log.debug("upload %s cancelled", session.uuid)
        return web.Response(status=204)

    # ------------------------------------------------------------------ manifests

    def _resolve(self, name: str, reference: str) -> ManifestLink:
        if ":" in reference:
            d = _parse_digest(reference)
        elif valid_tag(reference):
            resolved = self.store.resolve_tag(name, reference)
            if resolved is None:
                raise RegistryError(404, "MANIFEST_UNKNOWN", detail={"tag": reference})
            d = resolved
        else:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "invalid tag", {"tag": reference})
        link = self.store.manifest_link(name, d)
        if link is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", detail={"digest": str(d)})
        return link

    async def _manifest_get(self, request: web.Request, name: str,
                            reference: str) -> web.StreamResponse:
        link = self._resolve(name, reference)
        try:
            data = self.content.read(link.digest)
        except NotFound:
            raise RegistryError(404, "MANIFEST_UNKNOWN", detail={"digest": link.digest}) from None
        # Content negotiation stops at giving back what was pushed: the bytes are the
        # digest, and no format is converted into another.
        headers = {"Content-Type": link.media_type, "Docker-Content-Digest": str(link.digest),
                   "ETag": f'"{link.digest}"'}
        if request.method == "HEAD":
            resp = web.StreamResponse(status=200, headers=headers)
            resp.content_length = len(data)
            await resp.prepare(request)
            return resp
        return web.Response(body=data, headers=headers)

    async def _manifest_put(self, request: web.Request, name: str,
                            reference: str) -> web.StreamResponse:
        by_digest: Digest | None = None
        if ":" in reference:
            by_digest = _parse_digest(reference)
        elif not valid_tag(reference):
            raise RegistryError(400, "MANIFEST_INVALID", f"invalid tag {reference!r}",
                                {"tag": reference})
        extra_tags = request.query.getall("tag", []) if by_digest is not None else []
        for tag in extra_tags:
            if not valid_tag(tag):
                raise RegistryError(400, "MANIFEST_INVALID", f"invalid tag {tag!r}", {"tag": tag})
        data = await self._read_manifest_body(request)
        content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in GENERIC_TYPES and content_type not in INDEX_TYPES | MANIFEST_TYPES:
            raise RegistryError(400, "MANIFEST_INVALID",
                                f"unsupported manifest media type {content_type!r}")
        try:
            obj = parse_manifest(data, None if content_type in GENERIC_TYPES else content_type)
        except (InvalidArgument, Unsupported) as e:
            raise RegistryError(400, "MANIFEST_INVALID", str(e)) from None
        d = Digest.of(data, by_digest.algorithm if by_digest else "sha256")
        if by_digest is not None and d != by_digest:
            raise RegistryError(400, "DIGEST_INVALID",
                                f"manifest has digest {d}, not {by_digest}", {"digest": str(d)})
        self._check_references(name, obj)
        self.content.put(data, expected=d)
        subject = obj.subject.digest if obj.subject is not None else None
        self.store.link_manifest(name, ManifestLink(d, obj.media_type, subject))
        headers = {"Location": f"/v2/{name}/manifests/{d}", "Docker-Content-Digest": str(d),
                   "Content-Length": "0"}
        if subject is not None:
            self.store.add_referrer(name, subject, self._referrer_descriptor(obj, d, len(data)))
            headers["OCI-Subject"] = str(subject)
        tags = extra_tags if by_digest is not None else [reference]
        for tag in tags:
            self.store.set_tag(name, tag, d)
        resp = web.Response(status=201, headers=headers)
        if extra_tags:
            resp.headers["OCI-Tag"] = ", ".join(extra_tags)
        log.info("manifest %s pushed to %s%s", d, name, f" as {', '.join(tags)}" if tags else "")
        return resp

    def _check_references(self, name: str, obj: Manifest | Index) -> None:
        """MANIFEST_BLOB_UNKNOWN for every referenced blob or manifest NAME lacks."""
        missing: list[Digest] = []
        if isinstance(obj, Index):
            missing = [m.digest for m in obj.manifests
                       if self.store.manifest_link(name, m.digest) is None]
        else:
            for desc in (obj.config, *obj.layers):
                if desc.urls and desc.media_type in NONDISTRIBUTABLE_TYPES:
                    continue  # foreign layers live at their URLs, not here
                if not self.store.blob_linked(name, desc.digest):
                    missing.append(desc.digest)
        # The subject is deliberately not checked: the spec lets referrers come first.
        if missing:
            errors = [("MANIFEST_BLOB_UNKNOWN", MESSAGES["MANIFEST_BLOB_UNKNOWN"],
                       {"digest": str(m)}) for m in dict.fromkeys(missing)]
            code, message, detail = errors[0]
            raise RegistryError(400, code, message, detail, more=errors[1:])

    @staticmethod
    def _referrer_descriptor(obj: Manifest | Index, d: Digest, size: int) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": obj.media_type, "digest": str(d), "size": size}
        artifact_type = obj.artifact_type
        if not artifact_type and isinstance(obj, Manifest):
            artifact_type = obj.config.media_type
        if artifact_type:
            desc["artifactType"] = artifact_type
        if obj.annotations:
            desc["annotations"] = dict(obj.annotations)
        return desc

    async def _manifest_delete(self, request: web.Request, name: str,
                               reference: str) -> web.StreamResponse:
        if not self.delete_enabled:
            raise RegistryError(405, "UNSUPPORTED", "deletion is disabled")
        if ":" not in reference:
            # Spec 1.1 lets a tag be deleted on its own, leaving the manifest.
            if not valid_tag(reference) or not self.store.delete_tag(name, reference):
                raise RegistryError(404, "MANIFEST_UNKNOWN", detail={"tag": reference})
            log.info("tag %s:%s deleted", name, reference)
            return web.Response(status=202, headers={"Content-Length": "0"})
        d = _parse_digest(reference)
        if not self.store.unlink_manifest(name, d):
            raise RegistryError(404, "MANIFEST_UNKNOWN", detail={"digest": str(d)})
        log.info("manifest %s deleted from %s", d, name)
        return web.Response(status=202, headers={"Content-Length": "0"})

    # ------------------------------------------------------------------ discovery

    async def _tags_get(self, request: web.Request, name: str) -> web.StreamResponse:
        if not self.store.repo_exists(name):
            raise RegistryError(404, "NAME_UNKNOWN", detail={"name": name})
        n, last = _pagination(request)
        tags, headers = _page(self.store.tags(name), n, last, None, f"/v2/{name}/tags/list")
        return web.json_response({"name": name, "tags": tags}, headers=headers)

    async def _referrers_get(self, request: web.Request, name: str,
                             digest: str) -> web.StreamResponse:
        d = _parse_digest(digest)
        # Unknown repositories and subjects give an empty list: a 404 here would tell
        # clients the API is missing and send them to the tag-schema fallback.
        found = self.store.referrers(name, d) if self.store.repo_exists(name) else []
        headers = {"Content-Type": OCI_INDEX}
        artifact_type = request.query.get("artifactType")
        if artifact_type:
            found = [r for r in found if r.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
        return web.Response(body=json.dumps(body).encode(), headers=headers)

    # ------------------------------------------------------------------ lifecycle

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_interval)
            try:
                self.close_idle_writers(IDLE_WRITER_SECONDS)
                purge_uploads(self.store, self.upload_max_age)
            except Exception:
                log.exception("registry housekeeping failed")

    def close_idle_writers(self, idle: float) -> None:
        """Give back descriptors of uploads nobody touched for IDLE seconds (bytes stay)."""
        now = time.monotonic()
        for key, up in list(self._uploads.items()):
            if now - up.used >= idle and not self._lock(key).locked():
                up.writer.close()
                del self._uploads[key]
                self._locks.pop(key, None)

    async def on_startup(self, app: web.Application) -> None:
        self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())

    async def on_cleanup(self, app: web.Application) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            try:
                await self._housekeeper
            except asyncio.CancelledError:
                pass
        self.close_idle_writers(0)


REGISTRY_KEY = web.AppKey("registry", Registry)


async def _api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Docker-Distribution-API-Version"] = API_VERSION


def make_app(root: str, *, auth: Authenticator | None = None, delete_enabled: bool = True,
             max_manifest_size: int = MAX_MANIFEST_SIZE,
             upload_max_age: float = UPLOAD_MAX_AGE) -> web.Application:
    """The registry as an aiohttp application storing everything under ROOT.

    AUTH is a BasicAuth or TokenAuth (see dockyard.distribution.auth), or None for an
    open registry. Uploads untouched for UPLOAD_MAX_AGE seconds are purged.
    """
    registry = Registry(root, auth=auth, delete_enabled=delete_enabled,
                        max_manifest_size=max_manifest_size, upload_max_age=upload_max_age)
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app.router.add_route("*", "/v2", registry.dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", registry.dispatch)
    if auth is not None:
        auth.install(app)
    app.on_response_prepare.append(_api_version_header)
    app.on_startup.append(registry.on_startup)
    app.on_cleanup.append(registry.on_cleanup)
    return app


def make_auth(*, htpasswd: str | None = None, token_realm: str | None = None,
              token_issuer: str | None = None, token_key: str | None = None,
              token_service: str | None = None) -> Authenticator | None:
    """The authenticator serve() options describe.

    Any token option turns on token auth (htpasswd then checks users at the token
    endpoint); htpasswd alone means basic auth. TOKEN_KEY is a file holding an HS256
    secret or an EC P-256 PEM key (ES256); without one a random secret is made, and
    tokens die with the process.
    """
    users = Htpasswd(htpasswd) if htpasswd else None
    if token_realm or token_issuer or token_key or token_service:
        if token_key:
            with open(token_key, "rb") as f:
                key = TokenKey.load(f.read())
        else:
            key = TokenKey.generate()
        auth = TokenAuth(key=key, htpasswd=users, realm=token_realm)
        if token_issuer:
            auth.issuer = token_issuer
        if token_service:
            auth.service = token_service
        if users is None:
            log.warning("token auth without htpasswd: only anonymous tokens, which grant nothing")
        return auth
    if users is not None:
        return BasicAuth(users)
    return None


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"invalid listen address {addr!r}: expected host:port")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def serve(addr: str = "127.0.0.1:5000", root: str = "/var/lib/dockyard/registry", *,
          tls_cert: str | None = None, tls_key: str | None = None,
          htpasswd: str | None = None, token_realm: str | None = None,
          token_issuer: str | None = None, token_key: str | None = None,
          token_service: str | None = None, delete_enabled: bool = True) -> None:
    """Run the registry until interrupted (SIGINT/SIGTERM)."""
    host, port = parse_addr(addr)
    if bool(tls_cert) != bool(tls_key):
        raise InvalidArgument("TLS needs both a certificate and a key")
    ssl_context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    auth = make_auth(htpasswd=htpasswd, token_realm=token_realm, token_issuer=token_issuer,
                     token_key=token_key, token_service=token_service)
    app = make_app(root, auth=auth, delete_enabled=delete_enabled)
    log.info("registry serving %s on %s://%s:%d", root, "https" if ssl_context else "http",
             host, port)
    web.run_app(app, host=host, port=port, ssl_context=ssl_context, print=None)


class RegistryThread:
    """The registry on its own event loop in a daemon thread: `with RegistryThread(root) as r:
    ... r.url ...`. Port 0 picks a free port."""

    def __init__(self, root: str, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, **app_options: Any) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.app_options = app_options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.address}"

    @property
    def app(self) -> web.Application:
        assert self._runner is not None
        return self._runner.app

    def start(self) -> "RegistryThread":
        self._thread = threading.Thread(target=self._run, name="registry", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise TimeoutError("registry did not start within 30 s")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            app = make_app(self.root, **self.app_options)
            # Keep-alive connections must not hold a test's teardown for a minute.
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
        except BaseException as e:
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> "RegistryThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
