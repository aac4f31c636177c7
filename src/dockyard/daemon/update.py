"""POST /containers/{id}/update as dockerd does it: the body (container.UpdateConfig:
the Resources fields and RestartPolicy) is decoded and validated with dockerd's
messages, merged into the container's HostConfig (fields left at their zero value keep
the stored setting), persisted, and, when the container runs, written to its cgroup
at once. A cgroup that refuses leaves the HostConfig as it was.

The restart policy is only stored here; acting on it is the restart manager's
business, which reads HostConfig.RestartPolicy.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dockyard.daemon import gojson, ocispec
from dockyard.daemon import restart as restart_mod
from dockyard.daemon.stats import cgroup_of
from dockyard.errors import Conflict, DockyardError, InvalidArgument, SystemFailure
from dockyard.runtime.cgroups import parse_cpu_list

if TYPE_CHECKING:
    from dockyard.daemon.lifecycle import Lifecycle

MIN_MEMORY = ocispec.MIN_MEMORY
CPU_PERIOD = ocispec.CPU_PERIOD
INT64 = (-(1 << 63), (1 << 63) - 1)
# dockerd's update handler wraps decoding errors in its own words.
_PREFIX = "invalid JSON: "

# The fields of container.UpdateConfig that dockerd acts on, with their Go types (for
# the decoding errors). Go matches JSON keys to fields without regard to case.
_INT64_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares",
                 "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime",
                 "CpuPercent", "CpuCount", "IOMaximumIOps", "IOMaximumBandwidth",
                 "KernelMemory", "KernelMemoryTCP")
_STRING_FIELDS = ("CpusetCpus", "CpusetMems", "CgroupParent")
_CANONICAL = {k.lower(): k for k in (*_INT64_FIELDS, *_STRING_FIELDS, "BlkioWeight",
                                     "PidsLimit", "MemorySwappiness", "OomKillDisable",
                                     "RestartPolicy")}


@dataclass
class UpdateRequest:
    """A decoded UpdateConfig: Go's zero values where the body left a field out."""

    resources: dict[str, Any] = field(default_factory=dict)
    pids_limit: int | None = None
    swappiness: int | None = None
    oom_kill_disable: bool | None = None
    restart_name: str = ""
    restart_max: int = 0

    def get(self, key: str) -> Any:
        return self.resources.get(key, "" if key in _STRING_FIELDS else 0)


def _type_error(value: object, name: str, go_type: str) -> InvalidArgument:
    return gojson.type_error(value, f"UpdateConfig.{name}", go_type, prefix=_PREFIX,
                             number_literal=True)


def _int(value: object, name: str, go_type: str = "int64",
         bounds: tuple[int, int] = INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            not bounds[0] <= value <= bounds[1]:
        raise _type_error(value, name, go_type)
    return value


def decode(body: object) -> UpdateRequest:
    """Decode an update body as Go's encoding/json fills container.UpdateConfig: unknown
    keys ignored, null leaves a field unset, a value of the wrong type refused."""
    if body is None:
        return UpdateRequest()
    if not isinstance(body, dict):
        raise gojson.value_type_error(body, "container.UpdateConfig", prefix=_PREFIX,
                                      number_literal=True)
    req = UpdateRequest()
    for raw_key, value in body.items():
        key = _CANONICAL.get(raw_key.lower())
        if key is None or value is None:
            continue
        if key in _INT64_FIELDS:
            req.resources[key] = _int(value, key)
        elif key in _STRING_FIELDS:
            if not isinstance(value, str):
                raise _type_error(value, key, "string")
            req.resources[key] = value
        elif key == "BlkioWeight":
            req.resources[key] = _int(value, key, "uint16", (0, 65535))
        elif key == "PidsLimit":
            req.pids_limit = _int(value, key)
        elif key == "MemorySwappiness":
            req.swappiness = _int(value, key)
        elif key == "OomKillDisable":
            if not isinstance(value, bool):
                raise _type_error(value, key, "bool")
            req.oom_kill_disable = value
        elif key == "RestartPolicy":
            _decode_restart(value, req)
    return req


def _decode_restart(value: object, req: UpdateRequest) -> None:
    if not isinstance(value, dict):
        raise _type_error(value, "RestartPolicy", "container.RestartPolicy")
    for raw_key, v in value.items():
        key = raw_key.lower()
        if v is None:
            continue
        if key == "name":
            if not isinstance(v, str):
                raise _type_error(v, "RestartPolicy.Name", "container.RestartPolicyMode")
            req.restart_name = v
        elif key == "maximumretrycount":
            req.restart_max = _int(v, "RestartPolicy.MaximumRetryCount", "int")


# -- validation (dockerd's verifyContainerSettings with update=true) ---------------------

def _online(path: str) -> tuple[set[int], str] | None:
    """The CPUs (or memory nodes) a list file such as /sys/devices/system/cpu/online
    names, with its text; None when the host does not say."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return parse_cpu_list(text, path), text
    except (OSError, DockyardError):
        return None


def _check_cpuset(value: str, what: str, requested: str, online_file: str) -> None:
    if not value:
        return
    try:
        wanted = parse_cpu_list(value, what)
    except DockyardError:
        raise InvalidArgument(f"Invalid value {value} for cpuset {what}: invalid format: "
                              f"{value}") from None
    online = _online(online_file)
    if online is not None and not wanted <= online[0]:
        text = online[1]
        raise InvalidArgument(f"Requested {requested} are not available - requested {value}, "
                              f"available: {text}")


def _blkio_weight_supported(root: str = "/sys/fs/cgroup") -> bool:
    if ocispec.cgroup_v2(root):
        return any(os.path.exists(os.path.join(root, d, f))
                   for d in ("system.slice", "init.scope", "dockyard")
                   for f in ("io.weight", "io.bfq.weight"))
    return any(os.path.exists(os.path.join(root, "blkio", f))
               for f in ("blkio.weight", "blkio.bfq.weight"))


def validate(req: UpdateRequest, ncpu: int | None = None,
             swap_limit: bool | None = None) -> list[str]:
    """dockerd's checks of an update body, in its order; the warnings, and the body
    adjusted as dockerd adjusts it (limits the host cannot apply are dropped)."""
    warnings: list[str] = []
    restart_mod.validate({"Name": req.restart_name, "MaximumRetryCount": req.restart_max})
    r = req.resources
    if req.swappiness == -1:
        req.swappiness = None
    memory = req.get("Memory")
    if memory != 0 and memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap_limit is None:
        swap_limit = ocispec.swap_accounting()
    if memory > 0 and req.get("MemorySwap") != -1 and not swap_limit:
        warnings.append("Your kernel does not support swap limit capabilities or the cgroup "
                        "is not mounted. Memory limited without swap.")
        r["MemorySwap"] = -1
    swap = req.get("MemorySwap")
    if memory > 0 and swap > 0 and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if req.swappiness is not None and not 0 <= req.swappiness <= 100:
        raise InvalidArgument(f"Invalid value: {req.swappiness}, valid memory swappiness range "
                              "is 0-100")
    reservation = req.get("MemoryReservation")
    if reservation > 0 and reservation < MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    if req.oom_kill_disable and memory == 0:
        warnings.append("OOM killer is disabled for the container, but no memory limit is "
                        "set, this can result in the system running out of resources.")
    nano, period, quota = req.get("NanoCpus"), req.get("CpuPeriod"), req.get("CpuQuota")
    if nano > 0 and period > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and quota > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano != 0:
        n = ncpu or os.cpu_count() or 1
        if nano < 0 or nano > n * 10**9:
            raise InvalidArgument(f"Range of CPUs is from 0.01 to {n}.00, as there are only "
                                  f"{n} CPUs available")
    if period != 0 and not 1000 <= period <= 1000000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if 0 < quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if req.get("CpuPercent") > 0:
        warnings.append("linux does not support CPU percent. Percent discarded.")
        r["CpuPercent"] = 0
    _check_cpuset(req.get("CpusetCpus"), "cpus", "CPUs", "/sys/devices/system/cpu/online")
    _check_cpuset(req.get("CpusetMems"), "mems", "memory nodes",
                  "/sys/devices/system/node/online")
    weight = req.get("BlkioWeight")
    if weight > 0 and not _blkio_weight_supported():
        warnings.append("Your kernel does not support Block I/O weight or the cgroup is not "
                        "mounted. Weight discarded.")
        r["BlkioWeight"] = 0
    elif weight > 0 and not 10 <= weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    if req.get("IOMaximumBandwidth") != 0 or req.get("IOMaximumIOps") != 0:
        raise InvalidArgument("Invalid QoS settings: linux does not support Maximum IO "
                              "Bandwidth or Maximum IO IOps")
    return warnings


# -- merging (dockerd's Container.UpdateContainer) ---------------------------------------

def _conflict(cid: str, message: str) -> Conflict:
    return Conflict(f"Cannot update container {cid}: {message}")


def merge(cid: str, host_config: dict[str, Any], req: UpdateRequest,
          swap_limit: bool = True) -> dict[str, Any]:
    """HOST_CONFIG with the update applied (a new dict); Conflict as dockerd when the
    update contradicts what is stored."""
    hc = copy.deepcopy(host_config)
    r = req.resources

    def cur(key: str) -> int:
        value = hc.get(key) or 0
        return value if isinstance(value, int) else 0

    if req.get("NanoCpus") > 0 and cur("CpuPeriod") > 0:
        raise _conflict(cid, "Conflicting options: Nano CPUs cannot be updated as CPU Period "
                        "has already been set")
    if req.get("NanoCpus") > 0 and cur("CpuQuota") > 0:
        raise _conflict(cid, "Conflicting options: Nano CPUs cannot be updated as CPU Quota "
                        "has already been set")
    if req.get("CpuPeriod") > 0 and cur("NanoCpus") > 0:
        raise _conflict(cid, "Conflicting options: CPU Period cannot be updated as NanoCPUs "
                        "has already been set")
    if req.get("CpuQuota") > 0 and cur("NanoCpus") > 0:
        raise _conflict(cid, "Conflicting options: CPU Quota cannot be updated as NanoCPUs "
                        "has already been set")
    # dockerd stores twice the memory as the swap limit when a container is created with
    # a memory limit and none for swap; the comparison below is against that.
    # (-1 where the host cannot limit swap).
    if cur("Memory") > 0 and cur("MemorySwap") == 0:
        hc["MemorySwap"] = cur("Memory") * 2 if swap_limit else -1
    for key in ("BlkioWeight", "CpuShares", "NanoCpus", "CpuPeriod", "CpuQuota",
                "CpusetCpus", "CpusetMems", "MemorySwap", "MemoryReservation",
                "CpuRealtimePeriod", "CpuRealtimeRuntime"):
        if r.get(key):
            hc[key] = r[key]
    memory = req.get("Memory")
    if memory != 0:
        if memory > cur("MemorySwap") and req.get("MemorySwap") == 0:
            raise _conflict(cid, "Memory limit should be smaller than already set memoryswap "
                            "limit, update the memoryswap at the same time")
        hc["Memory"] = memory
    if req.pids_limit is not None:
        hc["PidsLimit"] = req.pids_limit if req.pids_limit > 0 else 0
    if req.restart_name:
        if hc.get("AutoRemove") and req.restart_name != "no":
            raise _conflict(cid, "Restart policy cannot be updated because AutoRemove is "
                            "enabled for the container")
        hc["RestartPolicy"] = {"Name": req.restart_name,
                               "MaximumRetryCount": req.restart_max}
    return hc


def live_resources(req: UpdateRequest) -> dict[str, Any]:
    """The OCI linux.resources to write to a running container's cgroup: only what the
    update sets (dockerd's toContainerdResources)."""
    out: dict[str, Any] = {}
    if req.get("BlkioWeight"):
        out["blockIO"] = {"weight": req.get("BlkioWeight")}
    cpu: dict[str, Any] = {}
    if req.get("CpusetCpus"):
        cpu["cpus"] = req.get("CpusetCpus")
    if req.get("CpusetMems"):
        cpu["mems"] = req.get("CpusetMems")
    if req.get("CpuShares"):
        cpu["shares"] = min(max(req.get("CpuShares"), 2), 262144)  # the kernel's bounds
    period = quota = 0
    if req.get("NanoCpus"):
        period = CPU_PERIOD
        quota = req.get("NanoCpus") * CPU_PERIOD // 10**9
    quota = quota or req.get("CpuQuota")
    period = period or req.get("CpuPeriod")
    if period:
        cpu["period"] = period
    if quota:
        cpu["quota"] = quota
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if req.get("Memory"):
        memory["limit"] = req.get("Memory")
    if req.get("MemoryReservation"):
        memory["reservation"] = req.get("MemoryReservation")
    if req.get("MemorySwap") > 0:
        memory["swap"] = req.get("MemorySwap")
    if memory:
        out["memory"] = memory
    if req.pids_limit is not None:
        out["pids"] = {"limit": req.pids_limit if req.pids_limit > 0 else -1}
    return out


def update(lc: Lifecycle, ref: str, body: object) -> list[str]:
    """Apply an update body to the container REF names; dockerd's warnings."""
    req = decode(body)
    warnings = validate(req)
    c = lc.store.get(ref)
    cid = c.ID
    with lc._cond:
        c = lc.store.get(cid)
        if c.State.RemovalInProgress or c.State.Dead:
            raise SystemFailure(f"Cannot update container {cid}: container is marked for "
                                'removal and cannot be "update"')
        old = copy.deepcopy(c.HostConfig)
        c.HostConfig = merge(cid, old, req, ocispec.swap_accounting())
        lc.store.save(c)
        running = c.State.Running and not c.State.Restarting
    resources = live_resources(req)
    if running and resources:
        try:
            cg = cgroup_of(lc.bundle(cid))
            if cg is not None and cg.exists():
                cg.update(resources)
        except DockyardError as exc:
            _restore(lc, cid, old)
            raise SystemFailure(f"Cannot update container {cid}: {exc}") from exc
    lc.emit("update", lc.store.get(cid), None)
    return warnings


def _restore(lc: Lifecycle, cid: str, host_config: dict[str, Any]) -> None:
    with lc._cond:
        try:
            c = lc.store.get(cid)
        except DockyardError:
            return
        if c.State.RemovalInProgress or c.State.Dead:
            return
        c.HostConfig = host_config
        lc.store.save(c)
