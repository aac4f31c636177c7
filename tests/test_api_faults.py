"""Faults: dockyardd killed with SIGKILL while containers run and while a pull streams.
After a restart every container is still there (running ones still running, exited
ones with their exit codes and logs) and the image store is intact."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.distribution.server import RegistryThread
from engine_daemon import DOCKER, daemon, docker, run  # noqa: F401 (daemon: fixture)


class SlowProxy:
    """A TCP relay on loopback that lets at most RATE bytes a second through towards the
    client, so that a pull is still streaming when the daemon is killed."""

    def __init__(self, target: tuple[str, int], rate: int) -> None:
        self.target = target
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.rate),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        try:
            while True:
                data = src.recv(16384 if rate else 65536)
                if not data:
                    break
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)  # throttling, not synchronisation
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for s in self.conns:
            s.close()


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[RegistryThread]:
    with RegistryThread(str(tmp_path / "registry")) as reg:
        yield reg


def _big_image_tar(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("blob")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def _wait_for(fn, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_while_containers_run_and_a_pull_streams(daemon, registry, tmp_path):
    sleeper = run(daemon, "-d", "--name", "sleeper", "busybox", "sleep", "300").stdout.strip()
    pid = docker(daemon, "inspect", "-f", "{{.State.Pid}}", sleeper).stdout.strip()
    run(daemon, "--name", "finished", "busybox", "sh", "-c", "echo bye; exit 3", check=False)
    # A container that ends while the daemon is down: its exit must be learnt later.
    gate = tmp_path / "gate"
    gate.mkdir()
    run(daemon, "-d", "--name", "ends-later", "-v", f"{gate}:/gate", "busybox", "sh", "-c",
        "while [ ! -e /gate/go ]; do sleep 0.05; done; echo late; exit 7")

    # A 48 MiB layer pushed straight to the registry, pulled back through a slow relay.
    env = dict(os.environ, DOCKER_HOST=daemon.host)
    subprocess.run([DOCKER, "import", "-", "big:1"], input=_big_image_tar(48 << 20), env=env,
                   check=True, capture_output=True, timeout=120)
    direct = f"{registry.address}/big:1"
    docker(daemon, "tag", "big:1", direct)
    docker(daemon, "push", direct, timeout=120)
    docker(daemon, "rmi", "big:1", direct)
    proxy = SlowProxy(("127.0.0.1", registry.port), rate=4 << 20)
    try:
        slow = f"127.0.0.1:{proxy.port}/big:1"
        pull = subprocess.Popen([DOCKER, "pull", slow], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            seen = []
            for line in pull.stdout:  # type: ignore[union-attr]
                seen.append(line)
                if "Downloading" in line or "Pulling fs layer" in line:
                    break
            assert any("Pulling fs layer" in s or "Downloading" in s for s in seen), seen
            daemon.kill()
            (gate / "go").touch()
            pull.wait(30)
        finally:
            if pull.poll() is None:
                pull.kill()
                pull.wait()
    finally:
        proxy.close()
    daemon.start()

    # Containers: the running one still runs (the same process), the exited ones keep
    # their codes and logs, the one that ended meanwhile has its code recorded.
    assert docker(daemon, "inspect", "-f", "{{.State.Running}} {{.State.Pid}}",
                  "sleeper").stdout.strip() == f"true {pid}"
    assert docker(daemon, "inspect", "-f", "{{.State.ExitCode}}",
                  "finished").stdout.strip() == "3"
    assert docker(daemon, "logs", "finished").stdout == "bye\n"
    assert docker(daemon, "wait", "ends-later").stdout.strip() == "7"
    assert docker(daemon, "logs", "ends-later").stdout == "late\n"

    # Images: the interrupted pull left nothing half-made; it can be pulled again, and
    # what was there still runs.
    listed = docker(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "busybox:latest" in listed
    assert not any(r.startswith("127.0.0.1:") for r in listed), listed
    docker(daemon, "pull", direct, timeout=120)
    assert docker(daemon, "image", "inspect", "-f", "{{.Size}}", direct).stdout.strip() != "0"
    assert run(daemon, "--rm", "busybox", "echo", "ok").stdout == "ok\n"
    docker(daemon, "rm", "-f", "sleeper", "finished", "ends-later")
    docker(daemon, "rmi", direct)
