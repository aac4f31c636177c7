"""Running the `dockyard` command against a test daemon, beside the docker CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from conftest import wait_for
from engine_daemon import Daemon

# The installed launcher when there is one (it is what users run), else the module.
_LAUNCHER = shutil.which("dockyard")
DOCKYARD = [_LAUNCHER] if _LAUNCHER else [sys.executable, "-m", "dockyard.cli.main"]


def dockyard(d: Daemon | None, *args: str, check: bool = True, input: str | None = None,
             timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("DOCKER_HOST", None)
    if d is not None:
        full_env["DOCKYARD_HOST"] = d.host
    full_env.update(env or {})
    r = subprocess.run([*DOCKYARD, *args], capture_output=True, text=True, env=full_env,
                       input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"dockyard {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def registry_server(root: Path, *extra_args: str) -> Iterator[str]:
    """`dockyard registry serve` on a free loopback port, storing under ROOT (given
    EXTRA_ARGS); yields its "127.0.0.1:PORT" once it listens, stops it afterwards."""
    port = free_port()
    log = root / "registry.log"
    root.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        proc = subprocess.Popen([*DOCKYARD, "registry", "serve", "--addr", f"127.0.0.1:{port}",
                                 "--root", str(root / "registry"), *extra_args],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: _listening(port) or proc.poll() is not None, what="registry to listen")
        assert proc.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
