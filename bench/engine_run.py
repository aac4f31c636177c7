"""Benchmark: the engine through its CLI, dockyardd side by side with Debian's dockerd and
podman, in one run.

    sudo /opt/dockyard/bin/python bench/engine_run.py [--runs 10] [--containers 50]

Rows: `run --rm busybox true`; `run -d busybox sleep` (one); N sequential `run -d`
(total); `exec true` in a running container; `ps` with N running; the engine's memory
per running container (RSS and PSS of every engine-side process, the daemon and its
container supervisors, before and after N sleeping containers, divided by N).
dockyardd and dockerd are driven by the docker CLI, podman by its own. dockerd runs in
its own namespaces through the shared peers script, with its bridge network; podman
and dockyardd run containers with loopback only (podman with `--network none`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

from scratch_daemon import DOCKER, scratch_daemon

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DOCKYARD_SHARED", HERE.parent.parent / "shared"))
LAYOUT = SHARED / "images" / "busybox" / "1.38.0-musl"
PEER = SHARED / "peers" / "dockerd-private.sh"
PODMAN_CONF = SHARED / "peers" / "podman-containers.conf"


def layout_tar() -> bytes:
    """The OCI layout as a tar, which `docker load` takes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(LAYOUT.rglob("*")):
            if p.is_file() and not p.name.startswith("LICENSE"):
                tar.add(p, arcname=str(p.relative_to(LAYOUT)))
    return buf.getvalue()


def docker(env: dict, *args: str, quiet: bool = True) -> str:
    res = subprocess.run([DOCKER, *args], env=env, check=True, capture_output=True, text=True)
    return res.stdout


def median_s(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory(pids: list[int]) -> tuple[float, float]:
    """RSS and PSS (MiB) summed over PIDS."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def pids_named(*names: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(n in cmd for n in names):
                out.append(int(d.name))
    return out


class Engine:
    """How to drive one engine: its CLI (argv prefix and environment), the extra
    `run` flags it needs, and which processes make it up."""

    def __init__(self, name: str, argv: list[str], env: dict, pids, run_flags: tuple = ()) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.pids = pids
        self.run_flags = list(run_flags)

    def __call__(self, *args: str) -> str:
        res = subprocess.run([*self.argv, *args], env=self.env, check=True,
                             capture_output=True, text=True)
        return res.stdout

    def run(self, *args: str) -> str:
        return self("run", *self.run_flags, *args)


def measure(e: Engine, runs: int, n: int) -> dict:
    e("tag", "busybox:1.38.0-musl", "busybox:latest")
    e.run("--rm", "busybox", "true")  # warm-up
    row = {"engine": e.name,
           "run --rm true": median_s(lambda: e.run("--rm", "busybox", "true"), runs)}
    ids: list[str] = []
    try:
        before = memory(e.pids())
        start = time.perf_counter()
        ids.append(e.run("-d", "busybox", "sleep", "1000").strip())
        row["run -d sleep"] = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(n - 1):
            ids.append(e.run("-d", "busybox", "sleep", "1000").strip())
        row["N sequential run -d"] = (time.perf_counter() - start) * n / max(n - 1, 1)
        row["exec true"] = median_s(lambda: e("exec", ids[0], "true"), runs)
        row["ps with N running"] = median_s(lambda: e("ps"), runs)
        after = memory(e.pids())
        row["RSS per container MiB"] = (after[0] - before[0]) / n
        row["PSS per container MiB"] = (after[1] - before[1]) / n
    finally:
        if ids:
            subprocess.run([*e.argv, "rm", "-f", *ids], env=e.env, capture_output=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--containers", type=int, default=50)
    args = ap.parse_args()
    rows = []
    with scratch_daemon("dockyard-bench-engine-") as d:
        work, env = d.work, d.env
        archive = work / "busybox.tar"
        archive.write_bytes(layout_tar())
        docker(env, "load", "-i", str(archive))
        # dockerd 20.10 does not read OCI layouts: give it our `docker save` of the image.
        saved = work / "busybox-saved.tar"
        docker(env, "save", "-o", str(saved), "busybox:1.38.0-musl")
        rows.append(measure(Engine("dockyardd", [DOCKER], env, d.pids), args.runs,
                            args.containers))
        if shutil.which("dockerd") and PEER.exists():
            penv = dict(os.environ, REF_STATE=str(work / "peer"))
            out = subprocess.run([str(PEER), "start"], env=penv, check=True, capture_output=True,
                                 text=True).stdout
            try:
                for word in out.replace("export ", "").split():
                    key, _, value = word.partition("=")
                    penv[key] = value
                docker(penv, "load", "-i", str(saved))
                rows.append(measure(Engine("dockerd", [DOCKER], penv, lambda: pids_named(
                    "dockerd --data-root " + str(work / "peer"), "containerd", "containerd-shim")),
                    args.runs, args.containers))
            finally:
                subprocess.run([str(PEER), "stop"], env=penv, capture_output=True)
        if shutil.which("podman") and PODMAN_CONF.exists():
            # Its own storage under the work directory; runc and lower ulimits as the
            # peers' configuration says this host needs.
            pod = Engine("podman", ["podman", "--root", str(work / "podman"), "--runroot",
                                    str(work / "podman-run"), "--cgroup-manager", "cgroupfs",
                                    "--events-backend", "none"],
                         dict(os.environ, CONTAINERS_CONF=str(PODMAN_CONF)),
                         lambda: pids_named("conmon"), run_flags=("--network", "none"))
            pod("load", "-i", str(saved))
            rows.append(measure(pod, args.runs, args.containers))
    keys = ["run --rm true", "run -d sleep", "N sequential run -d", "exec true",
            "ps with N running", "RSS per container MiB", "PSS per container MiB"]
    print(f"docker CLI {DOCKER}; N = {args.containers}; median of {args.runs}")
    print(f"{'':24}" + "".join(f"{r['engine']:>12}" for r in rows) + "   best peer / ours")
    for k in keys:
        peers = [r[k] for r in rows[1:]]
        ratio = f"{min(peers) / rows[0][k]:10.2f}x" if peers and rows[0][k] > 0 else ""
        print(f"{k:24}" + "".join(f"{r[k]:12.3f}" for r in rows) + "   " + ratio)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
