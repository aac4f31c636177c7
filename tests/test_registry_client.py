"""The registry client against real servers on 127.0.0.1: Debian's docker-registry
(distribution 2.8) filled by skopeo from the official busybox OCI layouts, and a small
aiohttp registry written here for what a real one will not do on demand (Bearer
tokens like the Hub's, cutting a download in half, serving wrong bytes, mirroring,
TLS with certs.d)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web

from dockyard.errors import InvalidArgument, NotFound, SystemFailure
from dockyard.image.content import ContentStore
from dockyard.image.digest import Digest
from dockyard.image.manifest import OCI_INDEX, blob_children, parse_manifest
from dockyard.distribution.client import RegistryClient, RegistryUnreachable
from dockyard.distribution.credentials import (AuthConfig, CredentialStore, HUB_CONFIG_KEY,
                                               Unauthorized, config_key, login, logout,
                                               parse_www_authenticate)
from dockyard.distribution.registries import RegistryConfig, normalize_registry
from engine_daemon import end_process

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKYARD_SHARED", REPO.parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox"
VARIANTS = ("1.38.0-glibc", "1.38.0-musl", "1.38.0-uclibc")


# -- the busybox layouts -------------------------------------------------------------

@dataclass
class Layout:
    path: Path
    manifest_digest: Digest
    manifest: bytes
    config_digest: Digest
    layer_digests: list[Digest]
    blobs: dict[Digest, bytes]

    @property
    def media_type(self) -> str:
        return parse_manifest(self.manifest).media_type


def load_layout(variant: str) -> Layout:
    path = BUSYBOX / variant
    if not path.exists():
        pytest.fail(f"test images not found at {path} (set DOCKYARD_SHARED)")
    index = json.loads((path / "index.json").read_text())
    mdigest = Digest(index["manifests"][0]["digest"])
    blobs = {Digest(f"sha256:{p.name}"): p.read_bytes() for p in (path / "blobs" / "sha256").iterdir()}
    m = json.loads(blobs[mdigest])
    return Layout(path, mdigest, blobs[mdigest], Digest(m["config"]["digest"]),
                  [Digest(layer["digest"]) for layer in m["layers"]], blobs)


@pytest.fixture(scope="module")
def layouts() -> dict[str, Layout]:
    return {v: load_layout(v) for v in VARIANTS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def events_by_status(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in events:
        if "id" in e and "progressDetail" in e:
            out.setdefault(e["status"], set()).add(e["id"])
    return out


# -- Debian's docker-registry ------------------------------------------------------------

class DockerRegistry:
    """docker-registry serving from a temp dir; its access log tells what clients did."""

    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = root / "registry.log"
        auth = ""
        if htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"docker-registry did not start: {self.log()}")
                time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access(self) -> list[str]:
        """Access-log request lines: 'METHOD /path HTTP/1.1" STATUS'."""
        return re.findall(r'"([A-Z]+ \S+) HTTP/1\.1" (\d+)', self.log())

    def stop(self) -> None:
        end_process(self.proc, 5)
        self._log.close()

    def skopeo_copy(self, layout: Path, dest: str) -> None:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                        f"oci:{layout}", f"docker://{self.host}/{dest}"],
                       check=True, capture_output=True, timeout=60)


def _need(*programs: str) -> None:
    for p in programs:
        if shutil.which(p) is None:
            pytest.skip(f"{p} is not installed")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, layouts: dict[str, Layout]) -> Iterator[DockerRegistry]:
    _need("docker-registry", "skopeo")
    reg = DockerRegistry(tmp_path_factory.mktemp("registry"))
    try:
        reg.skopeo_copy(layouts["1.38.0-glibc"].path, "library/busybox:glibc")
        yield reg
    finally:
        reg.stop()


def bcrypt_line(user: str, password: str) -> str | None:
    """An htpasswd line with a bcrypt hash (all docker-registry accepts), made by the
    C library's crypt(); None where it cannot do bcrypt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    if crypt.METHOD_BLOWFISH not in crypt.methods:
        return None
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    return f"{user}:{hashed}" if hashed and hashed.startswith("$2") else None


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    _need("docker-registry")
    line = bcrypt_line("alice", "s3cret")
    if line is None:
        pytest.skip("no bcrypt available to write an htpasswd for docker-registry")
    root = tmp_path_factory.mktemp("auth-registry")
    (root / "htpasswd").write_text(line + "\n")
    reg = DockerRegistry(root, root / "htpasswd")
    try:
        yield reg
    finally:
        reg.stop()


# -- a registry written here ---------------------------------------------------------------

@dataclass
class FakeRegistry:
    """A minimal read-only registry with knobs for what real ones do not do on demand.

    auth: None, "basic" or "bearer" (a token endpoint at /token, like the Hub's).
    cuts: digest -> absolute offsets at which to drop the connection, once each.
    corrupt: digests served with one byte flipped.
    """

    images: dict[str, dict[str, Layout]]           # repo -> tag -> layout
    auth: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    public: set[str] = field(default_factory=set)  # repos anyone may pull (bearer)
    token_field: str = "token"
    cuts: dict[str, list[int]] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    ranges: bool = True                            # honour Range requests
    tls: ssl.SSLContext | None = None
    requests: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    port: int = 0

    async def __aenter__(self) -> FakeRegistry:
        app = web.Application()
        app.router.add_get("/v2/", self._base)
        app.router.add_get("/token", self._token)
        app.router.add_get(r"/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_get(r"/v2/{name:.+}/blobs/{digest}", self._blob)
        app.router.add_get(r"/v2/{name:.+}/tags/list", self._tags)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_gets(self) -> list[tuple[str, str | None]]:
        return [(p, r) for m, p, r, _a in self.requests if m == "GET" and "/blobs/" in p]

    # auth ---------------------------------------------------------------------

    def _user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == pw and pw else None

    def _check(self, request: web.Request, name: str | None) -> web.Response | None:
        if self.auth is None:
            return None
        header = request.headers.get("Authorization", "")
        if self.auth == "basic":
            if self._user(header):
                return None
            challenge = 'Basic realm="fake"'
        else:
            grants = self.tokens.get(header.removeprefix("Bearer "), None) if header.startswith("Bearer ") else None
            if grants is not None and (name is None or f"{name}:pull" in grants):
                return None
            scheme = "https" if self.tls else "http"
            challenge = f'Bearer realm="{scheme}://{self.host}/token",service="fake-registry"'
            if name is not None:
                challenge += f',scope="repository:{name}:pull"'
                if grants is not None:
                    challenge += ',error="insufficient_scope"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})

    async def _token(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        scopes = request.query.getall("scope", [])
        self.token_requests.append({"scopes": scopes, "auth": header,
                                    "service": request.query.get("service")})
        user = self._user(header)
        if header and user is None:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        grants = set()
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and "pull" in actions.split(",") and (user or name in self.public):
                grants.add(f"{name}:pull")
        token = secrets.token_hex(8)
        self.tokens[token] = grants
        return web.json_response({self.token_field: token, "expires_in": 300})

    # API ------------------------------------------------------------------------

    def _log(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path_qs, request.headers.get("Range"),
                              request.headers.get("Authorization")))

    async def _base(self, request: web.Request) -> web.Response:
        self._log(request)
        return self._check(request, None) or web.json_response({})

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)

    async def _tags(self, request: web.Request) -> web.Response:
        self._log(request)
        name = request.match_info["name"]
        denied = self._check(request, name)
        if denied:
            return denied
        if name not in self.images:
            return self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
        return web.json_response({"name": name, "tags": sorted(self.images[name])})

    async def _manifest(self, request: web.Request) -> web.Response:
        self._log(request)
        name, ref = request.match_info["name"], request.match_info["ref"]
        denied = self._check(request, name)
        if denied:
            return denied
        tags = self.images.get(name, {})
        layout = tags.get(ref) or next((lay for lay in tags.values() if lay.manifest_digest == ref), None)
        if layout is None:
            return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        data = layout.manifest
        if layout.manifest_digest in self.corrupt and request.method == "GET":
            data = data.replace(b'"schemaVersion": 2', b'"schemaVersion":2')
        return web.Response(body=data, headers={"Content-Type": layout.media_type,
                                                "Docker-Content-Digest": layout.manifest_digest})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        name, digest = request.match_info["name"], request.match_info["digest"]
        denied = self._check(request, name)
        if denied:
            return denied
        data = next((lay.blobs.get(digest) for lay in self.images.get(name, {}).values()
                     if digest in lay.blobs), None)
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if digest in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if m and self.ranges:
            start, status = int(m.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        cuts = self.cuts.get(digest)
        if cuts and request.method == "GET":
            cut = cuts.pop(0)
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: cut - start])
            await asyncio.sleep(0.2)  # let the client consume what was sent
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=body, status=status, headers=headers)


# -- pulls and pushes against docker-registry ------------------------------------------------

def test_pull_then_pull_again(registry: DockerRegistry, layouts: dict[str, Layout],
                              tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    store = ContentStore(tmp_path / "content")
    ref = f"{registry.host}/library/busybox:glibc"
    events: list[dict[str, Any]] = []

    async def scenario() -> tuple[Any, Any]:
        async with RegistryClient() as client:
            desc, raw = await client.resolve(ref)
            assert (desc.digest, desc.size, raw) == (glibc.manifest_digest, len(glibc.manifest),
                                                     glibc.manifest)
            assert desc.media_type == glibc.media_type
            first = await client.pull(store, ref, progress=events.append)
            before = len(registry.access())
            events.clear()
            second = await client.pull(store, ref, progress=events.append)
            return first, (second, registry.access()[before:])

    first, (second, later_requests) = run(scenario())
    assert first.digest == first.manifest_digest == glibc.manifest_digest
    assert first.config_digest == glibc.config_digest
    assert [layer.digest for layer in first.layers] == glibc.layer_digests
    assert first.index_digest is None
    for d in [glibc.manifest_digest, glibc.config_digest, *glibc.layer_digests]:
        assert store.read(d, verify=True) == glibc.blobs[d]
        assert d in first.lease.digests  # GC cannot take a pulled blob before it is tagged
    assert set(first.downloaded) == {glibc.manifest_digest, glibc.config_digest, *glibc.layer_digests}
    assert store.ingests() == []

    # Pulled again: everything is there, nothing is downloaded.
    layer_ids = {d.short for d in glibc.layer_digests}
    assert events_by_status(events) == {"Already exists": layer_ids}
    assert events[-1]["status"] == f"Status: Image is up to date for {ref}"
    assert second.downloaded == []
    assert second.manifest_digest == glibc.manifest_digest
    assert [r for r in later_requests if "/blobs/" in r[0]] == []
    assert not any(r[0].startswith("GET /v2/library/busybox/manifests/") for r in later_requests)


def test_pull_progress_like_docker(registry: DockerRegistry, layouts: dict[str, Layout],
                                  tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    events: list[dict[str, Any]] = []
    run(_pull(tmp_path, f"{registry.host}/library/busybox:glibc", progress=events.append))
    layer = glibc.layer_digests[0].short
    statuses = [e["status"] for e in events if e.get("id") == layer]
    assert statuses[0] == "Pulling fs layer"
    assert statuses[-3:] == ["Verifying Checksum", "Download complete", "Pull complete"]
    downloading = [e["progressDetail"] for e in events
                   if e.get("id") == layer and e["status"] == "Downloading"]
    assert downloading[-1] == {"current": len(glibc.blobs[glibc.layer_digests[0]]),
                               "total": len(glibc.blobs[glibc.layer_digests[0]])}
    assert [d["current"] for d in downloading] == sorted(d["current"] for d in downloading)
    assert events[0] == {"status": "Pulling from library/busybox", "id": "glibc"}
    assert events[-2]["status"] == f"Digest: {glibc.manifest_digest}"


async def _pull(tmp_path: Path, ref: str, **kw: Any) -> Any:
    store = ContentStore(tmp_path / f"content-{secrets.token_hex(3)}")
    platform = kw.pop("platform", "linux/amd64")
    client_kw = kw.pop("client", {})
    async with RegistryClient(**client_kw) as client:
        return await client.pull(store, ref, platform, **kw), store


def test_push_mounts_and_tags(registry: DockerRegistry, layouts: dict[str, Layout],
                              tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    store = ContentStore(tmp_path / "content")
    events: list[dict[str, Any]] = []

    async def scenario() -> list[Any]:
        async with RegistryClient() as client:
            pulled = await client.pull(store, f"{registry.host}/library/busybox:glibc")
            before = len(registry.access())
            pushed = await client.push(store, f"{registry.host}/copies/busybox:v1",
                                       pulled.manifest_digest, progress=events.append)
            mount_requests = registry.access()[before:]
            retag_events: list[dict[str, Any]] = []
            again = await client.push(store, f"{registry.host}/library/busybox:again",
                                      pulled.manifest_digest, progress=retag_events.append)
            # The blob-level API: a mount when the source is named, then nothing to do.
            config = parse_manifest(glibc.manifest).config
            assert await client.push_blob(f"{registry.host}/blobs/only", config, store,
                                          mount_from=["library/busybox"]) == "mounted"
            assert await client.push_blob(f"{registry.host}/blobs/only", config, store) == "exists"
            back = [await client.pull(ContentStore(tmp_path / f"back{i}"), f"{registry.host}/{name}")
                    for i, name in enumerate(("copies/busybox:v1", "library/busybox:again"))]
            return [pushed, mount_requests, again, retag_events, back]

    pushed, requests, again, retag_events, back = run(scenario())
    assert pushed == again == glibc.manifest_digest
    # Every blob came by cross-repository mount from where it was pulled: no upload.
    mounts = [r for r in requests if "mount=" in r[0]]
    assert len(mounts) == 2 and all(status == "201" and "from=library%2Fbusybox" in line
                                    for line, status in mounts)
    assert not any(line.startswith(("PUT /v2/copies/busybox/blobs", "PATCH")) for line, _ in requests)
    assert ("PUT /v2/copies/busybox/manifests/v1", "201") in requests
    layer = glibc.layer_digests[0].short
    assert events_by_status(events)["Mounted from library/busybox"] == {layer}
    assert events[-1]["status"] == f"v1: digest: {glibc.manifest_digest} size: {len(glibc.manifest)}"
    assert events_by_status(retag_events)["Layer already exists"] == {layer}
    for result in back:
        assert result.manifest_digest == glibc.manifest_digest
        assert result.config_digest == glibc.config_digest
        assert [layer.digest for layer in result.layers] == glibc.layer_digests


def test_multi_platform_index(registry: DockerRegistry, layouts: dict[str, Layout],
                              tmp_path: Path) -> None:
    """An index of the three variants under made-up platforms, pushed chunk by chunk,
    then pulled for each platform."""
    store = ContentStore(tmp_path / "content")
    platforms = {"1.38.0-glibc": {"architecture": "amd64", "os": "linux"},
                 "1.38.0-musl": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                 "1.38.0-uclibc": {"architecture": "arm", "os": "linux", "variant": "v7"}}
    entries = []
    for variant, lay in layouts.items():
        for data in lay.blobs.values():
            store.put(data)
        entries.append({"mediaType": lay.media_type, "digest": lay.manifest_digest,
                        "size": len(lay.manifest), "platform": platforms[variant]})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    index_digest = store.put(index)
    ref = f"{registry.host}/multi/busybox:latest"

    async def scenario() -> list[Any]:
        before = len(registry.access())
        # Small chunks: the layers go up as PATCH series with Content-Range.
        async with RegistryClient(monolithic_limit=256 << 10, chunk_size=256 << 10) as client:
            pushed = await client.push(store, ref, index_digest)
        uploads = registry.access()[before:]
        results = [await _pull(tmp_path, ref, platform=p)
                   for p in ("linux/arm64", "linux/arm/v7", "linux/amd64")]
        with pytest.raises(NotFound, match="no matching manifest for linux/s390x"):
            await _pull(tmp_path, ref, platform="linux/s390x")
        return [pushed, uploads, results]

    pushed, uploads, results = run(scenario())
    assert pushed == index_digest
    patches = [line for line, status in uploads if line.startswith("PATCH /v2/multi/busybox/")]
    assert len(patches) >= 6 and all(status == "202" for line, status in uploads if line.startswith("PATCH"))
    for (result, pulled_store), variant in zip(results, ("1.38.0-musl", "1.38.0-uclibc", "1.38.0-glibc")):
        lay = layouts[variant]
        assert result.digest == result.index_digest == index_digest
        assert result.manifest_digest == lay.manifest_digest
        assert result.config_digest == lay.config_digest
        assert [layer.digest for layer in result.layers] == lay.layer_digests
        assert pulled_store.read(index_digest) == index  # the index is kept
        others = {d for v, o in layouts.items() if v != variant for d in o.layer_digests}
        assert not any(pulled_store.exists(d) for d in others)


# -- errors -------------------------------------------------------------------------------

def test_not_found_errors(registry: DockerRegistry, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as exc:
        run(_pull(tmp_path, f"{registry.host}/nobody/nothing:latest"))
    assert str(exc.value) == (f"pull access denied for {registry.host}/nobody/nothing, repository "
                              "does not exist or may require 'docker login': name unknown: "
                              "repository name not known to registry")
    with pytest.raises(NotFound) as exc:
        run(_pull(tmp_path, f"{registry.host}/library/busybox:nope"))
    assert str(exc.value) == (f"manifest for {registry.host}/library/busybox:nope not found: "
                              "manifest unknown: manifest unknown")
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFound, match=f"manifest for {registry.host}/library/busybox@{missing} not found"):
        run(_pull(tmp_path, f"{registry.host}/library/busybox@{missing}"))


def test_unreachable_registry(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(SystemFailure) as exc:
        run(_pull(tmp_path, f"127.0.0.1:{port}/library/busybox:latest"))
    assert isinstance(exc.value, RegistryUnreachable)
    assert f"127.0.0.1:{port}" in str(exc.value) and "connection refused" in str(exc.value)


def test_digest_mismatch(layouts: dict[str, Layout], tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    layer = glibc.layer_digests[0]

    async def scenario() -> None:
        async with FakeRegistry({"library/busybox": {"latest": glibc}}, corrupt={layer}) as fake:
            store = ContentStore(tmp_path / "content")
            async with RegistryClient() as client:
                with pytest.raises(InvalidArgument) as exc:
                    await client.pull(store, f"{fake.host}/library/busybox:latest")
            msg = str(exc.value)
            assert f"expected {layer}, got sha256:" in msg and "digest mismatch" in msg
            assert not store.exists(layer)
            # Wrong bytes are not kept for a "resume" (other downloads, cancelled, may be).
            assert not any(i.expected == layer for i in store.ingests())
            fake.corrupt = {glibc.manifest_digest}
            store2 = ContentStore(tmp_path / "content2")
            async with RegistryClient() as client:
                with pytest.raises(InvalidArgument, match=f"expected {glibc.manifest_digest}, got sha256:"):
                    await client.pull(store2, f"{fake.host}/library/busybox:latest")
            assert list(store2.walk()) == []

    run(scenario())


# -- interrupted downloads ---------------------------------------------------------------------

def test_interrupted_pull_resumes(layouts: dict[str, Layout], tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    layer = glibc.layer_digests[0]
    size = len(glibc.blobs[layer])
    store = ContentStore(tmp_path / "content")

    async def scenario() -> None:
        async with FakeRegistry({"library/busybox": {"latest": glibc}},
                                cuts={layer: [700_000]}) as fake:
            ref = f"{fake.host}/library/busybox:latest"
            async with RegistryClient(retries=0) as client:
                with pytest.raises(RegistryUnreachable, match="broke off"):
                    await client.pull(store, ref)
            (ingest,) = store.ingests()
            assert 0 < ingest.offset <= 700_000 and ingest.expected == layer
            assert not store.exists(layer)
            # The pull's lease protects the partial download and what is complete.
            assert store.abort_stale(0) == []
            store.gc([], blob_children(store))
            assert store.exists(glibc.manifest_digest) and store.exists(glibc.config_digest)

            # Again, with one more cut on the way: resumed from the ingest, then retried.
            fake.cuts[layer] = [1_500_000]
            events: list[dict[str, Any]] = []
            async with RegistryClient(retries=2, retry_delay=0.05) as client:
                result = await client.pull(store, ref, progress=events.append)
            gets = [r for p, r in fake.blob_gets() if layer in p]
            assert gets[0] is None
            assert gets[1] == f"bytes={ingest.offset}-"
            second_cut = int(gets[2].removeprefix("bytes=").rstrip("-"))
            assert ingest.offset < second_cut <= 1_500_000
            assert any(e["status"].startswith("Retrying in") for e in events)
            assert store.read(layer, verify=True) == glibc.blobs[layer]
            assert result.downloaded == [layer]  # manifest and config were there already
            assert store.ingests() == []
            first_downloading = next(e for e in events if e["status"] == "Downloading")
            assert first_downloading["progressDetail"] == {"current": ingest.offset, "total": size}
            # Two leases: the failed pull's (kept a day, protecting its partial download)
            # and this one's. Released, nothing holds the image any more.
            assert len(store.leases()) == 2
            for lease in store.leases():
                lease.release()
            store.gc([], blob_children(store))
            assert list(store.walk()) == []

    run(scenario())


def test_resume_when_the_server_ignores_range(layouts: dict[str, Layout], tmp_path: Path) -> None:
    """A server that answers a Range with 200 and the whole blob: the part the ingest
    has is skipped, not written twice."""
    glibc = layouts["1.38.0-glibc"]
    layer = glibc.layer_digests[0]
    store = ContentStore(tmp_path / "content")

    async def scenario() -> None:
        async with FakeRegistry({"library/busybox": {"latest": glibc}}, cuts={layer: [900_000]},
                                ranges=False) as fake:
            async with RegistryClient(retries=1, retry_delay=0.01) as client:
                await client.pull(store, f"{fake.host}/library/busybox:latest")
            gets = [r for p, r in fake.blob_gets() if layer in p]
            assert gets[0] is None and gets[1] is not None and gets[1].startswith("bytes=")
            assert store.read(layer, verify=True) == glibc.blobs[layer]

    run(scenario())


def test_concurrent_pulls_share_downloads(layouts: dict[str, Layout], tmp_path: Path) -> None:
    """Two pulls of one image into one store: the second waits for the first's ingest
    instead of failing on its lock, and each layer crosses the network once."""
    glibc = layouts["1.38.0-glibc"]
    store = ContentStore(tmp_path / "content")

    async def scenario() -> None:
        async with FakeRegistry({"library/busybox": {"latest": glibc}}) as fake:
            ref = f"{fake.host}/library/busybox:latest"
            async with RegistryClient() as one, RegistryClient() as two:
                a, b = await asyncio.gather(one.pull(store, ref), two.pull(store, ref))
            assert a.manifest_digest == b.manifest_digest == glibc.manifest_digest
            assert a.lease.id != b.lease.id
            for d in glibc.layer_digests:
                assert len([p for p, _r in fake.blob_gets() if d in p]) == 1
                assert d in a.lease.digests and d in b.lease.digests
            a.lease.release()
            store.gc([], blob_children(store))  # b still holds everything
            assert all(store.exists(d) for d in glibc.layer_digests)

    run(scenario())


# -- authentication ----------------------------------------------------------------------------

def test_bearer_tokens_like_the_hub(layouts: dict[str, Layout], tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]

    async def scenario() -> None:
        images = {"library/busybox": {"latest": glibc}, "team/private": {"v1": glibc}}
        async with FakeRegistry(images, auth="bearer", users={"bob": "pw"},
                                public={"library/busybox"}) as fake:
            # Anonymous pull of a public repository: one token for its pull scope, reused.
            async with RegistryClient() as client:
                await client.pull(ContentStore(tmp_path / "a"), f"{fake.host}/library/busybox")
                await client.pull(ContentStore(tmp_path / "b"), f"{fake.host}/library/busybox")
                assert client.auth.token_requests == 1
            assert fake.token_requests == [{"scopes": ["repository:library/busybox:pull"],
                                             "auth": "", "service": "fake-registry"}]
            assert all(a and a.startswith("Bearer ") for _m, p, _r, a in fake.requests
                       if "/manifests/" in p or "/blobs/" in p)

            # A private repository: refused anonymously, in Docker's words.
            async with RegistryClient() as client:
                with pytest.raises(Unauthorized) as exc:
                    await client.pull(ContentStore(tmp_path / "c"), f"{fake.host}/team/private:v1")
            assert str(exc.value) == (f"pull access denied for {fake.host}/team/private, repository "
                                      "does not exist or may require 'docker login': "
                                      "unauthorized: authentication required")
            assert exc.value.http_status == 401

            # Credentials from config.json go to the token server as Basic auth.
            creds = CredentialStore(tmp_path / "config.json")
            creds.store(fake.host, AuthConfig("bob", "pw"))
            fake.token_requests.clear()
            fake.token_field = "access_token"  # the OAuth2 spelling, as some servers send
            async with RegistryClient(credentials=creds) as client:
                result = await client.pull(ContentStore(tmp_path / "d"), f"{fake.host}/team/private:v1")
            assert result.manifest_digest == glibc.manifest_digest
            assert fake.token_requests[-1]["auth"] == "Basic " + base64.b64encode(b"bob:pw").decode()

            # A wrong password is reported as such.
            async with RegistryClient(credentials=AuthConfig("bob", "wrong")) as client:
                with pytest.raises(Unauthorized, match="incorrect username or password"):
                    await client.pull(ContentStore(tmp_path / "e"), f"{fake.host}/team/private:v1")

            # docker login against the token server: checked, then stored.
            store = CredentialStore(tmp_path / "login.json")
            with pytest.raises(Unauthorized, match="incorrect username or password"):
                await login(fake.host, "bob", "nope", credentials=store)
            assert store.get(fake.host) is None
            assert await login(fake.host, "bob", "pw", credentials=store) == "Login Succeeded"
            assert store.get(fake.host).password == "pw"

    run(scenario())


def test_basic_auth_with_docker_registry(auth_registry: DockerRegistry, registry: DockerRegistry,
                                        layouts: dict[str, Layout], tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    host = auth_registry.host
    creds = CredentialStore(tmp_path / "docker" / "config.json")
    source = ContentStore(tmp_path / "source")

    async def scenario() -> None:
        async with RegistryClient() as client:
            pulled = await client.pull(source, f"{registry.host}/library/busybox:glibc")
            with pytest.raises(Unauthorized, match="log in to"):
                await client.push(source, f"{host}/mine/busybox:1", pulled.manifest_digest)
        with pytest.raises(Unauthorized, match="incorrect username or password"):
            await login(host, "alice", "wrong", credentials=creds)
        assert not creds.path.exists()
        assert await login(host, "alice", "s3cret", credentials=creds) == "Login Succeeded"
        # The layer (2 MB) goes up in PATCH chunks: another registry, so no mount.
        before = len(auth_registry.access())
        async with RegistryClient(credentials=creds, monolithic_limit=1 << 20,
                                  chunk_size=1 << 20) as client:
            pushed = await client.push(source, f"{host}/mine/busybox:1", pulled.manifest_digest)
            result = await client.pull(ContentStore(tmp_path / "back"), f"{host}/mine/busybox:1")
        assert pushed == result.manifest_digest == glibc.manifest_digest
        lines = auth_registry.access()[before:]
        assert len([line for line, status in lines if line.startswith("PATCH") and status == "202"]) == 3
        async with RegistryClient() as client:
            with pytest.raises(Unauthorized, match="pull access denied"):
                await client.pull(ContentStore(tmp_path / "anon"), f"{host}/mine/busybox:1")

    run(scenario())
    doc = json.loads(creds.path.read_text())
    assert doc["auths"][host]["auth"] == base64.b64encode(b"alice:s3cret").decode()
    assert creds.path.stat().st_mode & 0o777 == 0o600
    assert logout(host, credentials=creds) == f"Removing login credentials for {host}"
    assert logout(host, credentials=creds) == f"Not logged in to {host}"
    assert creds.get(host) is None


# -- mirrors, TLS ------------------------------------------------------------------------------

def test_mirror_serves_docker_hub_pulls(layouts: dict[str, Layout], tmp_path: Path) -> None:
    glibc = layouts["1.38.0-glibc"]
    dead = free_port()

    async def scenario() -> None:
        async with FakeRegistry({"library/busybox": {"latest": glibc}}) as mirror:
            config = RegistryConfig(mirrors=[f"http://127.0.0.1:{dead}", f"http://{mirror.host}/"])
            async with RegistryClient(registries=config) as client:
                result = await client.pull(ContentStore(tmp_path / "c"), "busybox")
            assert result.endpoint == f"http://{mirror.host}"
            assert str(result.reference) == "docker.io/library/busybox:latest"
            assert result.manifest_digest == glibc.manifest_digest
            assert ("HEAD", "/v2/library/busybox/manifests/latest") in [(m, p) for m, p, _r, _a in mirror.requests]

    run(scenario())
    # (Addresses, not names: deciding insecurity resolves names, and tests stay off DNS.)
    config = RegistryConfig(mirrors=["https://192.0.2.10"])
    assert [e.url for e in config.endpoints("docker.io")] == ["https://192.0.2.10",
                                                              "https://registry-1.docker.io"]
    assert [e.url for e in config.endpoints("docker.io", pull=False)] == ["https://registry-1.docker.io"]
    assert [e.url for e in config.endpoints("192.0.2.20:5000")] == ["https://192.0.2.20:5000"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def test_tls_with_certs_d(layouts: dict[str, Layout], tmp_path: Path) -> None:
    _need("openssl")
    pki = tmp_path / "pki"
    pki.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=dockyard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=pki)
    (pki / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                    "extendedKeyUsage=serverAuth\n")
    (pki / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                 cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
                 cwd=pki)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki / "server.crt", pki / "server.key")
    server_tls.load_verify_locations(pki / "ca.crt")
    server_tls.verify_mode = ssl.CERT_REQUIRED  # a client certificate is required too
    glibc = layouts["1.38.0-glibc"]

    async def scenario() -> None:
        async with FakeRegistry({"library/busybox": {"latest": glibc}}, tls=server_tls) as fake:
            certs = tmp_path / "certs.d"
            ref = f"{fake.host}/library/busybox:latest"
            # Loopback is insecure by default; here it must verify, as any other host.
            config = RegistryConfig(certs_dir=certs, loopback_insecure=False)
            assert [e.url for e in config.endpoints(fake.host)] == [f"https://{fake.host}"]
            async with RegistryClient(registries=config) as client:
                with pytest.raises(RegistryUnreachable, match="certificate"):
                    await client.pull(ContentStore(tmp_path / "a"), ref)
            host_dir = certs / fake.host
            host_dir.mkdir(parents=True)
            shutil.copy(pki / "ca.crt", host_dir / "ca.crt")
            async with RegistryClient(registries=RegistryConfig(certs_dir=certs,
                                                                loopback_insecure=False)) as client:
                with pytest.raises(RegistryUnreachable):  # trusted now, but no client cert
                    await client.pull(ContentStore(tmp_path / "b"), ref)
            shutil.copy(pki / "client.crt", host_dir / "client.cert")
            shutil.copy(pki / "client.key", host_dir / "client.key")
            async with RegistryClient(registries=RegistryConfig(certs_dir=certs,
                                                                loopback_insecure=False)) as client:
                result = await client.pull(ContentStore(tmp_path / "c"), ref)
            assert result.endpoint == f"https://{fake.host}"
            assert result.manifest_digest == glibc.manifest_digest

    run(scenario())


def test_insecure_registries_config(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"registry-mirrors": ["https://mirror.example:5000/"],
                                       "insecure-registries": ["10.0.0.0/8", "myreg.example:5000"]}))
    config = RegistryConfig.from_daemon_json(daemon_json, certs_dir=tmp_path / "none")
    assert config.mirrors == ["https://mirror.example:5000"]
    assert config.is_insecure("10.1.2.3:5000") and config.is_insecure("myreg.example:5000")
    assert config.is_insecure("127.0.0.1:5000") and config.is_insecure("localhost:5000")
    assert config.is_insecure("[::1]:5000")
    assert not config.is_insecure("11.1.2.3:5000") and not config.is_insecure("docker.io")
    eps = config.endpoints("10.1.2.3:5000")
    assert [(e.url, e.verify_tls) for e in eps] == [("https://10.1.2.3:5000", False),
                                                    ("http://10.1.2.3:5000", False)]
    assert [(e.url, e.verify_tls) for e in config.endpoints("11.1.2.3")] == [("https://11.1.2.3", True)]
    assert RegistryConfig.from_daemon_json(tmp_path / "missing.json").mirrors == []
    with pytest.raises(InvalidArgument, match="should not contain"):
        RegistryConfig(insecure_registries=["http://myreg:5000"])
    with pytest.raises(InvalidArgument, match="invalid mirror"):
        RegistryConfig(mirrors=["mirror.example"])
    assert normalize_registry("https://index.docker.io/v1/") == "docker.io"
    assert normalize_registry("") == "docker.io"
    assert normalize_registry("Registry.Example:5000") == "registry.example:5000"


# -- credentials --------------------------------------------------------------------------------

HELPER = """#!{python}
import json, os, sys
db = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper-db.json")
try:
    with open(db) as f:
        entries = json.load(f)
except FileNotFoundError:
    entries = {{}}
action, data = sys.argv[1], sys.stdin.read()
with open(db + ".log", "a") as f:
    f.write(action + " " + (data.strip() if action != "store" else json.loads(data)["ServerURL"]) + "\\n")
if action == "store":
    doc = json.loads(data)
    entries[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
elif action in ("get", "erase"):
    key = data.strip()
    if key not in entries:
        print("credentials not found in native keychain")
        sys.exit(1)
    if action == "get":
        print(json.dumps({{"ServerURL": key, "Username": entries[key][0], "Secret": entries[key][1]}}))
        sys.exit(0)
    del entries[key]
with open(db, "w") as f:
    json.dump(entries, f)
"""


def test_credentials_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dotdocker"))
    store = CredentialStore()
    assert store.path == tmp_path / "dotdocker" / "config.json"
    assert store.get("127.0.0.1:5000") is None
    store.store("127.0.0.1:5000", AuthConfig("u1", "p:1"))
    store.store("docker.io", AuthConfig("hubuser", "hubpw"))
    doc = json.loads(store.path.read_text())
    assert doc["auths"]["127.0.0.1:5000"] == {"auth": base64.b64encode(b"u1:p:1").decode()}
    assert HUB_CONFIG_KEY in doc["auths"] and config_key("index.docker.io") == HUB_CONFIG_KEY
    assert store.get("127.0.0.1:5000").password == "p:1"
    assert store.get("").username == "hubuser"
    # Entries written by other tools under a URL are found by host name.
    doc["auths"]["https://other.example:443/v2/"] = {"auth": base64.b64encode(b"o:pw").decode(),
                                                     "email": "x@example.com"}
    doc["detachKeys"] = "ctrl-e,e"
    store.path.write_text(json.dumps(doc))
    assert store.get("other.example:443").username == "o"
    assert store.erase("127.0.0.1:5000") and not store.erase("127.0.0.1:5000")
    assert json.loads(store.path.read_text())["detachKeys"] == "ctrl-e,e"  # other settings kept


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("fake", "special"):
        script = bindir / f"docker-credential-{name}"
        script.write_text(HELPER.format(python=sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "fake",
                                  "credHelpers": {"special.example:5000": "special"}}))
    store = CredentialStore(config)
    store.store("docker.io", AuthConfig("hub", "secret"))
    store.store("special.example:5000", AuthConfig("sp", "sp-secret"))
    store.store("tokens.example", AuthConfig("tok", identity_token="refresh-me"))
    db = json.loads((bindir / "helper-db.json").read_text())
    assert db == {HUB_CONFIG_KEY: ["hub", "secret"], "special.example:5000": ["sp", "sp-secret"],
                  "tokens.example": ["<token>", "refresh-me"]}
    doc = json.loads(config.read_text())
    # credsStore logins leave an empty marker entry, as the docker CLI's; no secrets.
    assert doc["auths"] == {HUB_CONFIG_KEY: {}, "tokens.example": {}}
    assert store.get("docker.io").password == "secret"
    assert store.get("special.example:5000").username == "sp"
    assert store.get("tokens.example").identity_token == "refresh-me"
    assert store.get("unknown.example") is None
    assert logout("docker.io", credentials=store) == f"Removing login credentials for {HUB_CONFIG_KEY}"
    assert store.get("docker.io") is None
    log = (bindir / "helper-db.json.log").read_text().split("\n")
    assert "erase https://index.docker.io/v1/" in log
    config.write_text(json.dumps({"credsStore": "absent"}))
    with pytest.raises(SystemFailure, match='exec: "docker-credential-absent": executable file not found'):
        store.get("docker.io")


def test_www_authenticate_parsing() -> None:
    (ch,) = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull,push",error="insufficient_scope"')
    assert ch.scheme == "bearer" and ch.realm == "https://auth.docker.io/token"
    assert ch.params["scope"] == "repository:library/busybox:pull,push"
    assert ch.params["service"] == "registry.docker.io"
    basic, bearer = parse_www_authenticate('Basic realm="a \\"b\\"", Bearer realm=x')
    assert (basic.scheme, basic.realm, bearer.scheme, bearer.realm) == ("basic", 'a "b"', "bearer", "x")
