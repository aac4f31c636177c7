"""The cgroup package against the real kernel (as root), plus a stand-in cgroup2 tree.

v1 tests need the host's v1 hierarchies; v2 membership, freezing, killing and
device filtering run on the host's cgroup2 mount (the unified one on hybrid
hosts); the v2 limit-writing logic runs on a plain directory tree that mimics
a cgroup2 mount, because a hybrid host has no v2 controllers to write to.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import secrets
import select
import signal
from pathlib import Path
from typing import Callable

import pytest

from conftest import wait_for
from dockyard.errors import Conflict, InvalidArgument, NotFound, SystemFailure, Unsupported
from dockyard.runtime.cgroups import (
    V1Cgroup,
    V2Cgroup,
    blkio_to_io_weight,
    devices,
    open_cgroup,
    shares_to_weight,
)

CGROUP = Path("/sys/fs/cgroup")
MiB = 1 << 20
IS_ROOT = os.geteuid() == 0


def _unified_root() -> Path | None:
    for candidate in (CGROUP, CGROUP / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


UNIFIED = _unified_root()
IS_V1 = IS_ROOT and isinstance(open_cgroup("/probe"), V1Cgroup)

needs_v1 = pytest.mark.skipif(not IS_V1, reason="needs root on a host with cgroup v1 hierarchies")
needs_v2 = pytest.mark.skipif(not (IS_ROOT and UNIFIED), reason="needs root and a cgroup2 mount")


# Helpers -------------------------------------------------------------------


class Child:
    """A forked helper process that joins a cgroup itself, then obeys the parent.

    With a job, it runs job() when told to and sends back the bytes it returns.
    Without one it echoes every byte it is sent, which shows whether it is
    running (frozen processes do not answer).
    """

    def __init__(self, cg, job: Callable[[], bytes] | None = None, join: bool = True) -> None:
        go_r, self.go_w = os.pipe()
        self.out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            status = 0
            try:
                os.close(self.go_w)
                os.close(self.out_r)
                if join:
                    # What the runtime's forked child does: join with "0".
                    for path in cg.procs_files():
                        with open(path, "w") as f:
                            f.write("0")
                os.write(out_w, b"+")
                if job is not None:
                    if os.read(go_r, 1) == b"g":
                        os.write(out_w, job())
                else:
                    while data := os.read(go_r, 1):
                        os.write(out_w, data)
            except BaseException as e:
                os.write(out_w, f"!{type(e).__name__}: {e}".encode())
                status = 99
            finally:
                os._exit(status)
        os.close(go_r)
        os.close(out_w)
        self.pid = pid
        self.status: int | None = None
        ready = os.read(self.out_r, 200)
        assert ready == b"+", f"child failed to start: {ready!r}"

    def run(self) -> bytes:
        """Let the job run and return everything it wrote."""
        os.write(self.go_w, b"g")
        chunks = []
        while chunk := os.read(self.out_r, 4096):
            chunks.append(chunk)
        return b"".join(chunks)

    def ping(self, timeout: float) -> bool:
        """Whether an echo comes back within timeout."""
        os.write(self.go_w, b"p")
        ready, _, _ = select.select([self.out_r], [], [], timeout)
        return bool(ready) and os.read(self.out_r, 1) == b"p"

    def wait(self) -> int:
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
            os.close(self.out_r)
            os.close(self.go_w)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Scope:
    """Cgroups and helper processes of one test, all under a unique base path."""

    def __init__(self) -> None:
        self.base = f"/dockyard-test-{secrets.token_hex(4)}"
        self.cgroups: list = []
        self.children: list[Child] = []

    def v1(self, name: str = "c"):
        cg = open_cgroup(f"{self.base}/{name}")
        self.cgroups.append(cg)
        return cg

    def v2(self, name: str = "c") -> V2Cgroup:
        cg = V2Cgroup(f"{self.base}/{name}", root=str(UNIFIED), enable_all=False)
        self.cgroups.append(cg)
        return cg

    def child(self, cg, job=None, join: bool = True) -> Child:
        c = Child(cg, job, join)
        self.children.append(c)
        return c

    def base_dirs(self) -> list[Path]:
        """The base directory in every hierarchy the tests may have used."""
        dirs = [Path(d) for d, _name in open_cgroup(self.base).mounts()] if IS_V1 else []
        if UNIFIED:
            dirs.append(UNIFIED / self.base.lstrip("/"))
        return dirs

    def leftovers(self) -> list[Path]:
        return [d for d in self.base_dirs() if d.exists()]

    def close(self) -> None:
        for c in self.children:
            c.kill()
        for cg in self.cgroups:
            try:
                if cg.exists():
                    if cg.frozen():
                        cg.thaw()
                    cg.kill_all(signal.SIGKILL)
                    cg.destroy(timeout=10)
            except Exception as e:  # keep cleaning the rest
                print(f"cleanup of {cg} failed: {e}")
        for c in self.children:
            c.wait()
        for d in self.base_dirs():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True) if d.exists() else []:
                sub.rmdir()
            if d.exists():
                d.rmdir()


@pytest.fixture
def scope():
    s = Scope()
    try:
        yield s
    finally:
        s.close()


def read(path: str | Path) -> str:
    return Path(path).read_text().strip()


def v1_dir(cg, hierarchy: str) -> Path:
    return CGROUP / hierarchy / cg.path.lstrip("/")


def exit_signal(status: int) -> int | None:
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def open_errno(path: str) -> Callable[[], bytes]:
    def job() -> bytes:
        try:
            os.close(os.open(path, os.O_RDONLY))
            return b"ok"
        except OSError as e:
            return errno.errorcode[e.errno].encode()

    return job


# Paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [("/dockyard/abc", "/dockyard/abc"), ("dockyard/abc", "/dockyard/abc"), ("//a//b/./c/", "/a/b/c")],
)
def test_paths_are_normalised(path, expected):
    assert V2Cgroup(path, root="/nonexistent").path == expected


@pytest.mark.parametrize("path", ["", "/", "/a/../b", "../x"])
def test_bad_paths_are_refused(path):
    with pytest.raises(InvalidArgument, match="linux.cgroupsPath"):
        open_cgroup(path)


def test_systemd_paths_are_unsupported():
    with pytest.raises(Unsupported, match="linux.cgroupsPath.*systemd"):
        open_cgroup("system.slice:docker:abc")


# v1: limits ----------------------------------------------------------------------


@needs_v1
def test_v1_memory_limits_are_written(scope):
    cg = scope.v1()
    resources = {"memory": {"limit": 32 * MiB, "reservation": 16 * MiB, "swappiness": 10}}
    memsw = (CGROUP / "memory" / "memory.memsw.limit_in_bytes").exists()
    if memsw:
        resources["memory"]["swap"] = 48 * MiB
    cg.create(resources)
    d = v1_dir(cg, "memory")
    assert read(d / "memory.limit_in_bytes") == str(32 * MiB)
    assert read(d / "memory.soft_limit_in_bytes") == str(16 * MiB)
    assert read(d / "memory.swappiness") == "10"
    if memsw:
        assert read(d / "memory.memsw.limit_in_bytes") == str(48 * MiB)
        # Raising both past the current memsw needs memsw written first.
        cg.update({"memory": {"limit": 128 * MiB, "swap": 256 * MiB}})
        assert read(d / "memory.limit_in_bytes") == str(128 * MiB)
        assert read(d / "memory.memsw.limit_in_bytes") == str(256 * MiB)
        cg.update({"memory": {"limit": -1, "swap": -1}})
        assert int(read(d / "memory.memsw.limit_in_bytes")) >= 1 << 62
        # swap alone is checked against the limit in force.
        cg.update({"memory": {"limit": 64 * MiB}})
        with pytest.raises(InvalidArgument, match="linux.resources.memory.swap"):
            cg.update({"memory": {"swap": 32 * MiB}})
    assert cg.stats()["memory"]["limit"] in (None, 32 * MiB, 64 * MiB)


@needs_v1
def test_v1_cpu_shares_quota_period(scope):
    cg = scope.v1()
    cg.create({"cpu": {"shares": 512, "quota": 2_000_000, "period": 1_000_000}})
    d = v1_dir(cg, "cpu")
    assert read(d / "cpu.shares") == "512"
    assert read(d / "cpu.cfs_quota_us") == "2000000"
    assert read(d / "cpu.cfs_period_us") == "1000000"
    # A period below the quota's needs the quota written first: the retry
    # with the other order must find that.
    cg.update({"cpu": {"quota": 5000, "period": 10000}})
    assert (read(d / "cpu.cfs_quota_us"), read(d / "cpu.cfs_period_us")) == ("5000", "10000")
    cg.update({"cpu": {"quota": -1}})
    assert read(d / "cpu.cfs_quota_us") == "-1"


@needs_v1
def test_v1_cpuset_pins_members(scope):
    cg = scope.v1()
    cg.create({"cpu": {"cpus": "0", "mems": "0"}})
    d = v1_dir(cg, "cpuset")
    assert read(d / "cpuset.cpus") == "0"
    # The parent created on the way got its parent's sets, or nobody could join.
    assert read(d.parent / "cpuset.cpus") == read(CGROUP / "cpuset" / "cpuset.cpus")
    assert read(d.parent / "cpuset.mems") == read(CGROUP / "cpuset" / "cpuset.mems")
    child = scope.child(cg, lambda: repr(sorted(os.sched_getaffinity(0))).encode())
    assert child.run() == b"[0]"


@needs_v1
def test_v1_cpuset_defaults_to_parent(scope):
    cg = scope.v1()
    cg.create({})
    d = v1_dir(cg, "cpuset")
    assert read(d / "cpuset.cpus") == read(CGROUP / "cpuset" / "cpuset.cpus")
    assert scope.child(cg, lambda: b"in").run() == b"in"


@needs_v1
def test_v1_pids_limit_stops_forks(scope):
    cg = scope.v1()
    cg.create({"pids": {"limit": 1}})
    assert read(v1_dir(cg, "pids") / "pids.max") == "1"

    def fork() -> bytes:
        try:
            pid = os.fork()
        except BlockingIOError:
            return b"EAGAIN"
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return b"forked"

    assert scope.child(cg, fork).run() == b"EAGAIN"
    cg.update({"pids": {"limit": -1}})
    assert read(v1_dir(cg, "pids") / "pids.max") == "max"
    assert scope.child(cg, fork).run() == b"forked"


@needs_v1
def test_v1_blkio_throttle(scope):
    disks = [p for p in Path("/sys/dev/block").iterdir() if not (p / "partition").exists()]
    disks = [p for p in disks if (p / "size").exists() and read(p / "size") != "0"]
    if not disks:
        pytest.skip("no block device to throttle")
    major, minor = (int(x) for x in disks[0].name.split(":"))
    cg = scope.v1()
    cg.create({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}]}})
    assert read(v1_dir(cg, "blkio") / "blkio.throttle.read_bps_device") == f"{major}:{minor} {1 << 20}"


@needs_v1
def test_v1_hugetlb_on_the_unified_hierarchy(scope):
    """A hybrid host with hugetlb only on cgroup2: limits go there, enabling it on the way."""
    if "hugetlb" in {c for _m, _n, ctrls in open_cgroup("/x")._hier for c in ctrls}:
        pytest.skip("hugetlb is on a v1 hierarchy here")
    root = CGROUP / "unified"
    if not (root / "cgroup.controllers").exists() or "hugetlb" not in read(root / "cgroup.controllers").split():
        pytest.skip("no hugetlb controller on the unified hierarchy")
    if not Path("/sys/kernel/mm/hugepages/hugepages-2048kB").exists():
        pytest.skip("no 2MB huge pages")
    size = "2MB"
    was_enabled = "hugetlb" in read(root / "cgroup.subtree_control").split()
    cg = scope.v1()
    try:
        cg.create({"hugepageLimits": [{"pageSize": size, "limit": 4 * MiB}]})
        leaf = root / cg.path.lstrip("/")
        assert read(leaf / f"hugetlb.{size}.max") == str(4 * MiB)
        if (leaf / f"hugetlb.{size}.rsvd.max").exists():
            assert read(leaf / f"hugetlb.{size}.rsvd.max") == str(4 * MiB)
    finally:
        # Undo the host-wide change only once our cgroups are gone; the
        # kernel refuses while a descendant still uses the controller.
        scope.close()
        if not was_enabled and not any(p.is_dir() for p in root.iterdir()):
            (root / "cgroup.subtree_control").write_text("-hugetlb")


# v1: devices ------------------------------------------------------------------


@needs_v1
def test_v1_devices_deny_all_then_allow_null(scope):
    cg = scope.v1()
    cg.create({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    ]})
    assert read(v1_dir(cg, "devices") / "devices.list") == "c 1:3 rwm"
    assert scope.child(cg, open_errno("/dev/null")).run() == b"ok"
    assert scope.child(cg, open_errno("/dev/zero")).run() == b"EPERM"
    # Outside the cgroup nothing changed.
    assert scope.child(cg, open_errno("/dev/zero"), join=False).run() == b"ok"


@needs_v1
def test_v1_devices_update_changes_only_the_difference(scope):
    cg = scope.v1()
    cg.create({"devices": [{"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": 3}]})
    cg.update({"devices": [
        {"allow": False},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},
    ]})
    assert read(v1_dir(cg, "devices") / "devices.list") == "c 1:5 r"
    assert scope.child(cg, open_errno("/dev/zero")).run() == b"ok"
    assert scope.child(cg, open_errno("/dev/null")).run() == b"EPERM"
    cg.update({"devices": [{"allow": True}]})
    assert read(v1_dir(cg, "devices") / "devices.list") == "a *:* rwm"


@needs_v1
def test_v1_kernel_agrees_with_the_device_emulator(scope):
    """The v2 eBPF policy is compiled from the emulator, so it must model v1 exactly."""
    rules = [
        {"allow": False},
        {"allow": True, "type": "c", "access": "m"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"},
        {"allow": True, "type": "b", "major": 7, "access": "r"},
        {"allow": True, "type": "a", "major": 10, "minor": 200, "access": "rw"},
        {"allow": False, "type": "c", "major": 10, "minor": 200, "access": "r"},
    ]
    cg = scope.v1()
    cg.create({"devices": rules})
    kernel = devices.parse_v1_list(read(v1_dir(cg, "devices") / "devices.list"))
    parsed = cg_rules(rules)
    assert kernel == devices.emulate(devices.expand(parsed))


def cg_rules(rules: list[dict]) -> list:
    from dockyard.runtime.cgroups import resources

    return resources.parse({"devices": rules})["devices"]


# v1: membership, OOM, freezer, kill, destroy -----------------------------------


@needs_v1
def test_v1_members_are_listed_in_every_hierarchy(scope):
    cg = scope.v1()
    cg.create({})
    joined = scope.child(cg)
    added = scope.child(cg, join=False)
    cg.add(added.pid)
    assert cg.pids() == sorted([joined.pid, added.pid])
    for procs in cg.procs_files():
        assert sorted(int(p) for p in read(procs).split()) == sorted([joined.pid, added.pid])
    assert cg.stats()["pids"]["current"] == 2
    with pytest.raises(Conflict, match="already exists and has processes"):
        open_cgroup(cg.path).create({})
    with pytest.raises(NotFound):
        cg.add(2**22 + 7)


@needs_v1
def test_v1_mounts_name_each_hierarchy(scope):
    cg = scope.v1()
    mounts = dict((name, path) for path, name in cg.mounts())
    assert mounts["memory"] == str(CGROUP / "memory" / cg.path.lstrip("/"))
    assert all(path.endswith(cg.path) for path in mounts.values())


@needs_v1
def test_v1_oom_kill_is_reported(scope):
    cg = scope.v1()
    memory = {"limit": 16 * MiB}
    if (CGROUP / "memory" / "memory.memsw.limit_in_bytes").exists():
        memory["swap"] = 16 * MiB
    cg.create({"memory": memory})
    assert not cg.oom_killed()
    hog = scope.child(cg, lambda: b"survived %d" % len(b"x" * (100 * MiB)))
    os.write(hog.go_w, b"g")
    assert exit_signal(hog.wait()) == signal.SIGKILL
    assert cg.oom_killed()


@needs_v1
def test_v1_freeze_and_thaw(scope):
    cg = scope.v1()
    cg.create({})
    child = scope.child(cg)
    assert child.ping(5)
    cg.freeze()
    assert cg.frozen()
    assert read(v1_dir(cg, "freezer") / "freezer.state") == "FROZEN"
    # Frozen tasks do not answer; how long to wait for an absence is a judgement call.
    assert not child.ping(0.3)
    cg.thaw()
    assert not cg.frozen()
    # The echo written while frozen arrives now.
    ready, _, _ = select.select([child.out_r], [], [], 5)
    assert ready and os.read(child.out_r, 1) == b"p"


@needs_v1
def test_v1_kill_all_with_sigterm_keeps_it_thawed(scope):
    cg = scope.v1()
    cg.create({})
    child = scope.child(cg)
    cg.kill_all(signal.SIGTERM)
    assert exit_signal(child.wait()) == signal.SIGTERM
    assert not cg.frozen()


@needs_v1
def test_v1_kill_all_sigkill_on_a_frozen_cgroup(scope):
    cg = scope.v1()
    cg.create({})
    child = scope.child(cg)
    cg.freeze()
    cg.kill_all(signal.SIGKILL)
    assert exit_signal(child.wait()) == signal.SIGKILL
    assert not cg.frozen()


@needs_v1
def test_v1_destroy_waits_for_exiting_processes(scope):
    cg = scope.v1()
    cg.create({})
    # Dirtying lots of memory makes the exit take a while after SIGKILL.
    hog = scope.child(cg, lambda: b"x" * (256 * MiB) and b"")
    os.write(hog.go_w, b"g")
    wait_for(lambda: cg.stats()["memory"]["usage"] > 128 * MiB, what="the hog to fill its memory")
    os.kill(hog.pid, signal.SIGKILL)
    # Not reaped yet: a zombie must not block removal.
    cg.destroy()
    assert not any(Path(d).exists() for d, _ in cg.mounts())
    assert exit_signal(hog.wait()) == signal.SIGKILL
    cg.destroy()  # idempotent


@needs_v1
def test_v1_destroy_refuses_while_processes_live(scope):
    cg = scope.v1()
    cg.create({})
    child = scope.child(cg)
    with pytest.raises(Conflict, match=f"pids \\[{child.pid}\\]"):
        cg.destroy(timeout=0.2)
    child.kill()
    child.wait()
    cg.destroy()
    assert not any(Path(d).exists() for d, _ in cg.mounts())


# v1: bad input -----------------------------------------------------------------

_NO_BLKIO_WEIGHT = not any((CGROUP / "blkio" / f).exists() for f in ("blkio.weight", "blkio.bfq.weight"))

BAD_INPUT = [
    ({"memory": {"limit": -5}}, InvalidArgument, "linux.resources.memory.limit"),
    ({"memory": {"limit": 1 * MiB}}, InvalidArgument, "linux.resources.memory.limit"),
    ({"memory": {"limit": "1g"}}, InvalidArgument, "linux.resources.memory.limit"),
    ({"memory": {"limit": 64 * MiB, "swap": 32 * MiB}}, InvalidArgument, "linux.resources.memory.swap"),
    ({"memory": {"swap": 64 * MiB}}, InvalidArgument, "linux.resources.memory.swap"),
    ({"memory": {"limit": 64 * MiB, "reservation": 128 * MiB}}, InvalidArgument,
     "linux.resources.memory.reservation"),
    ({"memory": {"swappiness": 101}}, InvalidArgument, "linux.resources.memory.swappiness"),
    ({"memory": {"kernel": 64 * MiB}}, Unsupported, "linux.resources.memory.kernel"),
    ({"memory": {"limitt": 64 * MiB}}, InvalidArgument, "linux.resources.memory.limitt: unknown field"),
    ({"memory": []}, InvalidArgument, "linux.resources.memory: must be an object"),
    ({"cpu": {"period": 999}}, InvalidArgument, "linux.resources.cpu.period"),
    ({"cpu": {"period": 1_000_001}}, InvalidArgument, "linux.resources.cpu.period"),
    ({"cpu": {"quota": 500}}, InvalidArgument, "linux.resources.cpu.quota"),
    ({"cpu": {"shares": 1}}, InvalidArgument, "linux.resources.cpu.shares"),
    ({"cpu": {"cpus": "0-999"}}, InvalidArgument, "linux.resources.cpu.cpus: CPUs"),
    ({"cpu": {"cpus": "a-b"}}, InvalidArgument, "linux.resources.cpu.cpus"),
    ({"cpu": {"cpus": "3-1"}}, InvalidArgument, "linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "0-63"}}, InvalidArgument, "linux.resources.cpu.mems"),
    ({"pids": {"limit": 0}}, InvalidArgument, "linux.resources.pids.limit"),
    ({"pids": {"limit": True}}, InvalidArgument, "linux.resources.pids.limit"),
    ({"blockIO": {"weight": 5}}, InvalidArgument, "linux.resources.blockIO.weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}}, InvalidArgument,
     "linux.resources.blockIO.throttleReadBpsDevice[0].minor"),
    ({"devices": [{"allow": True, "type": "x"}]}, InvalidArgument, "linux.resources.devices[0].type"),
    ({"devices": [{"type": "c"}]}, InvalidArgument, "linux.resources.devices[0].allow"),
    ({"devices": [{"allow": True}, {"allow": True, "access": "rwx"}]}, InvalidArgument,
     "linux.resources.devices[1].access"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]}, Unsupported,
     "linux.resources.hugepageLimits"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}, InvalidArgument,
     "linux.resources.hugepageLimits[0].pageSize"),
    ({"unified": {"memory.max": "1"}}, Unsupported, "linux.resources.unified.memory.max"),
    ({"bogus": {}}, InvalidArgument, "linux.resources.bogus: unknown field"),
]
if _NO_BLKIO_WEIGHT:
    BAD_INPUT.append(({"blockIO": {"weight": 500}}, Unsupported,
                      "linux.resources.blockIO.weight: not supported by this host (no blkio.weight"))
if not (CGROUP / "net_cls").exists():
    BAD_INPUT.append(({"network": {"classID": 1}}, Unsupported,
                      "linux.resources.network.classID: not supported by this host"))


@needs_v1
@pytest.mark.parametrize("resources, error, message", BAD_INPUT, ids=lambda x: None)
def test_v1_bad_input_is_refused_without_side_effects(scope, resources, error, message):
    cg = scope.v1()
    with pytest.raises(error) as info:
        cg.validate(resources)
    assert message in str(info.value)
    with pytest.raises(error) as info:
        cg.create(resources)
    assert message in str(info.value)
    assert scope.leftovers() == []


@needs_v1
def test_v1_kernel_refusal_rolls_back(scope):
    cg = scope.v1()
    # Valid on its own, but the runtime exceeds the period: only the kernel knows.
    with pytest.raises(InvalidArgument) as info:
        cg.create({"memory": {"limit": 64 * MiB}, "cpu": {"realtimePeriod": 100000, "realtimeRuntime": 200000}})
    assert "linux.resources.cpu.realtime" in str(info.value)
    assert "cpu.rt_" in str(info.value)
    assert scope.leftovers() == []


# v2 on the host's cgroup2 mount ---------------------------------------------------


@needs_v2
def test_open_cgroup_picks_v2_on_a_cgroup2_root():
    cg = open_cgroup("/x", root=str(UNIFIED))
    assert isinstance(cg, V2Cgroup)
    assert cg.mounts() == [(str(UNIFIED / "x"), "")]


@needs_v2
def test_v2_membership_freeze_kill_destroy(scope):
    cg = scope.v2()
    cg.create({})
    assert cg.procs_files() == [str(UNIFIED / cg.path.lstrip("/") / "cgroup.procs")]
    a = scope.child(cg)
    b = scope.child(cg, join=False)
    cg.add(b.pid)
    assert cg.pids() == sorted([a.pid, b.pid])
    cg.freeze()
    assert cg.frozen()
    assert not a.ping(0.3)
    cg.thaw()
    assert not cg.frozen()
    ready, _, _ = select.select([a.out_r], [], [], 5)
    assert ready and os.read(a.out_r, 1) == b"p"
    cg.kill_all(signal.SIGTERM)
    assert exit_signal(a.wait()) == signal.SIGTERM
    assert exit_signal(b.wait()) == signal.SIGTERM
    c = scope.child(cg)
    cg.kill_all(signal.SIGKILL)
    assert exit_signal(c.wait()) == signal.SIGKILL
    cg.destroy()
    assert not Path(cg.dir).exists()
    cg.destroy()


@needs_v2
def test_v2_destroy_refuses_while_processes_live(scope):
    cg = scope.v2()
    cg.create({})
    child = scope.child(cg)
    with pytest.raises(Conflict, match=str(child.pid)):
        cg.destroy(timeout=0.2)
    assert Path(cg.dir).exists()


@needs_v2
def test_v2_devices_ebpf_program(scope):
    from dockyard.runtime.cgroups import bpf

    cg = scope.v2()
    cg.create({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "w"},
    ]})
    assert len(bpf.attached(cg.dir)) == 1
    assert scope.child(cg, open_errno("/dev/null")).run() == b"ok"
    assert scope.child(cg, open_errno("/dev/zero")).run() == b"EPERM"  # write only
    assert scope.child(cg, open_errno("/dev/full")).run() == b"EPERM"
    cg.update({"devices": [{"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 3}]})
    assert len(bpf.attached(cg.dir)) == 1  # replaced, not stacked
    assert scope.child(cg, open_errno("/dev/null")).run() == b"EPERM"
    assert scope.child(cg, open_errno("/dev/zero")).run() == b"ok"
    # An empty list is not "no rules": it denies every device.
    none = scope.v2("none")
    none.create({"devices": []})
    assert scope.child(none, open_errno("/dev/null")).run() == b"EPERM"


# The device policy model (pure) ---------------------------------------------------


def _run_bpf(insns, access_type: int, major: int, minor: int) -> int:
    """A tiny interpreter for the instructions bpf.program() emits."""
    regs = [0] * 11
    ctx = {0: access_type, 4: major, 8: minor}
    mask = (1 << 64) - 1
    pc = 0
    while True:
        code, dst, src, off, imm = insns[pc]
        pc += 1
        if code == 0x61:
            regs[dst] = ctx[off]
        elif code == 0xBF:
            regs[dst] = regs[src]
        elif code == 0xB7:
            regs[dst] = imm & mask
        elif code == 0x57:
            regs[dst] &= imm & mask
        elif code == 0x77:
            regs[dst] >>= imm
        elif code == 0x55:
            pc += off if regs[dst] != imm & mask else 0
        elif code == 0x15:
            pc += off if regs[dst] == imm & mask else 0
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_device_program_matches_the_emulator():
    from dockyard.runtime.cgroups import bpf

    rng = random.Random(7)
    accesses = ["".join(a) for n in range(1, 4) for a in itertools.combinations("rwm", n)]
    for _ in range(300):
        rules = [(rng.random() < 0.5, rng.choice("abc"), rng.choice([-1, 1, 5]),
                  rng.choice([-1, 3, 5]), rng.choice(accesses)) for _ in range(rng.randint(0, 6))]
        state = devices.emulate(devices.expand(rules))
        insns = bpf.program(*state)
        for kind, major, minor, access in itertools.product("bc", (1, 5, 9), (3, 5, 7), accesses):
            bits = sum({"m": 1, "r": 2, "w": 4}[c] for c in access)
            access_type = (bits << 16) | {"b": 1, "c": 2}[kind]
            expected = devices.allows(*state, kind, major, minor, access)
            assert _run_bpf(insns, access_type, major, minor) == int(expected), (rules, kind, major, minor, access)


def test_device_emulator_semantics():
    deny_all = [(False, "a", -1, -1, "rwm")]
    state = devices.emulate(devices.expand(deny_all + [(True, "c", 1, 3, "rwm"), (False, "c", 1, 3, "w")]))
    assert state == (False, {("c", 1, 3): "rm"})
    assert devices.allows(*state, "c", 1, 3, "r")
    assert not devices.allows(*state, "c", 1, 3, "rw")
    # A narrow type "a" rule covers both kinds instead of resetting everything.
    state = devices.emulate(devices.expand(deny_all + [(True, "a", 10, -1, "r")]))
    assert state == (False, {("b", 10, -1): "r", ("c", 10, -1): "r"})
    assert devices.v1_transition((False, {("c", 1, 3): "rwm"}), (False, {("c", 1, 5): "r"})) == [
        ("devices.allow", "c 1:5 r"), ("devices.deny", "c 1:3 rwm")]
    assert devices.v1_transition(None, (False, {})) == [("devices.deny", "a")]


# v2 limit writing on a stand-in cgroup2 tree --------------------------------------

_FILES = {
    "memory": ["memory.max", "memory.low", "memory.high", "memory.swap.max", "memory.current", "memory.events"],
    "cpu": ["cpu.weight", "cpu.max", "cpu.max.burst", "cpu.idle"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "io": ["io.max", "io.weight"],
    "pids": ["pids.max", "pids.current"],
    "hugetlb": ["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max"],
    "rdma": ["rdma.max"],
}


class FakeV2(V2Cgroup):
    """V2Cgroup on a plain directory tree: mkdir creates the files the kernel would
    (those of the controllers the parent enabled), and every write is logged."""

    files = _FILES

    def __init__(self, path: str, root: Path, **kw) -> None:
        super().__init__(path, str(root), **kw)
        self.log: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}

    def _mkdir(self, path: str) -> None:
        os.mkdir(path)
        enabled = Path(path, "..", "cgroup.subtree_control").resolve().read_text().split()
        for name, text in (("cgroup.controllers", " ".join(enabled)), ("cgroup.subtree_control", ""),
                           ("cgroup.procs", ""), ("cgroup.events", "populated 0\nfrozen 0\n")):
            Path(path, name).write_text(text)
        for ctrl in enabled:
            for name in self.files.get(ctrl, []):
                Path(path, name).write_text("")

    def _write(self, path: str, value: str) -> None:
        rel = os.path.relpath(path, self.root)
        self.log.append((rel, value))
        if os.path.basename(path) in self.fail:
            raise OSError(self.fail[os.path.basename(path)], os.strerror(self.fail[os.path.basename(path)]))
        if path.endswith("cgroup.subtree_control"):
            # The kernel applies +/- edits; the file shows the result.
            current = set(Path(path).read_text().split())
            for word in value.split():
                (current.add if word[0] == "+" else current.discard)(word[1:])
            value = " ".join(sorted(current))
        super()._write(path, value)

    def _rmdir(self, path: str) -> None:
        for entry in os.scandir(path):
            if entry.is_file():
                os.unlink(entry.path)
        os.rmdir(path)

    def leaf_writes(self) -> dict[str, str]:
        prefix = self.path.lstrip("/") + "/"
        return {p[len(prefix):]: v for p, v in self.log if p.startswith(prefix)
                and not p.endswith("cgroup.subtree_control")}


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    (root / "cpuset.cpus.effective").write_text("0-3\n")
    (root / "cpuset.mems.effective").write_text("0\n")
    return root


def test_open_cgroup_on_a_pure_v2_root_is_v2(fake_root):
    assert isinstance(open_cgroup("/dockyard/a", root=str(fake_root)), V2Cgroup)


def test_v2_conversions():
    assert [shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]
    assert [blkio_to_io_weight(w) for w in (10, 500, 1000)] == [1, 4950, 10000]


def test_v2_writes_exact_values(fake_root):
    cg = FakeV2("/dockyard/abc", fake_root)
    cg.create({
        "memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 96 * MiB},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500, "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 300}]},
        "unified": {"memory.high": "50000000"},
    })
    assert cg.leaf_writes() == {
        "memory.max": str(64 * MiB),
        "memory.low": str(32 * MiB),
        "memory.swap.max": str(32 * MiB),  # OCI swap counts memory too
        "cpu.weight": "39",
        "cpu.max": "50000 100000",
        "cpuset.cpus": "0-1",
        "cpuset.mems": "0",
        "pids.max": "100",
        "io.weight": "4950",
        "io.max": "8:0 wiops=300",
        "memory.high": "50000000",
    }
    # Every level up to the parent hands all its controllers down.
    every = "+cpu +cpuset +hugetlb +io +memory +pids +rdma"
    assert ("cgroup.subtree_control", every) in cg.log
    assert ("dockyard/cgroup.subtree_control", every) in cg.log
    assert read(fake_root / "dockyard" / "abc" / "memory.swap.max") == str(32 * MiB)


def test_v2_unlimited_values(fake_root):
    cg = FakeV2("/c", fake_root)
    cg.create({"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1, "period": 250000},
               "pids": {"limit": -1}})
    assert cg.leaf_writes() == {"memory.max": "max", "memory.swap.max": "max",
                                "cpu.max": "max 250000", "pids.max": "max"}


def test_v2_update_keeps_what_is_not_given(fake_root):
    cg = FakeV2("/c", fake_root)
    cg.create({"memory": {"limit": 64 * MiB}, "cpu": {"quota": 50000, "period": 100000}})
    cg.log.clear()
    cg.update({"cpu": {"period": 200000}, "memory": {"swap": 128 * MiB}})
    # The quota in force and the limit in force are the base of the new values.
    assert cg.leaf_writes() == {"cpu.max": "50000 200000", "memory.swap.max": str(64 * MiB)}
    with pytest.raises(InvalidArgument, match="linux.resources.memory.swap"):
        cg.update({"memory": {"swap": 32 * MiB}})


def test_v2_prefers_bfq_weight(fake_root):
    class Bfq(FakeV2):
        files = {**_FILES, "io": ["io.max", "io.bfq.weight"]}

    cg = Bfq("/c", fake_root)
    cg.create({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 20}]}})
    assert [(p, v) for p, v in cg.log if "weight" in p] == [("c/io.bfq.weight", "500"),
                                                          ("c/io.bfq.weight", "8:0 20")]


def test_v2_enables_only_needed_controllers_when_asked(fake_root):
    cg = FakeV2("/a/b", fake_root, enable_all=False)
    cg.create({"pids": {"limit": 5}})
    assert [e for e in cg.log if e[0].endswith("subtree_control")] == [
        ("cgroup.subtree_control", "+pids"), ("a/cgroup.subtree_control", "+pids")]


V2_BAD_INPUT = [
    ({"memory": {"swappiness": 10}}, Unsupported, "linux.resources.memory.swappiness"),
    ({"memory": {"kernel": 64 * MiB}}, Unsupported, "linux.resources.memory.kernel"),
    ({"memory": {"disableOOMKiller": True}}, Unsupported, "linux.resources.memory.disableOOMKiller"),
    ({"memory": {"limit": -2}}, InvalidArgument, "linux.resources.memory.limit"),
    ({"memory": {"swap": 64 * MiB}}, InvalidArgument, "linux.resources.memory.swap"),
    ({"cpu": {"realtimeRuntime": 1000}}, Unsupported, "linux.resources.cpu.realtimeRuntime"),
    ({"cpu": {"period": 5}}, InvalidArgument, "linux.resources.cpu.period"),
    ({"cpu": {"cpus": "0-7"}}, InvalidArgument, "linux.resources.cpu.cpus: CPUs 4-7 not available"),
    ({"blockIO": {"leafWeight": 100}}, Unsupported, "linux.resources.blockIO.leafWeight"),
    ({"network": {"classID": 1}}, Unsupported, "linux.resources.network.classID"),
    ({"unified": {"cgroup.procs": "1"}}, InvalidArgument, "linux.resources.unified.cgroup.procs"),
    ({"unified": {"misc.max": "x 1"}}, Unsupported, "linux.resources.unified.misc.max"),
    ({"unified": {"../memory.max": "1"}}, InvalidArgument, "linux.resources.unified"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]}, Unsupported, "linux.resources.hugepageLimits[0]"),
    ({"cpu": {"cpus": "0", "foo": 1}}, InvalidArgument, "linux.resources.cpu.foo: unknown field"),
]


@pytest.mark.parametrize("resources, error, message", V2_BAD_INPUT, ids=lambda x: None)
def test_v2_bad_input_is_refused_without_side_effects(fake_root, resources, error, message):
    cg = FakeV2("/dockyard/abc", fake_root)
    for call in (cg.validate, cg.create):
        with pytest.raises(error) as info:
            call(resources)
        assert message in str(info.value)
    assert not (fake_root / "dockyard").exists()
    assert cg.log == []


def test_v2_missing_controller_is_unsupported(fake_root):
    (fake_root / "cgroup.controllers").write_text("cpu pids\n")
    cg = FakeV2("/c", fake_root)
    with pytest.raises(Unsupported, match=r"linux.resources.memory.limit: .*memory controller"):
        cg.validate({"memory": {"limit": 64 * MiB}})


def test_v2_swap_without_swap_accounting_is_unsupported(fake_root):
    # A sibling shows the memory files the host gives cgroups, and no swap ones.
    sibling = fake_root / "init.scope"
    sibling.mkdir()
    (sibling / "cgroup.controllers").write_text("memory pids")
    (sibling / "memory.max").write_text("max")
    cg = FakeV2("/c", fake_root)
    with pytest.raises(Unsupported, match=r"linux.resources.memory.swap: .*memory.swap.max"):
        cg.validate({"memory": {"limit": 64 * MiB, "swap": 128 * MiB}})
    cg.validate({"memory": {"limit": 64 * MiB}})


def test_v2_failed_write_rolls_back(fake_root):
    cg = FakeV2("/dockyard/abc", fake_root)
    cg.fail["cpu.max"] = errno.EINVAL
    with pytest.raises(InvalidArgument) as info:
        cg.create({"memory": {"limit": 64 * MiB}, "cpu": {"quota": 50000}})
    assert "linux.resources.cpu.quota" in str(info.value)
    assert "dockyard/abc/cpu.max" in str(info.value)
    assert not (fake_root / "dockyard").exists()
    cg.fail = {"pids.max": errno.EACCES}
    with pytest.raises(SystemFailure, match="linux.resources.pids.limit: writing '5' to .*pids.max"):
        cg.create({"pids": {"limit": 5}})
    assert not (fake_root / "dockyard").exists()


def test_v2_existing_parent_is_kept_on_rollback(fake_root):
    FakeV2("/dockyard/other", fake_root).create({})
    cg = FakeV2("/dockyard/abc", fake_root)
    cg.fail["pids.max"] = errno.EINVAL
    with pytest.raises(InvalidArgument):
        cg.create({"pids": {"limit": 5}})
    assert sorted(p.name for p in (fake_root / "dockyard").iterdir() if p.is_dir()) == ["other"]


def test_v2_conflict_when_processes_present(fake_root):
    cg = FakeV2("/c", fake_root)
    cg.create({})
    (fake_root / "c" / "cgroup.procs").write_text("4242\n")
    with pytest.raises(Conflict, match="4242"):
        FakeV2("/c", fake_root).create({})
    (fake_root / "c" / "cgroup.procs").write_text("")
    cg.destroy()
    assert not (fake_root / "c").exists()
    with pytest.raises(NotFound):
        cg.update({"pids": {"limit": 5}})
