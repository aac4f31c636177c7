"""Restart policies, restart, pause/unpause, rename, prune, --init, rmi of images in use,
info/df counts and container events: judged by the docker CLI and docker-py against a
real dockyardd."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator

import pytest

from engine_daemon import DOCKER, daemon, docker, run  # noqa: F401 (daemon: fixture)


@pytest.fixture(autouse=True)
def _clean(daemon) -> Iterator[None]:
    yield
    ids = docker(daemon, "ps", "-aq", check=False).stdout.split()
    if ids:
        docker(daemon, "rm", "-f", *ids, check=False)


def poll(fn: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def state(d, ref: str, fmt: str) -> str:
    return docker(d, "inspect", "-f", fmt, ref).stdout.strip()


def holds(fn: Callable[[], bool], seconds: float) -> bool:
    """FN stays true for SECONDS (a negative check bounded by a deadline)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not fn():
            return False
        time.sleep(0.05)
    return True


# -- restart policies ------------------------------------------------------------------

def test_on_failure_restarts_up_to_the_limit(daemon):
    run(daemon, "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox",
        "sh", "-c", "exit 3")
    poll(lambda: state(daemon, "flaky", "{{.RestartCount}} {{.State.Status}}") == "2 exited",
         what="two restarts then exited")
    assert state(daemon, "flaky", "{{.State.ExitCode}} {{.State.Restarting}}") == "3 false"
    # Success is not a failure: no restart.
    run(daemon, "-d", "--name", "fine", "--restart", "on-failure", "busybox", "true")
    poll(lambda: state(daemon, "fine", "{{.State.Status}}") == "exited")
    assert holds(lambda: state(daemon, "fine", "{{.RestartCount}}") == "0", 0.5)


def test_always_restarts_until_stopped(daemon):
    run(daemon, "-d", "--name", "loop", "--restart", "always", "busybox", "sh", "-c", "exit 1")
    poll(lambda: int(state(daemon, "loop", "{{.RestartCount}}")) >= 2, what="restarts")
    docker(daemon, "stop", "-t", "1", "loop")
    poll(lambda: state(daemon, "loop", "{{.State.Status}}") == "exited")
    count = state(daemon, "loop", "{{.RestartCount}}")
    # The back-off is well under a second at this point: a restart would show.
    assert holds(lambda: state(daemon, "loop", "{{.State.Status}} {{.RestartCount}}")
                 == f"exited {count}", 1.0)


def test_restarting_container_can_be_removed(daemon):
    run(daemon, "-d", "--name", "crash", "--restart", "always", "busybox", "sh", "-c",
        "sleep 0.2; exit 1")
    poll(lambda: int(state(daemon, "crash", "{{.RestartCount}}")) >= 1)
    r = docker(daemon, "rm", "crash", check=False)
    assert r.returncode == 1 and "Stop the container before attempting removal" in r.stderr
    docker(daemon, "rm", "-f", "crash")
    assert docker(daemon, "ps", "-aq").stdout.strip() == ""


def test_bad_restart_policies_are_refused(daemon):
    r = docker(daemon, "create", "--restart", "sometimes", "busybox", check=False)
    assert r.returncode != 0 and "invalid restart policy" in r.stderr, r.stderr
    import docker as docker_py

    client = docker_py.DockerClient(base_url=daemon.host)
    try:
        with pytest.raises(docker_py.errors.APIError) as e:
            client.api.create_container("busybox", "true", host_config=client.api.create_host_config(
                restart_policy={"Name": "no", "MaximumRetryCount": 2}))
        assert e.value.status_code == 400
        assert "maximum retry count can only be used with 'on-failure'" in str(e.value)
        with pytest.raises(docker_py.errors.APIError) as e:
            client.api.create_container("busybox", "true", host_config=client.api.create_host_config(
                restart_policy={"Name": "on-failure", "MaximumRetryCount": -1}))
        assert e.value.status_code == 400 and "cannot be negative" in str(e.value)
        with pytest.raises(docker_py.errors.APIError) as e:
            client.api.create_container("busybox", "true", host_config=client.api.create_host_config(
                auto_remove=True, restart_policy={"Name": "always"}))
        assert e.value.status_code == 400
        assert "can't create 'AutoRemove' container with restart policy" in str(e.value)
        with pytest.raises(docker_py.errors.APIError) as e:
            client.api.create_container("busybox", "true", host_config=client.api.create_host_config(
                restart_policy={"Name": "sometimes"}))
        assert e.value.status_code == 400 and "unknown policy 'sometimes'" in str(e.value)
    finally:
        client.close()
    assert docker(daemon, "ps", "-aq").stdout.strip() == ""


def test_policies_after_a_daemon_restart(daemon):
    run(daemon, "-d", "--name", "always-stopped", "--restart", "always", "busybox", "sleep", "300")
    run(daemon, "-d", "--name", "unless", "--restart", "unless-stopped", "busybox", "sleep", "300")
    run(daemon, "-d", "--name", "alive", "--restart", "always", "busybox", "sleep", "300")
    docker(daemon, "stop", "-t", "0", "always-stopped", "unless")
    pid = state(daemon, "alive", "{{.State.Pid}}")
    daemon.kill()
    daemon.start()
    # Kept running through the daemon's death: the same process.
    assert state(daemon, "alive", "{{.State.Running}} {{.State.Pid}}") == f"true {pid}"
    # "always" comes back when the daemon starts even after `docker stop`; "unless-stopped"
    # does not.
    poll(lambda: state(daemon, "always-stopped", "{{.State.Status}}") == "running",
         what="always container restarted by the daemon")
    assert state(daemon, "unless", "{{.State.Status}}") == "exited"


# -- restart, pause, rename ------------------------------------------------------------

def test_restart_pause_unpause(daemon):
    cid = run(daemon, "-d", "--name", "pz", "busybox", "sleep", "300").stdout.strip()
    started = state(daemon, "pz", "{{.State.StartedAt}}")
    docker(daemon, "restart", "-t", "0", "pz")
    assert state(daemon, "pz", "{{.State.Running}}") == "true"
    assert state(daemon, "pz", "{{.State.StartedAt}}") != started
    docker(daemon, "pause", "pz")
    assert state(daemon, "pz", "{{.State.Status}} {{.State.Paused}}") == "paused true"
    assert "(Paused)" in docker(daemon, "ps", "--filter", "name=pz").stdout
    freezer = [line for line in open(f"/proc/{state(daemon, 'pz', '{{.State.Pid}}')}/status")
               if line.startswith("State:")]
    assert freezer  # the process still exists while frozen
    r = docker(daemon, "pause", "pz", check=False)
    assert r.returncode == 1 and f"Container {cid} is already paused" in r.stderr
    r = docker(daemon, "exec", "pz", "true", check=False)
    assert r.returncode != 0 and "is paused" in r.stderr
    counts = docker(daemon, "info", "-f", "{{.ContainersPaused}}").stdout.strip()
    assert counts == "1"
    docker(daemon, "unpause", "pz")
    assert state(daemon, "pz", "{{.State.Status}}") == "running"
    r = docker(daemon, "unpause", "pz", check=False)
    assert r.returncode == 1 and f"Container {cid} is not paused" in r.stderr
    # A paused container stops (it is thawed to act on its signal).
    docker(daemon, "pause", "pz")
    docker(daemon, "stop", "-t", "1", "pz")
    assert state(daemon, "pz", "{{.State.Status}} {{.State.Paused}}") == "exited false"
    r = docker(daemon, "pause", "pz", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr
    r = docker(daemon, "pause", "nosuch", check=False)
    assert r.returncode == 1 and "No such container: nosuch" in r.stderr


def test_rename(daemon):
    cid = docker(daemon, "create", "--name", "old", "busybox", "true").stdout.strip()
    docker(daemon, "create", "--name", "taken", "busybox", "true")
    since = str(time.time() - 1)
    docker(daemon, "rename", "old", "new")
    assert state(daemon, cid, "{{.Name}}") == "/new"
    r = docker(daemon, "inspect", "old", check=False)
    assert r.returncode == 1
    r = docker(daemon, "rename", "new", "taken", check=False)
    assert r.returncode == 1 and "is already in use" in r.stderr
    r = docker(daemon, "rename", "new", "new", check=False)
    assert r.returncode == 1 and "same name as its current name" in r.stderr
    r = docker(daemon, "rename", "new", "bad name!", check=False)
    assert r.returncode == 1 and "Invalid container name" in r.stderr
    events = docker(daemon, "events", "--since", since, "--until", str(time.time()),
                    "--filter", "event=rename", "--format", "{{json .}}").stdout.splitlines()
    assert events and json.loads(events[0])["Actor"]["Attributes"]["oldName"] == "/old"


# -- prune, rmi, counts ------------------------------------------------------------------

def test_container_prune_and_counts(daemon):
    run(daemon, "-d", "--name", "runner", "busybox", "sleep", "300")
    docker(daemon, "create", "--name", "keep", "--label", "keep=1", "busybox", "true")
    done = run(daemon, "--name", "done", "busybox", "sh", "-c", "echo x > /file").returncode
    assert done == 0
    info = docker(daemon, "info", "-f",
                  "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}").stdout.strip()
    assert info == "3 1 2"
    df = docker(daemon, "system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}")
    assert "Containers 3 1" in df.stdout
    r = docker(daemon, "container", "prune", "-f", "--filter", "label!=keep")
    assert "Total reclaimed space" in r.stdout
    left = set(docker(daemon, "ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert left == {"runner", "keep"}
    r = docker(daemon, "container", "prune", "-f", "--filter", "nonsense=1", check=False)
    assert r.returncode == 1 and "invalid filter 'nonsense'" in r.stderr
    docker(daemon, "system", "prune", "-f")
    assert set(docker(daemon, "ps", "-a", "--format", "{{.Names}}").stdout.split()) == {"runner"}


def test_rmi_refuses_images_in_use(daemon):
    env = dict(os.environ, DOCKER_HOST=daemon.host)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    subprocess.run([DOCKER, "import", "-", "solo:1"], input=buf.getvalue(), env=env,
                   check=True, capture_output=True)
    image_id = state(daemon, "solo:1", "{{.Id}}")
    cid = docker(daemon, "create", "--name", "user", "solo:1", "true").stdout.strip()
    r = docker(daemon, "rmi", "solo:1", check=False)
    assert r.returncode == 1 and f"container {cid[:12]} is using its referenced image" in r.stderr
    r = docker(daemon, "rmi", image_id, check=False)
    assert r.returncode == 1 and "conflict: unable to delete" in r.stderr
    assert f"image is being used by stopped container {cid[:12]}" in r.stderr
    assert docker(daemon, "image", "inspect", "solo:1", check=False).returncode == 0
    docker(daemon, "rm", "user")
    docker(daemon, "rmi", "solo:1")
    # A running container's image cannot go, even forced.
    run(daemon, "-d", "--name", "running-user", "busybox", "sleep", "300")
    busybox = state(daemon, "busybox", "{{.Id}}")
    r = docker(daemon, "rmi", "-f", busybox, check=False)
    assert r.returncode == 1 and "cannot be forced" in r.stderr
    assert "image is being used by running container" in r.stderr
    docker(daemon, "image", "prune", "-af")
    assert docker(daemon, "image", "inspect", "busybox", check=False).returncode == 0


# -- init --------------------------------------------------------------------------------

def test_init_reaps_as_pid_1(daemon):
    r = run(daemon, "--rm", "--init", "busybox", "sh", "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; sleep 0.1 & exit 4", check=False)
    assert r.returncode == 4
    assert r.stdout.startswith("/sbin/docker-init -- sh -c")
    assert state(daemon, "busybox", "{{.Id}}")  # the image is still there


# -- events -------------------------------------------------------------------------------

def test_container_events_with_filters(daemon):
    since = str(time.time() - 1)
    run(daemon, "--name", "ev", "busybox", "true")
    docker(daemon, "rm", "ev")
    until = str(time.time() + 1)
    out = docker(daemon, "events", "--since", since, "--until", until, "--filter",
                 "container=ev", "--format", "{{.Action}}").stdout.split()
    for action in ("create", "attach", "start", "die", "destroy"):
        if action == "attach":
            continue  # dockerd reports attaches; the order around it is what matters
        assert action in out, out
    assert out.index("create") < out.index("start") < out.index("die") < out.index("destroy")
    only = docker(daemon, "events", "--since", since, "--until", until, "--filter",
                  "event=die", "--filter", "type=container", "--format", "{{.Action}}")
    assert set(only.stdout.split()) == {"die"}
    r = docker(daemon, "events", "--since", until, "--until", since, check=False)
    assert r.returncode != 0 and "cannot be after" in r.stderr


# -- logs -f, OOM --------------------------------------------------------------------------

def test_logs_follow_streams_until_exit(daemon, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    run(daemon, "-d", "--name", "talker", "-v", f"{gate}:/gate", "busybox", "sh", "-c",
        "echo first; while [ ! -e /gate/go ]; do sleep 0.05; done; echo second >&2; exit 2")
    env = dict(os.environ, DOCKER_HOST=daemon.host)
    follow = subprocess.Popen([DOCKER, "logs", "-f", "-t", "talker"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = follow.stdout.readline()  # type: ignore[union-attr]
        assert line.rstrip().endswith(" first"), line  # -t: an RFC 3339 time first
        assert follow.poll() is None  # still following
        (gate / "go").touch()
        out, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert out == "" and err.rstrip().endswith(" second")
    assert follow.returncode == 0


def test_oom_kill_is_reported(daemon):
    r = run(daemon, "--name", "hog", "-m", "8m", "--memory-swap", "8m", "busybox", "sh", "-c",
            "x=a; while true; do x=$x$x; done", check=False)
    assert r.returncode == 137
    assert state(daemon, "hog", "{{.State.OOMKilled}} {{.State.ExitCode}}") == "true 137"


def test_json_file_rotation_through_log_opts(daemon):
    run(daemon, "--name", "chatty", "--log-opt", "max-size=1k", "--log-opt", "max-file=2",
        "busybox", "sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done")
    path = state(daemon, "chatty", "{{.LogPath}}")
    files = sorted(p for p in os.listdir(os.path.dirname(path))
                   if p.startswith(os.path.basename(path)))
    assert files == [os.path.basename(path), os.path.basename(path) + ".1"], files
    assert all(os.path.getsize(os.path.join(os.path.dirname(path), f)) <= 1024 + 200
               for f in files)
    out = docker(daemon, "logs", "chatty").stdout.split()
    assert out[-1] == "line-199" and "line-0" not in out  # the oldest rotated away
    r = docker(daemon, "create", "--log-opt", "max-size=lots", "busybox", check=False)
    assert r.returncode != 0 and "invalid size: 'lots'" in r.stderr
    r = docker(daemon, "create", "--log-opt", "colour=blue", "busybox", check=False)
    assert r.returncode != 0 and "unknown log opt 'colour' for json-file log driver" in r.stderr
    r = docker(daemon, "create", "--log-driver", "syslogish", "busybox", check=False)
    assert r.returncode != 0 and "no log driver named 'syslogish'" in r.stderr


def test_log_driver_none(daemon):
    run(daemon, "--name", "silent", "--log-driver", "none", "busybox", "echo", "hidden")
    r = docker(daemon, "logs", "silent", check=False)
    assert r.returncode != 0
    assert "configured logging driver does not support reading" in r.stderr
