"""The cgroup v2 (unified hierarchy) driver."""

from __future__ import annotations

import errno
import os

from dockyard.errors import Conflict, InvalidArgument, NotFound, SystemFailure, Unsupported

from . import resources as _resources
from ._common import (
    FIELD,
    SIGKILL,
    Cgroup,
    Op,
    check_cpuset,
    hugepage_sizes,
    logger,
    normalize_path,
    read_int,
    read_keyed,
    read_optional,
    run_ops,
    tree_pids,
    wait_until,
    write_error,
    write_raw,
)

# The only core (non-controller) files linux.resources.unified may set; the
# others (procs, freeze, kill, subtree_control...) belong to the runtime.
_CORE_FILES_WRITABLE = ("cgroup.max.depth", "cgroup.max.descendants")


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc uses."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), the conversion runc uses."""
    return 1 + ((weight - 10) * 9999) // 990


class V2Cgroup(Cgroup):
    """A cgroup in a cgroup2 hierarchy mounted at root.

    enable_all: also enable every controller the parent offers, not just the
    ones the requested limits need, so that stats work and a later update()
    can set any limit (runc does the same). The v1 driver turns it off when
    it uses a hybrid host's unified hierarchy for membership only, so it does
    not take controllers that the host keeps on v1.
    """

    version = 2

    def __init__(self, path: str, root: str = "/sys/fs/cgroup", *, enable_all: bool = True) -> None:
        self.path = normalize_path(path)
        self.root = root.rstrip("/") or "/"
        self.dir = self.root + self.path
        self.enable_all = enable_all

    def controller_dir(self, ctrl: str) -> str | None:
        # One directory for every controller; an absent controller's files are absent.
        return self.dir

    # Filesystem hooks: tests replace them to run against a plain directory tree.

    def _write(self, path: str, value: str) -> None:
        write_raw(path, value)

    def _mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def _rmdir(self, path: str) -> None:
        os.rmdir(path)

    # Planning: validation and the list of writes are one pass, so a field
    # cannot be validated and then forgotten, or written without validation.

    def _controllers(self, directory: str) -> set[str]:
        return set((read_optional(os.path.join(directory, "cgroup.controllers")) or "").split())

    def _probe(self, ctrl: str, name: str) -> bool | None:
        """Whether cgroups here have file `name`; None if no cgroup shows ctrl's files.

        Most controller files do not exist in the root cgroup, so look at an
        existing ancestor of ours, or a top-level cgroup, that has ctrl enabled.
        """
        candidates = []
        parts = self.path.strip("/").split("/")
        for i in range(len(parts), 0, -1):
            candidates.append(self.root + "/" + "/".join(parts[:i]))
        try:
            with os.scandir(self.root) as it:
                candidates += [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            pass
        for directory in candidates:
            if ctrl in self._controllers(directory):
                return os.path.exists(os.path.join(directory, name))
        return None

    def _need(self, available: set[str], ctrl: str, field: str) -> None:
        if ctrl not in available:
            raise Unsupported(
                f"{field}: not supported by this host (the {ctrl} controller is not "
                f"available in {self.root}/cgroup.controllers)"
            )

    def _plan(self, parsed: dict, existing: bool) -> tuple[list[Op], dict[str, str], list | None, list]:
        """Returns (writes, controller -> first field needing it, device rules, checks)."""
        available = self._controllers(self.root)
        ops: list[Op] = []
        needs: dict[str, str] = {}
        checks: list = []

        def op(field: str, ctrl: str, name: str, value: str, **kw) -> None:
            self._need(available, ctrl, field)
            needs.setdefault(ctrl, field)
            ops.append(Op(field, ctrl, ((name, value),), **kw))

        mem = parsed.get("memory", {})
        f = FIELD + ".memory"
        for key in ("kernel", "kernelTCP", "swappiness"):
            if key in mem:
                raise Unsupported(f"{f}.{key}: not supported on cgroup v2")
        if mem.get("disableOOMKiller"):
            raise Unsupported(f"{f}.disableOOMKiller: not supported on cgroup v2 (the OOM killer cannot be disabled)")
        if mem.get("useHierarchy") is False:
            raise Unsupported(f"{f}.useHierarchy: cgroup v2 is always hierarchical")
        if "limit" in mem:
            op(f + ".limit", "memory", "memory.max", _max(mem["limit"]))
        if "reservation" in mem:
            op(f + ".reservation", "memory", "memory.low", _max(mem["reservation"]))
        if "swap" in mem:
            self._need(available, "memory", f + ".swap")
            if self._probe("memory", "memory.swap.max") is False:
                raise Unsupported(f"{f}.swap: not supported by this host (no memory.swap.max; swap accounting is off)")
            swap = mem["swap"]
            limit = mem.get("limit")
            if limit is None:
                limit = read_int(os.path.join(self.dir, "memory.max")) if existing else None
                limit = -1 if limit is None else limit
            if swap == -1:
                value = "max"
            elif limit == -1:
                raise InvalidArgument(
                    f"{f}.swap: a swap limit needs a memory limit (linux.resources.memory.limit)"
                )
            elif swap < limit:
                raise InvalidArgument(
                    f"{f}.swap: {swap} is below the memory limit {limit}; swap is memory plus swap"
                )
            else:
                # OCI swap is memory+swap; memory.swap.max counts swap alone.
                value = str(swap - limit)
            op(f + ".swap", "memory", "memory.swap.max", value)
        if mem.get("checkBeforeUpdate") and existing and "limit" in mem and mem["limit"] != -1:
            checks.append((f + ".limit", "memory.current", mem["limit"]))

        cpu = parsed.get("cpu", {})
        f = FIELD + ".cpu"
        for key in ("realtimeRuntime", "realtimePeriod"):
            if key in cpu:
                raise Unsupported(f"{f}.{key}: not supported on cgroup v2 (no realtime group scheduling)")
        if "shares" in cpu:
            op(f + ".shares", "cpu", "cpu.weight", str(shares_to_weight(cpu["shares"])))
        if "quota" in cpu or "period" in cpu:
            field = f + (".quota" if "quota" in cpu else ".period")
            quota = cpu.get("quota")
            if quota is None and existing:
                # Keep the current quota when only the period changes.
                quota_text = (read_optional(os.path.join(self.dir, "cpu.max")) or "max").split()[0]
            else:
                quota_text = "max" if quota in (None, -1) else str(quota)
            value = quota_text if "period" not in cpu else f"{quota_text} {cpu['period']}"
            op(field, "cpu", "cpu.max", value)
        if "burst" in cpu:
            op(f + ".burst", "cpu", "cpu.max.burst", str(cpu["burst"]))
        if "idle" in cpu:
            op(f + ".idle", "cpu", "cpu.idle", str(cpu["idle"]))
        for key, name, what, effective, fallback in (
            ("cpus", "cpuset.cpus", "CPUs", "cpuset.cpus.effective", "/sys/devices/system/cpu/online"),
            ("mems", "cpuset.mems", "memory nodes", "cpuset.mems.effective", "/sys/devices/system/node/online"),
        ):
            if key in cpu:
                self._need(available, "cpuset", f"{f}.{key}")
                online = read_optional(os.path.join(self.root, effective))
                if online is None:
                    online = read_optional(fallback)
                check_cpuset(f"{f}.{key}", cpu[key], online, what)
                op(f"{f}.{key}", "cpuset", name, cpu[key])

        if "limit" in parsed.get("pids", {}):
            op(FIELD + ".pids.limit", "pids", "pids.max", _max(parsed["pids"]["limit"]))

        self._plan_io(parsed.get("blockIO", {}), available, ops, needs)

        f = FIELD + ".hugepageLimits"
        sizes = hugepage_sizes() if "hugepageLimits" in parsed else None
        for i, (size, limit) in enumerate(parsed.get("hugepageLimits", [])):
            field = f"{f}[{i}].pageSize"
            if sizes is not None and size not in sizes:
                raise Unsupported(
                    f"{field}: huge page size {size} not supported by this host "
                    f"(available: {', '.join(sorted(sizes)) or 'none'})"
                )
            op(f"{f}[{i}].limit", "hugetlb", f"hugetlb.{size}.max", _max(limit))
            # Reservations are limited too where the kernel has them (5.7+),
            # or a reserved-but-unfaulted mapping escapes the limit.
            ops.append(Op(f"{f}[{i}].limit", "hugetlb", ((f"hugetlb.{size}.rsvd.max", _max(limit)),), optional=True))

        if parsed.get("network"):
            key = next(iter(parsed["network"]))
            raise Unsupported(
                f"{FIELD}.network.{key}: not supported on cgroup v2 (there are no net_cls/net_prio controllers)"
            )

        for dev, entry in parsed.get("rdma", {}).items():
            handles = entry.get("hcaHandles")
            objects = entry.get("hcaObjects")
            value = (
                f"{dev} hca_handle={'max' if handles is None else handles} "
                f"hca_object={'max' if objects is None else objects}"
            )
            op(f"{FIELD}.rdma.{dev}", "rdma", "rdma.max", value)

        for key, value in parsed.get("unified", {}).items():
            field = f"{FIELD}.unified.{key}"
            ctrl = key.split(".", 1)[0]
            if ctrl == "cgroup":
                if key not in _CORE_FILES_WRITABLE:
                    raise InvalidArgument(
                        f"{field}: only {' and '.join(_CORE_FILES_WRITABLE)} may be set among the cgroup.* files"
                    )
                ops.append(Op(field, "cgroup", ((key, value),)))
                continue
            op(field, ctrl, key, value)

        rules = parsed.get("devices")
        if rules is not None:
            from . import bpf

            if not bpf.available():
                raise Unsupported(
                    f"{FIELD}.devices: not supported on cgroup v2 on {os.uname().machine} (no known bpf() syscall)"
                )
        return ops, needs, rules, checks

    def _plan_io(self, bio: dict, available: set[str], ops: list[Op], needs: dict[str, str]) -> None:
        f = FIELD + ".blockIO"
        if not bio:
            return
        first = next(iter(bio))
        self._need(available, "io", f"{f}.{first}")
        needs.setdefault("io", f"{f}.{first}")
        if "leafWeight" in bio or any("leafWeight" in d for d in bio.get("weightDevice", [])):
            raise Unsupported(f"{f}.leafWeight: not supported on cgroup v2")
        if "weight" in bio or "weightDevice" in bio:
            bfq = self._probe("io", "io.bfq.weight")
            cost = self._probe("io", "io.weight")
            if bfq is False and cost is False:
                field = f + (".weight" if "weight" in bio else ".weightDevice")
                raise Unsupported(f"{field}: not supported by this host (no io.bfq.weight or io.weight)")
        if "weight" in bio:
            w = bio["weight"]
            # BFQ takes the blkio scale as is; io.weight (iocost) needs converting.
            ops.append(Op(f + ".weight", "io", (("io.bfq.weight", str(w)), ("io.weight", str(blkio_to_io_weight(w))))))
        for i, d in enumerate(bio.get("weightDevice", [])):
            if "weight" not in d:
                continue
            dev = f"{d['major']}:{d['minor']}"
            w = d["weight"]
            ops.append(
                Op(
                    f"{f}.weightDevice[{i}].weight",
                    "io",
                    (("io.bfq.weight", f"{dev} {w}"), ("io.weight", f"{dev} {blkio_to_io_weight(w)}")),
                )
            )
        for key, io_key in (
            ("throttleReadBpsDevice", "rbps"),
            ("throttleWriteBpsDevice", "wbps"),
            ("throttleReadIOPSDevice", "riops"),
            ("throttleWriteIOPSDevice", "wiops"),
        ):
            for i, d in enumerate(bio.get(key, [])):
                rate = "max" if d["rate"] == 0 else str(d["rate"])
                ops.append(Op(f"{f}.{key}[{i}].rate", "io", (("io.max", f"{d['major']}:{d['minor']} {io_key}={rate}"),)))

    def validate(self, resources: dict) -> None:
        self._plan(_resources.parse(resources), existing=False)

    # Lifecycle.

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def _enable(self, directory: str, needs: dict[str, str]) -> None:
        """Enable controllers for the children of directory (cgroup.subtree_control)."""
        available = self._controllers(directory)
        for ctrl, field in needs.items():
            if ctrl != "cgroup" and ctrl not in available:
                raise Unsupported(
                    f"{field}: the {ctrl} controller is not available in {directory}/cgroup.controllers"
                )
        want = {c for c in needs if c != "cgroup"}
        if self.enable_all:
            want |= available
        path = os.path.join(directory, "cgroup.subtree_control")
        enabled = set((read_optional(path) or "").split())
        todo = sorted(want - enabled)
        if not todo:
            return
        try:
            self._write(path, " ".join("+" + c for c in todo))
            return
        except OSError as e:
            logger().debug("enabling %s in %s failed (%s); trying one by one", todo, path, e)
        # One refusal (a controller busy with threads, say) must not cost us the others.
        for ctrl in todo:
            try:
                self._write(path, "+" + ctrl)
            except OSError as e:
                if ctrl in needs:
                    raise write_error(needs[ctrl], path, "+" + ctrl, e) from e
                logger().debug("not enabling optional controller %s in %s: %s", ctrl, path, e)

    def _run(self, ops: list[Op]) -> None:
        run_ops(ops, lambda _ctrl: self.dir, self._write)

    def _apply_devices(self, rules: list) -> None:
        from . import bpf, devices

        state = devices.emulate(devices.expand(rules))
        try:
            bpf.install(self.dir, *state)
        except OSError as e:
            raise SystemFailure(
                f"{FIELD}.devices: attaching the device eBPF program to {self.dir} failed: {e.strerror}"
            ) from e

    def create(self, resources: dict) -> None:
        ops, needs, rules, _checks = self._plan(_resources.parse(resources), existing=False)
        self._conflict_if_busy(self.dir)
        created: list[str] = []
        try:
            parts = self.path.strip("/").split("/")
            directory = self.root
            for part in parts:
                self._enable(directory, needs)
                directory = os.path.join(directory, part)
                if not os.path.isdir(directory):
                    try:
                        self._mkdir(directory)
                        created.append(directory)
                    except FileExistsError:
                        pass  # a sibling container created the shared parent meanwhile
            self._run(ops)
            if rules is not None:  # [] is meaningful: deny every device
                self._apply_devices(rules)
        except BaseException as e:
            for d in reversed(created):
                try:
                    self._rmdir(d)
                except OSError as err:
                    # A sibling may have created its cgroup under our new parent.
                    logger().debug("rollback: leaving %s: %s", d, err)
            if isinstance(e, OSError):
                raise SystemFailure(f"creating cgroup {self.dir} failed: {os.strerror(e.errno or 0)}") from e
            raise

    def update(self, resources: dict) -> None:
        if not self.exists():
            raise NotFound(f"cgroup {self.path} does not exist under {self.root}")
        ops, needs, rules, checks = self._plan(_resources.parse(resources), existing=True)
        for field, usage_file, limit in checks:
            usage = read_int(os.path.join(self.dir, usage_file))
            if usage is not None and usage > limit:
                raise Conflict(f"{field}: {limit} is below the current usage {usage}")
        parts = self.path.strip("/").split("/")
        directory = self.root
        for part in parts:
            self._enable(directory, needs)
            directory = os.path.join(directory, part)
        self._run(ops)
        if rules is not None:
            self._apply_devices(rules)

    def destroy(self, timeout: float = 5.0) -> None:
        self._destroy_dirs([self.dir], self._rmdir, timeout)

    # Membership and state.

    def procs_files(self) -> list[str]:
        return [os.path.join(self.dir, "cgroup.procs")]

    def pids(self) -> list[int]:
        return sorted(tree_pids(self.dir))

    def _events(self) -> dict[str, int]:
        return read_keyed(os.path.join(self.dir, "cgroup.events"))

    def frozen(self) -> bool:
        return self._events().get("frozen") == 1

    def _set_frozen(self, want: bool, timeout: float) -> None:
        path = os.path.join(self.dir, "cgroup.freeze")
        try:
            self._write(path, "1" if want else "0")
        except OSError as e:
            if e.errno == errno.ENOENT and not self.exists():
                raise NotFound(f"cgroup {self.path} does not exist under {self.root}") from e
            raise write_error("freezer", path, "1" if want else "0", e) from e
        if not wait_until(lambda: self.frozen() == want, timeout):
            if want:
                # Leave it running rather than half-frozen.
                try:
                    self._write(path, "0")
                except OSError:
                    pass
            raise SystemFailure(
                f"cgroup {self.path}: the kernel did not report it {'frozen' if want else 'thawed'} "
                f"within {timeout}s ({os.path.join(self.dir, 'cgroup.events')})"
            )

    def oom_killed(self) -> bool:
        return read_keyed(os.path.join(self.dir, "memory.events")).get("oom_kill", 0) > 0

    def stats(self) -> dict:
        current = read_int(os.path.join(self.dir, "pids.current"))
        usage_usec = read_keyed(os.path.join(self.dir, "cpu.stat")).get("usage_usec")
        return {
            "memory": {
                "usage": read_int(os.path.join(self.dir, "memory.current")),
                "limit": read_int(os.path.join(self.dir, "memory.max")),
            },
            "cpu": {"usage_ns": None if usage_usec is None else usage_usec * 1000},
            "pids": {
                "current": len(self.pids()) if current is None else current,
                "limit": read_int(os.path.join(self.dir, "pids.max")),
            },
        }

    def kill_all(self, sig: int) -> None:
        if not self.exists():
            return
        kill_file = os.path.join(self.dir, "cgroup.kill")
        if sig == SIGKILL and os.path.exists(kill_file):
            # The kernel kills the whole subtree atomically, forks included.
            try:
                self._write(kill_file, "1")
                return
            except OSError as e:
                logger().debug("cgroup.kill failed for %s, signalling one by one: %s", self.dir, e)
        self._signal_frozen(sig)

    def mounts(self) -> list[tuple[str, str]]:
        return [(self.dir, "")]


def _max(value: int) -> str:
    return "max" if value == -1 else str(value)
