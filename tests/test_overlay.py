"""Real overlayfs mounts: layer order, whiteouts, copy-up, long stacks, unmounting.

Needs root and a kernel with overlayfs; every mount lives under tmp_path and the
`mounts` fixture detaches whatever is left there, even when a test fails.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard.errors import InvalidArgument, NotFound
from dockyard.image import overlay
from dockyard.runtime import linux

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")

OPAQUE_XATTR = "trusted.overlay.opaque"


def _mountpoints_under(root: Path) -> list[str]:
    # Parsed here rather than through overlay.is_mounted so cleanup does not
    # depend on the code under test. Test paths have no characters mountinfo escapes
    # except the space in one test, which is unescaped below.
    prefix = str(root) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(point)
    return found


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, with every mount below it detached afterwards, deepest first."""
    yield tmp_path
    for _ in range(16):  # stacked mounts need one pass each
        points = _mountpoints_under(tmp_path)
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            try:
                linux.umount(point, linux.MNT_DETACH)
            except OSError:
                pass
    assert not _mountpoints_under(tmp_path), "test left mounts behind"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_layers(root: Path, count: int,
                name: Callable[[int], str] = lambda i: f"layer{i}") -> list[Path]:
    layers = []
    for i in range(count):
        layer = root / name(i)
        layer.mkdir(parents=True)
        layers.append(layer)
    return layers


def whiteout(path: Path) -> None:
    """Mark `path` deleted the way overlayfs does: a 0/0 character device."""
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry below root with its content, to prove layers stay untouched."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


@pytest.fixture
def stack(mounts: Path) -> dict[str, Path]:
    """Three layers and an upper; `shadowed` is defined in several of them."""
    base, mid, top = make_layers(mounts / "layers", 3)
    write(base / "shadowed", "base")
    write(base / "only-base", "base")
    write(base / "etc" / "conf", "base conf")
    write(mid / "shadowed", "mid")
    write(mid / "only-mid", "mid")
    write(top / "only-top", "top")
    upper = mounts / "upper"
    upper.mkdir()
    target = mounts / "merged"
    target.mkdir()
    return {"base": base, "mid": mid, "top": top, "upper": upper,
            "work": mounts / "work", "target": target}


def mount_stack(s: dict[str, Path], with_upper: bool = True) -> None:
    overlay.mount_overlay([str(s["base"]), str(s["mid"]), str(s["top"])], str(s["target"]),
                          upper=str(s["upper"]) if with_upper else None,
                          work=str(s["work"]) if with_upper else None)


# --- layering -----------------------------------------------------------------


def test_later_layers_shadow_earlier_and_upper_shadows_all(stack: dict[str, Path]) -> None:
    target = stack["target"]
    mount_stack(stack, with_upper=False)
    assert (target / "shadowed").read_text() == "mid"  # lowers are bottom first
    assert {p.name for p in target.iterdir()} == {"shadowed", "only-base", "only-mid",
                                                   "only-top", "etc"}
    overlay.unmount(str(target))

    write(stack["upper"] / "shadowed", "upper")
    mount_stack(stack)
    assert overlay.is_mounted(str(target))
    assert (target / "shadowed").read_text() == "upper"
    assert (target / "only-base").read_text() == "base"
    assert (target / "only-top").read_text() == "top"


def test_whiteout_and_opaque_dir_hide_lower_content(mounts: Path) -> None:
    base, top = make_layers(mounts, 2)
    write(base / "deleted", "gone")
    write(base / "kept", "here")
    write(base / "dir" / "old", "old")
    write(base / "dir" / "sub" / "deep", "old")
    whiteout(top / "deleted")
    write(top / "dir" / "new", "new")
    os.setxattr(top / "dir", OPAQUE_XATTR, b"y")
    target = mounts / "root"
    target.mkdir()

    overlay.mount_overlay([str(base), str(top)], str(target))

    assert not (target / "deleted").exists()
    assert (target / "kept").read_text() == "here"
    assert sorted(p.name for p in (target / "dir").iterdir()) == ["new"]


def test_writes_go_to_upper_and_lowers_stay_unchanged(stack: dict[str, Path]) -> None:
    before = {name: snapshot(stack[name]) for name in ("base", "mid", "top")}
    mount_stack(stack)
    target, upper = stack["target"], stack["upper"]

    write(target / "new-file", "fresh")
    with open(target / "shadowed", "a") as f:  # copy-up of a lower file
        f.write("+edit")
    write(target / "etc" / "conf", "changed")

    assert (upper / "new-file").read_text() == "fresh"
    assert (upper / "shadowed").read_text() == "mid+edit"
    assert (upper / "etc" / "conf").read_text() == "changed"
    assert {name: snapshot(stack[name]) for name in ("base", "mid", "top")} == before


def test_delete_in_merged_view_leaves_whiteout_in_upper(stack: dict[str, Path]) -> None:
    mount_stack(stack)
    target, upper = stack["target"], stack["upper"]

    (target / "only-base").unlink()
    (target / "etc" / "conf").unlink()
    (target / "etc").rmdir()

    assert not (target / "only-base").exists()
    assert is_whiteout(upper / "only-base")
    assert is_whiteout(upper / "etc")
    assert (stack["base"] / "only-base").exists()
    # A directory recreated over a deleted lower one must not show old content.
    (target / "etc").mkdir()
    assert list((target / "etc").iterdir()) == []


def test_readonly_overlay_rejects_writes(stack: dict[str, Path]) -> None:
    mount_stack(stack, with_upper=False)
    target = stack["target"]
    for attempt in (lambda: (target / "x").write_text("no"),
                    lambda: (target / "only-top").unlink(),
                    lambda: (target / "d").mkdir()):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert (target / "only-top").read_text() == "top"


def test_single_lower_without_upper_is_a_readonly_bind(mounts: Path) -> None:
    (layer,) = make_layers(mounts, 1)
    write(layer / "file", "content")
    target = mounts / "root"
    target.mkdir()

    overlay.mount_overlay([str(layer)], str(target))

    assert overlay.is_mounted(str(target))
    assert (target / "file").read_text() == "content"
    with pytest.raises(OSError) as info:
        (target / "other").write_text("no")
    assert info.value.errno == errno.EROFS
    overlay.unmount(str(target))
    assert not overlay.is_mounted(str(target))
    assert not (layer / "other").exists()


def test_single_lower_with_upper_is_writable(mounts: Path) -> None:
    (layer,) = make_layers(mounts, 1)
    write(layer / "file", "content")
    upper, target = mounts / "upper", mounts / "root"
    upper.mkdir()
    target.mkdir()

    overlay.mount_overlay([str(layer)], str(target), upper=str(upper))

    write(target / "file", "changed")
    assert (upper / "file").read_text() == "changed"
    assert (layer / "file").read_text() == "content"
    assert (mounts / "upper.work").is_dir()  # the default work dir, beside upper


def test_device_nodes_and_setuid_are_not_disabled(stack: dict[str, Path]) -> None:
    mount_stack(stack)
    flags = os.statvfs(stack["target"]).f_flag
    assert not flags & (os.ST_NODEV | os.ST_NOSUID)


def test_remount_reuses_upper_and_work(stack: dict[str, Path]) -> None:
    # A restarted container mounts the same upper/work again; overlayfs left its
    # own entries in work, which must not count as "not empty".
    mount_stack(stack)
    write(stack["target"] / "kept", "across restarts")
    overlay.unmount(str(stack["target"]))
    assert os.listdir(stack["work"])

    mount_stack(stack)
    assert (stack["target"] / "kept").read_text() == "across restarts"


@pytest.mark.parametrize("with_upper", [True, False], ids=["rw", "ro"])
def test_128_layers_with_long_paths(mounts: Path, with_upper: bool) -> None:
    padding = "p" * 200
    layers = make_layers(mounts / "layers", 128, lambda i: f"{padding}-{i:03d}")
    for i, layer in enumerate(layers):
        write(layer / "which", str(i))
        write(layer / f"from-{i:03d}", "x")
    lowers = [str(p) for p in layers]
    assert len(":".join(lowers)) > 4096 * 4  # far beyond one option page
    assert all(len(p) > 256 for p in lowers)  # and beyond fsconfig's string cap
    upper = mounts / "upper"
    upper.mkdir()
    target = mounts / "root"
    target.mkdir()

    overlay.mount_overlay(lowers, str(target), upper=str(upper) if with_upper else None)

    assert (target / "which").read_text() == "127"
    assert (target / "from-000").exists() and (target / "from-127").exists()
    if with_upper:
        write(target / "which", "upper")
        assert (upper / "which").read_text() == "upper"
    overlay.unmount(str(target))
    assert not overlay.is_mounted(str(target))


def test_many_layers_on_kernels_without_fd_layers(mounts: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a kernel older than 6.13: the /proc/self/fd fallback must carry the stack.
    def no_fd_layers(*args: object) -> None:
        raise overlay._NoFdLayers()

    monkeypatch.setattr(overlay, "_fsapi_mount", no_fd_layers)
    layers = make_layers(mounts / "layers", 128, lambda i: f"{'q' * 100}-{i:03d}")
    for i, layer in enumerate(layers):
        write(layer / "which", str(i))
    upper, target = mounts / "upper", mounts / "root"
    upper.mkdir()
    target.mkdir()

    overlay.mount_overlay([str(p) for p in layers], str(target), upper=str(upper))

    assert (target / "which").read_text() == "127"
    write(target / "new", "x")
    assert (upper / "new").exists()


def test_paths_with_option_separators(mounts: Path) -> None:
    base, top = make_layers(mounts, 2, lambda i: f"layer,{i}:x\\y")
    write(base / "f", "base")
    write(top / "f", "top")
    upper, target = mounts / "up,per", mounts / "root"
    upper.mkdir()
    target.mkdir()

    overlay.mount_overlay([str(base), str(top)], str(target), upper=str(upper),
                          work=str(mounts / "wo:rk"))

    assert (target / "f").read_text() == "top"


# --- unmounting ----------------------------------------------------------------


def test_unmount_removes_mountinfo_entry_and_is_idempotent(stack: dict[str, Path]) -> None:
    mount_stack(stack)
    target = str(stack["target"])
    assert target in _mountpoints_under(stack["target"].parent)

    overlay.unmount(target)

    assert target not in _mountpoints_under(stack["target"].parent)
    assert not overlay.is_mounted(target)
    overlay.unmount(target)  # nothing mounted: no error
    overlay.unmount(str(stack["target"].parent / "never-existed"))


def test_unmount_removes_stacked_mounts(stack: dict[str, Path]) -> None:
    mount_stack(stack, with_upper=False)
    mount_stack(stack, with_upper=False)
    overlay.unmount(str(stack["target"]))
    assert not _mountpoints_under(stack["target"].parent)


def test_is_mounted_handles_escaped_mountinfo_paths(mounts: Path) -> None:
    base, top = make_layers(mounts, 2)
    target = mounts / "with space"
    target.mkdir()
    overlay.mount_overlay([str(base), str(top)], str(target))
    assert overlay.is_mounted(str(target))
    overlay.unmount(str(target))
    assert not overlay.is_mounted(str(target))


def test_unmount_waits_for_a_busy_mount_to_be_released(stack: dict[str, Path],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    mount_stack(stack)
    fd = os.open(stack["target"] / "only-top", os.O_RDONLY)
    closer = threading.Timer(0.3, os.close, (fd,))
    closer.start()
    try:
        with caplog.at_level("WARNING", logger=overlay.__name__):
            overlay.unmount(str(stack["target"]), timeout=10)
    finally:
        closer.cancel()
        closer.join()
    assert not overlay.is_mounted(str(stack["target"]))
    assert not caplog.records  # released in time: no lazy detach


@pytest.fixture
def holder(stack: dict[str, Path]) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Start a process that keeps a file open; it is killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        code = "import sys; f = open(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_unmount_of_a_mount_held_open_ends_unmounted(
        stack: dict[str, Path], holder: Callable[[Path], subprocess.Popen[str]],
        caplog: pytest.LogCaptureFixture) -> None:
    mount_stack(stack)
    proc = holder(stack["target"] / "only-top")

    with caplog.at_level("WARNING", logger=overlay.__name__):
        overlay.unmount(str(stack["target"]), timeout=0.3)

    assert proc.poll() is None  # still holding the file
    assert not overlay.is_mounted(str(stack["target"]))
    assert not _mountpoints_under(stack["target"].parent)
    assert any("lazily" in r.getMessage() for r in caplog.records)


# --- bad input -------------------------------------------------------------------


def _bad_inputs(s: dict[str, Path]) -> dict[str, tuple[Callable[[], None], type[Exception], str]]:
    lowers = [str(s["base"]), str(s["mid"])]
    target, upper = str(s["target"]), str(s["upper"])
    missing = str(s["target"].parent / "missing")
    a_file = str(write(s["target"].parent / "a-file", "x"))
    full_dir = str(write(s["target"].parent / "full" / "junk", "x").parent)
    return {
        "missing lower": (lambda: overlay.mount_overlay(lowers + [missing], target, upper=upper),
                          NotFound, missing),
        "lower is a file": (lambda: overlay.mount_overlay([a_file] + lowers, target, upper=upper),
                            InvalidArgument, a_file),
        "upper missing": (lambda: overlay.mount_overlay(lowers, target, upper=missing),
                          NotFound, missing),
        "target missing": (lambda: overlay.mount_overlay(lowers, missing, upper=upper),
                           NotFound, missing),
        "target is a file": (lambda: overlay.mount_overlay(lowers, a_file),
                             InvalidArgument, a_file),
        "empty lowers": (lambda: overlay.mount_overlay([], target, upper=upper),
                         InvalidArgument, "layer"),
        "work without upper": (lambda: overlay.mount_overlay(lowers, target, work=missing),
                               InvalidArgument, missing),
        "work inside upper": (lambda: overlay.mount_overlay(lowers, target, upper=upper,
                                                            work=upper + "/work"),
                              InvalidArgument, upper + "/work"),
        "lower listed twice": (lambda: overlay.mount_overlay(lowers + lowers[:1], target),
                               InvalidArgument, lowers[0]),
        "upper inside a lower": (lambda: overlay.mount_overlay(lowers, target,
                                                               upper=lowers[0] + "/etc"),
                                 InvalidArgument, lowers[0] + "/etc"),
        "work inside a lower": (lambda: overlay.mount_overlay(lowers, target, upper=upper,
                                                              work=lowers[1] + "/w"),
                                InvalidArgument, lowers[1] + "/w"),
        "work not empty": (lambda: overlay.mount_overlay(lowers, target, upper=upper,
                                                         work=full_dir),
                           InvalidArgument, f"work directory {full_dir} is not empty"),
    }


@pytest.mark.parametrize("case", ["missing lower", "lower is a file", "upper missing",
                                  "target missing", "target is a file", "empty lowers",
                                  "work without upper", "work inside upper", "lower listed twice",
                                  "upper inside a lower", "work inside a lower",
                                  "work not empty"])
def test_bad_input_names_the_path_and_mounts_nothing(stack: dict[str, Path], case: str) -> None:
    call, error, needle = _bad_inputs(stack)[case]
    with pytest.raises(error) as info:
        call()
    assert needle in str(info.value)
    assert not _mountpoints_under(stack["target"].parent)
    assert not stack["work"].exists()  # validation happens before anything is created


def test_work_on_another_filesystem_is_rejected(stack: dict[str, Path]) -> None:
    other_fs = stack["target"].parent / "tmpfs"
    other_fs.mkdir()
    linux.mount("tmpfs", str(other_fs), "tmpfs", 0, "size=1m")
    work = other_fs / "work"
    with pytest.raises(InvalidArgument) as info:
        mount_stack({**stack, "work": work})
    assert str(work) in str(info.value)
    assert not overlay.is_mounted(str(stack["target"]))
    assert not work.exists()


def test_too_many_layers_is_rejected(stack: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgument) as info:
        overlay.mount_overlay([str(stack["base"])] * (overlay.MAX_LAYERS + 1),
                              str(stack["target"]))
    assert str(overlay.MAX_LAYERS) in str(info.value)
