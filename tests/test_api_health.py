"""Health checks (HEALTHCHECK, --health-*), judged by the docker CLI and docker-py against
a real dockyardd: states, the probe log, events, docker ps, a daemon restart, bad input."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dockyard.daemon import health
from dockyard.image.store import parse_go_time
from conftest import wait_for
from engine_daemon import MUSL, Daemon, daemon, docker, run  # noqa: F401 (daemon: fixture)

# Seconds to wait for what takes a few probe intervals.
PROBES = 30.0


def state_health(d: Daemon, cid: str) -> dict[str, Any] | None:
    out = docker(d, "inspect", "-f", "{{json .State.Health}}", cid).stdout.strip()
    return json.loads(out)


def status(d: Daemon, cid: str) -> str | None:
    h = state_health(d, cid)
    return None if h is None else h["Status"]


@contextmanager
def container(d: Daemon, *args: str) -> Iterator[str]:
    cid = ""
    try:
        cid = run(d, "-d", *args).stdout.strip()
        yield cid
    finally:
        if cid:
            docker(d, "rm", "-f", cid, check=False)


def ns_of(text: str) -> int:
    t = parse_go_time(text)
    assert t is not None, text
    return t.seconds * 1_000_000_000 + t.nanos


def probes_in(d: Daemon, cid: str, cmdline: bytes) -> list[int]:
    """The pids of the processes of container CID whose command line is CMDLINE."""
    pid = int(docker(d, "inspect", "-f", "{{.State.Pid}}", cid).stdout)
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() == cmdline and \
                    os.readlink(entry / "ns" / "pid") == ns:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def container_events(d: Daemon, cid: str, since: float) -> list[str]:
    out = docker(d, "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 0.001:.3f}",
                 "--filter", f"container={cid}", "--format", "{{.Action}}").stdout
    return out.splitlines()


# -- the units that need no daemon ---------------------------------------------------------

def test_go_duration():
    assert [health.go_duration(n) for n in (0, 999, 1500, 1_000_000, 200_000_000,
                                            1_500_000_000, 30 * 10**9, 90 * 10**9,
                                            3600 * 10**9, -10_000_000)] == \
        ["0s", "999ns", "1.5µs", "1ms", "200ms", "1.5s", "30s", "1m30s", "1h0m0s", "-10ms"]


def test_merge_with_image():
    image = {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5, "Retries": 7}}
    cfg: dict[str, Any] = {}
    health.merge_config(cfg, image)
    assert cfg["Healthcheck"] == image["Healthcheck"]
    cfg = {"Healthcheck": {"Retries": 2}}
    health.merge_config(cfg, image)
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5, "Retries": 2}
    cfg = {"Healthcheck": {"Test": ["NONE"]}}
    health.merge_config(cfg, image)
    assert cfg["Healthcheck"]["Test"] == ["NONE"]
    assert health.HealthConfig.of(cfg) is None
    cfg = {"Healthcheck": None}
    health.merge_config(cfg, {})
    assert "Healthcheck" not in cfg


def test_state_machine():
    hc = health.HealthConfig.of({"Healthcheck": {"Test": ["CMD", "x"], "Retries": 2,
                                                 "StartPeriod": 10**9}})
    assert hc is not None and hc.command == ["x"] and hc.interval_ns == 30 * 10**9
    h: dict[str, Any] = {"Status": "starting", "FailingStreak": 0, "Log": None}
    # Failures inside the start period do not count.
    h = health.next_health(h, health.ProbeResult(100, 200, 1, "no"), hc, started_ns=0)
    assert (h["Status"], h["FailingStreak"]) == ("starting", 0)
    late = 2 * 10**9
    h = health.next_health(h, health.ProbeResult(late, late, 1, "no"), hc, started_ns=0)
    assert (h["Status"], h["FailingStreak"]) == ("starting", 1)
    h = health.next_health(h, health.ProbeResult(late, late, 1, "no"), hc, started_ns=0)
    assert (h["Status"], h["FailingStreak"]) == ("unhealthy", 2)
    h = health.next_health(h, health.ProbeResult(late, late, 0, "ok"), hc, started_ns=0)
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 0)
    for _ in range(10):
        h = health.next_health(h, health.ProbeResult(late, late, 0, "ok"), hc, started_ns=0)
    assert len(h["Log"]) == 5


# -- against the daemon --------------------------------------------------------------------

def test_unhealthy_then_healthy(daemon):
    t0 = time.time()
    with container(daemon, "--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms",
                   "--health-retries", "2", "busybox", "sleep", "300") as cid:
        assert status(daemon, cid) in ("starting", "unhealthy")
        h = wait_for(lambda: (s := state_health(daemon, cid)) and s["Status"] == "unhealthy"
                     and s, PROBES, what="unhealthy")
        assert h["FailingStreak"] >= 2
        assert all(e["ExitCode"] == 1 for e in h["Log"])
        cfg = json.loads(docker(daemon, "inspect", "-f", "{{json .Config.Healthcheck}}",
                                cid).stdout)
        assert cfg == {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 200_000_000,
                       "Retries": 2}
        assert "(unhealthy)" in docker(daemon, "ps", "--filter", f"id={cid}").stdout

        docker(daemon, "exec", cid, "touch", "/tmp/ok")
        h = wait_for(lambda: (s := state_health(daemon, cid)) and s["Status"] == "healthy"
                     and s, PROBES, what="healthy")
        assert h["FailingStreak"] == 0
        assert 1 <= len(h["Log"]) <= 5
        last = h["Log"][-1]
        assert set(last) == {"Start", "End", "ExitCode", "Output"}
        assert last["ExitCode"] == 0 and last["Output"] == ""
        assert ns_of(last["Start"]) <= ns_of(last["End"])
        assert "." in last["Start"]  # RFC 3339 with nanoseconds
        ps = docker(daemon, "ps", "--filter", f"id={cid}", "--format", "{{.Status}}").stdout
        assert ps.strip().endswith("(healthy)")
        assert docker(daemon, "ps", "-q", "--filter", "health=healthy").stdout.split() == \
            [cid[:12]]

        actions = container_events(daemon, cid, t0)
        assert "health_status: unhealthy" in actions
        assert "health_status: healthy" in actions
        assert actions.index("health_status: unhealthy") < actions.index("health_status: healthy")
        # Each probe is an exec, with its events, as in dockerd.
        assert "exec_create: /bin/sh -c test -e /tmp/ok" in actions
        assert "exec_start: /bin/sh -c test -e /tmp/ok" in actions
        assert "exec_die" in actions


def test_pause_stops_the_probes(daemon):
    """As dockerd: a paused container is not probed and counts as unhealthy; unpaused,
    it is probed again and turns healthy with the next probe."""
    with container(daemon, "--health-cmd", "true", "--health-interval", "100ms",
                   "busybox", "sleep", "300") as cid:
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy")
        docker(daemon, "pause", cid)
        assert status(daemon, cid) == "unhealthy"
        logged = len(state_health(daemon, cid)["Log"] or [])
        ends = [e["End"] for e in state_health(daemon, cid)["Log"]]
        docker(daemon, "unpause", cid)
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy again")
        assert logged >= 1 and [e["End"] for e in state_health(daemon, cid)["Log"]] != ends


def test_stop_and_start_again(daemon):
    with container(daemon, "--health-cmd", "true", "--health-interval", "100ms",
                   "busybox", "sleep", "300") as cid:
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy")
        docker(daemon, "stop", "-t", "0", cid)
        # dockerd marks it unhealthy when the checks stop (here just after the exit is
        # recorded, from the exit observer).
        h = wait_for(lambda: (s := state_health(daemon, cid)) and s["Status"] == "unhealthy"
                     and s, PROBES, what="unhealthy once stopped")
        logged = len(h["Log"])
        assert "health" not in docker(daemon, "ps", "-a", "--filter", f"id={cid}",
                                      "--format", "{{.Status}}").stdout
        docker(daemon, "start", cid)
        h = state_health(daemon, cid)
        assert h is not None and h["Status"] in ("starting", "healthy")
        assert len(h["Log"]) >= logged  # the log is kept across the restart
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy again")


def test_cmd_form_env_user_and_output_cap(daemon):
    sdk = pytest.importorskip("docker")
    client = sdk.DockerClient(base_url=daemon.host)
    c = None
    try:
        probe = 'test "$FOO" = bar && test "$(id -u)" = 1000 && head -c 5000 /dev/zero | tr "\\0" a'
        c = client.containers.run(
            "busybox", ["sleep", "300"], detach=True, environment={"FOO": "bar"}, user="1000",
            healthcheck={"test": ["CMD", "sh", "-c", probe], "interval": 100_000_000})
        wait_for(lambda: c.reload() or c.health == "healthy", PROBES,
                 what="healthy through docker-py")
        out = c.attrs["State"]["Health"]["Log"][-1]["Output"]
        assert out == "a" * 4096 + "..."
        assert c.attrs["Config"]["Healthcheck"]["Test"][:2] == ["CMD", "sh"]
    finally:
        if c is not None:
            c.remove(force=True)
        client.close()


def test_timeout_kills_the_probe(daemon):
    with container(daemon, "--health-cmd", "echo started; sleep 30", "--health-timeout",
                   "300ms", "--health-interval", "200ms", "--health-retries", "1",
                   "busybox", "sleep", "300") as cid:
        h = wait_for(lambda: (s := state_health(daemon, cid)) and s["Status"] == "unhealthy"
                     and s, PROBES, what="unhealthy after a timeout")
        entry = h["Log"][-1]
        assert entry["ExitCode"] == -1
        assert entry["Output"] == "Health check exceeded timeout (300ms): started\n"
        # Killed at the timeout, not waited for.
        assert ns_of(entry["End"]) - ns_of(entry["Start"]) < 5 * 10**9
        # The killed probes do not pile up: at most the one running now is left.
        wait_for(lambda: len(state_health(daemon, cid)["Log"]) >= 3, PROBES, what="more probes")
        assert len(probes_in(daemon, cid, b"sleep\x0030\x00")) <= 1


def test_start_period(daemon):
    with container(daemon, "--health-cmd", "false", "--health-interval", "100ms",
                   "--health-retries", "1", "--health-start-period", "30s",
                   "--health-start-interval", "100ms", "busybox", "sleep", "300") as cid:
        h = wait_for(lambda: (s := state_health(daemon, cid)) and len(s["Log"] or []) >= 3
                     and s, PROBES, what="failures in the start period")
        assert h["Status"] == "starting" and h["FailingStreak"] == 0
        assert "health: starting" in docker(daemon, "ps", "--filter", f"id={cid}").stdout


@pytest.fixture(scope="module")
def healthy_image(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """busybox's rootfs imported with a HEALTHCHECK."""
    index = json.loads((MUSL / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((MUSL / "blobs" / "sha256" / manifest_digest).read_text())
    layer = MUSL / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":", 1)[1]
    tar = tmp_path_factory.mktemp("health") / "rootfs.tar"
    with gzip.open(layer) as src:
        tar.write_bytes(src.read())
    name = "dockyard-test/healthy:latest"
    docker(daemon, "import", "--change", "HEALTHCHECK --interval=100ms --retries=4 CMD true",
           str(tar), name)
    try:
        yield name
    finally:
        docker(daemon, "rmi", "-f", name, check=False)


def test_image_healthcheck_and_no_healthcheck(daemon, healthy_image):
    img_hc = json.loads(docker(daemon, "image", "inspect", "-f", "{{json .Config.Healthcheck}}",
                               healthy_image).stdout)
    assert img_hc["Test"][-1] == "true" and img_hc["Interval"] == 100_000_000
    with container(daemon, healthy_image, "sleep", "300") as cid:
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy from the image")
    # Fields not given come from the image.
    with container(daemon, "--health-retries", "9", healthy_image, "sleep", "300") as cid:
        cfg = json.loads(docker(daemon, "inspect", "-f", "{{json .Config.Healthcheck}}",
                                cid).stdout)
        assert cfg["Retries"] == 9 and cfg["Test"] == img_hc["Test"]
        assert cfg["Interval"] == 100_000_000
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy, merged")
    with container(daemon, "--no-healthcheck", healthy_image, "sleep", "300") as cid:
        cfg = json.loads(docker(daemon, "inspect", "-f", "{{json .Config.Healthcheck}}",
                                cid).stdout)
        # dockerd's merge still fills the zero fields from the image; NONE wins.
        assert cfg == {"Test": ["NONE"], "Interval": 100_000_000, "Retries": 4}
        info = json.loads(docker(daemon, "inspect", cid).stdout)[0]
        assert "Health" not in info["State"]
        assert "(" not in docker(daemon, "ps", "--filter", f"id={cid}",
                                 "--format", "{{.Status}}").stdout


def test_checks_resume_after_daemon_restart(daemon):
    with container(daemon, "--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms",
                   "busybox", "sleep", "300") as cid:
        docker(daemon, "exec", cid, "touch", "/tmp/ok")
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy")
        daemon.kill()
        daemon.start()
        h = state_health(daemon, cid)
        assert h is not None and h["Status"] in ("starting", "healthy")  # persisted log kept
        assert h["Log"]
        before = ns_of(h["Log"][-1]["End"])
        t0 = time.time()
        docker(daemon, "exec", cid, "rm", "/tmp/ok")
        # New probes run under the new daemon: the container goes unhealthy...
        h = wait_for(lambda: (s := state_health(daemon, cid)) and s["Status"] == "unhealthy"
                     and s, PROBES, what="unhealthy under the restarted daemon")
        assert ns_of(h["Log"][-1]["End"]) > before
        assert "health_status: unhealthy" in container_events(daemon, cid, t0)


def test_exit_while_the_daemon_is_down(daemon):
    with container(daemon, "--health-cmd", "true", "--health-interval", "100ms",
                   "busybox", "sleep", "300") as cid:
        wait_for(lambda: status(daemon, cid) == "healthy", PROBES, what="healthy")
        pid = int(docker(daemon, "inspect", "-f", "{{.State.Pid}}", cid).stdout)
        daemon.kill()
        try:
            os.kill(pid, signal.SIGKILL)
        finally:
            daemon.start()
        info = wait_for(lambda: (i := json.loads(docker(daemon, "inspect", cid).stdout)[0])
                        and not i["State"]["Running"] and i, PROBES,
                        what="the exit found at restore")
        assert info["State"]["ExitCode"] == 137
        wait_for(lambda: status(daemon, cid) == "unhealthy", PROBES,
                 what="unhealthy once found exited")


BAD = [
    ({"Interval": -10_000_000}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Interval": 500_000}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Timeout": -100_000_000}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"Retries": -10}, "Retries in Healthcheck cannot be negative"),
    ({"StartPeriod": 100}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({"StartInterval": -1}, "StartInterval in Healthcheck cannot be less than 1ms"),
    ({"Interval": "1s"}, "HealthConfig.Healthcheck.Interval"),
    ({"Test": "true"}, "HealthConfig.Healthcheck.Test"),
    ({"Retries": 1.5}, "HealthConfig.Healthcheck.Retries"),
]


@pytest.mark.parametrize("bad,message", BAD)
def test_bad_healthcheck(daemon, bad, message):
    sdk = pytest.importorskip("docker")
    api = sdk.APIClient(base_url=daemon.host)
    try:
        before = docker(daemon, "ps", "-aq").stdout.split()
        body = {"Image": "busybox", "Cmd": ["true"],
                "Healthcheck": {"Test": ["CMD", "true"], **bad}}
        res = api._post_json(api._url("/containers/create"), data=body)
        assert res.status_code == 400
        assert message in res.json()["message"]
        assert docker(daemon, "ps", "-aq").stdout.split() == before
    finally:
        api.close()


def test_bad_healthcheck_cli(daemon):
    # The CLI refuses these itself; what reaches the daemon is covered above.
    r = docker(daemon, "run", "-d", "--health-retries", "-1", "busybox", check=False)
    assert r.returncode != 0 and "retries" in r.stderr
