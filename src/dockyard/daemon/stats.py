"""Container statistics as dockerd reports them (GET /containers/{id}/stats): one
container.StatsResponse object per sample, read from the container's cgroup, with the
host's CPU time beside it so that clients compute CPU% from two samples' deltas.

    reader = StatsReader(lifecycle, "web")
    for frame in reader.frames(stream=True, one_shot=False, stop=event):
        ...  # one dict a second until stop is set or the container is removed

A container that is not running yields dockerd's zeroed object (name and id only).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dockyard.errors import DockyardError, NotFound
from dockyard.image.store import format_go_time
from dockyard.runtime.cgroups import Cgroup, open_cgroup
from dockyard.runtime.cgroups.metrics import Metrics, read_metrics

if TYPE_CHECKING:
    from dockyard.daemon.lifecycle import Lifecycle

log = logging.getLogger(__name__)

# dockerd's collector samples every container once a second.
INTERVAL = 1.0
ZERO_TIME = "0001-01-01T00:00:00Z"
USER_HZ = 100  # the unit of /proc/stat

# The memory.stat keys dockerd reports on cgroup v1 and on v2 (moby daemon/stats_unix.go).
_V1_MEMORY_KEYS = (
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
    "pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "hierarchical_memory_limit", "hierarchical_memsw_limit", "total_cache",
    "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty", "total_writeback",
    "total_pgpgin", "total_pgpgout", "total_pgfault", "total_pgmajfault",
    "total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
    "total_unevictable",
)
_V2_MEMORY_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file",
    "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault",
    "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim",
    "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree",
    "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
)
_BLKIO_KEYS = (
    "io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
    "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
    "io_time_recursive", "sectors_recursive",
)


@dataclass
class HostCPU:
    """The host's CPU time (all CPUs, in ns, as /proc/stat's first seven fields add up)
    and its number of online CPUs: dockerd's getSystemCPUUsage."""

    usage_ns: int
    online: int


def host_cpu(path: str = "/proc/stat") -> HostCPU:
    usage = 0
    online = 0
    with open(path, encoding="ascii") as f:
        for line in f:
            if not line.startswith("cpu"):
                break  # the cpu lines come first
            fields = line.split()
            if fields[0] == "cpu":
                usage = sum(int(v) for v in fields[1:8]) * 1_000_000_000 // USER_HZ
            elif fields[0][3:].isdigit():
                online += 1
    return HostCPU(usage, online)


def machine_memory(path: str = "/proc/meminfo") -> int:
    """MemTotal in bytes: what dockerd reports as the limit of an unlimited container."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _zero_cpu() -> dict[str, Any]:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def zero_stats(name: str, cid: str) -> dict[str, Any]:
    """The object dockerd sends for a container that is not running: every counter at
    its zero value, omitempty fields left out."""
    return {
        "read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {},
        "blkio_stats": {k: None for k in _BLKIO_KEYS}, "num_procs": 0, "storage_stats": {},
        "cpu_stats": _zero_cpu(), "precpu_stats": _zero_cpu(), "memory_stats": {},
        "name": name, "id": cid,
    }


def _cpu_stats(m: Metrics, host: HostCPU) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": m.cpu.total_ns or 0}
    if m.cpu.percpu_ns:
        usage["percpu_usage"] = list(m.cpu.percpu_ns)
    usage["usage_in_kernelmode"] = m.cpu.system_ns or 0
    usage["usage_in_usermode"] = m.cpu.user_ns or 0
    out: dict[str, Any] = {"cpu_usage": usage}
    if host.usage_ns:
        out["system_cpu_usage"] = host.usage_ns
    if host.online:
        out["online_cpus"] = host.online
    out["throttling_data"] = {"periods": m.cpu.periods,
                              "throttled_periods": m.cpu.throttled_periods,
                              "throttled_time": m.cpu.throttled_ns}
    return out


def _memory_stats(m: Metrics, machine: int) -> dict[str, Any]:
    mem = m.memory
    keys = _V1_MEMORY_KEYS if m.version == 1 else _V2_MEMORY_KEYS
    out: dict[str, Any] = {}
    if mem.usage:
        out["usage"] = mem.usage
    if mem.max_usage and m.version == 1:  # v2 has no max_usage in dockerd's report
        out["max_usage"] = mem.max_usage
    out["stats"] = {k: mem.stat.get(k, 0) for k in keys}
    failcnt = mem.failcnt if m.version == 1 else mem.oom_events
    if failcnt:
        out["failcnt"] = failcnt
    limit = mem.limit
    if machine and (limit is None or limit > machine):
        limit = machine
    if limit:
        out["limit"] = limit
    return out


def _blkio_stats(m: Metrics) -> dict[str, Any]:
    if m.version == 1:
        if not m.blkio:
            return {k: None for k in _BLKIO_KEYS}
        return {k: [{"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}
                    for e in m.blkio.get(k, [])] for k in _BLKIO_KEYS}
    entries: list[dict[str, Any]] | None = None
    for major, minor, values in m.io:
        entries = entries or []
        entries.append({"major": major, "minor": minor, "op": "read",
                        "value": values.get("rbytes", 0)})
        entries.append({"major": major, "minor": minor, "op": "write",
                        "value": values.get("wbytes", 0)})
    out: dict[str, Any] = {k: None for k in _BLKIO_KEYS}
    out["io_service_bytes_recursive"] = entries
    return out


def render(name: str, cid: str, m: Metrics, read_ns: int, host: HostCPU,
           machine: int) -> dict[str, Any]:
    """One container.StatsResponse (precpu and preread still zero), keys in dockerd's
    order. No "networks": a container's only interface so far is its loopback, which
    dockerd does not count either."""
    pids: dict[str, int] = {}
    if m.pids.current:
        pids["current"] = m.pids.current
    if m.pids.limit:
        pids["limit"] = m.pids.limit
    return {
        "read": format_go_time(read_ns // 1_000_000_000, read_ns % 1_000_000_000),
        "preread": ZERO_TIME, "pids_stats": pids, "blkio_stats": _blkio_stats(m),
        "num_procs": 0, "storage_stats": {}, "cpu_stats": _cpu_stats(m, host),
        "precpu_stats": _zero_cpu(), "memory_stats": _memory_stats(m, machine),
        "name": name, "id": cid,
    }


def cgroup_of(bundle: str) -> Cgroup | None:
    """The cgroup of the container whose OCI bundle is BUNDLE (its linux.cgroupsPath),
    None when there is no bundle: the container is not running."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            path = (json.load(f).get("linux") or {}).get("cgroupsPath")
    except (OSError, ValueError):
        return None
    if not path:
        return None
    return open_cgroup(path)


class StatsReader:
    """Samples one container; REF is resolved once (NotFound as dockerd)."""

    def __init__(self, lc: Lifecycle, ref: str) -> None:
        self.lc = lc
        c = lc.store.get(ref)
        self.cid = c.ID
        self._machine = machine_memory()
        self._cgroup: Cgroup | None = None
        self._started_at = ""

    def running(self) -> bool:
        c = self.lc.store.get(self.cid)
        return c.State.Running and not c.State.Restarting

    def sample(self) -> dict[str, Any]:
        """The container's statistics now (zeroed when it is not running); NotFound
        once it is removed."""
        c = self.lc.store.get(self.cid)
        if not c.State.Running or c.State.Restarting:
            self._cgroup = None
            return zero_stats(c.Name, c.ID)
        if self._cgroup is None or self._started_at != c.State.StartedAt:
            # A restart may have given it a new cgroup path (another CgroupParent).
            self._cgroup = cgroup_of(self.lc.bundle(c.ID))
            self._started_at = c.State.StartedAt
        cg = self._cgroup
        if cg is None or not cg.exists():
            self._cgroup = None
            return zero_stats(c.Name, c.ID)
        try:
            m = read_metrics(cg)
            read_ns = time.time_ns()
            # Read the host's CPU time right after the container's, so that the two
            # deltas cover the same interval.
            host = host_cpu()
        except (OSError, ValueError, DockyardError) as exc:
            log.debug("statistics of %s: %s", c.ID, exc)
            return zero_stats(c.Name, c.ID)
        return render(c.Name, c.ID, m, read_ns, host, self._machine)

    def frames(self, stream: bool, one_shot: bool, stop: threading.Event,
               interval: float = INTERVAL) -> Iterator[dict[str, Any]]:
        """dockerd's ContainerStats: STREAM gives a sample per INTERVAL until STOP is set
        or the container is removed, each with the previous one's CPU figures as
        precpu_stats; otherwise one object, after a priming sample unless ONE_SHOT (so
        that its precpu_stats are filled), or the zeroed one when it is not running."""
        try:
            if not stream:
                if not self.running() or one_shot:
                    yield self.sample()
                    return
                first = self.sample()
                if stop.wait(interval):
                    return
                yield _with_previous(self.sample(), first)
                return
            previous: dict[str, Any] | None = None
            while not stop.is_set():
                frame = self.sample()
                if previous is not None:
                    frame = _with_previous(frame, previous)
                previous = frame
                yield frame
                if stop.wait(interval):
                    return
        except NotFound:
            return  # removed: dockerd closes the stream


def _with_previous(frame: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    out = dict(frame)
    out["preread"] = previous["read"]
    out["precpu_stats"] = previous["cpu_stats"]
    return out
