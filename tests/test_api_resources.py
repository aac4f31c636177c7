"""dockyardd's stats, top and update endpoints, judged by the docker CLI and docker-py
against a real daemon (tests/engine_daemon.py), with the container's cgroup files read
back to see the limits land in the kernel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_daemon import CGROUP_PARENT, Daemon, daemon, docker, run  # noqa: F401 (daemon: fixture)

MiB = 1024 * 1024
V1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
needs_v1 = pytest.mark.skipif(not V1, reason="reads cgroup v1 files")


def cgroup_file(ctrl: str, cid: str, name: str) -> str:
    path = Path("/sys/fs/cgroup") / ctrl / CGROUP_PARENT.strip("/") / cid / name
    return path.read_text().strip()


def machine_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


@pytest.fixture(scope="module")
def sdk(daemon: Daemon) -> Iterator[object]:
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=daemon.host)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def ctr(daemon: Daemon) -> Iterator[str]:
    """A running container with a 64 MiB memory limit, named after its id."""
    cid = run(daemon, "-d", "-m", "64m", "busybox", "sleep", "1000").stdout.strip()
    try:
        yield cid
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


@pytest.fixture
def created(daemon: Daemon) -> Iterator[str]:
    cid = docker(daemon, "create", "--cgroup-parent", CGROUP_PARENT, "busybox",
                 "sleep", "1000").stdout.strip()
    try:
        yield cid
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def name_of(d: Daemon, cid: str) -> str:
    return docker(d, "inspect", "-f", "{{.Name}}", cid).stdout.strip().lstrip("/")


def host_config(d: Daemon, cid: str) -> dict:
    return json.loads(docker(d, "inspect", "-f", "{{json .HostConfig}}", cid).stdout)


def to_bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMG]?i?B)", text.strip())
    assert m, text
    scale = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB}[m.group(2)]
    return float(m.group(1)) * scale


# -- stats ----------------------------------------------------------------------------

def test_stats_no_stream_cli(daemon, ctr):
    name = name_of(daemon, ctr)
    out = docker(daemon, "stats", "--no-stream").stdout
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    row = next(r for r in rows if r.startswith(ctr[:12]))
    assert name in row and "/ 64MiB" in row


def test_stats_format_mem_usage(daemon, ctr):
    name = name_of(daemon, ctr)
    out = docker(daemon, "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}",
                 ctr).stdout.strip()
    got_name, usage, slash, limit = out.split()
    assert got_name == name and slash == "/"
    assert to_bytes(limit) == 64 * MiB
    assert 0 < to_bytes(usage) < 64 * MiB


def test_stats_sdk_fields(daemon, ctr, sdk):
    s = sdk.containers.get(ctr).stats(stream=False)
    assert list(s)[:11] == ["read", "preread", "pids_stats", "blkio_stats", "num_procs",
                            "storage_stats", "cpu_stats", "precpu_stats", "memory_stats",
                            "name", "id"]
    assert "networks" not in s  # --network none so far: loopback only, as dockerd
    assert s["id"] == ctr and s["name"] == "/" + name_of(daemon, ctr)
    assert s["pids_stats"]["current"] >= 1
    cpu = s["cpu_stats"]
    assert cpu["online_cpus"] >= 1 and cpu["system_cpu_usage"] > 0
    assert cpu["cpu_usage"]["total_usage"] > 0
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    # stream=false primes a first sample, so precpu is filled and one second older.
    pre = s["precpu_stats"]
    assert pre["system_cpu_usage"] > 0 and pre["system_cpu_usage"] < cpu["system_cpu_usage"]
    assert s["preread"] < s["read"] and not s["preread"].startswith("0001")
    mem = s["memory_stats"]
    assert mem["limit"] == 64 * MiB and mem["usage"] > 0
    if V1:
        assert "total_inactive_file" in mem["stats"] and "cache" in mem["stats"]
        assert mem["max_usage"] >= mem["usage"]
        assert isinstance(s["blkio_stats"]["io_service_bytes_recursive"], list)


def test_stats_one_shot(daemon, ctr, sdk):
    s = sdk.api.stats(ctr, stream=False, one_shot=True)
    assert s["preread"] == "0001-01-01T00:00:00Z"
    assert "system_cpu_usage" not in s["precpu_stats"]
    assert s["cpu_stats"]["system_cpu_usage"] > 0 and s["memory_stats"]["usage"] > 0


def test_stats_stream_gives_increasing_samples(daemon, ctr, sdk):
    gen = sdk.api.stats(ctr, stream=True, decode=True)
    try:
        first, second = next(gen), next(gen)
    finally:
        gen.close()
    assert first["read"] < second["read"]
    assert first["preread"] == "0001-01-01T00:00:00Z"
    assert second["preread"] == first["read"]
    assert second["precpu_stats"] == first["cpu_stats"]
    # The daemon still answers once the streaming client is gone.
    assert docker(daemon, "inspect", "-f", "{{.State.Running}}", ctr).stdout.strip() == "true"


def test_stats_unlimited_memory_reports_host_memory(daemon, sdk):
    cid = run(daemon, "-d", "busybox", "sleep", "1000").stdout.strip()
    try:
        s = sdk.api.stats(cid, stream=False, one_shot=True)
        assert s["memory_stats"]["limit"] == machine_memory()
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_stats_stopped_container_is_zeroed(daemon, created, sdk):
    s = sdk.api.stats(created, stream=False)
    assert s["read"] == "0001-01-01T00:00:00Z" and s["memory_stats"] == {}
    assert s["pids_stats"] == {} and s["cpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert s["id"] == created and s["name"].startswith("/")
    out = docker(daemon, "stats", "--no-stream", "--format", "{{.MemUsage}}", created).stdout
    assert out.strip() == "0B / 0B"


def test_stats_unknown_container(daemon, sdk):
    r = docker(daemon, "stats", "--no-stream", "nosuch", check=False)
    assert r.returncode != 0 and "No such container: nosuch" in r.stderr
    resp = sdk.api.get(sdk.api._url("/containers/nosuch/stats"), params={"stream": "0"})
    assert resp.status_code == 404 and resp.json()["message"] == "No such container: nosuch"


# -- top ------------------------------------------------------------------------------

def test_top_default_columns(daemon, ctr):
    lines = docker(daemon, "top", ctr).stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert len(lines) == 2 and lines[1].split()[-2:] == ["sleep", "1000"]
    pid = docker(daemon, "inspect", "-f", "{{.State.Pid}}", ctr).stdout.strip()
    assert lines[1].split()[1] == pid


def test_top_ps_args(daemon, ctr, sdk):
    lines = docker(daemon, "top", ctr, "-o", "pid,comm").stdout.splitlines()
    assert lines[0].split() == ["PID", "COMMAND"] and lines[1].split()[1] == "sleep"
    # A second process (an exec) shows up too; only the container's are listed.
    docker(daemon, "exec", "-d", ctr, "sleep", "999")
    top = sdk.api.top(ctr, ps_args="-o pid,args")
    assert top["Titles"] == ["PID", "COMMAND"]
    assert sorted(p[1] for p in top["Processes"]) == ["sleep 1000", "sleep 999"]


def test_top_stopped_container(daemon, created, sdk):
    r = docker(daemon, "top", created, check=False)
    assert r.returncode != 0 and f"Container {created} is not running" in r.stderr
    resp = sdk.api.get(sdk.api._url(f"/containers/{created}/top"))
    assert resp.status_code == 409


def test_top_unknown_container(daemon, sdk):
    resp = sdk.api.get(sdk.api._url("/containers/nosuch/top"))
    assert resp.status_code == 404 and resp.json()["message"] == "No such container: nosuch"


def test_top_bad_ps_args(daemon, ctr, sdk):
    resp = sdk.api.get(sdk.api._url(f"/containers/{ctr}/top"), params={"ps_args": "aux bogus"})
    assert resp.status_code == 500
    assert resp.json()["message"].startswith("ps: error: ")
    resp = sdk.api.get(sdk.api._url(f"/containers/{ctr}/top"), params={"ps_args": "-o user=PID"})
    assert resp.status_code == 500
    assert resp.json()["message"] == 'specifying "user=PID" is not allowed'


# -- update ---------------------------------------------------------------------------

@needs_v1
def test_update_memory_and_cpus_live(daemon, ctr):
    docker(daemon, "update", "--memory", "96m", "--memory-swap", "192m", "--cpus", "0.5", ctr)
    assert int(cgroup_file("memory", ctr, "memory.limit_in_bytes")) == 96 * MiB
    assert int(cgroup_file("memory", ctr, "memory.memsw.limit_in_bytes")) == 192 * MiB
    assert cgroup_file("cpu", ctr, "cpu.cfs_quota_us") == "50000"
    assert cgroup_file("cpu", ctr, "cpu.cfs_period_us") == "100000"
    hc = host_config(daemon, ctr)
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"]) == (96 * MiB, 192 * MiB, 500_000_000)
    # docker stats sees the new limit.
    out = docker(daemon, "stats", "--no-stream", "--format", "{{.MemUsage}}", ctr).stdout
    assert out.strip().endswith("/ 96MiB")
    # Kept across a stop and start: the spec is built from the stored HostConfig.
    docker(daemon, "stop", "-t", "0", ctr)
    docker(daemon, "start", ctr)
    assert int(cgroup_file("memory", ctr, "memory.limit_in_bytes")) == 96 * MiB
    assert cgroup_file("cpu", ctr, "cpu.cfs_quota_us") == "50000"


@needs_v1
def test_update_within_stored_swap(daemon, ctr):
    # -m 64m stored a swap limit of twice that, so 128m needs no --memory-swap.
    docker(daemon, "update", "--memory", "128m", ctr)
    assert int(cgroup_file("memory", ctr, "memory.limit_in_bytes")) == 128 * MiB
    assert host_config(daemon, ctr)["MemorySwap"] == 128 * MiB


@needs_v1
def test_update_pids_shares_cpuset(daemon, ctr, sdk):
    r = sdk.api.update_container(ctr, cpu_shares=512, cpuset_cpus="0")
    assert r["Warnings"] is None
    resp = sdk.api.post(sdk.api._url(f"/containers/{ctr}/update"), json={"PidsLimit": 50})
    assert resp.status_code == 200
    assert cgroup_file("pids", ctr, "pids.max") == "50"
    assert cgroup_file("cpu", ctr, "cpu.shares") == "512"
    assert cgroup_file("cpuset", ctr, "cpuset.cpus") == "0"
    hc = host_config(daemon, ctr)
    assert (hc["PidsLimit"], hc["CpuShares"], hc["CpusetCpus"]) == (50, 512, "0")
    # 0 and negative values lift the limit.
    resp = sdk.api.post(sdk.api._url(f"/containers/{ctr}/update"), json={"PidsLimit": -1})
    assert resp.status_code == 200 and cgroup_file("pids", ctr, "pids.max") == "max"
    assert host_config(daemon, ctr)["PidsLimit"] == 0


def test_update_restart_policy_persisted(daemon, ctr, sdk):
    docker(daemon, "update", "--restart", "on-failure:3", ctr)
    assert host_config(daemon, ctr)["RestartPolicy"] == {"Name": "on-failure",
                                                         "MaximumRetryCount": 3}
    sdk.api.update_container(ctr, restart_policy={"Name": "always"})
    assert host_config(daemon, ctr)["RestartPolicy"]["Name"] == "always"


def test_update_stopped_container_stores_only(daemon, created):
    docker(daemon, "update", "--memory", "32m", "--memory-swap", "64m", created)
    hc = host_config(daemon, created)
    assert (hc["Memory"], hc["MemorySwap"]) == (32 * MiB, 64 * MiB)
    docker(daemon, "start", created)
    if V1:
        assert int(cgroup_file("memory", created, "memory.limit_in_bytes")) == 32 * MiB


def _post_update(sdk, ref: str, body: object, raw: bytes | None = None):
    url = sdk.api._url(f"/containers/{ref}/update")
    if raw is not None:
        return sdk.api.post(url, data=raw, headers={"Content-Type": "application/json"})
    return sdk.api.post(url, json=body)


@pytest.mark.parametrize("body,message", [
    ({"Memory": 1}, "Minimum memory limit allowed is 6MB"),
    ({"Memory": 64 * MiB, "MemorySwap": 32 * MiB},
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    ({"MemoryReservation": 1}, "Minimum memory reservation allowed is 6MB"),
    ({"Memory": 8 * MiB, "MemoryReservation": 16 * MiB},
     "Minimum memory limit can not be less than memory reservation limit, see usage"),
    ({"NanoCpus": 500_000_000, "CpuQuota": 50000},
     "Conflicting options: Nano CPUs and CPU Quota cannot both be set"),
    ({"NanoCpus": 500_000_000, "CpuPeriod": 50000},
     "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
    ({"CpuPeriod": 10}, "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than "
                        "1s (i.e. 1000000)"),
    ({"CpuQuota": 10}, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
    ({"CpusetCpus": "999"}, "Requested CPUs are not available - requested 999, available: "),
    ({"CpusetCpus": "a-b"}, "Invalid value a-b for cpuset cpus"),
    ({"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy: unknown policy "
                                              "'sometimes'"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}},
     "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}},
     "invalid restart policy: maximum retry count cannot be negative"),
    ({"Memory": "64m"}, "invalid JSON: json: cannot unmarshal string into Go struct field "
                        "UpdateConfig.Memory of type int64"),
    ({"BlkioWeight": 70000}, "invalid JSON: json: cannot unmarshal number 70000"),
])
def test_update_bad_input(daemon, ctr, sdk, body, message):
    before = host_config(daemon, ctr)
    resp = _post_update(sdk, ctr, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"].startswith(message)
    assert host_config(daemon, ctr) == before
    if V1:
        assert int(cgroup_file("memory", ctr, "memory.limit_in_bytes")) == 64 * MiB


def test_update_bad_json(daemon, ctr, sdk):
    resp = _post_update(sdk, ctr, None, raw=b'{"Memory": ')
    assert resp.status_code == 400 and resp.json()["message"].startswith("invalid JSON")


def test_update_memory_one_byte_cli(daemon, ctr):
    r = docker(daemon, "update", "--memory", "1", ctr, check=False)
    assert r.returncode != 0 and "Minimum memory limit allowed is 6MB" in r.stderr


def test_update_unknown_container(daemon, sdk):
    resp = _post_update(sdk, "nosuch", {"Memory": 64 * MiB})
    assert resp.status_code == 404 and resp.json()["message"] == "No such container: nosuch"
    r = docker(daemon, "update", "--cpus", "1", "nosuch", check=False)
    assert r.returncode != 0 and "No such container: nosuch" in r.stderr


def test_update_conflicts(daemon, sdk):
    cid = run(daemon, "-d", "--cpus", "1", "busybox", "sleep", "1000").stdout.strip()
    try:
        before = host_config(daemon, cid)
        resp = _post_update(sdk, cid, {"CpuQuota": 50000})
        assert resp.status_code == 409
        assert resp.json()["message"] == (f"Cannot update container {cid}: Conflicting options: "
                                          "CPU Quota cannot be updated as NanoCPUs has already "
                                          "been set")
        # No memory limit so far, hence no stored swap limit to stay under.
        resp = _post_update(sdk, cid, {"Memory": 64 * MiB})
        assert resp.status_code == 409
        assert resp.json()["message"].endswith("Memory limit should be smaller than already set "
                                               "memoryswap limit, update the memoryswap at the "
                                               "same time")
        assert host_config(daemon, cid) == before
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_update_restart_policy_refused_with_auto_remove(daemon, sdk):
    cid = run(daemon, "-d", "--rm", "busybox", "sleep", "1000").stdout.strip()
    try:
        r = docker(daemon, "update", "--restart", "always", cid, check=False)
        assert r.returncode != 0
        assert ("Restart policy cannot be updated because AutoRemove is enabled for the "
                "container") in r.stderr
        assert host_config(daemon, cid)["RestartPolicy"]["Name"] in ("", "no")
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_stats_stream_ends_when_container_removed(daemon, sdk):
    cid = run(daemon, "-d", "busybox", "sleep", "1000").stdout.strip()
    gen = sdk.api.stats(cid, stream=True, decode=True)
    try:
        assert next(gen)["id"] == cid
        docker(daemon, "rm", "-f", cid)
        # The daemon closes the stream (as dockerd does) instead of sampling forever.
        assert len(list(gen)) <= 3
    finally:
        gen.close()
        docker(daemon, "rm", "-f", cid, check=False)


# -- parsing, on text as the kernel and ps write it --------------------------------------

def test_parse_ps_keeps_container_rows_and_their_threads():
    from dockyard.daemon.top import parse_ps

    out = ("  PID   TID CMD\n"
           "    1     - init\n"
           "   10     - sleep 5 and more\n"
           "    -    10 -\n"
           "    -    11 -\n"
           "   20     - other\n"
           "    -    20 -\n")
    got = parse_ps(out, {10})
    assert got["Titles"] == ["PID", "TID", "CMD"]
    assert got["Processes"] == [["10", "-", "sleep 5 and more"], ["-", "10", "-"], ["-", "11", "-"]]


def test_parse_ps_without_pid_column():
    from dockyard.daemon.top import parse_ps
    from dockyard.errors import SystemFailure

    with pytest.raises(SystemFailure, match="Couldn't find PID field in ps output"):
        parse_ps("COMMAND\nsleep\n", {1})


def test_host_cpu_reads_proc_stat(tmp_path):
    from dockyard.daemon.stats import host_cpu

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 1000 10 0 5 7 0 0\ncpu0 60 0 25 500 5 0 3 0 0 0\n"
                    "cpu1 40 0 25 500 5 0 2 0 0 0\nintr 12345\n")
    got = host_cpu(str(stat))
    # The first seven fields (steal and guest excluded), in ns at USER_HZ=100.
    assert got.usage_ns == (100 + 50 + 1000 + 10 + 5) * 10_000_000 and got.online == 2


def test_v1_blkio_lines(tmp_path):
    from dockyard.runtime.cgroups.metrics import _v1_blkio_file

    f = tmp_path / "blkio.throttle.io_service_bytes_recursive"
    f.write_text("8:0 Read 4096\n8:0 Write 0\n8:0 Total 4096\nTotal 4096\n")
    got = [(e.major, e.minor, e.op, e.value) for e in _v1_blkio_file(str(f))]
    assert got == [(8, 0, "Read", 4096), (8, 0, "Write", 0), (8, 0, "Total", 4096)]
