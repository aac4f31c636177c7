"""The registry server (dockyard.distribution) against skopeo, as an independent client,
and against direct HTTP for the protocol details skopeo does not show.

Servers run in-process (RegistryThread) on 127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from dockyard.distribution.auth import BasicAuth, Htpasswd, TokenAuth, TokenKey, encode_jwt
from dockyard.distribution.gc import gc
from dockyard.distribution.server import RegistryThread, tls_context

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKYARD_SHARED", REPO.parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox"
VARIANTS = ("glibc", "musl", "uclibc")
SKOPEO = shutil.which("skopeo")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout(variant: str) -> Path:
    path = BUSYBOX / f"1.38.0-{variant}"
    if not path.exists():
        pytest.fail(f"test images not found at {path} (set DOCKYARD_SHARED)")
    return path


def layout_manifest_digest(path: Path) -> str:
    return json.loads((path / "index.json").read_text())["manifests"][0]["digest"]


# --------------------------------------------------------------------------- HTTP client

@dataclass
class Resp:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]


class Client:
    """A thin http.client wrapper: no redirects, no retries, every status returned."""

    def __init__(self, base: str, authorization: str | None = None) -> None:
        parts = urlsplit(base)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.authorization = authorization

    def request(self, method: str, path: str, body: bytes | Iterator[bytes] | None = None,
                headers: dict[str, str] | None = None) -> Resp:
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=15, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        hdrs = dict(headers or {})
        if self.authorization and "Authorization" not in hdrs:
            hdrs["Authorization"] = self.authorization
        try:
            chunked = body is not None and not isinstance(body, bytes)
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
            r = conn.getresponse()
            return Resp(r.status, r.headers, r.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: Any) -> Resp:
        return self.request("HEAD", path, **kw)

    # helpers for setting up content

    def push_blob(self, repo: str, data: bytes) -> str:
        d = sha256(data)
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status == 201, r.body
        return d

    def push_manifest(self, repo: str, ref: str, doc: dict[str, Any] | bytes,
                      media_type: str = OCI_MANIFEST) -> Resp:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=data,
                            headers={"Content-Type": media_type})

    def push_image(self, repo: str, ref: str, layer: bytes, **extra: Any) -> tuple[str, bytes]:
        """A tiny image: a config and one layer; returns the manifest digest and bytes."""
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}).encode()
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": descriptor("application/vnd.oci.image.config.v1+json", config),
               "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)], **extra}
        self.push_blob(repo, config)
        self.push_blob(repo, layer)
        data = json.dumps(doc).encode()
        r = self.push_manifest(repo, ref, data)
        assert r.status == 201, r.body
        return sha256(data), data


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def tmpdir_clean() -> Iterator[Path]:
    """A temporary directory removed at the end even when the test fails."""
    with tempfile.TemporaryDirectory(prefix="dockyard-registry-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryThread]:
    """One open registry shared by the protocol tests; each test uses its own repositories."""
    with tempfile.TemporaryDirectory(prefix="dockyard-registry-") as root:
        with RegistryThread(root) as server:
            yield server


@pytest.fixture
def client(registry: RegistryThread) -> Client:
    return Client(registry.url)


def make_htpasswd(path: Path, users: dict[str, str]) -> None:
    """bcrypt entries, as `htpasswd -B` writes them (cost 5 to keep the tests fast)."""
    lines = []
    for user, password in users.items():
        try:
            import bcrypt  # type: ignore[import-not-found]
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()
        except ImportError:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # type: ignore[import-not-found]
            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
            if not hashed or not hashed.startswith("$2"):
                pytest.skip("no bcrypt: neither the bcrypt package nor libcrypt support")
        lines.append(f"{user}:{hashed}")
    path.write_text("\n".join(lines) + "\n")


def skopeo(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """skopeo with a private HOME, auth file and policy, so no host state leaks in."""
    home.mkdir(parents=True, exist_ok=True)
    policy = home / "policy.json"
    if not policy.exists():
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "XDG_RUNTIME_DIR": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "REGISTRY_AUTH_FILE": str(home / "auth.json")}
    proc = subprocess.run([SKOPEO or "skopeo", "--policy", str(policy), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{proc.stderr}")
    return proc


# --------------------------------------------------------------------------- skopeo

@needs_skopeo
def test_skopeo_round_trip_keeps_digests(registry: RegistryThread, tmpdir_clean: Path) -> None:
    host = registry.address
    for variant in VARIANTS:
        src = layout(variant)
        skopeo(tmpdir_clean, "copy", "--dest-tls-verify=false",
               f"oci:{src}:busybox:1.38.0-{variant}", f"docker://{host}/library/busybox:{variant}")
    tags = json.loads(skopeo(tmpdir_clean, "list-tags", "--tls-verify=false",
                             f"docker://{host}/library/busybox").stdout)
    assert tags["Tags"] == sorted(VARIANTS)
    for variant in VARIANTS:
        src = layout(variant)
        want = layout_manifest_digest(src)
        info = json.loads(skopeo(tmpdir_clean, "inspect", "--tls-verify=false",
                                 f"docker://{host}/library/busybox:{variant}").stdout)
        assert info["Digest"] == want
        assert info["Architecture"] == "amd64" and info["Os"] == "linux"
        raw = skopeo(tmpdir_clean, "inspect", "--raw", "--tls-verify=false",
                     f"docker://{host}/library/busybox@{want}").stdout.encode()
        assert sha256(raw) == want  # stored byte for byte
        out = tmpdir_clean / f"out-{variant}"
        skopeo(tmpdir_clean, "copy", "--src-tls-verify=false",
               f"docker://{host}/library/busybox:{variant}", f"oci:{out}:busybox")
        assert layout_manifest_digest(out) == want
        assert sorted(os.listdir(out / "blobs" / "sha256")) == sorted(
            os.listdir(src / "blobs" / "sha256"))
    # registry to registry: skopeo mounts the layer across repositories
    skopeo(tmpdir_clean, "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{host}/library/busybox:glibc", f"docker://{host}/mirror/deep/busybox:1")
    info = json.loads(skopeo(tmpdir_clean, "inspect", "--tls-verify=false",
                             f"docker://{host}/mirror/deep/busybox:1").stdout)
    assert info["Digest"] == layout_manifest_digest(layout("glibc"))
    skopeo(tmpdir_clean, "delete", "--tls-verify=false", f"docker://{host}/mirror/deep/busybox:1")
    assert skopeo(tmpdir_clean, "inspect", "--tls-verify=false",
                  f"docker://{host}/mirror/deep/busybox:1", check=False).returncode != 0
    # Docker schema 2 media types are stored and served as pushed
    skopeo(tmpdir_clean, "copy", "--dest-tls-verify=false", "--format", "v2s2",
           f"oci:{layout('musl')}:busybox:1.38.0-musl", f"docker://{host}/docker/busybox:musl")
    r = Client(registry.url).get("/v2/docker/busybox/manifests/musl")
    assert r.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert r.json()["mediaType"] == r.headers["Content-Type"]
    assert r.headers["Docker-Content-Digest"] == sha256(r.body)
    out = tmpdir_clean / "out-v2s2"
    skopeo(tmpdir_clean, "copy", "--src-tls-verify=false", "--preserve-digests",
           f"docker://{host}/docker/busybox:musl", f"dir:{out}")
    assert sha256((out / "manifest.json").read_bytes()) == r.headers["Docker-Content-Digest"]


# --------------------------------------------------------------------------- base, errors

def test_base_endpoint_and_unknown_paths(client: Client) -> None:
    r = client.get("/v2/")
    assert r.status == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    r = client.get("/v2/foo/bar/nothing-here")
    assert r.status == 404
    r = client.request("POST", "/v2/foo/manifests/latest")
    assert r.status == 405 and r.error_codes() == ["UNSUPPORTED"]


@pytest.mark.parametrize("name", ["Upper", "a//b", "-lead", "trail-", "a/_b", "a..b",
                                  "x" * 256, "a/" * 130 + "a"])
def test_invalid_repository_names(client: Client, name: str) -> None:
    r = client.get(f"/v2/{name}/tags/list")
    assert r.status == 400, (name, r.body)
    assert r.error_codes() == ["NAME_INVALID"]


def test_multi_component_names(client: Client) -> None:
    repo = "a1/b-2/c__3/d.4"
    client.push_image(repo, "latest", b"multi")
    assert client.get(f"/v2/{repo}/manifests/latest").status == 200
    # a repository may contain components named like the API's own path words
    repo = "x/blobs/manifests"
    client.push_image(repo, "v1", b"odd names")
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}


def test_blob_errors(client: Client) -> None:
    missing = sha256(b"never pushed")
    r = client.head(f"/v2/errs/blobs/{missing}")
    assert r.status == 404 and r.body == b""
    r = client.get(f"/v2/errs/blobs/{missing}")
    assert r.status == 404 and r.error_codes() == ["BLOB_UNKNOWN"]
    assert r.headers["Content-Type"].startswith("application/json")
    r = client.get("/v2/errs/blobs/sha256:nothex")
    assert r.status == 400 and r.error_codes() == ["DIGEST_INVALID"]
    r = client.request("DELETE", f"/v2/errs/blobs/{missing}")
    assert r.status == 404 and r.error_codes() == ["BLOB_UNKNOWN"]
    r = client.get("/v2/errs/blobs/uploads/00000000-0000-0000-0000-000000000000")
    assert r.status == 404 and r.error_codes() == ["BLOB_UPLOAD_UNKNOWN"]
    r = client.get("/v2/errs/blobs/uploads/../../etc")
    assert r.status in (400, 404)


# --------------------------------------------------------------------------- uploads

def test_monolithic_uploads(client: Client) -> None:
    data = os.urandom(3000)
    d = sha256(data)
    # single POST
    r = client.request("POST", f"/v2/mono/blobs/uploads/?digest={d}", body=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201
    assert r.headers["Location"] == f"/v2/mono/blobs/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    # POST then PUT with the whole body
    data2 = os.urandom(5000)
    r = client.request("POST", "/v2/mono/blobs/uploads/")
    assert r.status == 202
    assert r.headers["Range"] == "0-0"
    assert r.headers["Docker-Upload-UUID"] in r.headers["Location"]
    r = client.request("PUT", f"{r.headers['Location']}?digest={sha256(data2)}", body=data2,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201 and r.headers["Docker-Content-Digest"] == sha256(data2)
    for blob in (data, data2):
        r = client.get(f"/v2/mono/blobs/{sha256(blob)}")
        assert r.status == 200 and r.body == blob
        assert r.headers["Docker-Content-Digest"] == sha256(blob)
        r = client.head(f"/v2/mono/blobs/{sha256(blob)}")
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(blob)
    # blobs are per repository
    assert client.head(f"/v2/elsewhere/blobs/{d}").status == 404


def test_chunked_upload_out_of_order_and_resume(client: Client) -> None:
    data = os.urandom(30)
    r = client.request("POST", "/v2/chunky/blobs/uploads/", headers={"Content-Length": "0"})
    loc = r.headers["Location"]
    r = client.request("PATCH", loc, body=data[:10], headers={
        "Content-Range": "0-9", "Content-Type": "application/octet-stream"})
    assert r.status == 202 and r.headers["Range"] == "0-9"
    loc = r.headers["Location"]
    # a chunk that skips bytes 10..19
    r = client.request("PATCH", loc, body=data[20:], headers={"Content-Range": "20-29"})
    assert r.status == 416
    # the status tells where to go on
    r = client.get(loc)
    assert r.status == 204 and r.headers["Range"] == "0-9" and r.headers["Location"] == loc
    r = client.request("PATCH", loc, body=data[10:20], headers={"Content-Range": "10-19"})
    assert r.status == 202 and r.headers["Range"] == "0-19"
    # the last chunk rides on the closing PUT
    r = client.request("PUT", f"{loc}?digest={sha256(data)}", body=data[20:],
                       headers={"Content-Range": "20-29"})
    assert r.status == 201, r.body
    assert client.get(f"/v2/chunky/blobs/{sha256(data)}").body == data
    # the session is gone once completed
    assert client.get(loc).status == 404


def test_streamed_patch_with_chunked_encoding(client: Client) -> None:
    parts = [os.urandom(100_000) for _ in range(5)]
    data = b"".join(parts)
    loc = client.request("POST", "/v2/stream/blobs/uploads/").headers["Location"]
    r = client.request("PATCH", loc, body=iter(parts),
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    r = client.request("PUT", f"{r.headers['Location']}?digest={sha256(data)}")
    assert r.status == 201
    assert client.get(f"/v2/stream/blobs/{sha256(data)}").body == data


def test_sha512_upload(client: Client) -> None:
    data = os.urandom(1000)
    d = "sha512:" + hashlib.sha512(data).hexdigest()
    loc = client.request("POST", "/v2/sha512/blobs/uploads/?digest-algorithm=sha512").headers[
        "Location"]
    r = client.request("PUT", f"{loc}?digest={d}", body=data)
    assert r.status == 201 and r.headers["Docker-Content-Digest"] == d
    assert client.get(f"/v2/sha512/blobs/{d}").body == data


def test_digest_mismatch_leaves_nothing(registry: RegistryThread, client: Client) -> None:
    root = Path(registry.root)
    data = os.urandom(2048)
    wrong = sha256(b"something else")
    loc = client.request("POST", "/v2/mismatch/blobs/uploads/").headers["Location"]
    assert client.request("PATCH", loc, body=data).status == 202
    r = client.request("PUT", f"{loc}?digest={wrong}")
    assert r.status == 400 and r.error_codes() == ["DIGEST_INVALID"]
    assert client.get(loc).status == 404
    r = client.request("POST", f"/v2/mismatch/blobs/uploads/?digest={wrong}", body=data)
    assert r.status == 400 and r.error_codes() == ["DIGEST_INVALID"]
    for d in (wrong, sha256(data)):
        assert client.head(f"/v2/mismatch/blobs/{d}").status == 404
        assert not (root / "blobs" / "sha256" / d.split(":")[1]).exists()
    uuid = loc.rsplit("/", 1)[1]
    assert not (root / "uploads" / uuid).exists()
    # no ingest holds the rejected bytes
    for ingest in (root / "ingest").iterdir():
        assert (ingest / "data").stat().st_size != len(data) or \
            (ingest / "ref").read_text() != f"upload:{uuid}"
    # bad or missing digests on PUT
    loc = client.request("POST", "/v2/mismatch/blobs/uploads/").headers["Location"]
    assert client.request("PUT", loc).error_codes() == ["DIGEST_INVALID"]
    assert client.request("PUT", f"{loc}?digest=md5:abc").status == 400
    assert client.request("DELETE", loc).status == 204
    assert client.get(loc).status == 404


def test_upload_resumes_after_restart(tmpdir_clean: Path) -> None:
    data = os.urandom(64 * 1024)
    with RegistryThread(str(tmpdir_clean)) as server:
        c = Client(server.url)
        loc = c.request("POST", "/v2/resume/blobs/uploads/").headers["Location"]
        assert c.request("PATCH", loc, body=data[:40000]).status == 202
    with RegistryThread(str(tmpdir_clean)) as server:
        c = Client(server.url)
        r = c.get(loc)
        assert r.status == 204 and r.headers["Range"] == "0-39999"
        r = c.request("PATCH", loc, body=data[40000:], headers={
            "Content-Range": f"40000-{len(data) - 1}"})
        assert r.status == 202
        assert c.request("PUT", f"{loc}?digest={sha256(data)}").status == 201
        assert c.get(f"/v2/resume/blobs/{sha256(data)}").body == data


def test_many_open_uploads(monkeypatch: pytest.MonkeyPatch, tmpdir_clean: Path) -> None:
    """Past the cap on open ingests the oldest are closed, and reopen on their next use."""
    import dockyard.distribution.server as server_mod
    monkeypatch.setattr(server_mod, "MAX_OPEN_UPLOADS", 2)
    blobs = [os.urandom(1000 + i) for i in range(5)]
    with RegistryThread(str(tmpdir_clean)) as server:
        c = Client(server.url)
        locs = []
        for data in blobs:
            loc = c.request("POST", "/v2/many/blobs/uploads/").headers["Location"]
            assert c.request("PATCH", loc, body=data[:500]).status == 202
            locs.append(loc)
        for loc, data in zip(locs, blobs):
            assert c.get(loc).headers["Range"] == "0-499"
            r = c.request("PUT", f"{loc}?digest={sha256(data)}", body=data[500:],
                          headers={"Content-Range": f"500-{len(data) - 1}"})
            assert r.status == 201, r.body
        for data in blobs:
            assert c.get(f"/v2/many/blobs/{sha256(data)}").body == data


def test_cross_repository_mount(client: Client) -> None:
    data = os.urandom(500)
    d = client.push_blob("mount/src", data)
    assert client.head(f"/v2/mount/dst/blobs/{d}").status == 404
    r = client.request("POST", f"/v2/mount/dst/blobs/uploads/?mount={d}&from=mount/src")
    assert r.status == 201
    assert r.headers["Location"] == f"/v2/mount/dst/blobs/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    assert client.get(f"/v2/mount/dst/blobs/{d}").body == data
    # not mountable: a blob the source does not have, or a bad source -> plain upload
    other = sha256(b"not there")
    for query in (f"mount={other}&from=mount/src", f"mount={d}&from=mount/nowhere",
                  f"mount={d}&from=BAD", "mount=garbage&from=mount/src"):
        r = client.request("POST", f"/v2/mount/dst2/blobs/uploads/?{query}")
        assert r.status == 202, query
        assert "/blobs/uploads/" in r.headers["Location"]
        client.request("DELETE", r.headers["Location"])


def test_range_reads(client: Client) -> None:
    data = bytes(range(256)) * 40
    d = client.push_blob("ranges", data)
    r = client.get(f"/v2/ranges/blobs/{d}", headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.body == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert r.headers["Docker-Content-Digest"] == d
    r = client.get(f"/v2/ranges/blobs/{d}", headers={"Range": "bytes=10000-"})
    assert r.status == 206 and r.body == data[10000:]
    r = client.get(f"/v2/ranges/blobs/{d}", headers={"Range": "bytes=-5"})
    assert r.status == 206 and r.body == data[-5:]
    r = client.get(f"/v2/ranges/blobs/{d}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    r = client.get(f"/v2/ranges/blobs/{d}", headers={"Range": "bytes=5-1"})
    assert r.status == 200 and r.body == data  # invalid ranges are ignored


# --------------------------------------------------------------------------- manifests

def test_manifest_push_pull_delete(client: Client) -> None:
    repo = "manifests/app"
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = os.urandom(100)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor("application/vnd.oci.image.config.v1+json", config),
           "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)]}
    data = json.dumps(doc, indent=3).encode()  # odd formatting must survive byte for byte
    d = sha256(data)
    # the blobs are not there yet
    r = client.push_manifest(repo, "v1", data)
    assert r.status == 400
    assert r.error_codes() == ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    assert {e["detail"]["digest"] for e in r.json()["errors"]} == {sha256(config), sha256(layer)}
    client.push_blob(repo, config)
    client.push_blob(repo, layer)
    # malformed documents
    assert client.push_manifest(repo, "v1", b"{not json").error_codes() == ["MANIFEST_INVALID"]
    bad = dict(doc, layers=[{"digest": "sha256:0", "size": 1}])
    assert client.push_manifest(repo, "v1", bad).error_codes() == ["MANIFEST_INVALID"]
    assert client.push_manifest(repo, "v1", data, OCI_INDEX).error_codes() == ["MANIFEST_INVALID"]
    assert client.push_manifest(repo, "bad:tag!", data).status == 400
    # by digest, the digest must match
    r = client.push_manifest(repo, sha256(b"other"), data)
    assert r.status == 400 and r.error_codes() == ["DIGEST_INVALID"]
    r = client.push_manifest(repo, "v1", data)
    assert r.status == 201, r.body
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"] == f"/v2/{repo}/manifests/{d}"
    for ref in ("v1", d):
        r = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 200 and r.body == data
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == d
        r = client.head(f"/v2/{repo}/manifests/{ref}")
        assert r.status == 200 and r.body == b""
        assert int(r.headers["Content-Length"]) == len(data)
    # push by digest with extra tags
    r = client.request("PUT", f"/v2/{repo}/manifests/{d}?tag=a&tag=b", body=data,
                       headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 201 and r.headers["OCI-Tag"] == "a, b"
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b", "v1"]
    # a tag can go on its own; deleting the manifest takes the remaining tags with it
    assert client.request("DELETE", f"/v2/{repo}/manifests/a").status == 202
    assert client.get(f"/v2/{repo}/manifests/a").status == 404
    assert client.get(f"/v2/{repo}/manifests/v1").status == 200
    r = client.request("DELETE", f"/v2/{repo}/manifests/{d}")
    assert r.status == 202
    for ref in ("v1", "b", d):
        r = client.get(f"/v2/{repo}/manifests/{ref}")
        assert r.status == 404 and r.error_codes() == ["MANIFEST_UNKNOWN"]
    assert client.request("DELETE", f"/v2/{repo}/manifests/{d}").status == 404
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []


def test_index_needs_its_manifests(client: Client) -> None:
    repo = "manifests/multi"
    child_digest, child = client.push_image(repo, "amd64", b"layer of amd64")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        dict(descriptor(OCI_MANIFEST, child), platform={"os": "linux", "architecture": "amd64"}),
        descriptor(OCI_MANIFEST, b'{"not": "pushed"}')]}
    r = client.push_manifest(repo, "latest", index, OCI_INDEX)
    assert r.status == 400 and r.error_codes() == ["MANIFEST_BLOB_UNKNOWN"]
    index["manifests"].pop()
    r = client.push_manifest(repo, "latest", index, OCI_INDEX)
    assert r.status == 201
    r = client.get(f"/v2/{repo}/manifests/latest")
    assert r.headers["Content-Type"] == OCI_INDEX
    assert json.loads(r.body)["manifests"][0]["digest"] == child_digest


def test_tags_pagination(client: Client) -> None:
    repo = "paged"
    d, data = client.push_image(repo, "t0", b"paged layer")
    for tag in ("t1", "t2", "t3", "t4", "T9", "_x"):
        assert client.push_manifest(repo, tag, data).status == 201
    everything = client.get(f"/v2/{repo}/tags/list").json()["tags"]
    assert everything == ["T9", "_x", "t0", "t1", "t2", "t3", "t4"]  # Go's byte order
    seen, path = [], f"/v2/{repo}/tags/list?n=3"
    while path:
        r = client.get(path)
        assert r.status == 200
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        link = r.headers.get("Link")
        if link:
            assert link.endswith('>; rel="next"')
            path = link[1:link.index(">")]
        else:
            path = ""
    assert seen == everything
    r = client.get(f"/v2/{repo}/tags/list?n=2&last=t1")
    assert r.json()["tags"] == ["t2", "t3"] and "Link" in r.headers
    r = client.get(f"/v2/{repo}/tags/list?last=t3")
    assert r.json()["tags"] == ["t4"] and "Link" not in r.headers
    r = client.get(f"/v2/{repo}/tags/list?n=0")
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = client.get(f"/v2/{repo}/tags/list?n=-1")
    assert r.status == 400
    r = client.get("/v2/no/such/repo/tags/list")
    assert r.status == 404 and r.error_codes() == ["NAME_UNKNOWN"]


def test_catalog(tmpdir_clean: Path) -> None:
    with RegistryThread(str(tmpdir_clean)) as server:
        c = Client(server.url)
        assert c.get("/v2/_catalog").json() == {"repositories": []}
        names = ["zeta", "alpha/one", "alpha/two", "beta"]
        for name in names:
            c.push_blob(name, name.encode())
        assert c.get("/v2/_catalog").json()["repositories"] == sorted(names)
        r = c.get("/v2/_catalog?n=2")
        assert r.json()["repositories"] == ["alpha/one", "alpha/two"]
        assert r.headers["Link"] == '</v2/_catalog?n=2&last=alpha%2Ftwo>; rel="next"'
        r = c.get("/v2/_catalog?n=2&last=alpha%2Ftwo")
        assert r.json()["repositories"] == ["beta", "zeta"]


def test_referrers(client: Client) -> None:
    repo = "refs/app"
    subject_digest, subject = client.push_image(repo, "v1", b"the image")
    empty = b"{}"
    client.push_blob(repo, empty)
    sbom = os.urandom(64)
    client.push_blob(repo, sbom)
    subject_desc = descriptor(OCI_MANIFEST, subject)
    # an artifact with an artifactType and the empty config
    art = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "artifactType": "application/vnd.example.sbom.v1",
           "config": descriptor(OCI_EMPTY, empty),
           "layers": [descriptor("application/spdx+json", sbom)],
           "subject": subject_desc, "annotations": {"org.example.kind": "sbom"}}
    art_data = json.dumps(art).encode()
    r = client.push_manifest(repo, sha256(art_data), art_data)
    assert r.status == 201 and r.headers["OCI-Subject"] == subject_digest
    # no artifactType: the config media type stands in for it
    sig_config = b'{"sig": true}'
    client.push_blob(repo, sig_config)
    sig = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor("application/vnd.example.signature.config.v1+json", sig_config),
           "layers": [], "subject": subject_desc}
    sig_data = json.dumps(sig).encode()
    assert client.push_manifest(repo, sha256(sig_data), sig_data).status == 201
    # a referrer may arrive before its subject
    ghost = sha256(b"subject pushed later")
    early = dict(sig, subject={"mediaType": OCI_MANIFEST, "digest": ghost, "size": 5})
    assert client.push_manifest(repo, "early", early).status == 201

    r = client.get(f"/v2/{repo}/referrers/{subject_digest}")
    assert r.status == 200 and r.headers["Content-Type"] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert by_digest == {
        sha256(art_data): {"mediaType": OCI_MANIFEST, "digest": sha256(art_data),
                           "size": len(art_data), "artifactType": "application/vnd.example.sbom.v1",
                           "annotations": {"org.example.kind": "sbom"}},
        sha256(sig_data): {"mediaType": OCI_MANIFEST, "digest": sha256(sig_data),
                           "size": len(sig_data),
                           "artifactType": "application/vnd.example.signature.config.v1+json"}}
    r = client.get(f"/v2/{repo}/referrers/{subject_digest}?artifactType=application/vnd.example.sbom.v1")
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(art_data)]
    assert len(client.get(f"/v2/{repo}/referrers/{ghost}").json()["manifests"]) == 1
    # nothing refers: an empty index, never 404
    for path in (f"/v2/{repo}/referrers/{sha256(b'nobody')}",
                 f"/v2/refs/unknown/referrers/{subject_digest}"):
        r = client.get(path)
        assert r.status == 200 and r.json()["manifests"] == []
    assert client.get(f"/v2/{repo}/referrers/sha256:bad").status == 400
    # a deleted referrer leaves the list
    assert client.request("DELETE", f"/v2/{repo}/manifests/{sha256(art_data)}").status == 202
    r = client.get(f"/v2/{repo}/referrers/{subject_digest}")
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(sig_data)]


# --------------------------------------------------------------------------- auth

@pytest.fixture
def htpasswd(tmpdir_clean: Path) -> Path:
    path = tmpdir_clean / "htpasswd"
    make_htpasswd(path, {"alice": "wonderland", "bob": "builder"})
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth(htpasswd: Path, tmpdir_clean: Path) -> None:
    auth = BasicAuth(Htpasswd(htpasswd), realm="Dockyard Test")
    with RegistryThread(str(tmpdir_clean / "root"), auth=auth) as server:
        for authorization in (None, basic("alice", "wrong"), basic("mallory", "x"), "Basic !!"):
            r = Client(server.url, authorization).get("/v2/")
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Basic realm="Dockyard Test"'
            assert r.error_codes() == ["UNAUTHORIZED"]
        assert Client(server.url).get("/v2/some/repo/tags/list").status == 401
        c = Client(server.url, basic("alice", "wonderland"))
        assert c.get("/v2/").status == 200
        c.push_image("private/app", "v1", b"secret layer")
        assert Client(server.url, basic("bob", "builder")).get(
            "/v2/private/app/manifests/v1").status == 200

        if SKOPEO is None:
            return
        host = server.address
        src = f"oci:{layout('musl')}:busybox:1.38.0-musl"
        proc = skopeo(tmpdir_clean / "h1", "copy", "--dest-tls-verify=false", src,
                      f"docker://{host}/library/busybox:musl", check=False)
        assert proc.returncode != 0
        assert "unauthorized" in proc.stderr.lower() or "authentication" in proc.stderr.lower()
        skopeo(tmpdir_clean / "h2", "copy", "--dest-tls-verify=false",
               "--dest-creds", "alice:wonderland", src, f"docker://{host}/library/busybox:musl")
        info = json.loads(skopeo(tmpdir_clean / "h2", "inspect", "--tls-verify=false",
                                 "--creds", "bob:builder",
                                 f"docker://{host}/library/busybox:musl").stdout)
        assert info["Digest"] == layout_manifest_digest(layout("musl"))


def get_token(server: RegistryThread, scope: str | None, authorization: str | None) -> str:
    path = "/token?service=dockyard-registry" + (f"&scope={scope}" if scope else "")
    r = Client(server.url, authorization).get(path)
    assert r.status == 200, r.body
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] > 0
    return body["token"]


def test_token_auth(htpasswd: Path, tmpdir_clean: Path) -> None:
    auth = TokenAuth(htpasswd=Htpasswd(htpasswd))
    with RegistryThread(str(tmpdir_clean / "root"), auth=auth) as server:
        realm = f"{server.url}/token"
        r = Client(server.url).get("/v2/")
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == \
            f'Bearer realm="{realm}",service="dockyard-registry"'
        r = Client(server.url).request("POST", "/v2/team/app/blobs/uploads/")
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == (
            f'Bearer realm="{realm}",service="dockyard-registry",'
            'scope="repository:team/app:pull,push"')
        # the token endpoint checks the user
        r = Client(server.url, basic("alice", "nope")).get("/token?scope=repository:x:pull")
        assert r.status == 401
        # a pull token reads but does not write
        pull = get_token(server, "repository:team/app:pull", basic("alice", "wonderland"))
        c = Client(server.url, f"Bearer {pull}")
        assert c.get("/v2/").status == 200
        assert c.get("/v2/team/app/tags/list").status == 404  # allowed; nothing there yet
        r = c.request("POST", "/v2/team/app/blobs/uploads/")
        assert r.status == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        assert c.get("/v2/team/other/tags/list").status == 401
        # push with a push token; the catalog needs its own scope
        push = get_token(server, "repository:team/app:pull,push", basic("alice", "wonderland"))
        Client(server.url, f"Bearer {push}").push_image("team/app", "v1", b"token layer")
        assert c.get("/v2/team/app/manifests/v1").status == 200
        assert c.get("/v2/_catalog").status == 401
        cat = get_token(server, "registry:catalog:*", basic("bob", "builder"))
        assert Client(server.url, f"Bearer {cat}").get("/v2/_catalog").json() == {
            "repositories": ["team/app"]}
        # anonymous tokens grant nothing; forged or foreign tokens are refused
        anon = get_token(server, "repository:team/app:pull", None)
        assert Client(server.url, f"Bearer {anon}").get("/v2/team/app/tags/list").status == 401
        head, claims, sig = pull.split(".")
        forged_claims = json.loads(base64.urlsafe_b64decode(claims + "=="))
        forged_claims["access"][0]["actions"] = ["pull", "push"]
        forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(forged_claims).encode())
                           .rstrip(b"=").decode(), sig])
        r = Client(server.url, f"Bearer {forged}").request("POST", "/v2/team/app/blobs/uploads/")
        assert r.status == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        foreign = encode_jwt(dict(forged_claims, exp=time.time() + 60), TokenKey.generate())
        assert Client(server.url, f"Bearer {foreign}").get("/v2/").status == 401
        expired = encode_jwt(dict(forged_claims, exp=time.time() - 3600), auth.key)
        assert Client(server.url, f"Bearer {expired}").get("/v2/").status == 401
        # the OAuth2 password grant (docker's POST form)
        r = Client(server.url).request(
            "POST", "/token", body=b"grant_type=password&username=bob&password=builder"
            b"&service=dockyard-registry&scope=repository%3Ateam%2Fapp%3Apull",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 200
        assert Client(server.url, f"Bearer {r.json()['access_token']}").get(
            "/v2/team/app/manifests/v1").status == 200

        if SKOPEO is None:
            return
        host = server.address
        src = f"oci:{layout('uclibc')}:busybox:1.38.0-uclibc"
        proc = skopeo(tmpdir_clean / "h1", "copy", "--dest-tls-verify=false", src,
                      f"docker://{host}/library/busybox:uclibc", check=False)
        assert proc.returncode != 0
        proc = skopeo(tmpdir_clean / "h1", "copy", "--dest-tls-verify=false",
                      "--dest-creds", "alice:badpass", src,
                      f"docker://{host}/library/busybox:uclibc", check=False)
        assert proc.returncode != 0
        skopeo(tmpdir_clean / "h2", "copy", "--dest-tls-verify=false",
               "--dest-creds", "alice:wonderland", src, f"docker://{host}/library/busybox:uclibc")
        out = tmpdir_clean / "out"
        skopeo(tmpdir_clean / "h2", "copy", "--src-tls-verify=false", "--src-creds", "bob:builder",
               f"docker://{host}/library/busybox:uclibc", f"oci:{out}:x")
        assert layout_manifest_digest(out) == layout_manifest_digest(layout("uclibc"))
        tags = json.loads(skopeo(tmpdir_clean / "h2", "list-tags", "--tls-verify=false",
                                 "--creds", "bob:builder",
                                 f"docker://{host}/library/busybox").stdout)
        assert tags["Tags"] == ["uclibc"]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_token_options(htpasswd: Path, tmpdir_clean: Path) -> None:
    """serve() as the CLI will call it: a process of its own, stopped by SIGTERM."""
    import sys
    port = free_port()
    key = tmpdir_clean / "token.key"
    key.write_bytes(os.urandom(32).hex().encode())
    realm = f"http://127.0.0.1:{port}/token"
    code = ("import sys; from dockyard.distribution.server import serve; "
            "serve(sys.argv[1], sys.argv[2], htpasswd=sys.argv[3], token_realm=sys.argv[4], "
            "token_key=sys.argv[5], token_service='test-registry')")
    proc = subprocess.Popen([sys.executable, "-c", code, f"127.0.0.1:{port}",
                             str(tmpdir_clean / "root"), str(htpasswd), realm, str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                r = Client(url).get("/v2/")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve() did not start: {proc.stderr.read()!r}")
                time.sleep(0.05)
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == f'Bearer realm="{realm}",service="test-registry"'
        token = Client(url, basic("alice", "wonderland")).get(
            "/token?service=test-registry&scope=repository:a/b:pull,push").json()["token"]
        c = Client(url, f"Bearer {token}")
        assert c.get("/v2/").status == 200
        c.push_image("a/b", "v1", b"served layer")
        assert c.get("/v2/a/b/tags/list").json()["tags"] == ["v1"]
        proc.terminate()
        assert proc.wait(timeout=15) in (0, -15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_es256_tokens() -> None:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from dockyard.distribution.auth import InvalidToken, decode_jwt

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    key = TokenKey.load(pem)
    assert key.alg == "ES256"
    token = encode_jwt({"iss": "i", "aud": "s", "exp": time.time() + 60}, key)
    assert decode_jwt(token, key, issuer="i", audience="s")["iss"] == "i"
    with pytest.raises(InvalidToken):
        decode_jwt(token[:-4] + "AAAA", key, issuer="i", audience="s")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls(tmpdir_clean: Path) -> None:
    cert, key = tmpdir_clean / "cert.pem", tmpdir_clean / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    with RegistryThread(str(tmpdir_clean / "root"), ssl_context=tls_context(str(cert), str(key))
                        ) as server:
        assert server.url.startswith("https://")
        assert Client(server.url).get("/v2/").status == 200
        if SKOPEO is None:
            return
        certs = tmpdir_clean / "certs"
        certs.mkdir()
        shutil.copy(cert, certs / "ca.crt")
        skopeo(tmpdir_clean / "h", "copy", "--dest-cert-dir", str(certs),
               f"oci:{layout('glibc')}:busybox:1.38.0-glibc",
               f"docker://{server.address}/tls/busybox:glibc")
        info = json.loads(skopeo(tmpdir_clean / "h", "inspect", "--cert-dir", str(certs),
                                 f"docker://{server.address}/tls/busybox:glibc").stdout)
        assert info["Digest"] == layout_manifest_digest(layout("glibc"))


# --------------------------------------------------------------------------- gc

def test_gc(tmpdir_clean: Path) -> None:
    root = tmpdir_clean / "root"
    with RegistryThread(str(root)) as server:
        c = Client(server.url)
        kept_digest, _ = c.push_image("gc/app", "v1", b"kept layer")
        untagged_digest, _ = c.push_image("gc/app", "tmp", b"untagged layer")
        assert c.request("DELETE", "/v2/gc/app/manifests/tmp").status == 202  # untagged, linked
        deleted_digest, deleted = c.push_image("gc/other", "v1", b"deleted layer")
        layer_of_deleted = json.loads(deleted)["layers"][0]["digest"]
        assert c.request("DELETE", f"/v2/gc/other/manifests/{deleted_digest}").status == 202
        orphan = c.push_blob("gc/app", b"orphan blob nobody references")
        loc = c.request("POST", "/v2/gc/app/blobs/uploads/").headers["Location"]
        assert c.request("PATCH", loc, body=b"abandoned").status == 202
    preview = gc(root, dry_run=True, upload_max_age=0)
    report = gc(root, upload_max_age=0)
    removed = set(report.blobs_removed)
    assert set(preview.blobs_removed) == removed and preview.bytes_freed == report.bytes_freed
    assert orphan in removed and layer_of_deleted in removed and deleted_digest in removed
    assert kept_digest not in removed and untagged_digest not in removed
    assert report.bytes_freed > 0 and report.links_removed >= 2
    assert report.uploads_removed == [loc.rsplit("/", 1)[1]]
    with RegistryThread(str(root)) as server:
        c = Client(server.url)
        assert c.get(f"/v2/gc/app/blobs/{orphan}").status == 404
        assert c.get("/v2/gc/app/manifests/v1").status == 200
        assert c.get(f"/v2/gc/app/manifests/{untagged_digest}").status == 200
        layers = json.loads(c.get("/v2/gc/app/manifests/v1").body)["layers"]
        assert c.get(f"/v2/gc/app/blobs/{layers[0]['digest']}").body == b"kept layer"
        assert c.get(loc).status == 404
    # a second pass finds nothing; delete_untagged then drops the untagged image
    assert gc(root).blobs_removed == []
    report = gc(root, delete_untagged=True)
    assert report.manifests_removed == [("gc/app", untagged_digest)]
    assert untagged_digest in report.blobs_removed
    assert kept_digest not in report.blobs_removed
