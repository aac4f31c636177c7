"""OCI lifecycle hooks: programs run with the container's state on their stdin."""

from __future__ import annotations

from dockyard.errors import SystemFailure
from dockyard.runtime import fastjson


def run(kind: str, hooks: list[dict], state: dict, fatal: bool = True) -> None:
    """Run each hook of KIND in order. A failing hook raises when FATAL (prestart,
    createRuntime, createContainer, startContainer); otherwise it is logged and the
    rest still run (poststart, poststop), as the runtime spec asks."""
    if not hooks:
        return
    import subprocess

    payload = fastjson.dumps(state).encode()
    for i, hook in enumerate(hooks):
        where = f"hooks.{kind}[{i}] ({hook['path']})"
        args = hook.get("args") or [hook["path"]]
        try:
            res = subprocess.run(args, executable=hook["path"], input=payload,
                                 env=dict(e.split("=", 1) for e in hook.get("env", [])),
                                 capture_output=True, timeout=hook.get("timeout"), check=False)
            if res.returncode == 0:
                continue
            why = f"exited with status {res.returncode}: {res.stderr.decode(errors='replace').strip()}"
        except subprocess.TimeoutExpired:
            why = f"timed out after {hook.get('timeout')}s"
        except OSError as e:
            why = e.strerror or str(e)
        if fatal:
            raise SystemFailure(f"{where}: {why}")
        import logging  # only here: importing it costs every container start milliseconds

        logging.getLogger(__name__).warning("%s: %s", where, why)
