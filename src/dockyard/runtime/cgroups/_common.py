"""Pieces shared by the cgroup v1 and v2 drivers.

This module is loaded on every container start, so it imports only os, errno
and time; logging is imported on first use because only failures log.
"""

from __future__ import annotations

import errno
import os
import time

from dockyard.errors import (
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    SystemFailure,
    Unsupported,
)

FIELD = "linux.resources"
PATH_FIELD = "linux.cgroupsPath"
SIGKILL = 9

# v1 controller names the kernel knows; anything else in a cgroup mount's
# super options (rw, xattr, noprefix, clone_children...) is a mount option.
V1_CONTROLLERS = frozenset(
    (
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    )
)

# The kernel reports an unlimited v1 limit as a page-aligned LONG_MAX.
UNLIMITED_THRESHOLD = 1 << 62


def logger():  # -> logging.Logger, untyped so logging stays unimported
    import logging

    return logging.getLogger("dockyard.runtime.cgroups")


def normalize_path(path: object) -> str:
    """Turn an OCI linux.cgroupsPath into an absolute, '..'-free cgroup path."""
    if not isinstance(path, str) or not path.strip("/"):
        raise InvalidArgument(f"{PATH_FIELD}: must name a cgroup below the root, got {path!r}")
    if not path.startswith("/") and path.count(":") == 2:
        raise Unsupported(
            f"{PATH_FIELD}: {path!r} is in the systemd 'slice:prefix:name' form, which needs "
            "the systemd cgroup driver; Dockyard manages cgroups directly, use a path like "
            "/dockyard/<id>"
        )
    if "\0" in path:
        raise InvalidArgument(f"{PATH_FIELD}: must not contain NUL bytes")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"{PATH_FIELD}: must not contain '..', got {path!r}")
    return "/" + "/".join(parts)


def read_text(path: str) -> str:
    with open(path, "rb", buffering=0) as f:
        return f.read().decode()


def read_optional(path: str) -> str | None:
    try:
        return read_text(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_int(path: str) -> int | None:
    text = read_optional(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_keyed(path: str) -> dict[str, int]:
    """Parse a flat-keyed file such as memory.events or cpu.stat."""
    out: dict[str, int] = {}
    text = read_optional(path)
    if text is None:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def write_raw(path: str, value: str) -> None:
    """One write() per value: cgroup files parse each write call separately."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_error(field: str, path: str, value: str, err: OSError) -> DockyardError:
    code = err.errno or 0
    if code in (errno.ENOENT, errno.ENOTDIR) and not os.path.isdir(os.path.dirname(path)):
        return NotFound(f"{field}: cgroup directory {os.path.dirname(path)} does not exist")
    if code == errno.ENOENT:
        return Unsupported(f"{field}: not supported by this host (no {path})")
    msg = f"{field}: writing {value!r} to {path} failed: {os.strerror(code)}"
    if code in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
        return InvalidArgument(msg + " (the kernel rejected the value)")
    return SystemFailure(msg)


def read_procs(path: str) -> list[int]:
    """The pids in a cgroup.procs file. A task the kernel lists as 0 is one outside our
    pid namespace's view (typically one already past its exit): it cannot be named, and
    above all must never reach kill(), where pid 0 means our own process group."""
    text = read_optional(path)
    if not text:
        return []
    return [pid for pid in map(int, text.split()) if pid > 0]


def tree_pids(directory: str) -> set[int]:
    """Every pid in a cgroup directory and in the sub-cgroups a container made."""
    found: set[int] = set()
    for dirpath, _dirs, _files in os.walk(directory):
        found.update(read_procs(os.path.join(dirpath, "cgroup.procs")))
    return found


def wait_until(check, timeout: float) -> bool:
    """Poll check() until it is true or the deadline passes; True if it became true.

    Cgroup state changes (freezing, exiting tasks leaving) complete
    asynchronously in the kernel and announce themselves only through the files
    we poll, so a deadline plus a short back-off is the synchronisation.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if check():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


def remove_tree(directory: str, rmdir, timeout: float) -> list[str]:
    """Remove a cgroup directory and its sub-cgroups, bottom-up, polling while busy.

    Returns the directories still present at the deadline (empty on success).
    rmdir fails with EBUSY while a task, even one in the middle of exiting, is
    still charged to the cgroup, so EBUSY is retried until the deadline.
    """
    left: list[str] = []

    def attempt() -> bool:
        left.clear()
        if not os.path.isdir(directory):
            return True
        subdirs = [d for d, _s, _f in os.walk(directory, topdown=False)]
        for d in subdirs:
            try:
                rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise SystemFailure(f"removing cgroup {d} failed: {os.strerror(e.errno or 0)}") from e
                left.append(d)
        return not left

    wait_until(attempt, timeout)
    return list(left)


class Op:
    """One write of a resource value, remembering the OCI field it came from.

    choices holds (file, value) pairs; the first file present in the cgroup is
    written, which is how a driver prefers e.g. io.bfq.weight over io.weight.
    Ops sharing a group bound each other in the kernel (memory.limit vs memsw,
    cfs period vs quota): if writing them in order fails with EINVAL the group
    is retried in reverse order, as one of the two orders always satisfies the
    kernel's invariant.
    """

    __slots__ = ("field", "ctrl", "choices", "group", "optional")

    def __init__(
        self,
        field: str,
        ctrl: str,
        choices: tuple[tuple[str, str], ...],
        group: str | None = None,
        optional: bool = False,
    ) -> None:
        self.field = field
        self.ctrl = ctrl
        self.choices = choices
        self.group = group
        self.optional = optional

    def __repr__(self) -> str:
        return f"Op({self.field}, {self.choices})"


class _OpFailed(Exception):
    def __init__(self, op: Op, path: str, value: str, err: OSError) -> None:
        super().__init__(path)
        self.op, self.path, self.value, self.err = op, path, value, err


def run_ops(ops: list[Op], dir_for, write) -> None:
    """Execute planned writes; dir_for(ctrl) gives the cgroup directory for a controller."""

    def do(op: Op) -> None:
        directory = dir_for(op.ctrl)
        for name, value in op.choices:
            path = os.path.join(directory, name)
            if len(op.choices) > 1 and not os.path.exists(path):
                continue
            try:
                write(path, value)
            except OSError as e:
                if op.optional and e.errno == errno.ENOENT:
                    return
                raise _OpFailed(op, path, value, e) from e
            return
        if not op.optional:
            names = " or ".join(n for n, _v in op.choices)
            raise Unsupported(f"{op.field}: not supported by this host (no {names} in {directory})")

    try:
        i = 0
        while i < len(ops):
            j = i + 1
            if ops[i].group is not None:
                while j < len(ops) and ops[j].group == ops[i].group:
                    j += 1
            batch = ops[i:j]
            try:
                for op in batch:
                    do(op)
            except _OpFailed as failed:
                if len(batch) == 1 or failed.err.errno not in (errno.EINVAL, errno.EBUSY):
                    raise
                logger().debug("retrying %s in reverse order after %s", batch, failed.err)
                for op in reversed(batch):
                    do(op)
            i = j
    except _OpFailed as failed:
        raise write_error(failed.op.field, failed.path, failed.value, failed.err) from failed.err


def parse_cpu_list(text: str, field: str) -> set[int]:
    """Parse the kernel's list format ("0-3,5"), as used by cpuset.cpus/mems."""
    out: set[int] = set()
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise InvalidArgument(f"{field}: {text!r} is not a list like '0-3,5'")
        first = int(lo)
        last = int(hi) if sep else first
        if last < first:
            raise InvalidArgument(f"{field}: range {part.strip()!r} in {text!r} is reversed")
        if last >= 1 << 16:
            raise InvalidArgument(f"{field}: {last} in {text!r} is out of range")
        out.update(range(first, last + 1))
    return out


def format_cpu_list(items: set[int]) -> str:
    ranges: list[str] = []
    run: list[int] = []
    for n in sorted(items):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            ranges.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        ranges.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(ranges)


def check_cpuset(field: str, wanted: str, available_text: str | None, what: str) -> None:
    items = parse_cpu_list(wanted, field)
    if available_text is None:
        return
    available = parse_cpu_list(available_text, field)
    missing = items - available
    if missing:
        raise InvalidArgument(
            f"{field}: {what} {format_cpu_list(missing)} not available on this host "
            f"(available: {format_cpu_list(available) or 'none'})"
        )


def hugepage_sizes() -> set[str] | None:
    """Page sizes as the hugetlb controller names them ("2MB", "1GB"), or None if unknown."""
    try:
        entries = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return None
    sizes: set[str] = set()
    for entry in entries:
        if not entry.startswith("hugepages-") or not entry.endswith("kB"):
            continue
        kib = int(entry[len("hugepages-") : -2])
        # Mirrors the kernel's mem_fmt(): the largest unit that divides evenly.
        if kib >= 1 << 20:
            sizes.add(f"{kib >> 20}GB")
        elif kib >= 1 << 10:
            sizes.add(f"{kib >> 10}MB")
        else:
            sizes.add(f"{kib}KB")
    return sizes


def _unescape_mountinfo(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        digits = text[i + 1 : i + 4]
        if text[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def cgroup_mounts(root: str) -> tuple[list[tuple[str, str, frozenset[str]]], str | None]:
    """The cgroup hierarchies mounted directly under root.

    Returns ([(mountpoint, name shown under /sys/fs/cgroup, controllers)], the
    cgroup2 mountpoint or None). Named v1 hierarchies appear with a
    "name=..." pseudo-controller so they are joined like runc joins them.
    """
    root = root.rstrip("/") or "/"
    # A later line for the same mountpoint shadows the earlier ones (something mounted
    # over a hierarchy hides it), so keep the top-most mount of each point.
    top: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            mountpoint = _unescape_mountinfo(fields[4])
            if os.path.dirname(mountpoint) != root:
                continue
            top[mountpoint] = (rfields[0], rfields[2])
    v1: list[tuple[str, str, frozenset[str]]] = []
    unified: str | None = None
    seen: set[frozenset[str]] = set()
    for mountpoint, (fstype, options) in top.items():
        if fstype == "cgroup2":
            unified = mountpoint
            continue
        if fstype != "cgroup":
            continue
        ctrls = frozenset(
            o for o in options.split(",") if o in V1_CONTROLLERS or o.startswith("name=")
        )
        if not ctrls or ctrls in seen:
            continue
        seen.add(ctrls)
        v1.append((mountpoint, os.path.basename(mountpoint), ctrls))
    return v1, unified


class Cgroup:
    """One container's cgroup, in every hierarchy the host has.

    Drivers: v1.V1Cgroup and v2.V2Cgroup. Methods not overridden are missing
    from a driver by mistake, hence NotImplementedError rather than Unsupported.
    """

    version = 0
    path: str

    def validate(self, resources: dict) -> None:
        raise NotImplementedError

    def create(self, resources: dict) -> None:
        raise NotImplementedError

    def update(self, resources: dict) -> None:
        raise NotImplementedError

    def procs_files(self) -> list[str]:
        raise NotImplementedError

    def add(self, pid: int) -> None:
        for path in self.procs_files():
            try:
                write_raw(path, str(pid))
            except OSError as e:
                if e.errno == errno.ESRCH:
                    raise NotFound(f"cannot add pid {pid} to cgroup {self.path}: no such process") from e
                raise write_error(PATH_FIELD, path, str(pid), e) from e

    def pids(self) -> list[int]:
        raise NotImplementedError

    def freeze(self, timeout: float = 5.0) -> None:
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._set_frozen(False, timeout)

    def _set_frozen(self, want: bool, timeout: float) -> None:
        """Ask the kernel to freeze (or thaw) and wait until it reports that state."""
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def oom_killed(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def controller_dir(self, ctrl: str) -> str | None:
        """The directory holding this cgroup's files of controller CTRL ("memory",
        "cpuacct"...), None when the host has no such controller; for readers of
        the statistics files that stats() does not summarise."""
        raise NotImplementedError

    def kill_all(self, sig: int) -> None:
        raise NotImplementedError

    def destroy(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def mounts(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # Helpers shared by both drivers.

    def _signal_pids(self, sig: int) -> None:
        for pid in self.pids():
            if pid <= 0:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _signal_frozen(self, sig: int) -> None:
        """Signal every process with the cgroup frozen, so a forking process cannot
        slip a child past the sweep; restores the frozen state it found."""
        was_frozen = self.frozen()
        froze = False
        if not was_frozen:
            try:
                self.freeze()
                froze = True
            except DockyardError as e:
                logger().debug("could not freeze %s before signalling: %s", self.path, e)
        try:
            self._signal_pids(sig)
        finally:
            # A SIGKILLed container must not stay paused: frozen tasks cannot die.
            if froze or (was_frozen and sig == SIGKILL):
                self.thaw()

    def _conflict_if_busy(self, directory: str) -> None:
        if os.path.isdir(directory):
            busy = tree_pids(directory)
            if busy:
                raise Conflict(
                    f"cgroup {self.path} already exists and has processes "
                    f"({', '.join(map(str, sorted(busy)[:10]))}) in {directory}"
                )

    def _destroy_dirs(self, dirs: list[str], rmdir, timeout: float) -> None:
        # Every hierarchy gets the whole timeout budget's remainder, so one slow
        # hierarchy does not stop the others from being cleaned up.
        deadline = time.monotonic() + timeout
        left: list[str] = []
        for d in dirs:
            left += remove_tree(d, rmdir, max(0.0, deadline - time.monotonic()))
        if left:
            busy: set[int] = set()
            for d in left:
                busy.update(read_procs(os.path.join(d, "cgroup.procs")))
            raise Conflict(
                f"cgroup {self.path} still has processes after {timeout}s "
                f"(pids {sorted(busy) or 'exiting'}); not removed: {', '.join(left)}"
            )
