"""Running the `dockyard` command against a test daemon, beside the docker CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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
