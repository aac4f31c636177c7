"""OCI runtimes chosen per container (`docker run --runtime runc`) and by default
(daemon.json "default-runtime", "runtimes"), judged by the docker CLI and docker-py against
a real dockyardd; runc and crun are the host's own binaries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from engine_daemon import (  # noqa: F401 (daemon: fixture)
    CGROUP_PARENT, Daemon, daemon, docker, process_gone, run, start_daemon, stop_daemon)

RUNC = shutil.which("runc")
CRUN = shutil.which("crun")
needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")


def state_dir(d: Daemon, runtime: str) -> Path:
    return d.exec_root / "runtimes" / runtime


def leftovers(d: Daemon, runtime: str) -> list[str]:
    p = state_dir(d, runtime)
    return sorted(os.listdir(p)) if p.is_dir() else []


def inspect(d: Daemon, cid: str) -> dict:
    return json.loads(docker(d, "inspect", cid).stdout)[0]


def cgroups_of(cid: str) -> list[str]:
    base = Path("/sys/fs/cgroup")
    return [str(p) for p in base.glob(f"*/{CGROUP_PARENT.strip('/')}/{cid}")] + \
        [str(p) for p in base.glob(f"{CGROUP_PARENT.strip('/')}/{cid}")]


def runtime_state(d: Daemon, runtime: str, binary: str, cid: str) -> dict:
    r = subprocess.run([binary, "--root", str(state_dir(d, runtime)), "state", cid],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@pytest.fixture
def removing(daemon: Daemon) -> Iterator[list[str]]:
    """Container ids to remove after the test, whatever happens."""
    ids: list[str] = []
    try:
        yield ids
    finally:
        if ids:
            docker(daemon, "rm", "-f", *ids, check=False)


# -- runc, chosen per container ------------------------------------------------------------

@needs_runc
def test_run_echo(daemon: Daemon) -> None:
    r = run(daemon, "--rm", "--runtime", "runc", "busybox", "echo", "hi")
    assert r.stdout == "hi\n"
    assert leftovers(daemon, "runc") == []


@needs_runc
def test_exit_codes(daemon: Daemon) -> None:
    r = run(daemon, "--rm", "--runtime", "runc", "busybox", "sh", "-c", "echo err >&2; exit 7",
            check=False)
    assert r.returncode == 7 and r.stderr == "err\n"
    assert run(daemon, "--rm", "--runtime", "runc", "busybox", "true").returncode == 0
    # containerd's name for the stock runc, which dockerd accepts too.
    r = run(daemon, "--rm", "--runtime", "io.containerd.runc.v2", "busybox", "sh", "-c", "exit 6",
            check=False)
    assert r.returncode == 6 and leftovers(daemon, "io.containerd.runc.v2") == []
    r = run(daemon, "-d", "--runtime", "runc", "busybox", "nosuchcommand", check=False)
    cid = r.stdout.strip()
    try:
        assert r.returncode == 127 and "executable file not found" in r.stderr
        assert "executable file not found" in inspect(daemon, cid)["State"]["Error"]
        assert cgroups_of(cid) == []
    finally:
        docker(daemon, "rm", "-f", cid, check=False)
    assert leftovers(daemon, "runc") == []
    assert leftovers(daemon, "runc") == []


@needs_runc
def test_detached_exec_stop_kill_rm(daemon: Daemon, removing: list[str]) -> None:
    # pid 1 of a pid namespace ignores SIGTERM unless it handles it: stop must SIGKILL.
    cid = run(daemon, "-d", "--runtime", "runc", "busybox", "sleep", "1000").stdout.strip()
    removing.append(cid)
    info = inspect(daemon, cid)
    assert info["HostConfig"]["Runtime"] == "runc" and info["State"]["Running"]
    st = runtime_state(daemon, "runc", RUNC, cid)  # type: ignore[arg-type]
    assert st["status"] == "running" and st["pid"] == info["State"]["Pid"]

    assert docker(daemon, "exec", cid, "echo", "hi").stdout == "hi\n"
    r = docker(daemon, "exec", cid, "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")
    assert docker(daemon, "exec", "-t", cid, "tty").stdout.strip() == "/dev/pts/0"
    assert docker(daemon, "exec", "-u", "1000", cid, "id", "-u").stdout == "1000\n"
    r = docker(daemon, "exec", "-i", cid, "cat", check=False)  # stdin: none given, EOF
    assert r.returncode == 0

    docker(daemon, "pause", cid)
    assert runtime_state(daemon, "runc", RUNC, cid)["status"] == "paused"  # type: ignore[arg-type]
    assert inspect(daemon, cid)["State"]["Paused"]
    docker(daemon, "unpause", cid)
    assert runtime_state(daemon, "runc", RUNC, cid)["status"] == "running"  # type: ignore[arg-type]

    t0 = time.monotonic()
    docker(daemon, "stop", "-t", "1", cid)
    assert time.monotonic() - t0 >= 1
    assert inspect(daemon, cid)["State"]["ExitCode"] == 137

    docker(daemon, "start", cid)
    docker(daemon, "kill", "-s", "USR1", cid)  # ignored by pid 1 without a handler
    assert inspect(daemon, cid)["State"]["Running"]
    docker(daemon, "kill", cid)
    assert docker(daemon, "wait", cid).stdout.strip() == "137"

    docker(daemon, "start", cid)
    docker(daemon, "rm", "-f", cid)
    assert docker(daemon, "ps", "-aq", "--no-trunc").stdout.split().count(cid) == 0
    assert leftovers(daemon, "runc") == []


@needs_runc
def test_sigterm_handled(daemon: Daemon, removing: list[str]) -> None:
    cid = run(daemon, "-d", "--runtime", "runc", "busybox", "sh", "-c",
              "trap 'exit 3' TERM; while :; do sleep 0.1; done").stdout.strip()
    removing.append(cid)
    docker(daemon, "stop", "-t", "10", cid)
    assert inspect(daemon, cid)["State"]["ExitCode"] == 3


@needs_runc
def test_tty(daemon: Daemon, removing: list[str]) -> None:
    cid = run(daemon, "-d", "-t", "--runtime", "runc", "busybox", "sh", "-c",
              "tty; echo done").stdout.strip()
    removing.append(cid)
    assert docker(daemon, "wait", cid).stdout.strip() == "0"
    assert docker(daemon, "logs", cid).stdout.replace("\r", "") == "/dev/pts/0\ndone\n"


@needs_runc
def test_tty_attached_and_resized(daemon: Daemon, removing: list[str]) -> None:
    r = run(daemon, "--rm", "-t", "--runtime", "runc", "busybox", "sh", "-c", "tty; exit 2",
            check=False)
    assert r.returncode == 2 and r.stdout.replace("\r", "") == "/dev/pts/0\n"
    import docker as dockerpy

    client = dockerpy.DockerClient(base_url=daemon.host)
    try:
        c = client.containers.run("busybox", ["sleep", "1000"], detach=True, tty=True,
                                  runtime="runc", cgroup_parent=CGROUP_PARENT)
        removing.append(c.id)
        c.resize(height=33, width=101)
        assert docker(daemon, "exec", c.id, "stty", "-F", "/dev/console", "size").stdout == "33 101\n"
    finally:
        client.close()


@needs_runc
def test_rm_force_paused(daemon: Daemon, removing: list[str]) -> None:
    cid = run(daemon, "-d", "--runtime", "runc", "busybox", "sleep", "1000").stdout.strip()
    removing.append(cid)
    docker(daemon, "pause", cid)
    docker(daemon, "rm", "-f", cid)
    assert leftovers(daemon, "runc") == []


@needs_runc
def test_stdin(daemon: Daemon, removing: list[str]) -> None:
    import docker as dockerpy

    client = dockerpy.DockerClient(base_url=daemon.host)
    try:
        c = client.containers.run("busybox", ["sh", "-c", "read line; echo got $line"], detach=True,
                                  stdin_open=True, runtime="runc", cgroup_parent=CGROUP_PARENT)
        removing.append(c.id)
        sock = c.attach_socket(params={"stdin": 1, "stream": 1})
        sock._sock.sendall(b"hello\n")
        sock._sock.close()
        assert c.wait(timeout=20)["StatusCode"] == 0
        assert c.logs() == b"got hello\n"
    finally:
        client.close()


def test_default_runtime_is_ours(daemon: Daemon, removing: list[str]) -> None:
    cid = run(daemon, "-d", "busybox", "true").stdout.strip()
    removing.append(cid)
    assert inspect(daemon, cid)["HostConfig"]["Runtime"] == "dockyard"
    docker(daemon, "wait", cid)
    assert cid not in leftovers(daemon, "runc")


def test_info_lists_runtimes(daemon: Daemon) -> None:
    import docker as dockerpy

    client = dockerpy.DockerClient(base_url=daemon.host)
    try:
        info = client.info()
    finally:
        client.close()
    assert info["DefaultRuntime"] == "dockyard"
    assert info["Runtimes"]["runc"] == {"path": "runc"}
    assert info["Runtimes"]["io.containerd.runc.v2"] == {"path": "runc"}
    assert "dockyard" in info["Runtimes"]
    if CRUN:
        assert info["Runtimes"]["crun"] == {"path": "crun"}
    out = docker(daemon, "info").stdout
    assert "Default Runtime: dockyard" in out and "runc" in out


def test_unknown_runtime(daemon: Daemon) -> None:
    import docker as dockerpy

    before = docker(daemon, "ps", "-aq").stdout.split()
    r = run(daemon, "--runtime", "nosuch", "busybox", "true", check=False)
    assert r.returncode == 125
    assert "unknown or invalid runtime name: nosuch" in r.stderr
    client = dockerpy.APIClient(base_url=daemon.host)
    try:
        with pytest.raises(dockerpy.errors.APIError) as e:
            client.create_container("busybox", ["true"],
                                    host_config=client.create_host_config(runtime="nosuch"))
        assert e.value.status_code == 400
        assert e.value.explanation == "unknown or invalid runtime name: nosuch"
        # Checked before the image, as dockerd does: no pull is attempted.
        with pytest.raises(dockerpy.errors.APIError) as e:
            client.create_container("no-such-image", ["true"],
                                    host_config=client.create_host_config(runtime="nosuch"))
        assert e.value.status_code == 400
    finally:
        client.close()
    assert docker(daemon, "ps", "-aq").stdout.split() == before


@needs_runc
def test_oom_killed(daemon: Daemon, removing: list[str]) -> None:
    cid = run(daemon, "-d", "--runtime", "runc", "--memory", "16m", "--memory-swap", "16m",
              "busybox", "sh", "-c", "tail /dev/zero").stdout.strip()
    removing.append(cid)
    assert docker(daemon, "wait", cid).stdout.strip() == "137"
    assert inspect(daemon, cid)["State"]["OOMKilled"] is True


@pytest.mark.skipif(CRUN is None, reason="crun is not installed")
def test_crun(daemon: Daemon, removing: list[str]) -> None:
    # Debian's crun refuses hybrid cgroup hosts: it is run where the cgroup2 mount is hidden.
    cid = run(daemon, "-d", "--runtime", "crun", "busybox", "sh", "-c",
              "echo hi; sleep 1000").stdout.strip()
    removing.append(cid)
    assert inspect(daemon, cid)["HostConfig"]["Runtime"] == "crun"
    assert runtime_state(daemon, "crun", CRUN, cid)["status"] == "running"  # type: ignore[arg-type]
    assert docker(daemon, "exec", cid, "sh", "-c", "exit 4", check=False).returncode == 4
    docker(daemon, "pause", cid)
    docker(daemon, "unpause", cid)
    docker(daemon, "kill", cid)
    assert docker(daemon, "wait", cid).stdout.strip() == "137"
    assert docker(daemon, "logs", cid).stdout == "hi\n"
    docker(daemon, "rm", cid)
    assert leftovers(daemon, "crun") == [] and cgroups_of(cid) == []

    r = run(daemon, "-d", "--runtime", "crun", "busybox", "nosuchcommand", check=False)
    cid = r.stdout.strip()
    removing.append(cid)
    # crun words it "executable file `x` not found", which the CLI does not map to 127.
    assert r.returncode in (125, 127) and "nosuchcommand" in r.stderr, r.stderr
    # crun 1.8 leaves the cgroup of a failed create: removed for it.
    assert leftovers(daemon, "crun") == [] and cgroups_of(cid) == []


# -- live restore ------------------------------------------------------------------------------

@needs_runc
def test_live_restore_after_daemon_sigkill(daemon: Daemon, removing: list[str]) -> None:
    # The container ends on a signal, not on a file an exec makes: an exec racing the
    # init's exit would be killed with the pid namespace (137), rightly.
    cid = run(daemon, "-d", "--runtime", "runc", "busybox", "sh", "-c",
              "trap 'echo bye; exit 3' USR1; while true; do sleep 0.1; done").stdout.strip()
    removing.append(cid)
    pid = inspect(daemon, cid)["State"]["Pid"]
    daemon.kill()
    daemon.start()
    info = inspect(daemon, cid)
    assert info["State"]["Running"] and info["State"]["Pid"] == pid
    assert docker(daemon, "exec", cid, "echo", "still").stdout == "still\n"
    docker(daemon, "kill", "-s", "USR1", cid)
    assert docker(daemon, "wait", cid).stdout.strip() == "3"
    assert docker(daemon, "logs", cid).stdout == "bye\n"
    docker(daemon, "rm", cid)
    assert leftovers(daemon, "runc") == []


@needs_runc
def test_readopted_by_a_new_monitor(daemon: Daemon, removing: list[str]) -> None:
    """The monitor's meta.json records the runtime: a new monitor drives the container
    through runc (its exit code is lost with the old monitor, as with ours)."""
    cid = run(daemon, "-d", "--runtime", "runc", "busybox", "sleep", "1000").stdout.strip()
    removing.append(cid)
    meta = json.loads((daemon.exec_root / "containers" / cid / "meta.json").read_text())
    assert meta["runtime"]["name"] == "runc" and os.path.isabs(meta["runtime"]["path"])
    daemon.kill()
    monitor_pid = int((daemon.exec_root / "monitor.pid").read_text())
    os.kill(monitor_pid, signal.SIGKILL)
    wait_for(lambda: process_gone(monitor_pid), what="the monitor's death")
    daemon.start()
    assert inspect(daemon, cid)["State"]["Running"]
    assert docker(daemon, "exec", cid, "echo", "still").stdout == "still\n"
    docker(daemon, "stop", "-t", "1", cid)
    assert not inspect(daemon, cid)["State"]["Running"]
    docker(daemon, "rm", cid)
    assert leftovers(daemon, "runc") == []


# -- daemon.json: default-runtime and runtimes ------------------------------------------------

@pytest.fixture(scope="module")
def runc_daemon(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A dockyardd whose daemon.json makes runc the default. It asks for DAEMON only to be
    stopped before it: that one's teardown checks the cgroup parent both share."""
    if RUNC is None:
        pytest.skip("runc is not installed")
    root = tmp_path_factory.mktemp("runc-default")
    config = root / "daemon.json"
    config.write_text(json.dumps({"default-runtime": "runc",
                                  "runtimes": {"traced": {"path": "runc",
                                                          "runtimeArgs": ["--debug"]}}}))
    d = start_daemon(root, ["--config-file", str(config)])
    try:
        yield d
    finally:
        stop_daemon(d)


def test_default_runtime_from_daemon_json(runc_daemon: Daemon, removing: list[str]) -> None:
    d = runc_daemon
    cid = run(d, "-d", "busybox", "sleep", "1000").stdout.strip()
    try:
        info = inspect(d, cid)
        assert info["HostConfig"]["Runtime"] == "runc"
        assert cid in leftovers(d, "runc")
        pid = info["State"]["Pid"]
        assert runtime_state(d, "runc", RUNC, cid)["pid"] == pid  # type: ignore[arg-type]
        # runc's init re-executes itself as the container's process: its pid 1 is sleep.
        assert open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] == b"sleep"
    finally:
        docker(d, "rm", "-f", cid, check=False)
    assert leftovers(d, "runc") == []


def test_named_runtime_from_daemon_json(runc_daemon: Daemon) -> None:
    d = runc_daemon
    r = run(d, "--runtime", "traced", "-d", "busybox", "sh", "-c", "exit 9")
    cid = r.stdout.strip()
    try:
        assert docker(d, "wait", cid).stdout.strip() == "9"
        assert inspect(d, cid)["HostConfig"]["Runtime"] == "traced"
    finally:
        docker(d, "rm", "-f", cid, check=False)
    assert leftovers(d, "traced") == []
    cid = run(d, "-d", "--runtime", "dockyard", "busybox", "sh", "-c", "exit 4").stdout.strip()
    try:
        assert docker(d, "wait", cid).stdout.strip() == "4"
    finally:
        docker(d, "rm", "-f", cid, check=False)


def test_info_of_configured_daemon(runc_daemon: Daemon) -> None:
    import docker as dockerpy

    client = dockerpy.DockerClient(base_url=runc_daemon.host)
    try:
        info = client.info()
    finally:
        client.close()
    assert info["DefaultRuntime"] == "runc"
    assert info["Runtimes"]["traced"] == {"path": "runc", "runtimeArgs": ["--debug"]}


@pytest.mark.parametrize("config, message", [
    ({"default-runtime": "nosuch"}, "specified default runtime 'nosuch' does not exist"),
    ({"runtimes": {"runc": {"path": "/bin/true"}}}, "runtime name 'runc' is reserved"),
    ({"runtimes": {"empty": {}}}, "runtime empty: a path is required"),
])
def test_bad_runtime_config_stops_the_daemon(tmp_path: Path, config: dict, message: str) -> None:
    (tmp_path / "daemon.json").write_text(json.dumps(config))
    sock = tmp_path / "d.sock"
    r = subprocess.run([sys.executable, "-m", "dockyard.daemon.main", "-H", f"unix://{sock}",
                        "--data-root", str(tmp_path / "data"), "--exec-root", str(tmp_path / "exec"),
                        "--config-file", str(tmp_path / "daemon.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert message in r.stderr
    assert not sock.exists()
    assert not (tmp_path / "exec" / "monitor.pid").exists()
