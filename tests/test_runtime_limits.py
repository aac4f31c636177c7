"""Resource limits through the container's cgroup: memory (OOM), pids, CPU quota."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import wait_for

CGROUP = Path("/sys/fs/cgroup")


def test_memory_hog_is_oom_killed(runtime, bundle):
    bundle.config["linux"]["resources"]["memory"] = {"limit": 32 << 20, "swap": 32 << 20}
    # dd's 200 MiB block buffer is touched by read(): the charge goes over the limit.
    path = bundle.args("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1").write()
    res = runtime("run", "--keep", "--bundle", path, "oom", check=False)
    assert res.returncode == 137, res.stderr
    state = runtime.state("oom")
    assert state["status"] == "stopped"
    assert state.get("oomKilled") is True
    runtime("delete", "oom")


def test_fork_bomb_stops_at_pids_limit(runtime, bundle):
    bundle.config["linux"]["resources"]["pids"] = {"limit": 20}
    # The bomb runs in a subshell so that pid 1 outlives the failed fork.
    path = bundle.args("sh", "-c", "(while true; do sleep 1000 & done); exec sleep 1000").write()
    runtime("run", "-d", "--bundle", path, "bomb")
    events = _pids_dir(bundle) / "pids.events"
    wait_for(lambda: int(events.read_text().split()[1]) > 0, what="a fork refused at the limit")
    assert 0 < len(_procs(bundle)) <= 20
    # The host is unharmed: it still forks.
    assert os.system("true") == 0
    runtime("delete", "--force", "bomb")


def _pids_dir(bundle) -> Path:
    return CGROUP / "pids" / bundle.config["linux"]["cgroupsPath"].lstrip("/")


def _procs(bundle) -> list[int]:
    f = _pids_dir(bundle) / "cgroup.procs"
    try:
        return [int(x) for x in f.read_text().split()]
    except FileNotFoundError:
        return []


def test_cpu_quota_of_half_a_cpu(runtime, bundle):
    bundle.config["linux"]["resources"]["cpu"] = {"quota": 50000, "period": 100000}
    path = bundle.args("sh", "-c", "while :; do :; done").write()
    runtime("run", "-d", "--bundle", path, "cpu")
    usage = CGROUP / "cpuacct" / bundle.config["linux"]["cgroupsPath"].lstrip("/") / "cpuacct.usage"
    start_cpu, start = int(usage.read_text()), time.monotonic()
    wait_for(lambda: time.monotonic() - start >= 2.0, what="two seconds of spinning")
    used = (int(usage.read_text()) - start_cpu) / 1e9
    elapsed = time.monotonic() - start
    runtime("delete", "--force", "cpu")
    assert 0.3 < used / elapsed < 0.65, f"{used:.2f}s of CPU in {elapsed:.2f}s"
