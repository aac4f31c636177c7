"""The snapshotter: layers unpacked once (across threads and processes, surviving
crashes), chains of layers, container snapshots mounted with real overlayfs."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.image import layer, overlay
from dockyard.image.digest import Digest
from dockyard.image.snapshot import Snapshotter, Usage, chain_ids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="snapshots need root")

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox" / "1.38.0-glibc"

CHAIN_A = Digest.of(b"layer a")
CHAIN_B = Digest.of(b"layer b")


def busybox_image() -> tuple[Path, str]:
    """(the layer blob, its DiffID) of the busybox image, through index -> manifest -> config."""
    if not BUSYBOX.exists():
        pytest.fail(f"test images not found at {BUSYBOX} (set DOCKYARD_SHARED)")

    def blob(digest: str) -> Path:
        return BUSYBOX / "blobs" / "sha256" / digest.split(":", 1)[1]

    index = json.loads((BUSYBOX / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return blob(manifest["layers"][0]["digest"]), config["rootfs"]["diff_ids"][0]


def small_layer(**files: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def snap(tmp_path: Path) -> Snapshotter:
    return Snapshotter(tmp_path / "root")


class Counter:
    """An apply_fn that records its calls and writes one file."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, path: str) -> None:
        with self.lock:
            self.calls.append(path)
        Path(path, "file").write_text("content")
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("unpack failed")


def leftovers(root: Path) -> dict[str, list[str]]:
    return {d: sorted(os.listdir(root / d)) for d in ("tmp", "snapshots", "trash")}


# ---------------------------------------------------------------------------
# layers


def test_chain_ids_follow_the_image_spec() -> None:
    a, b = Digest.of(b"a"), Digest.of(b"b")
    import hashlib

    assert chain_ids([a]) == [a]
    assert chain_ids([a, b]) == [a, Digest("sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest())]
    with pytest.raises(InvalidArgument):
        chain_ids(["nonsense"])


def test_prepare_twice_unpacks_once(snap: Snapshotter) -> None:
    apply_fn = Counter()
    path = snap.prepare_layer(CHAIN_A, None, apply_fn)
    assert snap.prepare_layer(CHAIN_A, None, apply_fn) == path
    assert len(apply_fn.calls) == 1
    assert Path(path, "file").read_text() == "content"
    assert snap.layer_path(CHAIN_A) == path
    assert snap.lowers(CHAIN_A) == [path]
    # a fresh Snapshotter on the same root sees it
    assert Snapshotter(snap.root).prepare_layer(CHAIN_A, None, apply_fn) == path
    assert len(apply_fn.calls) == 1


def test_chains_and_missing_parents(snap: Snapshotter) -> None:
    with pytest.raises(NotFound):
        snap.prepare_layer(CHAIN_B, CHAIN_A, Counter())
    a = snap.prepare_layer(CHAIN_A, None, Counter())
    b = snap.prepare_layer(CHAIN_B, CHAIN_A, Counter())
    assert snap.lowers(CHAIN_B) == [a, b]  # bottom first
    with pytest.raises(NotFound):
        snap.lowers(Digest.of(b"unknown"))


def test_failed_unpack_commits_nothing(snap: Snapshotter, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        snap.prepare_layer(CHAIN_A, None, Counter(fail=True))
    assert snap.layer_path(CHAIN_A) is None
    assert leftovers(tmp_path / "root") == {"tmp": [], "snapshots": [], "trash": []}
    apply_fn = Counter()
    snap.prepare_layer(CHAIN_A, None, apply_fn)
    assert len(apply_fn.calls) == 1


def test_concurrent_threads_unpack_once(snap: Snapshotter) -> None:
    apply_fn = Counter(delay=0.3)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(snap.prepare_layer(CHAIN_A, None, apply_fn)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(apply_fn.calls) == 1
    assert len(results) == 4 and len(set(results)) == 1


PREPARE_SCRIPT = r"""
import os, sys, time
from dockyard.image.snapshot import Snapshotter
root, chain, log, delay, ready = sys.argv[1:6]

def apply_fn(path):
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    with open(os.path.join(path, "file"), "w") as fh:
        fh.write("x")
    if ready != "-":
        open(ready, "w").close()
    time.sleep(float(delay))

print(Snapshotter(root).prepare_layer(chain, None, apply_fn))
"""


def run_prepare(root: Path, chain: str, log: Path, delay: float, ready: str = "-") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PREPARE_SCRIPT, str(root), chain, str(log),
                             str(delay), ready], stdout=subprocess.PIPE, text=True)


def test_concurrent_processes_unpack_once(tmp_path: Path, snap: Snapshotter) -> None:
    log = tmp_path / "calls.log"
    procs = [run_prepare(tmp_path / "root", CHAIN_A, log, 0.5) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1
    assert outs[0] == outs[1] == snap.layer_path(CHAIN_A)


def test_crash_mid_unpack_leaves_nothing_committed(tmp_path: Path, snap: Snapshotter) -> None:
    root = tmp_path / "root"
    ready = tmp_path / "ready"
    proc = run_prepare(root, CHAIN_A, tmp_path / "calls.log", 60, str(ready))
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # cleanup leaves an unpack that is still running alone
        snap.cleanup()
        assert len(leftovers(root)["tmp"]) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert snap.layer_path(CHAIN_A) is None
    assert len(leftovers(root)["tmp"]) == 1
    snap.cleanup()
    assert leftovers(root) == {"tmp": [], "snapshots": [], "trash": []}
    apply_fn = Counter()
    path = snap.prepare_layer(CHAIN_A, None, apply_fn)
    assert len(apply_fn.calls) == 1 and Path(path, "file").exists()


def test_cleanup_removes_unrecorded_snapshot_directories(tmp_path: Path, snap: Snapshotter) -> None:
    kept = snap.prepare_layer(CHAIN_A, None, Counter())
    stray = tmp_path / "root" / "snapshots" / "0123abcd"
    (stray / "fs").mkdir(parents=True)  # as a crash between rename and commit leaves it
    snap.cleanup()
    assert not stray.exists() and Path(kept).is_dir()


# ---------------------------------------------------------------------------
# containers


@pytest.fixture
def busybox_chain(snap: Snapshotter) -> Iterator[tuple[Digest, Digest]]:
    """busybox plus a small layer on top, unpacked: (busybox chain, top chain)."""
    blob, diff_id = busybox_image()
    top_tar = small_layer(**{"etc/motd": b"hello\n"})
    chain = chain_ids([diff_id, Digest.of(top_tar)])

    def unpack_busybox(path: str) -> None:
        with open(blob, "rb") as fh:
            res = layer.apply(fh, path)
        assert res.diff_id == diff_id  # where real callers verify the DiffID

    def unpack_top(path: str) -> None:
        layer.apply(io.BytesIO(top_tar), path, lowers=snap.lowers(chain[0]))

    snap.prepare_layer(chain[0], None, unpack_busybox)
    snap.prepare_layer(chain[1], chain[0], unpack_top)
    yield chain[0], chain[1]


def test_container_lifecycle(tmp_path: Path, snap: Snapshotter,
                             busybox_chain: tuple[Digest, Digest]) -> None:
    base, top = busybox_chain
    lowers, upper, work = snap.prepare_container("c1", top)
    assert lowers == snap.lowers(top) and len(lowers) == 2
    with pytest.raises(Conflict):
        snap.prepare_container("c1", top)

    target = tmp_path / "rootfs"
    target.mkdir()
    snap.mount_container("c1", str(target))
    try:
        assert (target / "bin" / "busybox").is_file()
        assert (target / "etc" / "motd").read_text() == "hello\n"
        (target / "etc" / "motd").write_text("changed\n")
        (target / "hello").write_bytes(b"x" * 5000)
        assert Path(upper, "hello").exists()
        assert Path(lowers[1], "etc", "motd").read_text() == "hello\n"  # layers untouched
        assert snap.usage("c1").size >= 5000
        # layers in use are not removed, nor a mounted container
        with pytest.raises(Conflict, match="container c1"):
            snap.remove_layer(top)
        with pytest.raises(Conflict, match="layer"):
            snap.remove_layer(base)
        with pytest.raises(Conflict, match="mounted"):
            snap.remove("c1")
    finally:
        snap.unmount_container("c1")
    assert not overlay.is_mounted(str(target))

    # the merged view comes back on a second mount
    snap.mount_container("c1", str(target))
    assert (target / "hello").stat().st_size == 5000
    snap.unmount_container("c1", str(target))

    snap.remove("c1")
    assert not Path(upper).exists() and not Path(work).exists()
    with pytest.raises(NotFound):
        snap.remove("c1")
    with pytest.raises(Conflict):
        snap.remove_layer(base)  # the top layer still sits on it
    snap.remove_layer(top)
    snap.remove_layer(base)
    with pytest.raises(NotFound):
        snap.remove_layer(base)
    assert leftovers(tmp_path / "root") == {"tmp": [], "snapshots": [], "trash": []}
    assert snap.snapshots() == []


def test_scratch_container(tmp_path: Path, snap: Snapshotter) -> None:
    lowers, upper, _ = snap.prepare_container("scratch", None)
    assert lowers == []
    target = tmp_path / "rootfs"
    target.mkdir()
    snap.mount_container("scratch", str(target))
    try:
        assert os.listdir(target) == []
        (target / "file").write_text("x")
    finally:
        snap.unmount_container("scratch")
    assert Path(upper, "file").exists()
    snap.remove("scratch")
    with pytest.raises(NotFound):
        snap.prepare_container("c", Digest.of(b"no such layer"))


def test_usage(snap: Snapshotter, busybox_chain: tuple[Digest, Digest]) -> None:
    base, _ = busybox_chain
    path = snap.layer_path(base)
    assert path is not None
    seen, size, inodes = set(), 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            if not os.path.isdir(os.path.join(dirpath, name)) or os.path.islink(os.path.join(dirpath, name)):
                size += st.st_size
    assert snap.usage(base) == Usage(size=size, inodes=inodes)
    assert snap.usage(base) == Usage(size=size, inodes=inodes)  # cached the second time
    with pytest.raises(NotFound):
        snap.usage("nothing")
