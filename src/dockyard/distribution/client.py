"""The registry client: pull and push images over the OCI Distribution API, as dockerd's
pull and push behave.

Pull (`RegistryClient.pull`):

1. Resolve: `HEAD /v2/<name>/manifests/<tag>` with an Accept of the four manifest types
   gives the digest (Docker-Content-Digest); the manifest is then GET by that digest and
   its bytes are checked against it. A manifest already in the store is not fetched.
2. An index picks the platform's manifest (manifest.select_platform); the index is kept
   too, since its digest is what the tag names (the image's RepoDigest).
3. Config and layers download in parallel, at most `max_concurrent_downloads` (3, like
   dockerd) at a time, each into a ContentStore ingest named after its digest. Blobs the
   store has are skipped ("Already exists"). A download cut short is retried from where
   it stopped with `Range: bytes=<offset>-`, and an ingest left by an earlier, failed pull
   resumes the same way. Nothing enters the store unverified: Writer.commit checks the
   digest and size.
4. Everything is done under a lease, so a GC running meanwhile deletes neither finished
   blobs of a half-pulled image nor the ingests of an interrupted one. The caller tags
   the image and then releases the lease (PullResult.lease).

Push (`RegistryClient.push`): each layer and the config are checked with HEAD (present
-> "Layer already exists"), mounted from another repository of the same registry when
the blob is known to have come from there (`POST ...?mount=<digest>&from=<repo>`), or
uploaded: one PUT for small blobs, PATCH chunks with Content-Range for large ones. The
manifest (and an index's child manifests, by digest) are PUT last. Which repositories a
blob came from is remembered in the content store's directory (`<root>/sources`, see
BlobSources), as dockerd's v2metadata does.

Progress goes to a callback as dicts shaped like Docker's JSON progress messages, e.g.
`{"id": "b05093807bb0", "status": "Downloading", "progressDetail": {"current": 524288,
"total": 2226327}}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, TypeVar
from urllib.parse import quote, urljoin

import aiohttp
from yarl import URL

from dockyard import __version__ as _dockyard_version
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure
from dockyard.image.content import ContentStore, Lease, Writer
from dockyard.image.digest import Digest
from dockyard.image.manifest import (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, INDEX_TYPES,
                                     MANIFEST_TYPES, MAX_MANIFEST_SIZE, NONDISTRIBUTABLE_TYPES,
                                     OCI_INDEX, OCI_MANIFEST,
                                     Descriptor, Index, Manifest, Platform, check_image,
                                     parse_config, parse_manifest, parse_platform,
                                     normalize_platform, select_platform)
from dockyard.image.reference import Reference, parse_docker_ref, parse_normalized

from dockyard.distribution.credentials import (AuthConfig, Authorizer, CredentialStore,
                                               Unauthorized, config_key)
from dockyard.distribution.registries import DOCKER_HUB, Endpoint, RegistryConfig

__all__ = ["BlobSources", "PullResult", "RegistryClient", "RegistryUnreachable", "Unauthorized"]

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
READ_CHUNK = 64 << 10
WRITE_BATCH = 1 << 20
# Downloading events at most this often per layer: Docker throttles the same way, and a
# callback per 64 KiB read would cost more than the download.
PROGRESS_BYTES = 512 << 10
PROGRESS_SECONDS = 0.1

ProgressFn = Callable[[dict[str, Any]], None]
T = TypeVar("T")


class RegistryUnreachable(SystemFailure):
    """No connection to a registry endpoint (refused, TLS failure, cut mid-transfer)."""


class _Transient(Exception):
    """A download broke off mid-stream: worth resuming from where it stopped."""


class _Oversize(InvalidArgument):
    """The server sent more bytes than the descriptor's size: not the blob asked for."""


class _RangeRefused(Exception):
    """The server cannot serve the rest of the ingest (416): start the blob again."""


@dataclass
class PullResult:
    """What a pull fetched; every blob named here is in the store and in `lease`."""

    reference: Reference           # the reference pulled, tagged or digested
    digest: Digest                 # what the reference resolves to: the index or manifest
    media_type: str                # of that object
    manifest_digest: Digest        # the platform's image manifest
    config_digest: Digest          # the image id
    layers: list[Descriptor]       # in manifest order
    index_digest: Digest | None    # set when the reference names an index
    lease: Lease                   # release once the image is tagged
    downloaded: list[Digest] = field(default_factory=list)  # blobs fetched over the network
    endpoint: str = ""             # the URL served the pull (a mirror, perhaps)


# -- where blobs came from (cross-repository mounts) -----------------------------

class BlobSources:
    """digest -> the repositories (`registry/path`) it was pulled from or pushed to.

    One small JSON file per digest; a push mounts from one of these when the target
    repository lives on the same registry, which saves the upload entirely.
    """

    MAX_SOURCES = 8

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    def _path(self, d: Digest) -> str:
        return os.path.join(self.root, d.algorithm, d.hex + ".json")

    def get(self, d: Digest) -> list[str]:
        try:
            with open(self._path(d), "rb") as f:
                value = json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return []
        return [x for x in value if isinstance(x, str)] if isinstance(value, list) else []

    def add(self, d: Digest, repository: str) -> None:
        current = self.get(d)
        if current and current[0] == repository:
            return
        updated = [repository] + [x for x in current if x != repository]
        path = self._path(d)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{os.urandom(3).hex()}.tmp"
        with open(tmp, "w") as f:
            json.dump(updated[: self.MAX_SOURCES], f)
        os.replace(tmp, path)  # a reader sees the old list or the new, never half


# -- registry error bodies -----------------------------------------------------------

@dataclass
class _Failure:
    """An HTTP error answer, with the spec's error list decoded."""

    status: int
    errors: list[tuple[str, str, Any]]  # (CODE, message, detail)
    text: str

    @property
    def codes(self) -> set[str]:
        return {c for c, _m, _d in self.errors}

    def describe(self) -> str:
        """Docker's errcode text: `manifest unknown: manifest unknown`."""
        if self.errors:
            return "; ".join(f"{c.lower().replace('_', ' ')}: {m}" if m else c.lower().replace("_", " ")
                             for c, m, _d in self.errors)
        if self.text:
            return f"{self.status} {self.text[:200]}"
        return f"HTTP status {self.status}"


def _decode_failure(status: int, body: bytes) -> _Failure:
    errors: list[tuple[str, str, Any]] = []
    text = body[:1000].decode(errors="replace").strip()
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
        for e in doc["errors"]:
            if isinstance(e, dict):
                errors.append((str(e.get("code", "UNKNOWN")).upper(), str(e.get("message", "")),
                               e.get("detail")))
    elif status == 401 and not errors:
        errors.append(("UNAUTHORIZED", "authentication required", None))
    return _Failure(status, errors, text)


def _reason(exc: BaseException) -> str:
    """A short, Go-like reason for a connection failure."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"tls: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        # asyncio words refusals as "Connect call failed (addr)"; the errno says why.
        code = getattr(err, "errno", None)
        reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(err)
        return f"connect: {reason.lower()}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "i/o timeout"
    return str(exc) or type(exc).__name__


@dataclass
class _Target:
    """A repository on one endpoint, with what is needed to authenticate to it."""

    endpoint: Endpoint
    registry: str       # the reference's domain (docker.io, 127.0.0.1:5000)
    path: str           # repository path (library/busybox)
    cred_key: str       # config.json key of the credentials to use

    @property
    def base(self) -> str:
        return self.endpoint.url

    def url(self, suffix: str) -> str:
        return f"{self.endpoint.url}/v2/{self.path}/{suffix}"

    def scope(self, actions: str = "pull") -> str:
        return f"repository:{self.path}:{actions}"


class _Progress:
    """Throttled per-layer progress events."""

    def __init__(self, fn: ProgressFn | None) -> None:
        self.fn = fn

    def emit(self, **event: Any) -> None:
        if self.fn is None:
            return
        try:
            self.fn(event)
        except Exception:  # a broken consumer (a closed API stream) must not break the pull
            log.debug("progress callback failed", exc_info=True)

    def layer(self, d: Digest, status: str, current: int | None = None,
              total: int | None = None) -> None:
        detail: dict[str, int] = {}
        if current is not None:
            detail["current"] = current
        if total is not None:
            detail["total"] = total
        self.emit(status=status, progressDetail=detail, id=d.short)


async def _first_error(tasks: list[asyncio.Task[T]]) -> list[T]:
    """Await TASKS; on the first failure cancel the rest (their ingests are kept) and
    raise that failure itself, not a group of them."""
    if not tasks:
        return []
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    failed = [t for t in done if not t.cancelled() and t.exception() is not None]
    if failed:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Report the first task (in order) that failed, which is the most natural one.
        first = next(t for t in tasks if t in failed)
        raise first.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


class RegistryClient:
    """An async client for OCI/Docker registries. Use as `async with RegistryClient() as c`.

    REGISTRIES gives mirrors, insecure registries and certificates; CREDENTIALS is a
    CredentialStore (config.json), or one AuthConfig used for every registry (what the
    Engine API's X-Registry-Auth header carries), or None for anonymous access.
    """

    def __init__(self, registries: RegistryConfig | None = None,
                 credentials: CredentialStore | AuthConfig | None = None, *,
                 max_concurrent_downloads: int = 3, max_concurrent_uploads: int = 5,
                 retries: int = 3, retry_delay: float = 0.5,
                 monolithic_limit: int = 16 << 20, chunk_size: int = 8 << 20,
                 connect_timeout: float = 30.0, read_timeout: float = 120.0,
                 user_agent: str | None = None, trust_env: bool = False,
                 sources_dir: str | os.PathLike[str] | None = None) -> None:
        self.registries = registries if registries is not None else RegistryConfig()
        if isinstance(credentials, AuthConfig):
            fixed = credentials
            lookup: Callable[[str], AuthConfig | None] | None = lambda _key: fixed
        elif credentials is not None:
            lookup = credentials.get
        else:
            lookup = None
        self.user_agent = user_agent or f"dockyard/{_dockyard_version}"
        self.auth = Authorizer(lookup, registries=self.registries, user_agent=self.user_agent)
        self.max_concurrent_downloads = max(1, max_concurrent_downloads)
        self.max_concurrent_uploads = max(1, max_concurrent_uploads)
        self.retries = max(0, retries)
        self.retry_delay = retry_delay
        self.monolithic_limit = monolithic_limit
        self.chunk_size = max(1, chunk_size)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._trust_env = trust_env
        self._sources_dir = sources_dir
        self._session: aiohttp.ClientSession | None = None
        self._pinged: set[str] = set()

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> RegistryClient:
        self._get_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # auto_decompress off: a blob must arrive byte for byte as its digest says,
            # whatever Content-Encoding a proxy adds.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": self.user_agent},
                auto_decompress=False, trust_env=self._trust_env)
        return self._session

    def sources(self, store: ContentStore) -> BlobSources:
        root = self._sources_dir or os.path.join(store.root, "sources")
        return BlobSources(root)

    # -- endpoints and requests --------------------------------------------------

    def _targets(self, ref: Reference, *, push: bool = False) -> list[_Target]:
        out = []
        for ep in self.registries.endpoints(ref.domain, pull=not push):
            # A mirror gets its own credentials, never the Hub's: it is another party.
            key = config_key(ep.host) if ep.mirror else config_key(ref.domain)
            out.append(_Target(ep, ref.domain, ref.path, key))
        return out

    async def _ping(self, t: _Target) -> None:
        """GET /v2/ once per endpoint: proves it speaks the API and learns its challenge."""
        if t.base in self._pinged:
            return
        url = f"{t.base}/v2/"
        session = self._get_session()
        try:
            async with session.get(url, ssl=t.endpoint.ssl, allow_redirects=True) as resp:
                await resp.read()
                status, challenge = resp.status, resp.headers.get("WWW-Authenticate")
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise RegistryUnreachable(f"registry {t.endpoint.host} is unreachable: "
                                      f'Get "{url}": {_reason(exc)}') from None
        if status == 401:
            self.auth.set_challenge(t.base, challenge)
        elif status >= 500:
            raise RegistryUnreachable(f"registry {t.endpoint.host} is unavailable: "
                                      f'Get "{url}": HTTP status {status}')
        # 404 and the like: not a v2 registry, but try anyway as dockerd does for mirrors.
        self._pinged.add(t.base)

    async def _request(self, t: _Target, method: str, url: str | URL, *, scopes: Iterable[str],
                       headers: dict[str, str] | None = None, data: bytes | None = None,
                       allow_redirects: bool = True) -> aiohttp.ClientResponse:
        """Send a request with authentication; a 401 is answered once (new challenge,
        fresh token) before it is returned to the caller. The caller releases the
        response."""
        await self._ping(t)
        scopes = tuple(scopes)
        session = self._get_session()
        extra_scope = ""
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = await self.auth.header(session, t.base, t.cred_key, scopes,
                                          refresh=attempt > 0, extra_scope=extra_scope)
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = await session.request(method, url, headers=hdrs, data=data,
                                             ssl=t.endpoint.ssl, allow_redirects=allow_redirects)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                raise RegistryUnreachable(f"registry {t.endpoint.host} is unreachable: "
                                          f'{method.title()} "{url}": {_reason(exc)}') from None
            if resp.status != 401 or attempt == 1:
                return resp
            challenge = resp.headers.get("WWW-Authenticate")
            await resp.read()
            resp.release()
            ch = self.auth.set_challenge(t.base, challenge)
            if ch is None:
                return resp  # no way to answer it; the caller reports the 401
            if ch.scheme == "basic" and self.auth.credentials(t.cred_key) is None:
                return resp  # retrying without credentials cannot help
            extra_scope = ch.params.get("scope", "")
        raise AssertionError("unreachable")

    async def _failure(self, resp: aiohttp.ClientResponse) -> _Failure:
        body = b""
        # Error bodies are small JSON; read() also returns one read earlier (a 401's).
        if resp.method != "HEAD" and (resp.content_length or 0) <= 1 << 20:
            try:
                body = await resp.read()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                body = b""
        resp.release()
        return _decode_failure(resp.status, body)

    def _denied(self, t: _Target, op: str, name: str, f: _Failure) -> DockyardError:
        """The error for a 401/403, worded as Docker words it."""
        creds = self.auth.credentials(t.cred_key)
        if op == "pull":
            return Unauthorized(f"pull access denied for {name}, repository does not exist or "
                                f"may require 'docker login': {f.describe()}")
        if creds is None:
            return Unauthorized(f"{op} to {t.registry}/{t.path} refused: {f.describe()} "
                                f"(log in to {t.registry} first)")
        return Unauthorized(f"{op} to {t.registry}/{t.path} refused: {f.describe()}")

    def _server_error(self, t: _Target, what: str, f: _Failure) -> DockyardError:
        if f.status >= 500:
            return SystemFailure(f"registry {t.endpoint.host} failed to {what}: {f.describe()}")
        return InvalidArgument(f"registry {t.endpoint.host} refused to {what}: {f.describe()}")

    async def _with_endpoints(self, ref: Reference, fn: Callable[[_Target], Awaitable[T]], *,
                              push: bool = False) -> T:
        """Run FN on each endpoint in turn until one works, falling back as dockerd does:
        past an unreachable endpoint always, past any failure of a mirror."""
        targets = self._targets(ref, push=push)
        last: Exception | None = None
        for i, t in enumerate(targets):
            try:
                # Ping first, so that an endpoint that is not there costs nothing else
                # (and emits no progress) before the next one is tried. Once it answered,
                # its failures are the answer, except a mirror's.
                await self._ping(t)
            except RegistryUnreachable as exc:
                last = exc
            else:
                try:
                    return await fn(t)
                except (NotFound, Unauthorized, SystemFailure, InvalidArgument) as exc:
                    if not t.endpoint.mirror:
                        raise
                    last = exc
            if i + 1 < len(targets):
                nxt = targets[i + 1]
                # HTTPS then HTTP on an insecure registry is the normal path: not news.
                level = logging.DEBUG if nxt.endpoint.host == t.endpoint.host else logging.INFO
                log.log(level, "%s: %s; trying %s", t.base, last, nxt.base)
        assert last is not None
        raise last

    # -- manifests -----------------------------------------------------------------

    def _manifest_target(self, ref: Reference) -> str:
        return str(ref.digest) if ref.digest is not None else (ref.tag or "latest")

    async def _head_manifest(self, t: _Target, ref: Reference, op: str) -> Descriptor | None:
        """The descriptor the registry reports for REF, or None when HEAD says too little
        (no digest header, or HEAD not supported) and a GET must tell."""
        url = t.url(f"manifests/{self._manifest_target(ref)}")
        resp = await self._request(t, "HEAD", url, scopes=[t.scope("pull")],
                                   headers={"Accept": MANIFEST_ACCEPT})
        try:
            if resp.status == 200:
                digest = resp.headers.get("Docker-Content-Digest")
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
                size = resp.headers.get("Content-Length")
                if not digest or media_type not in INDEX_TYPES | MANIFEST_TYPES or not (size or "").isdigit():
                    return None
                try:
                    d = Digest(digest)
                except InvalidArgument:
                    return None
                if ref.digest is not None and d != ref.digest:
                    raise InvalidArgument(f"digest mismatch for manifest {ref.familiar()} from "
                                          f"{t.endpoint.host}: expected {ref.digest}, the registry "
                                          f"reports {d}")
                return Descriptor(media_type, d, int(size or 0))
            if resp.status in (401, 403):
                raise self._denied(t, op, ref.familiar_name, await self._failure(resp))
            if resp.status == 404:
                raise await self._manifest_unknown(t, ref)
            if resp.status >= 500:
                raise self._server_error(t, f"resolve {ref.familiar()}", await self._failure(resp))
            return None  # 405 and other oddities: let GET decide
        finally:
            resp.release()

    async def _manifest_unknown(self, t: _Target, ref: Reference) -> DockyardError:
        """NotFound for a missing manifest, telling an unknown repository (Docker's
        "pull access denied") from an unknown tag. HEAD answers have no body, so the
        error text is fetched with GET, and tags/list tells whether the repository exists
        (a registry reports MANIFEST_UNKNOWN for both)."""
        name = ref.familiar_name
        url = t.url(f"manifests/{self._manifest_target(ref)}")
        resp = await self._request(t, "GET", url, scopes=[t.scope("pull")],
                                   headers={"Accept": MANIFEST_ACCEPT})
        f = await self._failure(resp) if resp.status != 200 else None
        resp.release()
        if f is None:  # appeared in the meantime; let the caller try again
            return NotFound(f"manifest for {ref.familiar()} not found: the registry's answers "
                            "are inconsistent")
        if "NAME_UNKNOWN" not in f.codes:
            tags = await self._request(t, "GET", t.url("tags/list?n=1"), scopes=[t.scope("pull")])
            if tags.status == 404:
                tf = await self._failure(tags)
                if "NAME_UNKNOWN" in tf.codes:
                    f = tf
            tags.release()
        if "NAME_UNKNOWN" in f.codes:
            return NotFound(f"pull access denied for {name}, repository does not exist or may "
                            f"require 'docker login': {f.describe()}")
        return NotFound(f"manifest for {ref.familiar()} not found: {f.describe()}")

    async def _get_manifest(self, t: _Target, ref: Reference, expected: Descriptor | None,
                            op: str = "pull") -> tuple[Descriptor, bytes]:
        """GET a manifest (by EXPECTED's digest when known) and verify its bytes."""
        target = str(expected.digest) if expected is not None else self._manifest_target(ref)
        url = t.url(f"manifests/{target}")
        resp = await self._request(t, "GET", url, scopes=[t.scope("pull")],
                                   headers={"Accept": MANIFEST_ACCEPT})
        try:
            if resp.status in (401, 403):
                raise self._denied(t, op, ref.familiar_name, await self._failure(resp))
            if resp.status == 404:
                raise await self._manifest_unknown(t, ref)
            if resp.status != 200:
                raise self._server_error(t, f"serve manifest {target}", await self._failure(resp))
            try:
                raw = await resp.content.read(MAX_MANIFEST_SIZE + 1)
                # read(n) may return less than is there; drain the rest to be sure.
                while len(raw) <= MAX_MANIFEST_SIZE:
                    more = await resp.content.read(MAX_MANIFEST_SIZE + 1 - len(raw))
                    if not more:
                        break
                    raw += more
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                raise RegistryUnreachable(f"registry {t.endpoint.host}: reading manifest "
                                          f"{target} failed: {_reason(exc)}") from None
            header_digest = resp.headers.get("Docker-Content-Digest")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        finally:
            resp.release()
        if len(raw) > MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"manifest {target} from {t.endpoint.host} is larger than "
                                  f"{MAX_MANIFEST_SIZE} bytes")
        want: Digest | None = expected.digest if expected is not None else ref.digest
        if want is None and header_digest:
            try:
                want = Digest(header_digest)
            except InvalidArgument:
                want = None
        actual = Digest.of(raw, want.algorithm if want is not None else "sha256")
        if want is not None and actual != want:
            raise InvalidArgument(f"digest mismatch for manifest {ref.familiar_name}@{want} from "
                                  f"{t.endpoint.host}: expected {want}, got {actual}")
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            # A generic Content-Type (application/json): the document says what it is.
            media_type = (expected.media_type if expected is not None
                          else parse_manifest(raw).media_type)
        return Descriptor(media_type, actual, len(raw)), raw

    async def resolve(self, ref: str | Reference) -> tuple[Descriptor, bytes]:
        """The manifest or index REF names: its descriptor and its verified bytes."""
        r = _docker_ref(ref)

        async def run(t: _Target) -> tuple[Descriptor, bytes]:
            desc = await self._head_manifest(t, r, "pull")
            return await self._get_manifest(t, r, desc)

        return await self._with_endpoints(r, run)

    # -- blobs: download -------------------------------------------------------

    async def _fetch_into(self, t: _Target, desc: Descriptor, writer: Writer,
                          on_bytes: Callable[[int], None] | None = None) -> None:
        """Stream DESC's remaining bytes into WRITER, asking for a Range when the writer
        holds some already. A server that ignores the Range sends everything; the part
        the writer has is then skipped (what containerd does too)."""
        if writer.offset >= desc.size:
            return
        headers: dict[str, str] = {}
        start = writer.offset
        if start:
            headers["Range"] = f"bytes={start}-"
        url = t.url(f"blobs/{desc.digest}")
        resp = await self._request(t, "GET", url, scopes=[t.scope("pull")], headers=headers)
        try:
            skip = 0
            if resp.status == 206:
                content_range = resp.headers.get("Content-Range", "")
                first = content_range.removeprefix("bytes ").split("-", 1)[0]
                if not first.isdigit() or int(first) != start:
                    raise _Transient(f"the registry answered Range bytes={start}- with "
                                     f"Content-Range {content_range!r}")
            elif resp.status == 200:
                if start:
                    log.info("%s ignored the Range request for %s; skipping %d bytes",
                             t.endpoint.host, desc.digest.short, start)
                skip = start
            elif resp.status == 416:
                raise _RangeRefused()
            elif resp.status in (401, 403):
                raise self._denied(t, "pull", t.path, await self._failure(resp))
            elif resp.status == 404:
                f = await self._failure(resp)
                raise NotFound(f"blob {desc.digest} not found in {t.registry}/{t.path}: "
                               f"{f.describe()}")
            elif resp.status >= 500 or resp.status == 429:
                f = await self._failure(resp)
                raise _Transient(f"registry {t.endpoint.host} answered {f.describe()}")
            else:
                raise self._server_error(t, f"serve blob {desc.digest}", await self._failure(resp))
            # Hashing and writing happen in a worker thread, a batch at a time (both release
            # the GIL), so parallel downloads do not queue behind one another's disk writes.
            loop = asyncio.get_running_loop()
            pending = bytearray()

            async def flush() -> None:
                if pending:
                    await loop.run_in_executor(None, writer.write, bytes(pending))
                    pending.clear()
                    if on_bytes is not None:
                        on_bytes(writer.offset)

            try:
                async for chunk in resp.content.iter_chunked(READ_CHUNK):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    if writer.offset + len(pending) + len(chunk) > desc.size:
                        raise _Oversize(
                            f"digest mismatch for blob {desc.digest} from {t.endpoint.host}: "
                            f"expected {desc.size} bytes, the registry sent more")
                    pending += chunk
                    if len(pending) >= WRITE_BATCH:
                        await flush()
                await flush()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError,
                    asyncio.TimeoutError) as exc:
                await flush()  # what arrived intact is kept: the retry resumes after it
                raise _Transient(f"download of {desc.digest.short} from {t.endpoint.host} broke "
                                 f"off at {writer.offset} of {desc.size} bytes: {_reason(exc)}") from None
        finally:
            resp.release()
        if writer.offset < desc.size:
            raise _Transient(f"download of {desc.digest.short} from {t.endpoint.host} ended at "
                             f"{writer.offset} of {desc.size} bytes")

    async def fetch_blob(self, repo: str | Reference, desc: Descriptor, writer: Writer,
                         progress: Callable[[int], None] | None = None) -> None:
        """Stream the blob DESC of repository REPO into WRITER, resuming at writer.offset.

        On return the writer holds desc.size bytes; committing it (which verifies the
        digest) is the caller's job. Interrupted transfers are retried from where they
        stopped, `retries` times.
        """
        r = parse_normalized(repo) if isinstance(repo, str) else repo

        async def run(t: _Target) -> None:
            await self._fetch_with_retries(t, desc, writer, progress)

        await self._with_endpoints(r.repository, run)

    async def _fetch_with_retries(self, t: _Target, desc: Descriptor, writer: Writer,
                                  on_bytes: Callable[[int], None] | None,
                                  progress: _Progress | None = None) -> None:
        attempt = 0
        while True:
            try:
                await self._fetch_into(t, desc, writer, on_bytes)
                return
            except (_Transient, RegistryUnreachable) as exc:
                if attempt >= self.retries:
                    raise RegistryUnreachable(str(exc)) from None
                attempt += 1
                delay = self.retry_delay * attempt
                log.info("%s; retrying in %.1fs (attempt %d of %d)", exc, delay, attempt, self.retries)
                if progress is not None:
                    shown = max(1, round(delay))  # Docker counts down in whole seconds
                    progress.layer(desc.digest, f"Retrying in {shown} second{'s' if shown > 1 else ''}")
                await asyncio.sleep(delay)

    async def _open_writer(self, store: ContentStore, ref: str, desc: Descriptor,
                           lease: Lease, progress: _Progress | None) -> Writer | None:
        """A writer for REF, or None once the blob is in the store. Another pull holding
        the ingest (same blob, other image) is waited for, as containerd does."""
        waited = False
        while True:
            if store.exists(desc.digest):
                return None
            fut = asyncio.ensure_future(asyncio.to_thread(
                store.writer, ref, desc.digest, desc.size, lease=lease))
            try:
                # Opening re-hashes a partial ingest, which may take a while: not on the loop.
                return await asyncio.shield(fut)
            except Conflict:
                if not waited and progress is not None:
                    progress.layer(desc.digest, "Waiting")
                waited = True
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                # The thread carries on; whatever it opens must not stay locked.
                fut.add_done_callback(lambda f: f.result().close()
                                      if not f.cancelled() and f.exception() is None else None)
                raise

    async def _download(self, t: _Target, store: ContentStore, desc: Descriptor, lease: Lease,
                        kind: str, progress: _Progress | None, sem: asyncio.Semaphore,
                        downloaded: list[Digest]) -> None:
        """Make DESC present in STORE (under LEASE), downloading it unless it is there."""
        d = desc.digest
        if store.exists(d):
            lease.add(d)
            if progress is not None:
                progress.layer(d, "Already exists")
            return
        if sem.locked() and progress is not None:
            progress.layer(d, "Waiting")  # queued behind max_concurrent_downloads
        async with sem:
            ref = f"{kind}-{d}"
            for fresh_start in (False, True):
                writer = await self._open_writer(store, ref, desc, lease, progress)
                if writer is None:  # another pull finished it meanwhile
                    lease.add(d)
                    if progress is not None:
                        progress.layer(d, "Already exists")
                    return
                try:
                    if writer.offset:
                        log.info("resuming %s at %d of %d bytes", d.short, writer.offset, desc.size)
                    on_bytes = None
                    if progress is not None:
                        last = [0, 0.0]

                        def on_bytes(n: int, _last: list[Any] = last) -> None:
                            now = time.monotonic()
                            if (n - _last[0] >= PROGRESS_BYTES or now - _last[1] >= PROGRESS_SECONDS
                                    or n == desc.size):
                                _last[0], _last[1] = n, now
                                progress.layer(d, "Downloading", n, desc.size)

                        if writer.offset:
                            on_bytes(writer.offset)
                    try:
                        await self._fetch_with_retries(t, desc, writer, on_bytes, progress)
                    except _Oversize:
                        writer.abort()  # what it sent is not this blob: junk
                        raise
                    except _RangeRefused:
                        if fresh_start:
                            raise RegistryUnreachable(f"registry {t.endpoint.host} refuses to "
                                                      f"serve {d}") from None
                        log.warning("registry refused to resume %s; starting over", d.short)
                        writer.abort()
                        continue
                    if progress is not None:
                        progress.layer(d, "Verifying Checksum")
                    actual = writer.digest()
                    if actual != d:
                        # Wrong bytes never become right: throw them away, a retry starts clean.
                        writer.abort()
                        raise InvalidArgument(f"digest mismatch for {kind} {d} from "
                                              f"{t.endpoint.host}/{t.path}: expected {d}, got {actual}")
                    # The commit fsyncs the blob: off the event loop, so other layers keep
                    # streaming meanwhile.
                    await asyncio.to_thread(writer.commit, desc.size, d)
                finally:
                    writer.close()  # keeps the bytes of an unfinished download for a resume
                downloaded.append(d)
                if progress is not None:
                    progress.layer(d, "Download complete")
                return

    async def _ensure_manifest(self, t: _Target, store: ContentStore, ref: Reference,
                               desc: Descriptor | None, lease: Lease,
                               downloaded: list[Digest]) -> tuple[Descriptor, bytes]:
        """The manifest DESC (or REF when DESC is unknown), from the store when it has
        it, else fetched, verified and stored under LEASE."""
        if desc is not None and store.exists(desc.digest):
            lease.add(desc.digest)
            raw = await asyncio.to_thread(store.read, desc.digest)
            return desc, raw
        desc, raw = await self._get_manifest(t, ref, desc)
        store.put(raw, desc.digest, lease=lease)
        downloaded.append(desc.digest)
        return desc, raw

    # -- pull ------------------------------------------------------------------------

    async def pull(self, store: ContentStore, ref: str | Reference,
                   platform: str | Platform = "linux/amd64", *,
                   progress: ProgressFn | None = None, lease: Lease | None = None) -> PullResult:
        """Pull REF into STORE: the manifest (and index) and every blob of the image for
        PLATFORM. Tagging is the caller's business; release PullResult.lease after it.

        Without LEASE one is made that lasts a day: after a failure it keeps the partial
        downloads from abort_stale() and GC until a retry (which resumes them under its
        own lease) has had its chance. It is per pull, not per reference, so that one of
        two concurrent pulls of an image cannot release what the other still needs.
        """
        r = _docker_ref(ref)
        want = parse_platform(platform) if isinstance(platform, str) else normalize_platform(platform)
        if lease is None:
            lease_id = (f"pull-{hashlib.sha256(str(r).encode()).hexdigest()[:16]}-"
                        f"{os.urandom(6).hex()}")
            lease = store.lease(lease_id, expire=24 * 3600)
        prog = _Progress(progress)
        prog.emit(status=f"Pulling from {r.path}", id=r.tag or str(r.digest))

        async def run(t: _Target) -> PullResult:
            return await self._pull_from(t, store, r, want, lease, prog)

        result = await self._with_endpoints(r, run)
        prog.emit(status=f"Digest: {result.digest}")
        if result.downloaded:
            prog.emit(status=f"Status: Downloaded newer image for {r.familiar()}")
        else:
            prog.emit(status=f"Status: Image is up to date for {r.familiar()}")
        return result

    async def _pull_from(self, t: _Target, store: ContentStore, r: Reference, want: Platform,
                         lease: Lease, prog: _Progress) -> PullResult:
        downloaded: list[Digest] = []
        if r.digest is not None:
            head: Descriptor | None = None
            if store.exists(r.digest):
                raw = await asyncio.to_thread(store.read, r.digest)
                head = Descriptor(parse_manifest(raw).media_type, r.digest, len(raw))
        else:
            head = await self._head_manifest(t, r, "pull")
        top, raw = await self._ensure_manifest(t, store, r, head, lease, downloaded)
        obj = parse_manifest(raw, top.media_type)
        index_digest: Digest | None = None
        if isinstance(obj, Index):
            index_digest = top.digest
            chosen = select_platform(obj, want)
            mdesc, mraw = await self._ensure_manifest(t, store, r, chosen, lease, downloaded)
            manifest = parse_manifest(mraw, mdesc.media_type)
            if not isinstance(manifest, Manifest):
                raise InvalidArgument(f"{r.familiar()}: the index entry {chosen.digest} for "
                                      f"{want} is not an image manifest")
        else:
            manifest, mdesc = obj, top
        sem = asyncio.Semaphore(self.max_concurrent_downloads)
        layers = list(manifest.layers)
        unique: dict[Digest, Descriptor] = {}
        for layer in layers:
            unique.setdefault(layer.digest, layer)
        for d in unique:
            if not store.exists(d):
                prog.layer(d, "Pulling fs layer")
        tasks = [asyncio.ensure_future(self._download(t, store, manifest.config, lease, "config",
                                                      None, sem, downloaded))]
        tasks += [asyncio.ensure_future(self._download(t, store, desc, lease, "layer", prog, sem,
                                                       downloaded))
                  for desc in unique.values()]
        await _first_error(tasks)
        config = parse_config(await asyncio.to_thread(store.read, manifest.config.digest))
        check_image(manifest, config)
        have = normalize_platform(config.platform)
        if (have.os, have.architecture) != (want.os, want.architecture) and index_digest is None:
            # dockerd only warns for a single-platform image too: it may still run (emulation).
            log.warning("image %s is for %s, not the requested %s", r.familiar(), have, want)
        for d in unique:
            if d in downloaded:
                prog.layer(d, "Pull complete")
        if not t.endpoint.mirror:
            sources = self.sources(store)
            repo = f"{t.registry}/{t.path}"
            for d in [manifest.config.digest, *unique]:
                try:
                    sources.add(d, repo)
                except OSError as exc:  # only an optimisation for later pushes
                    log.debug("cannot record the source of %s: %s", d, exc)
        return PullResult(reference=r, digest=top.digest, media_type=top.media_type,
                          manifest_digest=mdesc.digest, config_digest=manifest.config.digest,
                          layers=layers, index_digest=index_digest, lease=lease,
                          downloaded=downloaded, endpoint=t.base)

    # -- blobs: upload ---------------------------------------------------------------

    def _location(self, t: _Target, resp: aiohttp.ClientResponse, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise InvalidArgument(f"registry {t.endpoint.host} gave no upload location for {what}")
        # Relative locations are relative to the request URL (RFC 7231).
        return urljoin(str(resp.url), loc)

    async def _blob_exists(self, t: _Target, d: Digest) -> bool:
        resp = await self._request(t, "HEAD", t.url(f"blobs/{d}"), scopes=[t.scope("pull,push")])
        try:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            if resp.status in (401, 403):
                raise self._denied(t, "push", t.path, await self._failure(resp))
            raise self._server_error(t, f"check blob {d}", await self._failure(resp))
        finally:
            resp.release()

    async def push_blob(self, repo: str | Reference, desc: Descriptor, store: ContentStore, *,
                        mount_from: Iterable[str] = (),
                        progress: ProgressFn | None = None) -> str:
        """Make the blob DESC (read from STORE) present in repository REPO; returns
        "exists", "mounted" or "uploaded". MOUNT_FROM names repositories (paths on the
        same registry) that may hold it already."""
        r = parse_normalized(repo) if isinstance(repo, str) else repo

        async def run(t: _Target) -> str:
            return await self._push_blob_on(t, store, desc, list(mount_from), _Progress(progress))

        return await self._with_endpoints(r.repository, run, push=True)

    async def _push_blob_on(self, t: _Target, store: ContentStore, desc: Descriptor,
                            mount_from: list[str], prog: _Progress, show: bool = True) -> str:
        d = desc.digest
        if await self._blob_exists(t, d):
            if show:
                prog.layer(d, "Layer already exists")
            return "exists"
        upload_url: str | None = None
        for source in mount_from:
            if source == t.path:
                continue
            url = t.url(f"blobs/uploads/?mount={quote(str(d), safe='')}&from={quote(source, safe='')}")
            resp = await self._request(t, "POST", URL(url, encoded=True),
                                       scopes=[t.scope("pull,push"), f"repository:{source}:pull"])
            try:
                if resp.status == 201:
                    log.info("mounted %s into %s from %s", d.short, t.path, source)
                    if show:
                        prog.layer(d, f"Mounted from {_familiar_path(t.registry, source)}")
                    return "mounted"
                if resp.status == 202:
                    # The mount did not happen; the registry opened an upload instead.
                    upload_url = self._location(t, resp, str(d))
                    break
                if resp.status in (401, 403):
                    log.info("mount of %s from %s refused; uploading", d.short, source)
                    continue
                f = await self._failure(resp)
                log.info("mount of %s from %s failed (%s); uploading", d.short, source, f.describe())
            finally:
                resp.release()
        if upload_url is None:
            resp = await self._request(t, "POST", t.url("blobs/uploads/"),
                                       scopes=[t.scope("pull,push")])
            try:
                if resp.status in (401, 403):
                    raise self._denied(t, "push", t.path, await self._failure(resp))
                if resp.status != 202:
                    raise self._server_error(t, f"start an upload of {d}", await self._failure(resp))
                upload_url = self._location(t, resp, str(d))
            finally:
                resp.release()
        path = store.path(d)
        scopes = [t.scope("pull,push")]
        octet = {"Content-Type": "application/octet-stream"}
        sent = 0
        with open(path, "rb") as f:
            if desc.size <= self.monolithic_limit:
                data = f.read()
                if show:
                    prog.layer(d, "Pushing", 0, desc.size)
                final = _with_query(upload_url, "digest", str(d))
                resp = await self._request(t, "PUT", URL(final, encoded=True), scopes=scopes,
                                           headers=octet, data=data)
                sent = len(data)
            else:
                while True:
                    chunk = f.read(self.chunk_size)
                    if not chunk:
                        break
                    hdrs = dict(octet, **{"Content-Range": f"{sent}-{sent + len(chunk) - 1}"})
                    resp = await self._request(t, "PATCH", URL(upload_url, encoded=True),
                                               scopes=scopes, headers=hdrs, data=chunk)
                    try:
                        if resp.status in (401, 403):
                            raise self._denied(t, "push", t.path, await self._failure(resp))
                        if resp.status != 202:
                            raise self._server_error(t, f"accept a chunk of {d} at {sent}",
                                                     await self._failure(resp))
                        upload_url = self._location(t, resp, str(d))
                    finally:
                        resp.release()
                    sent += len(chunk)
                    if show:
                        prog.layer(d, "Pushing", sent, desc.size)
                final = _with_query(upload_url, "digest", str(d))
                resp = await self._request(t, "PUT", URL(final, encoded=True), scopes=scopes,
                                           headers=octet, data=b"")
        try:
            if resp.status in (401, 403):
                raise self._denied(t, "push", t.path, await self._failure(resp))
            if resp.status not in (201, 204):
                raise self._server_error(t, f"complete the upload of {d}", await self._failure(resp))
            echoed = resp.headers.get("Docker-Content-Digest")
            if echoed and echoed != d:
                raise InvalidArgument(f"digest mismatch for blob uploaded to {t.endpoint.host}/"
                                      f"{t.path}: expected {d}, the registry stored {echoed}")
        finally:
            resp.release()
        if show:
            prog.layer(d, "Pushing", sent, desc.size)
            prog.layer(d, "Pushed")
        return "uploaded"

    async def push_manifest(self, repo: str | Reference, reference: str, data: bytes,
                            media_type: str) -> Digest:
        """PUT a manifest or index under REFERENCE (a tag or digest); returns its digest."""
        r = parse_normalized(repo) if isinstance(repo, str) else repo

        async def run(t: _Target) -> Digest:
            return await self._put_manifest(t, reference, data, media_type)

        return await self._with_endpoints(r.repository, run, push=True)

    async def _put_manifest(self, t: _Target, reference: str, data: bytes, media_type: str) -> Digest:
        digest = Digest.of(data)
        resp = await self._request(t, "PUT", t.url(f"manifests/{reference}"),
                                   scopes=[t.scope("pull,push")],
                                   headers={"Content-Type": media_type}, data=data)
        try:
            if resp.status in (401, 403):
                raise self._denied(t, "push", t.path, await self._failure(resp))
            if resp.status not in (200, 201, 202):
                raise self._server_error(t, f"store manifest {reference}", await self._failure(resp))
            echoed = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.release()
        if echoed and echoed != digest:
            raise InvalidArgument(f"digest mismatch for manifest pushed to {t.endpoint.host}/{t.path}:"
                                  f" expected {digest}, the registry reports {echoed}")
        return digest

    async def _manifest_present(self, t: _Target, d: Digest) -> bool:
        resp = await self._request(t, "HEAD", t.url(f"manifests/{d}"), scopes=[t.scope("pull,push")],
                                   headers={"Accept": MANIFEST_ACCEPT})
        try:
            return resp.status == 200
        finally:
            resp.release()

    # -- push ------------------------------------------------------------------------

    async def push(self, store: ContentStore, ref: str | Reference, manifest_digest: Digest | str,
                   *, progress: ProgressFn | None = None) -> Digest:
        """Push the image whose manifest (or index) is MANIFEST_DIGEST in STORE to REF
        (a tag, or a digest equal to MANIFEST_DIGEST); returns the pushed digest."""
        r = _docker_ref(ref)
        top = Digest(manifest_digest) if not isinstance(manifest_digest, Digest) else manifest_digest
        if r.digest is not None and r.digest != top:
            raise InvalidArgument(f"cannot push {top} as {r.familiar()}: the digests differ")
        raw = await asyncio.to_thread(store.read, top)
        obj = parse_manifest(raw)
        prog = _Progress(progress)
        prog.emit(status=f"The push refers to repository [{r.name}]")

        async def run(t: _Target) -> Digest:
            return await self._push_to(t, store, r, top, raw, obj, prog)

        digest = await self._with_endpoints(r, run, push=True)
        prog.emit(status=f"{r.tag or r.digest}: digest: {digest} size: {len(raw)}")
        return digest

    async def _push_to(self, t: _Target, store: ContentStore, r: Reference, top: Digest,
                       raw: bytes, obj: Manifest | Index, prog: _Progress) -> Digest:
        sources = self.sources(store)
        sem = asyncio.Semaphore(self.max_concurrent_uploads)
        here = f"{t.registry}/{t.path}"

        def mount_candidates(d: Digest) -> list[str]:
            prefix = t.registry + "/"
            return [s[len(prefix):] for s in sources.get(d) if s.startswith(prefix) and s != here]

        async def blob(desc: Descriptor, show: bool) -> None:
            if not store.exists(desc.digest):
                raise NotFound(f"cannot push {r.familiar()}: content {desc.digest} is not in the "
                               "store (the image was not pulled completely)")
            if show:
                prog.layer(desc.digest, "Preparing")
            async with sem:
                await self._push_blob_on(t, store, desc, mount_candidates(desc.digest), prog, show)
            try:
                sources.add(desc.digest, here)
            except OSError as exc:
                log.debug("cannot record the source of %s: %s", desc.digest, exc)

        async def image(m: Manifest) -> None:
            seen: set[Digest] = set()
            tasks = []
            for layer in m.layers:
                if layer.media_type in NONDISTRIBUTABLE_TYPES and layer.urls:
                    # As dockerd: a foreign layer is fetched from its URLs, never pushed.
                    prog.layer(layer.digest, "Skipped foreign layer")
                    continue
                if layer.digest not in seen:
                    seen.add(layer.digest)
                    tasks.append(asyncio.ensure_future(blob(layer, True)))
            tasks.append(asyncio.ensure_future(blob(m.config, False)))
            await _first_error(tasks)

        if isinstance(obj, Index):
            for child in obj.manifests:
                if store.exists(child.digest):
                    craw = await asyncio.to_thread(store.read, child.digest)
                    cobj = parse_manifest(craw, child.media_type)
                    if isinstance(cobj, Manifest):
                        await image(cobj)
                    elif isinstance(cobj, Index):
                        raise InvalidArgument(f"cannot push {r.familiar()}: nested index "
                                              f"{child.digest} is not supported")
                    await self._put_manifest(t, str(child.digest), craw, child.media_type)
                elif not await self._manifest_present(t, child.digest):
                    plat = f" ({child.platform})" if child.platform is not None else ""
                    raise NotFound(f"cannot push {r.familiar()}: manifest {child.digest}{plat} of "
                                   "the index is neither in the store nor in the repository")
        else:
            await image(obj)
        reference = r.tag if r.tag is not None else str(top)
        return await self._put_manifest(t, reference, raw, obj.media_type)


# -- helpers -------------------------------------------------------------------------

def _docker_ref(ref: str | Reference) -> Reference:
    if isinstance(ref, Reference):
        return ref.docker_ref()
    return parse_docker_ref(ref)


def _familiar_path(registry: str, path: str) -> str:
    if registry == DOCKER_HUB and path.startswith("library/") and path.count("/") == 1:
        return path[len("library/"):]
    return path


def _with_query(url: str, key: str, value: str) -> str:
    """URL with KEY=VALUE appended, leaving the registry's own (opaque) query as it is."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{key}={quote(value, safe='')}"
