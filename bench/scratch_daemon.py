"""A dockyardd of its own for a benchmark: a temporary socket, data and exec roots,
stopped with its monitor (and everything under the directory unmounted and removed)
when the benchmark is done."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"


@dataclass
class ScratchDaemon:
    work: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]  # DOCKER_HOST and DOCKYARD_HOST pointing at it

    @property
    def exec_root(self) -> Path:
        return self.work / "exec"

    def pids(self) -> list[int]:
        """The engine's processes: the daemon and its container monitor."""
        pids = [self.process.pid]
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.exec_root / "monitor.pid").read_text()))
        return pids


@contextlib.contextmanager
def scratch_daemon(prefix: str) -> Iterator[ScratchDaemon]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    sock = work / "dockyard.sock"
    process = subprocess.Popen(["dockyardd", "-H", f"unix://{sock}", "--data-root",
                                str(work / "data"), "--exec-root", str(work / "exec")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = ScratchDaemon(work, process, dict(os.environ, DOCKER_HOST=f"unix://{sock}",
                                          DOCKYARD_HOST=f"unix://{sock}"))
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([DOCKER, "version"], env=d.env, capture_output=True).returncode:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("dockyardd did not start")
            time.sleep(0.1)
        yield d
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((d.exec_root / "monitor.pid").read_text()), signal.SIGTERM)
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def unmount_under(path: Path) -> None:
    """Every mount below PATH, deepest first (container roots, podman's storage)."""
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    prefix = str(path).rstrip("/") + "/"
    for target in sorted((t for t in targets if t.startswith(prefix) or t == str(path)),
                         key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
