"""Benchmark: the `dockyard` CLI against the docker CLI on the same dockyardd, and podman.

    sudo /opt/dockyard/bin/python bench/cli_run.py [--runs 10] [--containers 50]

Rows: `run --rm busybox true`, `ps` with N running, `version`: wall time of the whole
command, median of RUNS. `dockyard` is what the set-up installs (/usr/local/bin/dockyard,
Debian's python3 with -S); docker is the CLI on the machine; podman runs with its own
storage under the work directory and the peers' configuration (`--network none`, as
dockyardd's containers have loopback only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from scratch_daemon import DOCKER, scratch_daemon

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DOCKYARD_SHARED", HERE.parent.parent / "shared"))
LAYOUT = SHARED / "images" / "busybox" / "1.38.0-musl"
PODMAN_CONF = SHARED / "peers" / "podman-containers.conf"
DOCKYARD = shutil.which("dockyard") or "/usr/local/bin/dockyard"


def median_s(argv: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--containers", type=int, default=50)
    args = ap.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with scratch_daemon("dockyard-bench-cli-") as d:
        work, env = d.work, d.env
        archive = work / "busybox.tar"
        subprocess.run(["tar", "-C", str(LAYOUT), "-cf", str(archive), "."], check=True)
        subprocess.run([DOCKER, "load", "-i", str(archive)], env=env, check=True,
                       capture_output=True)
        subprocess.run([DOCKER, "tag", "busybox:1.38.0-musl", "busybox"], env=env, check=True)
        for name, cli in (("dockyard", [DOCKYARD]), ("docker", [DOCKER])):
            rows[name] = {
                "run --rm true": median_s([*cli, "run", "--rm", "busybox", "true"], env, args.runs),
                "version": median_s([*cli, "version"], env, args.runs),
            }
        ids = [subprocess.run([DOCKER, "run", "-d", "busybox", "sleep", "1000"], env=env,
                              check=True, capture_output=True, text=True).stdout.strip()
               for _ in range(args.containers)]
        try:
            for name, cli in (("dockyard", [DOCKYARD]), ("docker", [DOCKER])):
                rows[name]["ps with N running"] = median_s([*cli, "ps"], env, args.runs)
        finally:
            subprocess.run([DOCKER, "rm", "-f", *ids], env=env, capture_output=True)
        if shutil.which("podman") and PODMAN_CONF.exists():
            penv = dict(os.environ, CONTAINERS_CONF=str(PODMAN_CONF))
            pod = ["podman", "--root", str(work / "podman"), "--runroot", str(work / "podman-run"),
                   "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
            subprocess.run([*pod, "load", "-i", str(archive)], env=penv, check=True,
                           capture_output=True)
            subprocess.run([*pod, "tag", "busybox:1.38.0-musl", "busybox"], env=penv, check=True)
            rows["podman"] = {
                "run --rm true": median_s([*pod, "run", "--rm", "--network", "none", "busybox",
                                           "true"], penv, args.runs),
                "version": median_s([*pod, "version"], penv, args.runs),
            }
            pids = [subprocess.run([*pod, "run", "-d", "--network", "none", "busybox", "sleep",
                                    "1000"], env=penv, check=True, capture_output=True,
                                   text=True).stdout.strip() for _ in range(args.containers)]
            try:
                rows["podman"]["ps with N running"] = median_s([*pod, "ps"], penv, args.runs)
            finally:
                subprocess.run([*pod, "rm", "-f", "-t", "0", *pids], env=penv,
                               capture_output=True)
    names = list(rows)
    print(f"N = {args.containers}; median of {args.runs}; seconds, wall time of the command")
    print(f"{'':20}" + "".join(f"{n:>12}" for n in names) + "   best peer / dockyard")
    for key in ("run --rm true", "ps with N running", "version"):
        ours = rows["dockyard"][key]
        peers = [rows[n][key] for n in names[1:] if key in rows[n]]
        ratio = f"{min(peers) / ours:8.2f}x" if peers else ""
        print(f"{key:20}" + "".join(f"{rows[n].get(key, float('nan')):12.3f}" for n in names)
              + "   " + ratio)


if __name__ == "__main__":
    main()
