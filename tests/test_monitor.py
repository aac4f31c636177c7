"""The container monitor: one process supervising every container of an exec-root,
surviving its clients, re-adopting containers after its own restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Bundle, _leftover_cgroups, wait_for
from dockyard.daemon import monitor as M
from dockyard.daemon.logs import read_logs
from dockyard.errors import Conflict, NotFound
from dockyard.runtime.container import Runtime


# Our own cgroup prefix: other test sessions on this host sweep /dockyard-test/ in their
# leak check, which would pull cgroups from under our running containers (and ours
# would fail theirs). The harness checks this prefix for leaks itself.
CGROUP_PREFIX = "/dockyard-test-monitor"


class Harness:
    """An exec-root in tmp_path; remembers every monitor pid it saw, to kill them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pids: set[int] = set()
        self.clients: list[M.MonitorClient] = []

    def client(self) -> M.MonitorClient:
        c = M.ensure_monitor(self.root)
        self.pids.add(c.pid)
        self.clients.append(c)
        return c

    def monitor_pid(self) -> int:
        return int((self.root / M.PID_NAME).read_text())

    def cleanup(self) -> None:
        for c in self.clients:
            c.close()
        try:
            c = M.MonitorClient(self.root, timeout=20)
            for st in c.list():
                try:
                    c.delete(st["id"], force=True)
                except Exception:
                    pass
            c.close()
        except Exception:
            pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        # Containers a dead monitor left (adopted or not): the runtime removes them.
        rt = Runtime(str(self.root / "runtime"))
        for st in rt.list():
            try:
                rt.delete(st["id"], force=True)
            except Exception:
                pass
        leaked = _leftover_cgroups(CGROUP_PREFIX)
        for d in leaked:
            try:
                os.rmdir(d)
            except OSError:
                pass
        assert not leaked, f"cgroups left behind: {leaked}"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "exec")
    try:
        yield h
    finally:
        h.cleanup()


def new_bundle(bundle: Bundle, *args: str, terminal: bool = False) -> str:
    """The bundle with ARGS and a fresh cgroup (so one bundle serves many containers)."""
    bundle.config["linux"]["cgroupsPath"] = f"{CGROUP_PREFIX}/{uuid.uuid4().hex[:12]}"
    bundle.process["terminal"] = terminal
    return bundle.args(*args).write()


def read_stream(att: M.AttachStream, needle: bytes, timeout: float = 10.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {buf!r}"
        msg = att.recv(timeout=left)
        assert msg is not None, f"attach closed before {needle!r}; got {buf!r}"
        buf += msg[1]
    return buf


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_logs_wait_and_exit_codes(harness, bundle, tmp_path):
    c = harness.client()
    logp = tmp_path / "c1-json.log"
    c.create("c1", new_bundle(bundle, "sh", "-c", "echo one; echo two >&2; echo three; exit 3"),
             log_path=str(logp))
    c.start("c1")
    res = c.wait("c1", timeout=20)
    assert res["exit_code"] == 3
    assert res["exited_at"].endswith("Z")
    recs = [(r.stream, r.data) for r in read_logs(logp)]
    assert ("stdout", b"one\n") in recs and ("stdout", b"three\n") in recs
    assert ("stderr", b"two\n") in recs
    # Waiting again answers at once; the exit record is on disk.
    assert c.wait("c1", timeout=5)["exit_code"] == 3
    rec = json.loads((harness.root / "containers" / "c1" / "exit.json").read_text())
    assert rec["exit_code"] == 3 and rec["oom_killed"] is False
    assert c.state("c1")["status"] == "stopped"
    c.delete("c1")

    pid = c.create("c2", new_bundle(bundle, "sleep", "1000"))
    c.start("c2")
    assert c.state("c2")["status"] == "running"
    # The monitor (Python) ignores SIGPIPE; its containers must not inherit that.
    status = Path(f"/proc/{pid}/status").read_text()
    sigign = next(l for l in status.splitlines() if l.startswith("SigIgn"))
    assert sigign == "SigIgn:\t0000000000000000", sigign
    c.pause("c2")
    assert c.state("c2")["status"] == "paused"
    c.resume("c2")
    assert c.state("c2")["status"] == "running"
    with pytest.raises(Conflict):
        c.delete("c2")
    c.kill("c2", signal.SIGKILL)
    assert c.wait("c2", timeout=20)["exit_code"] == 137
    c.delete("c2")
    with pytest.raises(NotFound):
        c.state("c2")


def test_exit_while_no_client_connected(harness, bundle):
    c = harness.client()
    c.create("q", new_bundle(bundle, "sh", "-c", "sleep 0.3; exit 42"))
    c.start("q")
    c.close()
    harness.clients.clear()
    time.sleep(1.0)
    c2 = harness.client()
    listed = {s["id"]: s for s in c2.list()}
    assert listed["q"]["status"] == "stopped" and listed["q"]["exit_code"] == 42
    assert c2.state("q")["exit_code"] == 42
    c2.delete("q")


CLIENT_SCRIPT = textwrap.dedent("""
    import sys, time
    from dockyard.daemon.monitor import ensure_monitor
    c = ensure_monitor(sys.argv[1])
    c.create("k", sys.argv[2], log_path=sys.argv[3])
    c.start("k")
    print("started", flush=True)
    c.wait("k")  # killed while waiting
""")


def test_client_sigkilled_container_survives(harness, bundle):
    harness.client()  # the monitor exists first, so the subprocess only connects
    path = new_bundle(bundle, "sh", "-c", "echo early; sleep 1; echo late; exit 5")
    logp = harness.root.parent / "k.log"
    p = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(harness.root), path, str(logp)],
                         stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == b"started"
        time.sleep(0.1)
        p.kill()
    finally:
        p.wait()
    # A client dying mid-request (half a line, then gone) does not disturb the monitor.
    import socket

    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(harness.root / M.SOCKET_NAME))
    raw.sendall(b'{"op": "wait", "id": "k"')
    raw.close()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(harness.root / M.SOCKET_NAME))
    raw.sendall(b'{"op": "wait", "id": "k"}\n')
    raw.close()  # a waiter that leaves before the answer
    c = harness.client()
    assert c.state("k")["status"] == "running"
    assert c.wait("k", timeout=20)["exit_code"] == 5
    assert [r.data for r in read_logs(logp)] == [b"early\n", b"late\n"]
    c.delete("k")


def test_attach_output_and_stdin(harness, bundle):
    c = harness.client()
    c.create("cat", new_bundle(bundle, "sh", "-c", "echo hello; cat; echo bye >&2"), stdin=True)
    with c.attach("cat", stdin=True) as att:
        c.start("cat")
        assert b"hello" in read_stream(att, b"hello\n")
        att.write(b"ping pong\n")
        assert b"ping pong" in read_stream(att, b"ping pong\n")
        att.close_stdin()  # cat ends, the shell goes on
        got = []
        while (msg := att.recv(timeout=10)) is not None:
            got.append(msg)
        assert (2, b"bye\n") in got  # stderr keeps its stream id
    assert c.wait("cat", timeout=10)["exit_code"] == 0
    c.delete("cat")


def test_tty_attach_and_resize(harness, bundle):
    c = harness.client()
    c.create("tty", new_bundle(bundle, "sh", terminal=True), tty=True, stdin=True)
    with c.attach("tty", stdin=True) as att:
        assert att.tty
        c.start("tty")
        c.resize("tty", 33, 111)
        att.write(b"stty size\n")
        assert b"33 111" in read_stream(att, b"33 111")
        c.resize("tty", 20, 70)
        att.write(b"stty size; exit 9\n")
        assert b"20 70" in read_stream(att, b"20 70")
    assert c.wait("tty", timeout=10)["exit_code"] == 9
    c.delete("tty")


def test_delete_releases_fds_and_directories(harness, bundle, tmp_path):
    c = harness.client()
    pid = harness.monitor_pid()
    c.create("warm", new_bundle(bundle, "true"), log_path=str(tmp_path / "warm.log"))
    c.start("warm")
    c.wait("warm", timeout=10)
    c.delete("warm")  # the first container loads modules (seccomp cache etc.)
    before = fd_count(pid)
    c.create("d", new_bundle(bundle, "sleep", "1000"), log_path=str(tmp_path / "d.log"), stdin=True)
    c.start("d")
    att = c.attach("d", stdin=True)
    assert fd_count(pid) > before
    c.delete("d", force=True)
    att.close()
    assert fd_count(pid) == before, os.listdir(f"/proc/{pid}/fd")
    assert not (harness.root / "containers" / "d").exists()
    assert not (harness.root / "runtime" / "d").exists()
    assert os.listdir(harness.root / "containers") == []


def test_monitor_killed_adopts_containers(harness, bundle):
    c = harness.client()
    old = harness.monitor_pid()
    c.create("a", new_bundle(bundle, "sleep", "1000"))
    c.start("a")
    c.create("b", new_bundle(bundle, "sh", "-c", "sleep 0.5"))
    c.start("b")
    os.kill(old, signal.SIGKILL)
    try:
        os.waitpid(old, 0)
    except ChildProcessError:
        pass
    c.close()
    time.sleep(1.0)  # b exits while no monitor runs
    c2 = harness.client()
    assert harness.monitor_pid() != old
    st = c2.state("a")
    assert st["status"] == "running" and st["adopted"] is True
    b = c2.state("b")
    assert b["status"] == "stopped" and b["exit_code"] == M.EXIT_UNKNOWN
    assert b["error"] == M.UNKNOWN_REASON
    c2.kill("a", signal.SIGKILL)
    res = c2.wait("a", timeout=20)
    assert res["exit_code"] == M.EXIT_UNKNOWN and res["error"] == M.UNKNOWN_REASON
    c2.delete("a")
    c2.delete("b")
    assert os.listdir(harness.root / "containers") == []


def test_shutdown_only_when_empty(harness, bundle):
    c = harness.client()
    pid = harness.monitor_pid()
    c.create("s", new_bundle(bundle, "true"))
    with pytest.raises(Conflict):
        c.shutdown()
    c.delete("s", force=True)
    c.shutdown()
    wait_for(lambda: not (harness.root / M.SOCKET_NAME).exists(), what="monitor exit")
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_exec(harness, bundle):
    c = harness.client()
    c.create("e", new_bundle(bundle, "sleep", "1000"))
    c.start("e")
    pid, att = c.exec("e", "e1", {"args": ["sh", "-c", "read x; echo got $x; exit 4"]}, stdin=True)
    with att:
        att.write(b"abc\n")
        assert b"got abc" in read_stream(att, b"got abc")
    assert c.wait("e1", timeout=10)["exit_code"] == 4
    c.delete("e", force=True)


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    vals = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        vals[k] = int(v.split()[0])
    return vals["Rss"], vals["Pss"]


def test_memory_per_container(harness, bundle, tmp_path, capsys):
    c = harness.client()
    pid = harness.monitor_pid()
    c.create("m0", new_bundle(bundle, "sleep", "1000"), log_path=str(tmp_path / "m0.log"))
    c.start("m0")
    time.sleep(0.3)
    rss1, pss1 = _memory(pid)
    for i in range(1, 20):
        c.create(f"m{i}", new_bundle(bundle, "sleep", "1000"), log_path=str(tmp_path / f"m{i}.log"))
        c.start(f"m{i}")
    time.sleep(0.3)
    rss20, pss20 = _memory(pid)
    per = (pss20 - pss1) / 19
    with capsys.disabled():
        print(f"\nmonitor memory: 1 container RSS {rss1} KiB PSS {pss1} KiB; "
              f"20 containers RSS {rss20} KiB PSS {pss20} KiB; "
              f"per container {per:.1f} KiB PSS, {(rss20 - rss1) / 19:.1f} KiB RSS; "
              f"fds {fd_count(pid)}")
    assert per < 1024
    for i in range(20):
        c.delete(f"m{i}", force=True)


def test_sigterm_ends_an_idle_monitor(tmp_path):
    from dockyard.daemon.monitor import ensure_monitor

    client = ensure_monitor(str(tmp_path / "exec"))
    pid = int((tmp_path / "exec" / "monitor.pid").read_text().split()[0])
    client.close()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", what="the monitor to end")
    if client.process is not None:
        client.process.wait(timeout=10)
