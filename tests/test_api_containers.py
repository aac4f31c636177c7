"""dockyardd's container endpoints, judged by the docker CLI and docker-py against a
real daemon on a temporary socket, with busybox loaded from the shared OCI layout."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from engine_daemon import CGROUP_PARENT, DOCKER, daemon, docker, run  # noqa: F401 (daemon: fixture)


def test_run_foreground_prints_and_propagates_exit(daemon):
    assert run(daemon, "--rm", "busybox", "echo", "hi").stdout == "hi\n"
    r = run(daemon, "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert r.returncode == 3
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert docker(daemon, "ps", "-aq").stdout.strip() == ""


def test_create_start_wait_logs_inspect_rm(daemon):
    cid = docker(daemon, "create", "--cgroup-parent", CGROUP_PARENT, "--name", "c1", "busybox",
                 "sh", "-c", "echo one; echo two >&2; exit 5").stdout.strip()
    assert docker(daemon, "inspect", "-f", "{{.State.Status}}", "c1").stdout.strip() == "created"
    r = docker(daemon, "create", "--name", "c1", "busybox", check=False)
    assert r.returncode != 0 and "is already in use by container" in r.stderr
    docker(daemon, "start", "c1")
    assert docker(daemon, "wait", "c1").stdout.strip() == "5"
    logs = docker(daemon, "logs", "c1")
    assert logs.stdout == "one\n" and logs.stderr == "two\n"
    assert docker(daemon, "logs", "--tail", "0", "c1").stdout == ""
    state = docker(daemon, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid)
    assert state.stdout.strip() == "exited 5"
    assert "Exited (5)" in docker(daemon, "ps", "-a", "--filter", "name=c1").stdout
    docker(daemon, "rm", "c1")
    r = docker(daemon, "inspect", "c1", check=False)
    assert r.returncode != 0 and "No such" in r.stderr


def test_detached_stop_kill_rm(daemon):
    cid = run(daemon, "-d", "--name", "sleeper", "busybox", "sleep", "100").stdout.strip()
    assert cid[:12] in docker(daemon, "ps", "-q").stdout
    r = docker(daemon, "rm", "sleeper", check=False)
    assert r.returncode != 0 and "You cannot remove a running container" in r.stderr
    t0 = time.monotonic()
    docker(daemon, "stop", "-t", "1", "sleeper")  # sleep ignores SIGTERM as pid 1
    assert time.monotonic() - t0 < 8
    assert docker(daemon, "inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "137"
    docker(daemon, "start", "sleeper")
    docker(daemon, "kill", "sleeper")
    assert docker(daemon, "wait", "sleeper").stdout.strip() == "137"
    docker(daemon, "start", "sleeper")
    docker(daemon, "rm", "-f", "sleeper")
    assert docker(daemon, "ps", "-aq").stdout.strip() == ""
    r = docker(daemon, "start", "nosuch", check=False)
    assert "No such container: nosuch" in r.stderr


def test_sdk(daemon):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=daemon.host)
    try:
        out = client.containers.run("busybox", ["echo", "hello"], remove=True,
                                    cgroup_parent=CGROUP_PARENT)
        assert out == b"hello\n"
        c = client.containers.run("busybox", ["sh", "-c", "echo x; exit 2"], detach=True,
                                  cgroup_parent=CGROUP_PARENT)
        assert c.wait() == {"StatusCode": 2, "Error": None}
        assert c.logs() == b"x\n"
        c.reload()
        assert c.status == "exited"
        c.remove(force=True)
        with pytest.raises(docker_sdk.errors.NotFound):
            client.containers.get(c.id)
    finally:
        client.close()



def test_many_blocked_waits_do_not_stall_the_daemon(daemon):
    """Each `docker wait` holds a worker thread until its container exits: more of them
    than asyncio's default pool must not stall other requests."""
    ids = [docker(daemon, "run", "-d", "busybox", "sleep", "1000").stdout.strip()
           for _ in range(8)]
    env = dict(os.environ, DOCKER_HOST=daemon.host)
    waits = [subprocess.Popen([DOCKER, "wait", cid], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for cid in ids]
    try:
        # The waits are in; a new container must still start promptly.
        out = docker(daemon, "run", "--rm", "busybox", "echo", "still-served", timeout=30)
        assert out.stdout == "still-served\n"
    finally:
        docker(daemon, "rm", "-f", *ids, check=False)
        for w in waits:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

def test_live_restore(daemon):
    cid = run(daemon, "-d", "busybox", "sh", "-c", "sleep 3; exit 7").stdout.strip()
    daemon.kill()
    daemon.start()
    assert cid[:12] in docker(daemon, "ps", "-q").stdout
    assert docker(daemon, "wait", cid).stdout.strip() == "7"
    assert "Exited (7)" in docker(daemon, "ps", "-a").stdout
    # Exited while the daemon was down: the exit code is picked up at start.
    cid2 = run(daemon, "-d", "busybox", "sh", "-c", "sleep 1; exit 4").stdout.strip()
    daemon.kill()
    time.sleep(2)
    daemon.start()
    assert docker(daemon, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                  cid2).stdout.strip() == "exited 4"
    docker(daemon, "rm", cid, cid2)
