"""`dockyard registry serve` as a user runs it, judged by skopeo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli_helpers import registry_server
from conftest import SHARED

LAYOUT = SHARED / "images" / "busybox" / "1.38.0-musl"


@pytest.fixture
def registry(tmp_path: Path):
    with registry_server(tmp_path) as address:
        yield address


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
