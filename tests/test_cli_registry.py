"""`dockyard registry serve` as a user runs it, judged by skopeo."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import SHARED, wait_for

LAYOUT = SHARED / "images" / "busybox" / "1.38.0-musl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def registry(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(["dockyard", "registry", "serve", "--addr", f"127.0.0.1:{port}",
                             "--root", str(tmp_path / "registry")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: up(f"http://127.0.0.1:{port}/v2/") or proc.poll() is not None,
                 what="registry to listen")
        assert proc.poll() is None, proc.stderr.read().decode()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_skopeo_round_trip(registry, tmp_path):
    index = json.loads((LAYOUT / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    ref = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{LAYOUT}:{ref}",
                    f"docker://{registry}/library/busybox:musl"], check=True)
    out = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry}/library/busybox:musl"],
        check=True, capture_output=True, text=True).stdout)
    assert out["Digest"] == digest
    back = tmp_path / "back"
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false",
                    f"docker://{registry}/library/busybox:musl", f"oci:{back}:busybox"], check=True)
    assert json.loads((back / "index.json").read_text())["manifests"][0]["digest"] == digest


def test_bad_address_is_refused(tmp_path):
    res = subprocess.run(["dockyard", "registry", "serve", "--addr", "nowhere",
                          "--root", str(tmp_path / "r")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 125
    assert "invalid listen address 'nowhere'" in res.stderr


def test_missing_certificate_is_named(tmp_path):
    res = subprocess.run(["dockyard", "registry", "serve", "--tls-cert", str(tmp_path / "nope.crt"),
                          "--tls-key", str(tmp_path / "nope.key"), "--root", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 125
    assert "nope.crt" in res.stderr and "does not exist" in res.stderr
