"""The processes of a container as dockerd lists them (GET /containers/{id}/top): the
host's `ps` with the caller's arguments, keeping the rows whose PID is in the
container's cgroup."""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING, Any

from dockyard.daemon.stats import cgroup_of
from dockyard.errors import Conflict, DockyardError, SystemFailure

if TYPE_CHECKING:
    from dockyard.daemon.lifecycle import Lifecycle

DEFAULT_PS_ARGS = "-ef"
PS_TIMEOUT = 30.0

# "-o user=PID" would relabel a column PID and fool the row filter, as dockerd guards.
_RELABEL = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")
_ASCII_SPACE = re.compile(r"[\t\n\f\r ]+")


def _fields(line: str) -> list[str]:
    # Only ASCII white space separates columns: a command may hold other blanks.
    return [f for f in _ASCII_SPACE.split(line) if f]


def validate_ps_args(ps_args: str) -> None:
    for key, value in _RELABEL.findall(ps_args):
        if key != "pid":
            raise SystemFailure(f'specifying "{key}={value}" is not allowed')


def parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    """{"Titles": [...], "Processes": [[...]]}: the rows of PIDS, each cut into as many
    columns as there are titles (the last one keeps its spaces); thread rows ("-" as
    PID, from ps -m) follow the process they belong to."""
    lines = output.split("\n")
    titles = _fields(lines[0])
    if "PID" not in titles:
        raise SystemFailure("Couldn't find PID field in ps output")
    index = titles.index("PID")
    processes: list[list[str]] = []
    keep_threads = False

    def add(fields: list[str]) -> None:
        n = len(titles)
        processes.append(fields[: n - 1] + [" ".join(fields[n - 1:])])

    for line in lines[1:]:
        if not line:
            continue
        fields = _fields(line)
        if index >= len(fields):
            continue
        if fields[index] == "-":
            if keep_threads:
                add(fields)
            continue
        try:
            pid = int(fields[index])
        except ValueError:
            raise SystemFailure(f"Unexpected pid '{fields[index]}': invalid syntax") from None
        keep_threads = pid in pids
        if keep_threads:
            add(fields)
    return {"Titles": titles, "Processes": processes}


def _run_ps(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["ps", *args], capture_output=True, timeout=PS_TIMEOUT,
                              check=False)
    except FileNotFoundError:
        raise SystemFailure('ps: exec: "ps": executable file not found in $PATH') from None
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"ps: did not finish within {PS_TIMEOUT:.0f}s") from None


def top(lc: Lifecycle, ref: str, ps_args: str = "") -> dict[str, Any]:
    ps_args = ps_args or DEFAULT_PS_ARGS
    validate_ps_args(ps_args)
    c = lc.store.get(ref)
    if not c.State.Running:
        raise Conflict(f"Container {c.ID} is not running")
    if c.State.Restarting:
        raise Conflict(f"Container {c.ID} is restarting, wait until the container is running")
    cg = cgroup_of(lc.bundle(c.ID))
    try:
        pids = set(cg.pids()) if cg is not None else set()
    except DockyardError:
        pids = set()
    if not pids and c.State.Pid:
        pids = {c.State.Pid}
    # dockerd splits on single spaces, as here: "-o pid,comm" is two arguments.
    args = ps_args.split(" ")
    r = _run_ps([*args, "-q" + ",".join(str(p) for p in sorted(pids))])
    if r.returncode != 0:
        # Some options (forest listings) refuse -q: ask again for every process.
        r = _run_ps(args)
        if r.returncode != 0:
            first = r.stderr.decode(errors="replace").split("\n", 1)[0]
            raise SystemFailure(f"ps: {first or f'exit status {r.returncode}'}")
    result = parse_ps(r.stdout.decode(errors="replace"), pids)
    lc.emit("top", c, None)
    return result
