"""dockyardd's exec endpoints, judged by the docker CLI and docker-py against a real
daemon on a temporary socket, with busybox loaded from the shared OCI layout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MUSL = SHARED / "images" / "busybox" / "1.38.0-musl"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
CGROUP_PARENT = "/dockyard-test-api"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
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
                "--data-root", str(self.data_root), "--exec-root", str(self.exec_root)]
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
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def docker(d: Daemon, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=d.host)
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not MUSL.is_dir() or not os.path.exists(DOCKER):
        pytest.skip("busybox layout or docker CLI missing")
    root = tmp_path_factory.mktemp("exec")
    archive = root / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(MUSL.iterdir()):
            tar.add(entry, arcname=entry.name)
    d = Daemon(root)
    try:
        docker(d, "load", "-i", str(archive))
        docker(d, "tag", "busybox:1.38.0-musl", "busybox:latest")
        yield d
    finally:
        ids = docker(d, "ps", "-aq", check=False).stdout.split()
        if ids:
            docker(d, "rm", "-f", *ids, check=False)
        d.stop()
        pidfile = d.exec_root / "monitor.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        assert _mounts_under(root) == []
        cg = Path("/sys/fs/cgroup") / CGROUP_PARENT.strip("/")
        if cg.is_dir():
            leftovers = [p.name for p in cg.iterdir() if p.is_dir()]
            assert leftovers == []
            cg.rmdir()


def run(d: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return docker(d, "run", "--cgroup-parent", CGROUP_PARENT, *args, check=check)



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
