"""A real dockyardd for container tests: temporary socket, data and exec roots, busybox
loaded from the shared OCI layout; stopped, with its monitor, when the module is done.
start_daemon/stop_daemon serve tests that need a daemon of their own (other flags)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conftest import wait_for

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MUSL = SHARED / "images" / "busybox" / "1.38.0-musl"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
# One per test process, so that runs side by side do not check each other's cgroups.
CGROUP_PARENT = f"/dockyard-test-api-{os.getpid()}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")


class Daemon:
    """dockyardd under ROOT, started at once; EXTRA_ARGS are added to its command line."""

    def __init__(self, root: Path, extra_args: Sequence[str] = ()) -> None:
        self.root = root
        self.extra_args = list(extra_args)
        self.sock = root / "d.sock"
        self.exec_root = root / "exec"
        self.data_root = root / "data"
        self.log = open(root / "dockyardd.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        args = [sys.executable, "-m", "dockyard.daemon.main", "-H", self.host,
                "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                *self.extra_args]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while subprocess.run([DOCKER, "-H", self.host, "version"], capture_output=True).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("dockyardd did not start")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        assert self.proc is not None
        end_process(self.proc, 10)


def end_process(proc: subprocess.Popen, timeout: float) -> None:
    """Stop PROC with SIGTERM, or SIGKILL when it has not ended within TIMEOUT seconds
    (nothing is sent to a process that has already ended)."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ping_reply(sock: Path) -> bytes:
    """The start of the answer to GET /_ping on the unix socket SOCK (b"" while nothing
    answers there), for waiting on a daemon that is starting."""
    if not sock.exists():
        return b""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return s.recv(64)
        except OSError:
            return b""


def docker(d: Daemon, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=d.host)
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def process_gone(pid: int) -> bool:
    """Whether PID has ended (a zombie has: only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2][:1] == "Z"
    except FileNotFoundError:
        return True


def start_daemon(root: Path, extra_args: Sequence[str] = ()) -> Daemon:
    """A dockyardd under ROOT (given EXTRA_ARGS) with busybox:1.38.0-musl loaded and tagged
    busybox:latest; skips the test when the image or the docker CLI is missing."""
    if not MUSL.is_dir() or not os.path.exists(DOCKER):
        pytest.skip("busybox layout or docker CLI missing")
    archive = root / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(MUSL.iterdir()):
            tar.add(entry, arcname=entry.name)
    d = Daemon(root, extra_args)
    try:
        docker(d, "load", "-i", str(archive))
        docker(d, "tag", "busybox:1.38.0-musl", "busybox:latest")
    except BaseException:
        stop_daemon(d)
        raise
    return d


def stop_daemon(d: Daemon) -> None:
    """Remove D's containers, stop it and its monitor, and check that no mount is left
    under its root."""
    ids = docker(d, "ps", "-aq", check=False).stdout.split()
    if ids:
        docker(d, "rm", "-f", *ids, check=False)
    d.stop()
    pidfile = d.exec_root / "monitor.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_for(lambda: process_gone(pid), what="the monitor's end")
    assert _mounts_under(d.root) == []


def remove_cgroup_parent() -> None:
    """Check that the test containers' parent cgroup is empty in every hierarchy (v2's,
    or each v1 controller's), and remove it."""
    parents = [Path("/sys/fs/cgroup") / CGROUP_PARENT.strip("/")]
    parents += [h / CGROUP_PARENT.strip("/") for h in Path("/sys/fs/cgroup").iterdir()
                if h.is_dir()]
    for cg in parents:
        if cg.is_dir():
            leftovers = [p.name for p in cg.iterdir() if p.is_dir()]
            assert leftovers == [], f"cgroups left in {cg}: {leftovers}"
            cg.rmdir()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("engine"))
    try:
        yield d
    finally:
        stop_daemon(d)
        remove_cgroup_parent()


def run(d: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return docker(d, "run", "--cgroup-parent", CGROUP_PARENT, *args, check=check)
