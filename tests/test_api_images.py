"""dockyardd's image endpoints, judged by the docker CLI and docker-py against a real
daemon on a temporary socket, pulling from a local registry filled by skopeo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.distribution.server import RegistryThread
from engine_daemon import ping_reply

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MUSL = SHARED / "images" / "busybox" / "1.38.0-musl"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


class Daemon:
    """dockyardd as a subprocess on a socket under ROOT; stop() checks it cleaned up."""

    def __init__(self, root: Path, *extra: str, config: dict | None = None) -> None:
        self.root = root
        self.sock = root / "dockyard.sock"
        self.pidfile = root / "dockyardd.pid"
        self.data_root = root / "data"
        args = [sys.executable, "-m", "dockyard.daemon.main", "-H", f"unix://{self.sock}",
                "--data-root", str(self.data_root), "--exec-root", str(root / "exec"),
                "-p", str(self.pidfile)]
        cfg = root / "daemon.json"
        cfg.write_text(json.dumps(config or {}))
        args += ["--config-file", str(cfg), *extra]
        self.log = open(root / "dockyardd.log", "w+b")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"dockyardd did not start:\n{self.output()}")
            time.sleep(0.05)

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def _answers(self) -> bool:
        return ping_reply(self.sock).startswith(b"HTTP/1.")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"dockyardd ignored signal {sig}:\n{self.output()}")
        self.log.close()
        return rc

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP/1.0 request (the CLI and SDK hide what is on the wire)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            head = f"{method} {path} HTTP/1.0\r\nHost: docker\r\n"
            for k, v in (headers or {}).items():
                head += f"{k}: {v}\r\n"
            if body is not None:
                head += f"Content-Length: {len(body)}\r\n"
            s.sendall(head.encode() + b"\r\n" + (body or b""))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head_raw, _, payload = data.partition(b"\r\n\r\n")
        lines = head_raw.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs, payload


def docker(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "cli"))
    proc = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def start_daemon(root: Path, *extra: str) -> Iterator[Daemon]:
    d = Daemon(root, *extra)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            assert d.stop() == 0, d.output()
        assert not d.sock.exists(), "socket left behind"
        assert not d.pidfile.exists(), "pidfile left behind"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _need("skopeo")
    if not MUSL.exists():
        pytest.fail(f"test images not found at {MUSL} (set DOCKYARD_SHARED)")
    with RegistryThread(str(tmp_path_factory.mktemp("registry"))) as reg:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                        f"oci:{MUSL}", f"docker://{reg.address}/library/busybox:musl"],
                       check=True, timeout=120)
        yield reg.address


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    yield from start_daemon(tmp_path_factory.mktemp("dockyardd"))


@pytest.fixture(scope="module")
def pulled(daemon: Daemon, registry: str) -> str:
    """The musl busybox pulled once by the docker CLI; the test checks its output."""
    ref = f"{registry}/library/busybox:musl"
    out = docker(daemon, "pull", ref).stdout
    return ref, out  # type: ignore[return-value]


def _index_digest() -> str:
    return json.loads((MUSL / "index.json").read_text())["manifests"][0]["digest"]


# -- docker CLI ----------------------------------------------------------------------

def test_cli_pull_shows_progress(pulled, registry):
    ref, out = pulled
    lines = out.splitlines()
    assert lines[0] == "musl: Pulling from library/busybox"
    assert any(line.endswith(": Pull complete") for line in lines), out
    assert f"Digest: {_index_digest()}" in lines
    assert f"Status: Downloaded newer image for {ref}" in lines
    assert lines[-1] == ref


def test_cli_pull_again_is_up_to_date(daemon, pulled):
    ref, _ = pulled
    out = docker(daemon, "pull", ref).stdout
    assert f"Status: Image is up to date for {ref}" in out


def test_cli_images_and_inspect(daemon, pulled, registry):
    ref, _ = pulled
    out = docker(daemon, "images").stdout.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    row = next(line.split() for line in out[1:] if line.startswith(f"{registry}/library/busybox "))
    assert row[1] == "musl"
    info = json.loads(docker(daemon, "image", "inspect", ref).stdout)[0]
    assert info["Id"].startswith("sha256:") and info["Id"][7:19] == row[2]
    assert ref in info["RepoTags"]
    assert f"{registry}/library/busybox@{_index_digest()}" in info["RepoDigests"]
    assert info["Os"] == "linux" and info["RootFS"]["Type"] == "layers"


def test_cli_history(daemon, pulled):
    ref, _ = pulled
    out = docker(daemon, "history", ref).stdout.splitlines()
    assert out[0].split()[:3] == ["IMAGE", "CREATED", "CREATED"]
    assert "BusyBox" in out[1]


def test_cli_tag_and_rmi(daemon, pulled):
    ref, _ = pulled
    docker(daemon, "tag", ref, "mybox:one")
    assert "mybox:one" in json.loads(docker(daemon, "image", "inspect", "mybox:one").stdout)[0]["RepoTags"]
    out = docker(daemon, "rmi", "mybox:one").stdout
    assert out.strip() == "Untagged: mybox:one"
    # The image itself is still there under its first name.
    docker(daemon, "image", "inspect", ref)


def test_cli_save_rmi_load(daemon, pulled, tmp_path):
    ref, _ = pulled
    docker(daemon, "tag", ref, "saved:1")
    archive = tmp_path / "saved.tar"
    docker(daemon, "save", "-o", str(archive), "saved:1")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["saved:1"]
    image_id = json.loads(docker(daemon, "image", "inspect", "saved:1").stdout)[0]["Id"]
    docker(daemon, "tag", "saved:1", "saved:2")
    out = docker(daemon, "rmi", "saved:1", "saved:2", ref).stdout.splitlines()
    assert "Untagged: saved:1" in out and "Untagged: saved:2" in out
    assert f"Deleted: {image_id}" in out
    assert docker(daemon, "image", "inspect", "saved:1", check=False).returncode != 0
    out = docker(daemon, "load", "-i", str(archive)).stdout
    assert "Loaded image: saved:1" in out
    assert json.loads(docker(daemon, "image", "inspect", "saved:1").stdout)[0]["Id"] == image_id
    # Put the pulled name back for the tests that follow.
    docker(daemon, "tag", "saved:1", ref)
    docker(daemon, "rmi", "saved:1")


def test_cli_push_to_another_repository(daemon, pulled, registry):
    ref, _ = pulled
    target = f"{registry}/other/box:pushed"
    docker(daemon, "tag", ref, target)
    out = docker(daemon, "push", target).stdout
    assert f"The push refers to repository [{registry}/other/box]" in out
    assert "pushed: digest: sha256:" in out
    # What went up comes back down: pull it by digest after removing it locally.
    digest = out.split("digest: ")[1].split()[0]
    docker(daemon, "rmi", target)
    out = docker(daemon, "pull", f"{registry}/other/box@{digest}").stdout
    assert f"Digest: {digest}" in out
    docker(daemon, "rmi", f"{registry}/other/box@{digest}")


def test_cli_push_missing_image(daemon, registry):
    proc = docker(daemon, "push", f"{registry}/nothing/here:1", check=False)
    assert proc.returncode != 0
    assert "An image does not exist locally with the tag" in proc.stderr


def test_cli_pull_unknown_tag(daemon, registry):
    proc = docker(daemon, "pull", f"{registry}/library/busybox:nope", check=False)
    assert proc.returncode != 0
    assert "Error response from daemon" in proc.stderr and "not found" in proc.stderr


def test_cli_image_prune(daemon, pulled):
    out = docker(daemon, "image", "prune", "-f").stdout
    assert "Total reclaimed space:" in out
    ref, _ = pulled
    docker(daemon, "image", "inspect", ref)  # tagged images survive a prune


def test_cli_errors(daemon):
    proc = docker(daemon, "image", "inspect", "nosuch", check=False)
    assert proc.returncode == 1 and "No such image: nosuch" in proc.stderr
    proc = docker(daemon, "rmi", "nosuch:1", check=False)
    assert "No such image: nosuch:1" in proc.stderr


# -- docker-py -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdk(daemon: Daemon):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=daemon.host, timeout=120)
    yield client
    client.close()


def test_sdk_version(sdk):
    v = sdk.version()
    assert v["ApiVersion"] == "1.45" and v["MinAPIVersion"] == "1.24"
    assert sdk.ping() is True


def test_sdk_pull_list_tag_remove(sdk, registry):
    img = sdk.images.pull(f"{registry}/library/busybox", tag="musl")
    assert f"{registry}/library/busybox:musl" in img.tags
    assert any(i.id == img.id for i in sdk.images.list())
    assert img.tag("sdkbox", "t1") is True
    assert "sdkbox:t1" in sdk.images.get("sdkbox:t1").tags
    assert [i.id for i in sdk.images.list(name="sdkbox")] == [img.id]
    sdk.images.remove("sdkbox:t1")
    docker_sdk = pytest.importorskip("docker")
    with pytest.raises(docker_sdk.errors.ImageNotFound):
        sdk.images.get("sdkbox:t1")


def test_sdk_save_and_load(sdk, registry, tmp_path):
    img = sdk.images.get(f"{registry}/library/busybox:musl")
    img.tag("sdksave", "1")
    path = tmp_path / "img.tar"
    with open(path, "wb") as f:
        for chunk in sdk.images.get("sdksave:1").save(named="sdksave:1"):
            f.write(chunk)
    sdk.images.remove("sdksave:1")
    loaded = sdk.images.load(path.read_bytes())
    assert [i.id for i in loaded] == [img.id]
    assert "sdksave:1" in sdk.images.get("sdksave:1").tags
    sdk.images.remove("sdksave:1")


def test_sdk_import_from_body(sdk, tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text("hi\n")
    tarball = tmp_path / "root.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=".")
    out = sdk.api.import_image_from_data(tarball.read_bytes(), repository="imported", tag="v1",
                                         changes=["CMD [\"/bin/sh\"]"])
    image_id = json.loads(out.strip().splitlines()[-1])["status"]
    info = sdk.api.inspect_image("imported:v1")
    assert info["Id"] == image_id and info["Config"]["Cmd"] == ["/bin/sh"]
    sdk.images.remove("imported:v1")


def test_sdk_events_record_image_actions(sdk, daemon):
    until = time.time() + 0.1
    events = list(sdk.events(since=0, until=until, decode=True, filters={"type": "image"}))
    actions = {e["Action"] for e in events}
    assert {"pull", "tag", "untag", "delete", "save", "load", "import"} <= actions, actions
    assert all(e["Type"] == "image" and "timeNano" in e for e in events)
    tags = list(sdk.events(since=0, until=until, decode=True, filters={"event": "tag"}))
    assert tags and all(e["Action"] == "tag" for e in tags)


# -- the wire -----------------------------------------------------------------------------

def test_pull_stream_shape(daemon, registry):
    status, headers, body = daemon.request(
        "POST", f"/v1.45/images/create?fromImage={registry}/library/busybox&tag=musl")
    assert status == 200 and headers["content-type"].startswith("application/json")
    msgs = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert msgs[0] == {"status": "Pulling from library/busybox", "id": "musl"}
    assert {"status": f"Digest: {_index_digest()}"} in msgs
    assert msgs[-1]["status"].startswith("Status: ")


def test_api_errors(daemon):
    status, _, body = daemon.request("GET", "/v1.45/images/nosuch/json")
    assert status == 404 and json.loads(body) == {"message": "No such image: nosuch:latest"}
    status, _, body = daemon.request("GET", "/v1.45/images/Bad%20Name/json")
    assert status == 400 and json.loads(body)["message"].startswith("invalid reference format")
    status, _, body = daemon.request("POST", "/v1.45/images/create?fromImage=a::b")
    assert status == 400 and json.loads(body)["message"].startswith("invalid reference format")
    status, _, body = daemon.request("GET", "/v1.45/images/json?filters=%7Bnot-json")
    assert status == 400 and "invalid filter" in json.loads(body)["message"]
    status, _, body = daemon.request("GET", "/v1.45/images/json?filters=%7B%22bogus%22%3A%5B%5D%7D")
    assert status == 400 and json.loads(body)["message"] == "invalid filter 'bogus'"
    status, _, body = daemon.request("POST", "/v1.45/images/nosuch/tag?repo=x&tag=y")
    assert status == 404
    status, _, body = daemon.request("DELETE", "/v1.45/images/nosuch")
    assert status == 404
    status, _, body = daemon.request("GET", "/v1.45/images/get?names=nosuch")
    assert status == 404 and json.loads(body)["message"] == "No such image: nosuch:latest"
    status, _, body = daemon.request("POST", "/v1.45/images/load", body=b"not a tar")
    assert status == 400


def test_delete_records(daemon, registry):
    ref = f"{registry}/library/busybox:musl"
    status, _, _ = daemon.request("POST", f"/images/{ref}/tag?repo=deleteme&tag=x")
    assert status == 201
    status, _, body = daemon.request("DELETE", "/images/deleteme:x")
    assert status == 200 and json.loads(body) == [{"Untagged": "deleteme:x"}]
