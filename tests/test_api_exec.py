"""dockyardd's exec endpoints, judged by the docker CLI and docker-py against a real
daemon on a temporary socket, with busybox loaded from the shared OCI layout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from engine_daemon import Daemon, daemon, docker, run  # noqa: F401 (daemon: fixture)



@pytest.fixture(scope="module")
def ctr(daemon: Daemon) -> Iterator[str]:
    cid = run(daemon, "-d", "busybox", "sleep", "1000").stdout.strip()
    try:
        yield cid
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_exec_prints_output(daemon, ctr):
    assert docker(daemon, "exec", ctr, "echo", "hi").stdout == "hi\n"
    r = docker(daemon, "exec", ctr, "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and r.stderr == "err\n"


def test_exec_exit_code(daemon, ctr):
    assert docker(daemon, "exec", ctr, "sh", "-c", "exit 7", check=False).returncode == 7


def test_exec_env_and_workdir(daemon, ctr):
    r = docker(daemon, "exec", "-e", "FOO=bar", "-w", "/tmp", ctr, "sh", "-c", "echo $FOO; pwd")
    assert r.stdout == "bar\n/tmp\n"


def test_exec_user(daemon, ctr):
    assert docker(daemon, "exec", "-u", "1000", ctr, "id", "-u").stdout == "1000\n"
    assert docker(daemon, "exec", ctr, "id", "-u").stdout == "0\n"


def test_exec_tty(daemon, ctr):
    r = docker(daemon, "exec", "-t", ctr, "echo", "hi")
    assert r.stdout.replace("\r", "") == "hi\n"


def test_exec_detached(daemon, ctr):
    t0 = time.monotonic()
    docker(daemon, "exec", "-d", ctr, "sleep", "5")
    assert time.monotonic() - t0 < 3


def test_exec_stopped_container(daemon):
    cid = docker(daemon, "create", "busybox", "true").stdout.strip()
    try:
        r = docker(daemon, "exec", cid, "echo", "hi", check=False)
        assert r.returncode != 0 and "is not running" in r.stderr
        r = docker(daemon, "exec", "nosuch", "echo", "hi", check=False)
        assert r.returncode != 0 and "No such container" in r.stderr
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_exec_sdk(daemon, ctr):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=daemon.host)
    try:
        c = client.containers.get(ctr)
        assert tuple(c.exec_run("echo hi")) == (0, b"hi\n")
        assert c.exec_run(["sh", "-c", "exit 3"]).exit_code == 3
        api = client.api
        eid = api.exec_create(ctr, ["sleep", "2"])["Id"]
        info = api.exec_inspect(eid)
        assert info["Running"] is False and info["ExitCode"] is None
        assert info["ProcessConfig"]["entrypoint"] == "sleep"
        assert info["ProcessConfig"]["arguments"] == ["2"]
        assert info["ContainerID"] == c.id
        api.exec_start(eid, detach=True)
        info = api.exec_inspect(eid)
        assert info["Running"] is True and info["Pid"] > 0
        deadline = time.monotonic() + 10
        while api.exec_inspect(eid)["Running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        info = api.exec_inspect(eid)
        assert info["Running"] is False and info["ExitCode"] == 0
        with pytest.raises(docker_sdk.errors.NotFound):
            api.exec_inspect("nosuch")
    finally:
        client.close()


def test_finished_execs_are_forgotten_by_the_monitor(daemon):
    """A long-running container with many execs (health probes) must not make the
    monitor grow: each exec is released once its exit code is recorded."""
    from dockyard.daemon.monitor import MonitorClient

    cid = run(daemon, "-d", "busybox", "sleep", "1000").stdout.strip()
    try:
        for _ in range(5):
            docker(daemon, "exec", cid, "true")
        with MonitorClient(daemon.exec_root) as mon:
            deadline = time.monotonic() + 10
            while mon.state(cid)["execs"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mon.state(cid)["execs"] == 0
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_exec_of_a_missing_command_exits_127(daemon, ctr):
    r = docker(daemon, "exec", ctr, "/no/such/thing", check=False)
    assert r.returncode == 127, (r.returncode, r.stdout, r.stderr)
    assert "no such file or directory" in (r.stdout + r.stderr).lower() or \
        "not found" in (r.stdout + r.stderr).lower()
