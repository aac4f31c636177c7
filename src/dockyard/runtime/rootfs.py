"""Building the container's filesystem view inside its new mount namespace.

Runs in the container's init, after it entered its namespaces and before
pivot_root: the mounts of the configuration, the device nodes, then the switch
of root, the masked and read-only paths. Everything here acts on paths inside
the rootfs, resolved so that a symlink in the image cannot send a mount to the
host.
"""

from __future__ import annotations

import os
import stat

from dockyard.errors import InvalidArgument, Unsupported
from dockyard.runtime import linux as L

# option -> (flags to set, flags to clear)
_FLAGS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0), "rw": (0, L.MS_RDONLY), "ro": (L.MS_RDONLY, 0),
    "suid": (0, L.MS_NOSUID), "nosuid": (L.MS_NOSUID, 0),
    "dev": (0, L.MS_NODEV), "nodev": (L.MS_NODEV, 0),
    "exec": (0, L.MS_NOEXEC), "noexec": (L.MS_NOEXEC, 0),
    "sync": (L.MS_SYNCHRONOUS, 0), "async": (0, L.MS_SYNCHRONOUS),
    "dirsync": (L.MS_DIRSYNC, 0), "remount": (L.MS_REMOUNT, 0),
    "mand": (L.MS_MANDLOCK, 0), "nomand": (0, L.MS_MANDLOCK),
    "atime": (0, L.MS_NOATIME), "noatime": (L.MS_NOATIME, 0),
    "diratime": (0, L.MS_NODIRATIME), "nodiratime": (L.MS_NODIRATIME, 0),
    "bind": (L.MS_BIND, 0), "rbind": (L.MS_BIND | L.MS_REC, 0),
    "relatime": (L.MS_RELATIME, 0), "norelatime": (0, L.MS_RELATIME),
    "strictatime": (L.MS_STRICTATIME, 0), "nostrictatime": (0, L.MS_STRICTATIME),
    "lazytime": (L.MS_LAZYTIME, 0), "nolazytime": (0, L.MS_LAZYTIME),
    "symfollow": (0, L.MS_NOSYMFOLLOW), "nosymfollow": (L.MS_NOSYMFOLLOW, 0),
}
PROPAGATION: dict[str, int] = {
    "private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC,
    "shared": L.MS_SHARED, "rshared": L.MS_SHARED | L.MS_REC,
    "slave": L.MS_SLAVE, "rslave": L.MS_SLAVE | L.MS_REC,
    "unbindable": L.MS_UNBINDABLE, "runbindable": L.MS_UNBINDABLE | L.MS_REC,
}
_UNSUPPORTED_OPTIONS = ("tmpcopyup", "idmap", "ridmap", "rro", "rrw", "rnosuid", "rnodev",
                        "rnoexec", "rnosymfollow", "ratime", "rnoatime")

# Statvfs flag bits that a bind remount must keep (the kernel refuses to clear
# locked ones in a user namespace).
_KEEP = ((os.ST_NOSUID, L.MS_NOSUID), (os.ST_NODEV, L.MS_NODEV),
         (os.ST_NOEXEC, L.MS_NOEXEC), (os.ST_RDONLY, L.MS_RDONLY),
         (os.ST_NOATIME, L.MS_NOATIME), (os.ST_NODIRATIME, L.MS_NODIRATIME),
         (os.ST_RELATIME, L.MS_RELATIME))

DEFAULT_DEVICES = (  # path, major, minor
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/tty", 5, 0), ("/dev/random", 1, 8), ("/dev/urandom", 1, 9),
)
# What the device cgroup lets every container use (as runc allows), besides linux.devices.
DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
      for _, ma, mi in DEFAULT_DEVICES),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
]
_DEV_LINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
              ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
              ("pts/ptmx", "/dev/ptmx"))


def parse_options(options: list[str], where: str) -> tuple[int, int, str]:
    """Mount options as (flags, propagation flags, data string)."""
    flags = prop = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            on, off = _FLAGS[opt]
            flags = (flags | on) & ~off
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        elif opt in _UNSUPPORTED_OPTIONS:
            raise Unsupported(f"{where}: mount option {opt!r} is not supported")
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


def secure_join(root: str, path: str) -> str:
    """ROOT/PATH with every symlink resolved as if ROOT were '/', so nothing escapes ROOT."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root + "/" + "/".join(resolved + [part])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise InvalidArgument(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts[:0] = [p for p in target.split("/") if p]
            continue
        resolved.append(part)
    return root + "/" + "/".join(resolved) if resolved else root


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _mkfile(path: str) -> None:
    _mkdirs(os.path.dirname(path))
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _kept_flags(path: str) -> int:
    st = os.statvfs(path)
    return sum(ms for bit, ms in _KEEP if st.f_flag & bit)


def remount_bind(path: str, flags: int) -> None:
    """Change a bind mount's flags, keeping those the kernel would refuse to clear."""
    L.mount(None, path, None, L.MS_BIND | L.MS_REMOUNT | flags | _kept_flags(path))


def mount_one(rootfs: str, index: int, m: dict, cgroup_mounts: list[tuple[str, str]],
              new_netns: bool) -> None:
    where = f"mounts[{index}]"
    kind = m.get("type", "")
    options = m.get("options", [])
    flags, prop, data = parse_options(options, where)
    dest = secure_join(rootfs, m["destination"])
    source = m.get("source", "")
    if kind == "bind" or flags & L.MS_BIND:
        if not source.startswith("/"):
            raise InvalidArgument(f"{where}.source: bind source {source!r} must be absolute")
        try:
            src_dir = stat.S_ISDIR(os.stat(source).st_mode)
        except FileNotFoundError:
            raise InvalidArgument(f"{where}.source: {source} does not exist") from None
        if src_dir:
            _mkdirs(dest)
        else:
            _mkfile(dest)
        L.mount(source, dest, None, L.MS_BIND | (flags & L.MS_REC))
        extra = flags & ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT)
        if extra:
            remount_bind(dest, extra)
    elif kind == "cgroup":
        _mount_cgroup(dest, flags, cgroup_mounts)
    else:
        _mkdirs(dest)
        try:
            L.mount(source or kind, dest, kind, flags, data or None)
        except OSError as e:
            # sysfs needs a network namespace of our own; without one, show the host's (as runc).
            if kind == "sysfs" and not new_netns and e.errno == 1:
                L.mount("/sys", dest, None, L.MS_BIND | L.MS_REC)
                remount_bind(dest, flags)
            else:
                raise
    if prop:
        L.mount(None, dest, None, prop)


def _mount_cgroup(dest: str, flags: int, cgroup_mounts: list[tuple[str, str]]) -> None:
    ro = flags & L.MS_RDONLY
    base = flags & (L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    if len(cgroup_mounts) == 1 and cgroup_mounts[0][1] == "":
        # cgroup v2: the container's own directory is the whole tree it sees.
        _mkdirs(dest)
        L.mount(cgroup_mounts[0][0], dest, None, L.MS_BIND)
        remount_bind(dest, base | ro)
        return
    _mkdirs(dest)
    L.mount("tmpfs", dest, "tmpfs", base, "mode=755")
    for host_dir, name in cgroup_mounts:
        sub = os.path.join(dest, name)
        os.mkdir(sub, 0o755)
        L.mount(host_dir, sub, None, L.MS_BIND)
        remount_bind(sub, base | ro)
    if ro:
        L.mount(None, dest, None, L.MS_REMOUNT | base | L.MS_RDONLY, "mode=755")


def create_default_devices(rootfs: str, in_userns: bool) -> None:
    for path, major, minor in DEFAULT_DEVICES:
        make_device(rootfs, {"type": "c", "path": path, "major": major, "minor": minor,
                             "fileMode": 0o666, "uid": 0, "gid": 0}, in_userns)
    # Every path is resolved inside the rootfs: an image whose /dev is a symlink must not
    # make us write next to wherever it points on the host.
    links = list(_DEV_LINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    for target, link in links:
        dest = secure_join(rootfs, link)
        if not os.path.lexists(dest):
            os.symlink(target, dest)
    shm = secure_join(rootfs, "/dev/shm")
    if not os.path.lexists(shm):
        os.mkdir(shm, 0o1777)
        os.chmod(shm, 0o1777)


def make_device(rootfs: str, dev: dict, in_userns: bool) -> None:
    # The node replaces whatever is at its path: a symlink there (/dev/ptmx -> pts/ptmx)
    # is replaced, not followed.
    parent, name = os.path.split(dev["path"].rstrip("/"))
    dest = os.path.join(secure_join(rootfs, parent), name)
    _mkdirs(os.path.dirname(dest))
    if os.path.lexists(dest):
        os.unlink(dest)
    kind = dev["type"]
    mode = dev.get("fileMode", 0o666) & 0o7777
    if kind == "p":
        os.mkfifo(dest, mode)
    elif in_userns:
        # mknod is refused inside a user namespace: show the host's node instead.
        _mkfile(dest)
        L.mount(dev["path"], dest, None, L.MS_BIND)
        return
    else:
        fmt = stat.S_IFBLK if kind == "b" else stat.S_IFCHR
        os.mknod(dest, fmt | mode, os.makedev(dev["major"], dev["minor"]))
    os.chmod(dest, mode)
    os.chown(dest, dev.get("uid", 0), dev.get("gid", 0))


def pivot(rootfs: str) -> None:
    """Make ROOTFS the root; the old root is detached so nothing of the host stays reachable."""
    os.chdir(rootfs)
    # Stacking the old root on the new one and detaching it avoids a put_old directory
    # in the image (the trick runc uses).
    L.pivot_root(".", ".")
    L.umount(".", L.MNT_DETACH)
    os.chdir("/")


def mask_paths(paths: list[str]) -> None:
    for path in paths:
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if is_dir:
            L.mount("tmpfs", path, "tmpfs", L.MS_RDONLY)
        else:
            L.mount("/dev/null", path, None, L.MS_BIND)


def readonly_paths(paths: list[str]) -> None:
    for path in paths:
        if not os.path.lexists(path):
            continue
        L.mount(path, path, None, L.MS_BIND | L.MS_REC)
        remount_bind(path, L.MS_RDONLY | L.MS_REC)


def write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise InvalidArgument(f"linux.sysctl.{key}: cannot set {value!r}: {e.strerror}") from None
