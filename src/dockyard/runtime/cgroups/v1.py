"""The cgroup v1 driver: one directory per mounted hierarchy.

On hybrid hosts (v1 controllers plus a cgroup2 mount at <root>/unified) the
container also joins the unified hierarchy, like runc does: systemd tracks
processes there, cgroup.kill works there, and controllers that only the
unified hierarchy carries (hugetlb on some hosts) are used from there.
"""

from __future__ import annotations

import os

from dockyard.errors import Conflict, InvalidArgument, NotFound, SystemFailure, Unsupported

from . import resources as _resources
from ._common import (
    FIELD,
    PATH_FIELD,
    SIGKILL,
    UNLIMITED_THRESHOLD,
    Cgroup,
    Op,
    cgroup_mounts,
    check_cpuset,
    hugepage_sizes,
    logger,
    normalize_path,
    read_int,
    read_optional,
    run_ops,
    tree_pids,
    wait_until,
    write_error,
    write_raw,
)
from .v2 import V2Cgroup

# Files the kernel does not create in a hierarchy's root cgroup, so their
# presence there says nothing about host support.
_NOT_ON_ROOT = frozenset(("pids.max", "rdma.max", "freezer.state"))


def _limit(value: int | None) -> int | None:
    """A v1 limit as read back, None when it is the kernel's 'unlimited'."""
    if value is None or value >= UNLIMITED_THRESHOLD:
        return None
    return value


class V1Cgroup(Cgroup):
    """A cgroup with the same path in every v1 hierarchy mounted under root."""

    version = 1

    def __init__(
        self,
        path: str,
        root: str = "/sys/fs/cgroup",
        *,
        hierarchies: list[tuple[str, str, frozenset[str]]] | None = None,
        unified: str | None = None,
    ) -> None:
        self.path = normalize_path(path)
        self.root = root.rstrip("/") or "/"
        if hierarchies is None:
            hierarchies, unified = cgroup_mounts(self.root)
        self._hier = hierarchies
        self._by_ctrl = {c: mp for mp, _name, ctrls in hierarchies for c in ctrls}
        self._unified = V2Cgroup(self.path, unified, enable_all=False) if unified else None

    def _dirs(self) -> list[str]:
        return [mp + self.path for mp, _name, _ctrls in self._hier]

    def _dir_for(self, ctrl: str) -> str:
        return self._by_ctrl[ctrl] + self.path

    def controller_dir(self, ctrl: str) -> str | None:
        mp = self._by_ctrl.get(ctrl)
        return None if mp is None else mp + self.path

    # Planning (validation and the list of writes in one pass).

    def _hierarchy(self, ctrl: str, field: str) -> str:
        mp = self._by_ctrl.get(ctrl)
        if mp is None:
            raise Unsupported(f"{field}: not supported by this host (no {ctrl} cgroup hierarchy under {self.root})")
        return mp

    def _plan(self, parsed: dict, existing: bool) -> tuple[list[Op], list | None, dict, list]:
        """Returns (writes, device rules, resources for the unified hierarchy, checks)."""
        ops: list[Op] = []
        checks: list = []
        unified_res: dict = {}

        def op(field: str, ctrl: str, names: str | tuple[str, ...], value: str, group: str | None = None) -> None:
            mp = self._hierarchy(ctrl, field)
            if isinstance(names, str):
                names = (names,)
            present = [n for n in names if n in _NOT_ON_ROOT or os.path.exists(os.path.join(mp, n))]
            if not present:
                raise Unsupported(f"{field}: not supported by this host (no {' or '.join(names)})")
            ops.append(Op(field, ctrl, tuple((n, value) for n in present), group))

        def current(ctrl: str, name: str) -> int | None:
            if not existing or ctrl not in self._by_ctrl:
                return None
            return _limit(read_int(os.path.join(self._dir_for(ctrl), name)))

        mem = parsed.get("memory", {})
        f = FIELD + ".memory"
        if "kernel" in mem:
            raise Unsupported(
                f"{f}.kernel: not supported (kernel memory limits are deprecated and "
                "current kernels ignore memory.kmem.limit_in_bytes)"
            )
        if "limit" in mem:
            op(f + ".limit", "memory", "memory.limit_in_bytes", str(mem["limit"]), group="memory")
        if "swap" in mem:
            swap = mem["swap"]
            limit = mem.get("limit")
            if limit is None:
                limit = current("memory", "memory.limit_in_bytes")
                limit = -1 if limit is None else limit
            if swap != -1 and limit == -1:
                raise InvalidArgument(f"{f}.swap: a swap limit needs a memory limit (linux.resources.memory.limit)")
            if swap != -1 and swap < limit:
                raise InvalidArgument(f"{f}.swap: {swap} is below the memory limit {limit}; swap is memory plus swap")
            if "memory" in self._by_ctrl and not os.path.exists(
                os.path.join(self._by_ctrl["memory"], "memory.memsw.limit_in_bytes")
            ):
                raise Unsupported(
                    f"{f}.swap: not supported by this host (no memory.memsw.limit_in_bytes; swap accounting is off)"
                )
            op(f + ".swap", "memory", "memory.memsw.limit_in_bytes", str(swap), group="memory")
        if "reservation" in mem:
            op(f + ".reservation", "memory", "memory.soft_limit_in_bytes", str(mem["reservation"]))
        if "kernelTCP" in mem:
            op(f + ".kernelTCP", "memory", "memory.kmem.tcp.limit_in_bytes", str(mem["kernelTCP"]))
        if "swappiness" in mem:
            op(f + ".swappiness", "memory", "memory.swappiness", str(mem["swappiness"]))
        if "disableOOMKiller" in mem:
            op(f + ".disableOOMKiller", "memory", "memory.oom_control", "1" if mem["disableOOMKiller"] else "0")
        if "useHierarchy" in mem:
            op(f + ".useHierarchy", "memory", "memory.use_hierarchy", "1" if mem["useHierarchy"] else "0")
        if mem.get("checkBeforeUpdate") and existing and mem.get("limit", -1) != -1:
            self._hierarchy("memory", f + ".checkBeforeUpdate")
            checks.append((f + ".limit", self._dir_for("memory") + "/memory.usage_in_bytes", mem["limit"]))

        cpu = parsed.get("cpu", {})
        f = FIELD + ".cpu"
        if "shares" in cpu:
            op(f + ".shares", "cpu", "cpu.shares", str(cpu["shares"]))
        # Period first, as runc does; the group retry handles the order in
        # which the kernel's quota/period bandwidth check would refuse it.
        if "period" in cpu:
            op(f + ".period", "cpu", "cpu.cfs_period_us", str(cpu["period"]), group="cfs")
        if "quota" in cpu:
            op(f + ".quota", "cpu", "cpu.cfs_quota_us", str(cpu["quota"]), group="cfs")
        if "burst" in cpu:
            op(f + ".burst", "cpu", "cpu.cfs_burst_us", str(cpu["burst"]))
        if "realtimePeriod" in cpu:
            op(f + ".realtimePeriod", "cpu", "cpu.rt_period_us", str(cpu["realtimePeriod"]), group="rt")
        if "realtimeRuntime" in cpu:
            op(f + ".realtimeRuntime", "cpu", "cpu.rt_runtime_us", str(cpu["realtimeRuntime"]), group="rt")
        if "idle" in cpu:
            op(f + ".idle", "cpu", "cpu.idle", str(cpu["idle"]))
        for key, name, what, effective in (
            ("cpus", "cpuset.cpus", "CPUs", "cpuset.effective_cpus"),
            ("mems", "cpuset.mems", "memory nodes", "cpuset.effective_mems"),
        ):
            if key in cpu:
                mp = self._hierarchy("cpuset", f"{f}.{key}")
                online = read_optional(os.path.join(mp, effective)) or read_optional(os.path.join(mp, name))
                check_cpuset(f"{f}.{key}", cpu[key], online, what)
                op(f"{f}.{key}", "cpuset", name, cpu[key])

        if "limit" in parsed.get("pids", {}):
            limit = parsed["pids"]["limit"]
            op(FIELD + ".pids.limit", "pids", "pids.max", "max" if limit == -1 else str(limit))

        bio = parsed.get("blockIO", {})
        f = FIELD + ".blockIO"
        if "weight" in bio:
            op(f + ".weight", "blkio", ("blkio.weight", "blkio.bfq.weight"), str(bio["weight"]))
        if "leafWeight" in bio:
            op(f + ".leafWeight", "blkio", "blkio.leaf_weight", str(bio["leafWeight"]))
        for i, d in enumerate(bio.get("weightDevice", [])):
            dev = f"{d['major']}:{d['minor']}"
            if "weight" in d:
                op(f"{f}.weightDevice[{i}].weight", "blkio", ("blkio.weight_device", "blkio.bfq.weight_device"),
                   f"{dev} {d['weight']}")
            if "leafWeight" in d:
                op(f"{f}.weightDevice[{i}].leafWeight", "blkio", "blkio.leaf_weight_device", f"{dev} {d['leafWeight']}")
        for key, name in (
            ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
            ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
            ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
            ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
        ):
            for i, d in enumerate(bio.get(key, [])):
                op(f"{f}.{key}[{i}].rate", "blkio", name, f"{d['major']}:{d['minor']} {d['rate']}")

        huge = parsed.get("hugepageLimits", [])
        f = FIELD + ".hugepageLimits"
        if huge and "hugetlb" not in self._by_ctrl:
            if self._unified is None or "hugetlb" not in self._unified._controllers(self._unified.root):
                raise Unsupported(f"{f}: not supported by this host (no hugetlb controller)")
            # Hybrid host whose hugetlb controller lives on the unified hierarchy.
            unified_res["hugepageLimits"] = [{"pageSize": s, "limit": lim} for s, lim in huge]
            self._unified._plan(_resources.parse(unified_res), existing)
        elif huge:
            sizes = hugepage_sizes()
            for i, (size, limit) in enumerate(huge):
                if sizes is not None and size not in sizes:
                    raise Unsupported(
                        f"{f}[{i}].pageSize: huge page size {size} not supported by this host "
                        f"(available: {', '.join(sorted(sizes)) or 'none'})"
                    )
                op(f"{f}[{i}].limit", "hugetlb", f"hugetlb.{size}.limit_in_bytes", str(limit))
                ops.append(Op(f"{f}[{i}].limit", "hugetlb",
                              ((f"hugetlb.{size}.rsvd.limit_in_bytes", str(limit)),), optional=True))

        net = parsed.get("network", {})
        if "classID" in net:
            op(FIELD + ".network.classID", "net_cls", "net_cls.classid", str(net["classID"]))
        for i, (name, prio) in enumerate(net.get("priorities", [])):
            op(f"{FIELD}.network.priorities[{i}]", "net_prio", "net_prio.ifpriomap", f"{name} {prio}")

        for dev, entry in parsed.get("rdma", {}).items():
            handles = entry.get("hcaHandles")
            objects = entry.get("hcaObjects")
            op(f"{FIELD}.rdma.{dev}", "rdma", "rdma.max",
               f"{dev} hca_handle={'max' if handles is None else handles} "
               f"hca_object={'max' if objects is None else objects}")

        if parsed.get("unified"):
            key = next(iter(parsed["unified"]))
            raise Unsupported(
                f"{FIELD}.unified.{key}: cgroup v2 files cannot be set on this host, "
                "whose controllers are on cgroup v1"
            )

        rules = parsed.get("devices")
        if rules is not None:
            self._hierarchy("devices", FIELD + ".devices")
        return ops, rules, unified_res, checks

    def validate(self, resources: dict) -> None:
        self._plan(_resources.parse(resources), existing=False)

    # Lifecycle.

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._dirs())

    def _make(self, mp: str, cpuset: bool, created: list[str]) -> None:
        directory = mp
        for part in self.path.strip("/").split("/"):
            parent, directory = directory, os.path.join(directory, part)
            if not os.path.isdir(directory):
                try:
                    os.mkdir(directory, 0o755)
                    created.append(directory)
                except FileExistsError:
                    pass  # a sibling container created the shared parent meanwhile
                except OSError as e:
                    raise SystemFailure(
                        f"{PATH_FIELD}: creating cgroup {directory} failed: {os.strerror(e.errno or 0)}"
                    ) from e
            if cpuset:
                self._inherit_cpuset(parent, directory)

    @staticmethod
    def _inherit_cpuset(parent: str, child: str) -> None:
        # A new v1 cpuset starts with no CPUs and no memory nodes, and no task
        # can join it until both are set; start from the parent's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            path = os.path.join(child, name)
            if (read_optional(path) or "").strip():
                continue
            value = (read_optional(os.path.join(parent, name)) or "").strip()
            try:
                write_raw(path, value)
            except OSError as e:
                raise write_error(PATH_FIELD, path, value, e) from e

    def _write_devices(self, lines: list[tuple[str, str]]) -> None:
        directory = self._dir_for("devices")
        for name, line in lines:
            path = os.path.join(directory, name)
            try:
                write_raw(path, line)
            except OSError as e:
                raise write_error(FIELD + ".devices", path, line, e) from e

    def create(self, resources: dict) -> None:
        ops, rules, unified_res, _checks = self._plan(_resources.parse(resources), existing=False)
        for d in self._dirs():
            self._conflict_if_busy(d)
        if self._unified is not None:
            self._conflict_if_busy(self._unified.dir)
        created: list[str] = []
        try:
            for mp, _name, ctrls in self._hier:
                self._make(mp, "cpuset" in ctrls, created)
            run_ops(ops, self._dir_for, write_raw)
            if rules is not None:
                from . import devices

                # runc's order: deny everything, then each rule as written.
                lines = [("devices.deny", "a")] + [devices.v1_line(r) for r in devices.expand(rules)]
                self._write_devices(lines)
            if self._unified is not None:
                self._unified.create(unified_res)
        except BaseException:
            for d in reversed(created):
                try:
                    os.rmdir(d)
                except OSError as err:
                    logger().debug("rollback: leaving %s: %s", d, err)
            raise

    def update(self, resources: dict) -> None:
        if not self.exists():
            raise NotFound(f"cgroup {self.path} does not exist under {self.root}")
        ops, rules, unified_res, checks = self._plan(_resources.parse(resources), existing=True)
        for field, usage_file, limit in checks:
            usage = read_int(usage_file)
            if usage is not None and usage > limit:
                raise Conflict(f"{field}: {limit} is below the current usage {usage}")
        run_ops(ops, self._dir_for, write_raw)
        if rules is not None:
            from . import devices

            listing = read_optional(os.path.join(self._dir_for("devices"), "devices.list")) or ""
            target = devices.emulate(devices.expand(rules))
            self._write_devices(devices.v1_transition(devices.parse_v1_list(listing), target))
        if self._unified is not None and unified_res:
            self._unified.update(unified_res)

    def destroy(self, timeout: float = 5.0) -> None:
        dirs = self._dirs()
        if self._unified is not None:
            dirs.append(self._unified.dir)
        self._destroy_dirs(dirs, os.rmdir, timeout)

    # Membership and state.

    def procs_files(self) -> list[str]:
        files = [os.path.join(d, "cgroup.procs") for d in self._dirs()]
        if self._unified is not None:
            files += self._unified.procs_files()
        return files

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._dirs():
            found |= tree_pids(d)
        if self._unified is not None:
            found |= tree_pids(self._unified.dir)
        return sorted(found)

    def _freezer_state(self) -> str:
        path = os.path.join(self._dir_for("freezer"), "freezer.state")
        state = read_optional(path)
        if state is None:
            raise NotFound(f"cgroup {self.path} does not exist ({path} missing)")
        return state.strip()

    def _set_frozen(self, want: bool, timeout: float) -> None:
        if "freezer" not in self._by_ctrl:
            if self._unified is not None:
                self._unified._set_frozen(want, timeout)
                return
            raise Unsupported(f"cgroup {self.path}: cannot freeze, no freezer hierarchy under {self.root}")
        path = os.path.join(self._dir_for("freezer"), "freezer.state")
        target = "FROZEN" if want else "THAWED"

        def write(value: str) -> None:
            try:
                write_raw(path, value)
            except OSError as e:
                raise write_error("freezer", path, value, e) from e

        def reached() -> bool:
            state = self._freezer_state()
            if state == "FREEZING" and want:
                # Tasks that forked or were mid-syscall may be missed on the
                # first pass; re-asserting FROZEN makes the kernel retry them.
                write(target)
            return state == target

        self._freezer_state()  # NotFound before any write
        write(target)
        if not wait_until(reached, timeout):
            if want:
                write("THAWED")  # running beats half-frozen
            raise SystemFailure(
                f"cgroup {self.path}: the kernel did not report {target} within {timeout}s ({path})"
            )

    def frozen(self) -> bool:
        if "freezer" not in self._by_ctrl:
            return self._unified.frozen() if self._unified is not None else False
        state = read_optional(os.path.join(self._dir_for("freezer"), "freezer.state"))
        return state is not None and state.strip() == "FROZEN"

    def oom_killed(self) -> bool:
        if "memory" not in self._by_ctrl:
            return self._unified.oom_killed() if self._unified is not None else False
        text = read_optional(os.path.join(self._dir_for("memory"), "memory.oom_control")) or ""
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value) > 0
        return False

    def stats(self) -> dict:
        def read(ctrl: str, name: str) -> int | None:
            if ctrl not in self._by_ctrl:
                return None
            return read_int(os.path.join(self._dir_for(ctrl), name))

        current = read("pids", "pids.current")
        return {
            "memory": {
                "usage": read("memory", "memory.usage_in_bytes"),
                "limit": _limit(read("memory", "memory.limit_in_bytes")),
            },
            "cpu": {"usage_ns": read("cpuacct", "cpuacct.usage")},
            "pids": {
                "current": len(self.pids()) if current is None else current,
                "limit": read("pids", "pids.max"),
            },
        }

    def kill_all(self, sig: int) -> None:
        if not self.exists():
            return
        if sig == SIGKILL and self._unified is not None and os.path.exists(
            os.path.join(self._unified.dir, "cgroup.kill")
        ):
            try:
                # Atomic against forks; the sweep below catches anything that
                # joined only the v1 hierarchies.
                write_raw(os.path.join(self._unified.dir, "cgroup.kill"), "1")
                self._signal_pids(sig)
                if self.frozen():
                    self.thaw()  # frozen tasks cannot act on SIGKILL
                return
            except OSError as e:
                logger().debug("cgroup.kill failed for %s, signalling one by one: %s", self.path, e)
        self._signal_frozen(sig)

    def mounts(self) -> list[tuple[str, str]]:
        out = [(mp + self.path, name) for mp, name, _ctrls in self._hier]
        if self._unified is not None:
            out.append((self._unified.dir, os.path.basename(self._unified.root)))
        return out
