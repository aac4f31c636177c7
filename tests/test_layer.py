"""Layer tarballs: unpacking (busybox, compressions, whiteouts, metadata, hostile
archives) and exporting an overlay upper directory (diff, changes).

Runs as root: ownership, device nodes, trusted.* xattrs and overlay mounts need it.
Every hostile archive is unpacked into tmp_path/dest next to a sentinel directory
tmp_path/outside, which must come out untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from dockyard.errors import InvalidArgument, Unsupported
from dockyard.image import layer, overlay
from dockyard.image.digest import Digest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox" / "1.38.0-glibc"


# ---------------------------------------------------------------------------
# helpers


def blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexpart = digest.partition(":")
    return layout / "blobs" / algorithm / hexpart


def busybox_image() -> tuple[Path, str]:
    """(the layer blob, its DiffID from the image config) of the busybox image."""
    if not BUSYBOX.exists():
        pytest.fail(f"test images not found at {BUSYBOX} (set DOCKYARD_SHARED)")
    index = json.loads((BUSYBOX / "index.json").read_text())
    manifest = json.loads(blob(BUSYBOX, index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(BUSYBOX, manifest["config"]["digest"]).read_text())
    assert len(manifest["layers"]) == 1
    return blob(BUSYBOX, manifest["layers"][0]["digest"]), config["rootfs"]["diff_ids"][0]


def tree(root: Path, *, mtimes: bool = True, skip_root_mtime: bool = False) -> dict[str, tuple]:
    """Everything about every path under ROOT that a layer is meant to reproduce."""
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], str] = {}
    hashes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [""] + sorted(dirnames + filenames) if dirpath == str(root) else sorted(dirnames + filenames):
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key not in hashes:
                    hashes[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                extra = hashes[key]
                if st.st_nlink > 1:
                    # hard links: the first path of the inode, so groups compare equal
                    extra = (extra, inodes.setdefault(key, rel))
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            xattrs = {}
            for key in os.listxattr(path, follow_symlinks=False):
                if not key.startswith("trusted.overlay.") and key != "security.selinux":
                    xattrs[key] = os.getxattr(path, key, follow_symlinks=False)
            mtime = None
            if mtimes and not (skip_root_mtime and rel == "."):
                mtime = st.st_mtime_ns // 1_000_000_000
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra,
                        tuple(sorted(xattrs.items())), mtime)
    return out


def info(name: str, type_: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = kw.pop("mode", 0o755 if type_ == tarfile.DIRTYPE else 0o644)  # type: ignore[assignment]
    ti.mtime = kw.pop("mtime", 1_700_000_000)  # type: ignore[assignment]
    for key, value in kw.items():
        setattr(ti, key, value)
    return ti


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None],
             fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def f(name: str, data: bytes = b"data", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return info(name, **kw), data


def d(name: str, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return info(name, tarfile.DIRTYPE, **kw), None


def sym(name: str, target: str, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return info(name, tarfile.SYMTYPE, linkname=target, **kw), None


def hard(name: str, target: str, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return info(name, tarfile.LNKTYPE, linkname=target, **kw), None


def special(name: str, type_: bytes, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return info(name, type_, **kw), None


def apply_bytes(data: bytes, dest: Path, **kw: object) -> layer.ApplyResult:
    return layer.apply(io.BytesIO(data), str(dest), **kw)  # type: ignore[arg-type]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    p = tmp_path / "dest"
    p.mkdir()
    return p


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[str]]:
    """Mount points to unmount at the end, whatever happens."""
    points: list[str] = []
    yield points
    for p in reversed(points):
        overlay.unmount(p)


# ---------------------------------------------------------------------------
# busybox and compressions


def test_busybox_layer_unpacks_like_tar_with_the_config_diff_id(tmp_path: Path, dest: Path) -> None:
    blob_path, diff_id = busybox_image()
    with open(blob_path, "rb") as fh:
        res = layer.apply(fh, str(dest))
    assert res.diff_id == diff_id
    assert res.size == len(gzip.decompress(blob_path.read_bytes()))

    busybox = dest / "bin" / "busybox"
    assert busybox.is_file() and os.access(busybox, os.X_OK)
    # the applets are hard links of one binary, as in the tar
    assert (dest / "bin" / "sh").stat().st_ino == busybox.stat().st_ino
    assert os.readlink(dest / "lib64") == "lib"
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert (dest / "home").stat().st_uid == 65534

    ref = tmp_path / "ref"
    ref.mkdir()
    subprocess.run(["tar", "-xzf", str(blob_path), "-C", str(ref)], check=True)
    assert tree(dest) == tree(ref)


def test_gzip_zstd_and_plain_give_the_same_tree_and_diff_id(tmp_path: Path) -> None:
    blob_path, diff_id = busybox_image()
    raw = gzip.decompress(blob_path.read_bytes())
    half = len(raw) // 2
    variants = {
        "gzip": blob_path.read_bytes(),
        "zstd": zstandard.ZstdCompressor(level=3).compress(raw),
        # two zstd frames and two gzip members, as parallel compressors write them
        "zstd-frames": (zstandard.ZstdCompressor().compress(raw[:half])
                        + zstandard.ZstdCompressor().compress(raw[half:])),
        "gzip-members": gzip.compress(raw[:half]) + gzip.compress(raw[half:]),
        "none": raw,
    }
    trees = {}
    for name, data in variants.items():
        out = tmp_path / name
        out.mkdir()
        res = apply_bytes(data, out)
        assert res.diff_id == diff_id, name
        assert res.size == len(raw), name
        trees[name] = tree(out)
    assert all(t == trees["none"] for t in trees.values())
    # an explicit compression skips detection
    out = tmp_path / "explicit"
    out.mkdir()
    assert apply_bytes(variants["zstd"], out, compression="zstd").diff_id == diff_id


def test_detect_compression_and_open_decompressed() -> None:
    payload = b"x" * 100_000
    assert layer.detect_compression(gzip.compress(payload)) == "gzip"
    assert layer.detect_compression(zstandard.ZstdCompressor().compress(payload)) == "zstd"
    assert layer.detect_compression(b"\x50\x2a\x4d\x18rest") == "zstd"  # skippable frame
    assert layer.detect_compression(payload) == "none"
    assert layer.detect_compression(b"") == "none"
    assert layer.detect_compression(b"BZh91AY") == "bzip2"
    for data in (gzip.compress(payload), zstandard.ZstdCompressor().compress(payload), payload):
        assert layer.open_decompressed(io.BytesIO(data)).read() == payload
    with pytest.raises(InvalidArgument, match="truncated"):
        layer.open_decompressed(io.BytesIO(gzip.compress(payload)[:-20])).read()
    with pytest.raises(Unsupported):
        layer.open_decompressed(io.BytesIO(b"BZh91AY&SY" + bytes(50)))


def test_diff_id_optional_and_trailing_data_hashed(dest: Path) -> None:
    data = make_tar(f("a")) + bytes(4096)  # writers pad to a record size
    res = apply_bytes(data, dest)
    assert res.diff_id == Digest.of(data) and res.size == len(data)
    assert apply_bytes(data, dest, hasher=False).diff_id is None


# ---------------------------------------------------------------------------
# whiteouts


def lower_and_upper_tars() -> tuple[bytes, bytes]:
    lower = make_tar(d("a"), f("a/x", b"x"), f("a/y", b"y"), f("f", b"file"), d("d"),
                     f("d/old", b"old"), d("d/sub"), f("d/sub/deep", b"deep"), f("keep", b"k"))
    upper = make_tar(f(".wh.f", b""), d("a"), f("a/.wh.x", b""), d("d"),
                     f("d/.wh..wh..opq", b""), f("d/new", b"new"), f(".wh.never-existed", b""))
    return lower, upper


def test_whiteouts_and_opaque_dirs_through_a_real_overlay(tmp_path: Path, mounts: list[str]) -> None:
    lower_tar, upper_tar = lower_and_upper_tars()
    l1, l2, merged = tmp_path / "l1", tmp_path / "l2", tmp_path / "merged"
    for p in (l1, l2, merged):
        p.mkdir()
    apply_bytes(lower_tar, l1)
    apply_bytes(upper_tar, l2, lowers=[str(l1)])

    # the layer directory holds overlayfs's own whiteout format
    st = os.lstat(l2 / "f")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(l2 / "d", layer.OPAQUE_XATTR) == b"y"
    assert not (l2 / "f").is_file() and not (l2 / ".wh.f").exists()

    overlay.mount_overlay([str(l1), str(l2)], str(merged))
    mounts.append(str(merged))
    assert not (merged / "f").exists()
    assert not (merged / "a" / "x").exists()
    assert (merged / "a" / "y").read_bytes() == b"y"
    assert sorted(os.listdir(merged / "d")) == ["new"]  # old and sub hidden
    assert (merged / "keep").read_bytes() == b"k"
    assert not (merged / "never-existed").exists()


def test_whiteouts_delete_mode_gives_the_merged_view(tmp_path: Path, mounts: list[str]) -> None:
    lower_tar, upper_tar = lower_and_upper_tars()
    flat = tmp_path / "flat"
    flat.mkdir()
    apply_bytes(lower_tar, flat, whiteouts="delete")
    apply_bytes(upper_tar, flat, whiteouts="delete")
    assert sorted(os.listdir(flat)) == ["a", "d", "keep"]
    assert sorted(os.listdir(flat / "a")) == ["y"]
    assert sorted(os.listdir(flat / "d")) == ["new"]
    assert not any(stat.S_ISCHR(os.lstat(os.path.join(dp, n)).st_mode)
                   for dp, dn, fn in os.walk(flat) for n in dn + fn)


def test_whiteout_of_a_path_the_same_layer_creates_is_ignored(dest: Path) -> None:
    # The spec: a whiteout only hides what lower layers have.
    apply_bytes(make_tar(f("x", b"mine"), f(".wh.x", b""), d("o"), f("o/kept", b"k"),
                         f("o/.wh..wh..opq", b"")), dest, whiteouts="delete")
    assert (dest / "x").read_bytes() == b"mine"
    assert (dest / "o" / "kept").read_bytes() == b"k"


def test_directory_replacing_a_whiteout_becomes_opaque(tmp_path: Path, mounts: list[str]) -> None:
    l1, l2, merged = tmp_path / "l1", tmp_path / "l2", tmp_path / "m"
    for p in (l1, l2, merged):
        p.mkdir()
    apply_bytes(make_tar(d("dir"), f("dir/old")), l1)
    # deleted and made anew in one layer, without an opaque marker
    apply_bytes(make_tar(f(".wh.dir", b""), d("dir"), f("dir/new")), l2)
    overlay.mount_overlay([str(l1), str(l2)], str(merged))
    mounts.append(str(merged))
    assert os.listdir(merged / "dir") == ["new"]


# ---------------------------------------------------------------------------
# metadata


def capability_v2(bits: int) -> bytes:
    # struct vfs_cap_data, revision 2, effective flag set: the kernel checks the format
    return (0x02000001).to_bytes(4, "little") + bits.to_bytes(4, "little") + bytes(12)


def test_modes_ownership_times_xattrs_and_special_files_exactly(dest: Path) -> None:
    cap = capability_v2(1 << 13)  # cap_net_raw, what ping carries
    data = make_tar(
        d("dirs", mode=0o2775, uid=10, gid=20, mtime=1_500_000_000),
        d("dirs/sticky", mode=0o1777),
        f("dirs/suid", b"#!/bin/true\n", mode=0o4755, uid=1000, gid=1000),
        f("dirs/sgid", mode=0o2711, uid=0, gid=42),
        f("dirs/odd", mode=0o0640, uid=123456, gid=654321),
        # (these capability bytes are all ASCII, so tarfile's UTF-8 PAX values keep them)
        f("dirs/ping", b"\x7fELF", mode=0o755, uid=0, gid=0,
          pax_headers={"SCHILY.xattr.security.capability": cap.decode("ascii")}),
        f("dirs/tagged", pax_headers={"SCHILY.xattr.user.tag": "hello",
                                      "SCHILY.xattr.trusted.overlay.opaque": "y"}),
        f("dirs/precise", pax_headers={"mtime": "1600000000.123456789"}),
        sym("dirs/link", "../elsewhere/target", uid=7, gid=8, mtime=1_400_000_000),
        special("dirs/fifo", tarfile.FIFOTYPE, mode=0o620, uid=5, gid=6),
        special("dirs/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        special("dirs/loop", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=200, gid=6),
    )
    apply_bytes(data, dest)

    def st(name: str) -> os.stat_result:
        return os.lstat(dest / "dirs" / name) if name else os.lstat(dest / "dirs")

    assert (stat.S_IMODE(st("").st_mode), st("").st_uid, st("").st_gid) == (0o2775, 10, 20)
    assert st("").st_mtime == 1_500_000_000  # set after its children were created
    assert stat.S_IMODE(st("sticky").st_mode) == 0o1777
    assert (stat.S_IMODE(st("suid").st_mode), st("suid").st_uid, st("suid").st_gid) == (0o4755, 1000, 1000)
    assert (stat.S_IMODE(st("sgid").st_mode), st("sgid").st_gid) == (0o2711, 42)
    assert (stat.S_IMODE(st("odd").st_mode), st("odd").st_uid, st("odd").st_gid) == (0o640, 123456, 654321)
    assert st("precise").st_mtime_ns == 1_600_000_000_123_456_789
    assert st("suid").st_mtime == 1_700_000_000
    assert os.getxattr(dest / "dirs" / "tagged", "user.tag") == b"hello"
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "dirs" / "tagged")
    assert os.readlink(dest / "dirs" / "link") == "../elsewhere/target"
    assert (st("link").st_uid, st("link").st_gid, st("link").st_mtime) == (7, 8, 1_400_000_000)
    assert stat.S_ISFIFO(st("fifo").st_mode) and stat.S_IMODE(st("fifo").st_mode) == 0o620
    assert stat.S_ISCHR(st("null").st_mode) and st("null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(st("loop").st_mode) and st("loop").st_rdev == os.makedev(7, 200)
    assert (stat.S_IMODE(st("loop").st_mode), st("loop").st_gid) == (0o660, 6)
    # the capability survives: chown and chmod come before it
    assert os.getxattr(dest / "dirs" / "ping", "security.capability") == cap


def test_raw_binary_capability_xattr(dest: Path) -> None:
    # Go's archive/tar writes xattr values as raw bytes, not UTF-8: build that header.
    cap = capability_v2(1 << 13)
    data = layer_tar_raw([(b"ping", b"0", b"\x7fELF", {b"SCHILY.xattr.security.capability": cap})])
    apply_bytes(data, dest)
    assert os.getxattr(dest / "ping", "security.capability") == cap


def test_devices_can_be_refused(dest: Path) -> None:
    data = make_tar(special("null", tarfile.CHRTYPE, devmajor=1, devminor=3))
    with pytest.raises(InvalidArgument, match="'null'.*device"):
        apply_bytes(data, dest, allow_devices=False)
    apply_bytes(make_tar(special("fifo", tarfile.FIFOTYPE)), dest, allow_devices=False)


def test_gnu_long_names_and_missing_parents(dest: Path, tmp_path: Path) -> None:
    long_dir = "/".join(["d" * 60] * 5)
    data = make_tar(f(f"{long_dir}/file", b"deep"), sym("l", "t" * 150),
                    hard(f"{long_dir}/hl", f"{long_dir}/file"), fmt=tarfile.GNU_FORMAT)
    apply_bytes(data, dest)
    assert (dest / long_dir / "file").read_bytes() == b"deep"
    assert (dest / long_dir / "hl").stat().st_ino == (dest / long_dir / "file").stat().st_ino
    assert os.readlink(dest / "l") == "t" * 150
    # parents the archive does not list: 0755 root
    assert stat.S_IMODE((dest / ("d" * 60)).stat().st_mode) == 0o755

    # ... or like the lower layer's directory when there is one
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    apply_bytes(make_tar(d("etc", mode=0o750, uid=3, gid=4, mtime=1_234_567_890)), lower)
    apply_bytes(make_tar(f("etc/new")), upper, lowers=[str(lower)])
    st = os.stat(upper / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o750, 3, 4, 1_234_567_890)


def test_later_entries_replace_earlier_ones(dest: Path) -> None:
    data = make_tar(f("x", b"one"), f("x", b"two"), d("y"), f("y/inner"), f("y", b"file now"),
                    f("z", b"file"), d("z", mode=0o700), sym("s", "somewhere"), f("s", b"real"))
    apply_bytes(data, dest)
    assert (dest / "x").read_bytes() == b"two"
    assert (dest / "y").read_bytes() == b"file now"
    assert (dest / "z").is_dir() and stat.S_IMODE((dest / "z").stat().st_mode) == 0o700
    assert not (dest / "s").is_symlink() and (dest / "s").read_bytes() == b"real"


# ---------------------------------------------------------------------------
# hostile archives


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def raw_header(name: bytes, typeflag: bytes = b"0", size: int = 0, linkname: bytes = b"",
               mode: bytes | None = None, size_field: bytes | None = None) -> bytes:
    b = bytearray(512)
    b[0:len(name[:100])] = name[:100]
    b[100:108] = mode if mode is not None else _octal(0o644, 8)
    b[108:116] = _octal(0, 8)
    b[116:124] = _octal(0, 8)
    b[124:136] = size_field if size_field is not None else _octal(size, 12)
    b[136:148] = _octal(1_700_000_000, 12)
    b[148:156] = b" " * 8
    b[156:157] = typeflag
    b[157:157 + len(linkname)] = linkname
    b[257:265] = b"ustar\x0000"
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def pax_data(records: dict[bytes, bytes]) -> bytes:
    out = b""
    for k, v in records.items():
        body = b" " + k + b"=" + v + b"\n"
        n = len(body) + 1
        while len(b"%d" % n) + len(body) != n:
            n = len(b"%d" % n) + len(body)
        out += b"%d" % n + body
    return out


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def layer_tar_raw(entries: list[tuple[bytes, bytes, bytes, dict[bytes, bytes]]]) -> bytes:
    """A tar from (name, type, data, pax records) with raw bytes everywhere."""
    out = b""
    for name, typeflag, data, pax in entries:
        if pax:
            records = pax_data(pax)
            out += raw_header(b"PaxHeaders/x", b"x", len(records)) + padded(records)
        out += raw_header(name, typeflag, len(data) if typeflag == b"0" else 0)
        if typeflag == b"0":
            out += padded(data)
    return out + bytes(1024)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(dest, outside): after the test, outside and the rest of tmp_path are untouched."""
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (outside / "dir").mkdir()
    before = tree(outside)
    yield dest, outside
    assert tree(outside) == before, "something was written outside the destination"
    assert sorted(os.listdir(tmp_path)) == ["dest", "outside"]
    assert not any(p.startswith("dockyard-escape") for p in os.listdir("/"))


ESCAPE = f"dockyard-escape-{uuid.uuid4().hex[:8]}"

HOSTILE: dict[str, tuple[bytes, str]] = {
    "dotdot": (make_tar(f("../outside/pwned")), "../outside/pwned"),
    "dotdot-inner": (make_tar(f("a/../../outside/pwned")), "a/../../outside/pwned"),
    "dotdot-dir": (make_tar(d("../outside/newdir")), "../outside/newdir"),
    "symlink-relative-then-through": (
        make_tar(sym("link", "../outside"), f("link/pwned")), "link/pwned"),
    "symlink-absolute-then-through": (
        make_tar(sym("link", "/"), f(f"link/{ESCAPE}")), f"link/{ESCAPE}"),
    "symlink-then-dir-through": (
        make_tar(sym("link", "../outside"), d("link/newdir")), "link/newdir"),
    "symlink-then-hardlink-through": (
        make_tar(sym("link", "../outside"), hard("stolen", "link/secret")), "stolen"),
    "hardlink-dotdot": (make_tar(hard("stolen", "../outside/secret")), "stolen"),
    "hardlink-absolute": (make_tar(hard("stolen", "/etc/passwd")), "stolen"),
    "hardlink-before-target": (make_tar(hard("early", "later"), f("later")), "early"),
    "hardlink-to-dir": (make_tar(d("adir"), hard("dirlink", "adir")), "dirlink"),
    "whiteout-dotdot": (make_tar(f(".wh.../../outside/secret", b"")), ".wh.../../outside/secret"),
    "whiteout-of-parent": (make_tar(d("a"), f("a/.wh..", b"")), "a/.wh.."),
    "whiteout-of-dotdot": (make_tar(d("a"), f("a/.wh...", b"")), "a/.wh..."),
    "whiteout-through-symlink": (
        make_tar(sym("link", "../outside"), f("link/.wh.secret", b"")), "link/.wh.secret"),
    "opaque-through-symlink": (
        make_tar(sym("link", "../outside"), f("link/.wh..wh..opq", b"")), "link/.wh..wh..opq"),
    "nul-in-pax-path": (
        layer_tar_raw([(b"ok", b"0", b"x", {b"path": b"a\0/../../outside/x"})]), "a\\x00"),
    "file-as-root": (make_tar(f("./", b"x")), "./"),
    "truncated-data": (make_tar(f("big", os.urandom(20_000)))[:512 + 10_000], "big"),
    "bad-number": (raw_header(b"weird", mode=b"zzzzzzz\0") + bytes(1024), "weird"),
    "huge-pax": (raw_header(b"PaxHeaders/x", b"x", size=1 << 30) + bytes(1024), "PaxHeaders/x"),
    "bad-pax": (raw_header(b"PaxHeaders/y", b"x", size=10) + padded(b"99 path=x\n") + bytes(1024),
                "PaxHeaders/y"),
    "unknown-type": (raw_header(b"strange", b"Z") + bytes(1024), "strange"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_naming_the_entry(case: str, sandbox: tuple[Path, Path]) -> None:
    dest, _ = sandbox
    data, entry = HOSTILE[case]
    for whiteouts in ("overlay", "delete"):
        with pytest.raises(InvalidArgument) as exc:
            apply_bytes(data, dest, whiteouts=whiteouts)
        assert entry in str(exc.value), str(exc.value)
        # and compressed, where errors surface from another thread
        with pytest.raises(InvalidArgument) as exc:
            apply_bytes(gzip.compress(data), dest, whiteouts=whiteouts)
        assert entry in str(exc.value), str(exc.value)


@pytest.mark.parametrize("data", [
    pytest.param(os.urandom(5000), id="garbage"),
    pytest.param(gzip.compress(os.urandom(5000)), id="gzip-of-garbage"),
    pytest.param(gzip.compress(make_tar(f("a", os.urandom(50_000))))[:3000], id="truncated-gzip"),
    pytest.param(gzip.compress(make_tar(f("a"))) + b"trailing junk", id="junk-after-gzip"),
    pytest.param(b"\x1f\x8b" + os.urandom(3000), id="corrupt-gzip"),
    pytest.param(zstandard.ZstdCompressor().compress(os.urandom(5000)), id="zstd-of-garbage"),
    pytest.param(b"\x28\xb5\x2f\xfd" + os.urandom(3000), id="corrupt-zstd"),
    pytest.param(make_tar(f("a"))[:700], id="truncated-header"),
])
def test_garbage_is_refused(data: bytes, sandbox: tuple[Path, Path]) -> None:
    dest, _ = sandbox
    with pytest.raises(InvalidArgument):
        apply_bytes(data, dest)


def test_hostile_entries_neutralised(sandbox: tuple[Path, Path]) -> None:
    dest, outside = sandbox
    data = make_tar(
        f(f"/{ESCAPE}", b"absolute"),              # leading / stripped, as Docker does
        f(f"//./{ESCAPE}-2", b"also"),
        sym("s1", str(outside / "secret")), f("s1", b"replaces the link"),  # not written through
        sym("s2", str(outside)), d("s2"),          # link replaced by a real directory
        sym("s3", str(outside)),
        hard("s1-again", "s1"),
        f("ustar-nul", b"n"),
    )
    apply_bytes(data, dest, whiteouts="delete")
    assert (dest / ESCAPE).read_bytes() == b"absolute"
    assert (dest / f"{ESCAPE}-2").read_bytes() == b"also"
    assert (dest / "s1").read_bytes() == b"replaces the link" and not (dest / "s1").is_symlink()
    assert (dest / "s2").is_dir() and not (dest / "s2").is_symlink()
    apply_bytes(make_tar(f(".wh.s3", b"")), dest, whiteouts="delete")  # removes the link only
    assert not os.path.lexists(dest / "s3")
    # a NUL inside a ustar name field ends the name there
    apply_bytes(raw_header(b"cut\0../../outside/x", size=1) + padded(b"c") + bytes(1024), dest)
    assert (dest / "cut").read_bytes() == b"c"
    # overlay mode: the whiteout replaces the symlink with a 0/0 device, still inside
    dest2 = dest / "sub"
    dest2.mkdir()
    apply_bytes(make_tar(sym("s3", str(outside)), f(".wh.other", b"")), dest2)
    assert stat.S_ISCHR(os.lstat(dest2 / "other").st_mode)


def test_symlink_to_inside_directory_is_not_written_through_either(dest: Path) -> None:
    # Tar writers never emit entries through a symlink; refusing them all keeps the
    # walk simple (and Docker's chroot-less equivalents have had escapes here).
    data = make_tar(d("real"), sym("alias", "real"), f("alias/file"))
    with pytest.raises(InvalidArgument, match="alias/file.*symbolic link"):
        apply_bytes(data, dest)


def test_sparse_files_are_unsupported(dest: Path) -> None:
    data = layer_tar_raw([(b"sparse", b"0", b"", {b"GNU.sparse.major": b"1",
                                                  b"GNU.sparse.minor": b"0"})])
    with pytest.raises(Unsupported, match="sparse"):
        apply_bytes(data, dest)


def test_missing_end_marker_is_accepted_like_docker(dest: Path) -> None:
    data = make_tar(f("a", b"x"))
    data = data[:1024]  # header + data block, no end-of-archive blocks
    assert apply_bytes(data, dest).diff_id == Digest.of(data)
    assert (dest / "a").read_bytes() == b"x"


def test_no_whole_layer_in_memory(dest: Path) -> None:
    # A 64 MiB file of zeros, gzip-compressed to ~64 KiB, read through a stream that
    # counts how much it was asked for at once: chunks stay bounded.
    class Counting(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)
            self.largest = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            assert n > 0, "the whole stream was requested"
            self.largest = max(self.largest, n)
            return self.inner.read(n)

    size = 64 << 20
    header = info("zeros")
    header.size = size
    raw = header.tobuf(tarfile.PAX_FORMAT)
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    gz = comp.compress(raw)
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        gz += comp.compress(chunk)
    gz += comp.compress(bytes(1024)) + comp.flush()
    src = Counting(gz)
    tracemalloc.start()
    try:
        res = layer.apply(src, str(dest))  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak >> 20} MiB"
    assert res.size == 512 + size + 1024
    assert (dest / "zeros").stat().st_size == size
    assert src.largest <= 1 << 20


# ---------------------------------------------------------------------------
# diff and changes


def busybox_lower(tmp_path: Path) -> Path:
    blob_path, _ = busybox_image()
    lower = tmp_path / "lower"
    lower.mkdir()
    with open(blob_path, "rb") as fh:
        layer.apply(fh, str(lower))
    return lower


def change_container(root: Path) -> None:
    """What a container might do to its root filesystem."""
    (root / "new.txt").write_text("new file\n")
    with open(root / "etc" / "passwd", "a") as fh:
        fh.write("app:x:1000:1000::/home/app:/bin/sh\n")
    os.chmod(root / "etc" / "group", 0o600)
    (root / "bin" / "ls").unlink()
    shutil.rmtree(root / "etc" / "network")
    shutil.rmtree(root / "var" / "spool")
    (root / "var" / "spool").mkdir()  # removed and remade: opaque
    (root / "var" / "spool" / "fresh").write_text("fresh")
    suid = root / "usr" / "bin" / "suid-tool"
    suid.write_bytes(b"\x7fELF tool")
    os.chown(suid, 0, 50)
    os.chmod(suid, 0o4750)
    os.symlink("../new.txt", root / "usr" / "newlink")
    os.link(root / "new.txt", root / "usr" / "hardlink")
    os.mkfifo(root / "tmp" / "pipe")
    os.setxattr(root / "new.txt", "user.note", b"kept")
    deep = root / "opt" / ("long-" + "x" * 120) / "name"
    deep.mkdir(parents=True)
    (deep / ("f" * 200)).write_bytes(b"long path")
    os.chown(root / "opt", 3_000_000, 3_000_001)  # too big for ustar: PAX uid/gid
    os.utime(root / "new.txt", (1_111_111_111, 1_111_111_111))


EXPECTED_CHANGES = [
    ("C", "/bin"), ("D", "/bin/ls"),
    ("C", "/etc"), ("C", "/etc/group"), ("D", "/etc/network"), ("C", "/etc/passwd"),
    ("A", "/new.txt"),
    ("A", "/opt"),
    ("C", "/tmp"), ("A", "/tmp/pipe"),
    ("C", "/usr"), ("C", "/usr/bin"), ("A", "/usr/bin/suid-tool"), ("A", "/usr/hardlink"),
    ("A", "/usr/newlink"),
    ("C", "/var"), ("C", "/var/spool"), ("A", "/var/spool/fresh"), ("D", "/var/spool/mail"),
]


def test_diff_of_a_container_round_trips(tmp_path: Path, mounts: list[str]) -> None:
    lower = busybox_lower(tmp_path)
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    upper.mkdir()
    merged.mkdir()
    overlay.mount_overlay([str(lower)], str(merged), upper=str(upper), work=str(work))
    mounts.append(str(merged))
    change_container(merged)
    overlay.unmount(str(merged))

    # docker diff
    got = [(c.kind, c.path) for c in layer.changes([str(lower)], str(upper))]
    got = [c for c in got if not c[1].startswith("/opt/")]
    assert got == EXPECTED_CHANGES

    # the layer tar: deterministic, its digest the sha256 of the bytes
    out = io.BytesIO()
    digest = layer.diff([str(lower)], str(upper), out)
    data = out.getvalue()
    assert digest == Digest.of(data)
    again = io.BytesIO()
    assert layer.diff([str(lower)], str(upper), again) == digest
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(data))]
    assert "bin/.wh.ls" in names and "etc/.wh.network" in names
    assert names.index("var/spool/.wh..wh..opq") == names.index("var/spool") + 1
    for i, name in enumerate(names):  # each directory before its contents
        parent = name.rpartition("/")[0]
        assert not parent or names.index(parent) < i, name
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}
    assert members["usr/bin/suid-tool"].mode == 0o4750
    assert members["usr/bin/suid-tool"].uname == "" and members["usr/bin/suid-tool"].gid == 50
    assert members["opt"].uid == 3_000_000
    assert members["usr/hardlink"].islnk() and members["usr/hardlink"].linkname == "new.txt"
    # GNU tar reads it too
    listing = subprocess.run(["tar", "-tvf", "-"], input=data, capture_output=True, check=True)
    assert b"suid-tool" in listing.stdout

    # the merged view, read-only, to compare with
    overlay.mount_overlay([str(lower), str(upper)], str(merged))
    want = tree(merged, skip_root_mtime=True)

    # 1. unpacked onto a copy of the lower layer, whiteouts deleting
    flat = tmp_path / "flat"
    subprocess.run(["cp", "-a", str(lower), str(flat)], check=True)
    res = apply_bytes(data, flat, whiteouts="delete")
    assert res.diff_id == digest
    assert tree(flat, skip_root_mtime=True) == want

    # 2. unpacked as a new overlay layer and stacked on the lower one
    layer2, view = tmp_path / "layer2", tmp_path / "view"
    layer2.mkdir()
    view.mkdir()
    apply_bytes(data, layer2, lowers=[str(lower)])
    overlay.mount_overlay([str(lower), str(layer2)], str(view))
    mounts.append(str(view))
    assert tree(view, skip_root_mtime=True) == want
    overlay.unmount(str(merged))


def test_diff_skips_whiteouts_that_hide_nothing(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (lower / "real").write_text("x")
    os.mknod(upper / "real", stat.S_IFCHR, 0)
    os.mknod(upper / "ghost", stat.S_IFCHR, 0)
    os.mkfifo(upper / "fifo")
    out = io.BytesIO()
    layer.diff([str(lower)], str(upper), out)
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))]
    assert names == ["fifo", ".wh.real"]
    assert layer.changes([str(lower)], str(upper)) == [("A", "/fifo"), ("D", "/real")]
