"""`dockyard stats`: containers' resource usage, computed from the stats endpoint as the
docker CLI computes it (CPU share of the host, memory without the page cache)."""

from __future__ import annotations

import sys
from typing import Any

import click

from dockyard.cli.command import Command, StatusError
from dockyard.cli.connection import client
from dockyard.errors import DockyardError

_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
            "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
            "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}"
          "\t{{.BlockIO}}\t{{.PIDs}}")


def _cpu_percent(s: dict[str, Any]) -> float:
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage", 0)
                 - (pre.get("cpu_usage") or {}).get("total_usage", 0))
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def _memory(s: dict[str, Any]) -> tuple[float, float]:
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage", 0)
    stats = mem.get("stats") or {}
    # cgroup v1 counts the page cache as total_inactive_file, v2 as inactive_file.
    for key in ("total_inactive_file", "inactive_file"):
        if key in stats and stats[key] < usage:
            usage -= stats[key]
            break
    return float(usage), float(mem.get("limit", 0))


def _row(s: dict[str, Any], given: str, trunc: bool) -> dict[str, Any]:
    from dockyard.cli.formatter import bytes_size, human_size, truncate_id

    usage, limit = _memory(s)
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    read = write = 0
    for entry in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = (entry.get("op") or "").lower()
        if op == "read":
            read += entry.get("value", 0)
        elif op == "write":
            write += entry.get("value", 0)
    ident = s.get("id", "")
    return {"BlockIO": f"{human_size(read, 3)} / {human_size(write, 3)}",
            "CPUPerc": f"{_cpu_percent(s):.2f}%",
            "Container": given,
            "ID": truncate_id(ident) if trunc else ident,
            "MemPerc": f"{usage / limit * 100 if limit else 0:.2f}%",
            "MemUsage": f"{bytes_size(usage)} / {bytes_size(limit)}",
            "Name": (s.get("name") or "").lstrip("/"),
            "NetIO": f"{human_size(rx, 3)} / {human_size(tx, 3)}",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


@click.command(cls=Command, usage="[OPTIONS] [CONTAINER...]")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running)")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("--no-stream", is_flag=True, help="Disable streaming stats and only pull the first result")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.argument("containers", nargs=-1)
def stats(all_: bool, fmt: str | None, no_stream: bool, no_trunc: bool,
          containers: tuple[str, ...]) -> None:
    """Display a live stream of container(s) resource usage statistics"""
    from dockyard.cli.containers import error_line
    from dockyard.cli.format import print_rows

    cl = client()
    names = list(containers) or [c["Id"] for c in cl.containers.list(all=all_)]
    while True:
        rows, failed = [], []
        for name in names:
            try:
                sample = next(iter(cl.containers.stats(name, stream=False)), None)
            except DockyardError as exc:
                failed.append(error_line(exc))
                continue
            if sample is not None:
                rows.append(_row(sample, name, not no_trunc))
        if failed and (no_stream or not rows):
            raise StatusError("\n".join(failed), 1)
        if not no_stream and sys.stdout.isatty():
            click.echo("\033[2J\033[H", nl=False)  # redraw in place, as docker
        print_rows(fmt, _TABLE, _HEADERS, rows, click.echo, "*formatter.statsContext",
                   labels=False)
        if no_stream:
            return
