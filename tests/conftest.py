"""Shared fixtures: the official busybox image unpacked into OCI bundles, runtimes to
drive them, and checks that nothing is left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from dockyard.runtime.spec import default_spec

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKYARD_SHARED", REPO.parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox" / "1.38.0-glibc"


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll PREDICATE until it returns something true; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def oci_layers(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return [layout / "blobs" / "sha256" / l["digest"].split(":", 1)[1] for l in manifest["layers"]]


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.exists():
        pytest.fail(f"test images not found at {BUSYBOX} (set DOCKYARD_SHARED)")
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    root.mkdir()
    for layer in oci_layers(BUSYBOX):
        subprocess.run(["tar", "-xzf", str(layer), "-C", str(root)], check=True)
    return root


class Bundle:
    """An OCI bundle of busybox with a config.json the test adjusts before use."""

    def __init__(self, path: Path, rootfs_src: Path) -> None:
        self.path = path
        self.rootfs = path / "rootfs"
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(rootfs_src), str(self.rootfs)], check=True)
        self.config = default_spec()
        self.config["process"]["terminal"] = False
        self.config["process"]["args"] = ["true"]
        self.config["hostname"] = "box"
        self.config["linux"]["cgroupsPath"] = f"/dockyard-test/{uuid.uuid4().hex[:12]}"

    @property
    def process(self) -> dict:
        return self.config["process"]

    def args(self, *args: str) -> "Bundle":
        self.config["process"]["args"] = list(args)
        return self

    def write(self) -> str:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))
        return str(self.path)


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Bundle:
    return Bundle(tmp_path / "bundle", busybox_rootfs)


def _leftover_cgroups(prefix: str) -> list[str]:
    out = []
    base = Path("/sys/fs/cgroup")
    for hier in base.iterdir():
        d = hier / prefix.lstrip("/")
        if d.is_dir():
            out += [str(p) for p in d.iterdir() if p.is_dir()]
    return out


class RuntimeCLI:
    """A runtime binary (ours or runc) with its own state root."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 stdin=subprocess.DEVNULL, stdout=None) -> subprocess.CompletedProcess:
        """Run the runtime; its output goes through files, not pipes, so that a detached
        container holding our stdout open cannot make us wait for its end."""
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            res = subprocess.run([self.binary, "--root", str(self.root), *args], stdin=stdin,
                                 stdout=stdout or out, stderr=err, timeout=timeout)
            out.seek(0)
            err.seek(0)
            res.stdout = out.read().decode(errors="replace")
            res.stderr = err.read().decode(errors="replace")
        if check and res.returncode != 0:
            raise AssertionError(f"{self.binary} {' '.join(args)} failed ({res.returncode}): "
                                 f"{res.stderr}{res.stdout}")
        return res

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def status(self, cid: str) -> str:
        res = self("state", cid, check=False)
        return json.loads(res.stdout)["status"] if res.returncode == 0 else "absent"

    def cleanup(self) -> None:
        res = self("list", "-q", check=False)
        for cid in res.stdout.split():
            self("delete", "--force", cid, check=False)


RUNTIMES = ["dockyard-runtime"] + (["runc"] if shutil.which("runc") else [])


@pytest.fixture(params=RUNTIMES)
def any_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeCLI]:
    rt = RuntimeCLI(request.param, tmp_path / "state")
    yield rt
    rt.cleanup()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[RuntimeCLI]:
    rt = RuntimeCLI("dockyard-runtime", tmp_path / "state")
    yield rt
    rt.cleanup()


@pytest.fixture(autouse=True)
def no_leaks(tmp_path: Path) -> Iterator[None]:
    """Every test leaves no mount under its directory and no cgroup it made behind.
    Cgroups there before the test (another process's containers) are not its doing."""
    before = set(_leftover_cgroups("/dockyard-test"))
    yield
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    leaked = [m for m in mounts if m.startswith(str(tmp_path))]
    for m in sorted(leaked, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    cgroups = sorted(set(_leftover_cgroups("/dockyard-test")) - before)
    for d in cgroups:
        try:
            os.rmdir(d)
        except OSError:
            pass
    assert not leaked, f"mounts left behind: {leaked}"
    assert not cgroups, f"cgroups left behind: {cgroups}"
