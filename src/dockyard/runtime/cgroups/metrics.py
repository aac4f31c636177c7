"""Usage counters of a container's cgroup, read from the controller files as they are
(v1 or v2 names and units), for whoever reports statistics.

    m = read_metrics(open_cgroup("/dockyard/<id>"))
    m.cpu.total_ns, m.memory.usage, m.memory.stat["total_inactive_file"], m.pids.current

A counter the host does not provide reads as None (a missing controller, a file this
kernel lacks); nothing here raises for a cgroup that vanished meanwhile, since a
container may exit between two reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._common import UNLIMITED_THRESHOLD, Cgroup, read_int, read_keyed, read_optional

# USER_HZ: the unit of cpuacct.stat. Linux fixes it at 100 for user space on every
# architecture, whatever the kernel's internal HZ.
USER_HZ = 100
NS_PER_S = 1_000_000_000


@dataclass
class CPUMetrics:
    total_ns: int | None = None
    percpu_ns: list[int] | None = None
    user_ns: int | None = None
    system_ns: int | None = None
    periods: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0


@dataclass
class MemoryMetrics:
    usage: int | None = None
    max_usage: int | None = None
    failcnt: int | None = None
    limit: int | None = None  # None: unlimited
    stat: dict[str, int] = field(default_factory=dict)
    oom_events: int | None = None  # v2 memory.events "oom"


@dataclass
class PidsMetrics:
    current: int | None = None
    limit: int | None = None  # None: unlimited


@dataclass
class BlkioEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass
class Metrics:
    version: int
    cpu: CPUMetrics
    memory: MemoryMetrics
    pids: PidsMetrics
    # v1: the blkio file stem ("io_service_bytes_recursive"...) -> entries; v2: "io.stat"
    # lines as (major, minor, {key: value}).
    blkio: dict[str, list[BlkioEntry]] = field(default_factory=dict)
    io: list[tuple[int, int, dict[str, int]]] = field(default_factory=list)


def _ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split()]
    except ValueError:
        return None


def _v1_blkio_file(path: str) -> list[BlkioEntry] | None:
    """Lines "8:0 Read 123" (or "8:0 123" for the op-less files); the "Total" line that
    closes the per-op files is a sum, not a device, and is left out."""
    text = read_optional(path)
    if text is None:
        return None
    out: list[BlkioEntry] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        try:
            if len(parts) >= 3:
                out.append(BlkioEntry(int(major), int(minor), parts[1], int(parts[2])))
            else:
                out.append(BlkioEntry(int(major), int(minor), "", int(parts[1])))
        except ValueError:
            continue
    return out


# The CFQ statistics files (kernels with the legacy block layer); the counters
# Docker reports under each name.
_V1_BLKIO_FILES = (
    ("io_service_bytes_recursive", "blkio.io_service_bytes_recursive"),
    ("io_serviced_recursive", "blkio.io_serviced_recursive"),
    ("io_queue_recursive", "blkio.io_queued_recursive"),
    ("io_service_time_recursive", "blkio.io_service_time_recursive"),
    ("io_wait_time_recursive", "blkio.io_wait_time_recursive"),
    ("io_merged_recursive", "blkio.io_merged_recursive"),
    ("io_time_recursive", "blkio.time_recursive"),
    ("sectors_recursive", "blkio.sectors_recursive"),
)


def _v1_blkio(directory: str | None) -> dict[str, list[BlkioEntry]]:
    if directory is None or not os.path.isdir(directory):
        return {}
    out: dict[str, list[BlkioEntry]] = {name: [] for name, _f in _V1_BLKIO_FILES}
    if os.path.exists(os.path.join(directory, "blkio.io_serviced_recursive")):
        for name, filename in _V1_BLKIO_FILES:
            out[name] = _v1_blkio_file(os.path.join(directory, filename)) or []
    if not out["io_service_bytes_recursive"]:
        # blk-mq kernels have no CFQ files: the throttling layer still counts every
        # request, whether or not a throttle is set.
        for name, stem in (("io_service_bytes_recursive", "blkio.throttle.io_service_bytes"),
                           ("io_serviced_recursive", "blkio.throttle.io_serviced")):
            entries = _v1_blkio_file(os.path.join(directory, stem + "_recursive"))
            if entries is None:
                entries = _v1_blkio_file(os.path.join(directory, stem))
            out[name] = entries or []
    return out


def _v1_limit(value: int | None) -> int | None:
    if value is None or value >= UNLIMITED_THRESHOLD:
        return None
    return value


def _read_v1(cg: Cgroup) -> Metrics:
    def path(ctrl: str, name: str) -> str | None:
        directory = cg.controller_dir(ctrl)
        return None if directory is None else os.path.join(directory, name)

    def num(ctrl: str, name: str) -> int | None:
        p = path(ctrl, name)
        return None if p is None else read_int(p)

    def keyed(ctrl: str, name: str) -> dict[str, int]:
        p = path(ctrl, name)
        return {} if p is None else read_keyed(p)

    cpu = CPUMetrics(total_ns=num("cpuacct", "cpuacct.usage"))
    p = path("cpuacct", "cpuacct.usage_percpu")
    cpu.percpu_ns = _ints(read_optional(p)) if p else None
    ticks = keyed("cpuacct", "cpuacct.stat")
    if "user" in ticks:
        cpu.user_ns = ticks["user"] * NS_PER_S // USER_HZ
    if "system" in ticks:
        cpu.system_ns = ticks["system"] * NS_PER_S // USER_HZ
    throttling = keyed("cpu", "cpu.stat")
    cpu.periods = throttling.get("nr_periods", 0)
    cpu.throttled_periods = throttling.get("nr_throttled", 0)
    cpu.throttled_ns = throttling.get("throttled_time", 0)

    memory = MemoryMetrics(
        usage=num("memory", "memory.usage_in_bytes"),
        max_usage=num("memory", "memory.max_usage_in_bytes"),
        failcnt=num("memory", "memory.failcnt"),
        limit=_v1_limit(num("memory", "memory.limit_in_bytes")),
        stat=keyed("memory", "memory.stat"),
    )
    pids = PidsMetrics(current=num("pids", "pids.current"), limit=num("pids", "pids.max"))
    if pids.current is None and cg.controller_dir("pids") is None:
        pids.current = len(cg.pids())
    return Metrics(version=1, cpu=cpu, memory=memory, pids=pids,
                   blkio=_v1_blkio(cg.controller_dir("blkio")))


def _read_v2(cg: Cgroup) -> Metrics:
    directory = cg.controller_dir("cpu") or ""

    def num(name: str) -> int | None:
        return read_int(os.path.join(directory, name))

    stat = read_keyed(os.path.join(directory, "cpu.stat"))
    cpu = CPUMetrics()
    if "usage_usec" in stat:
        cpu.total_ns = stat["usage_usec"] * 1000
    if "user_usec" in stat:
        cpu.user_ns = stat["user_usec"] * 1000
    if "system_usec" in stat:
        cpu.system_ns = stat["system_usec"] * 1000
    cpu.periods = stat.get("nr_periods", 0)
    cpu.throttled_periods = stat.get("nr_throttled", 0)
    cpu.throttled_ns = stat.get("throttled_usec", 0) * 1000
    events = read_keyed(os.path.join(directory, "memory.events"))
    memory = MemoryMetrics(usage=num("memory.current"), max_usage=num("memory.peak"),
                           limit=num("memory.max"),
                           stat=read_keyed(os.path.join(directory, "memory.stat")),
                           oom_events=events.get("oom"))
    pids = PidsMetrics(current=num("pids.current"), limit=num("pids.max"))
    io: list[tuple[int, int, dict[str, int]]] = []
    for line in (read_optional(os.path.join(directory, "io.stat")) or "").splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        values: dict[str, int] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if value.isdigit():
                values[key] = int(value)
        if major.isdigit() and minor.isdigit():
            io.append((int(major), int(minor), values))
    return Metrics(version=2, cpu=cpu, memory=memory, pids=pids, io=io)


def read_metrics(cg: Cgroup) -> Metrics:
    """Every counter of CG at this instant (each file read once, so close together)."""
    return _read_v1(cg) if cg.version == 1 else _read_v2(cg)
