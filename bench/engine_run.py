"""Benchmark: the engine through the docker CLI, dockyardd side by side with Debian's dockerd.

    sudo /opt/dockyard/bin/python bench/engine_run.py [--runs 10] [--containers 20]

Rows: `docker run --rm busybox true`, `docker run -d busybox sleep`, `docker ps` with N
running, and the engine's memory per running container (RSS and PSS of every
engine-side process, the daemon and its container supervisors, before and after N
sleeping containers, divided by N). dockerd runs in its own namespaces through the shared
peers script; both engines get the same busybox image by `docker load`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DOCKYARD_SHARED", HERE.parent.parent / "shared"))
LAYOUT = SHARED / "images" / "busybox" / "1.38.0-musl"
PEER = SHARED / "peers" / "dockerd-private.sh"
DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"


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


def measure(name: str, env: dict, engine_pids, runs: int, n: int) -> dict:
    docker(env, "tag", "busybox:1.38.0-musl", "busybox:latest")
    docker(env, "run", "--rm", "busybox", "true")  # warm-up
    row = {"engine": name,
           "run --rm true": median_s(lambda: docker(env, "run", "--rm", "busybox", "true"), runs)}
    ids: list[str] = []
    try:
        before = memory(engine_pids())
        start = time.perf_counter()
        ids.append(docker(env, "run", "-d", "busybox", "sleep", "1000").strip())
        row["run -d sleep"] = time.perf_counter() - start
        for _ in range(n - 1):
            ids.append(docker(env, "run", "-d", "busybox", "sleep", "1000").strip())
        row["ps with N running"] = median_s(lambda: docker(env, "ps"), runs)
        after = memory(engine_pids())
        row["RSS per container MiB"] = (after[0] - before[0]) / n
        row["PSS per container MiB"] = (after[1] - before[1]) / n
    finally:
        if ids:
            subprocess.run([DOCKER, "rm", "-f", *ids], env=env, capture_output=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--containers", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-engine-"))
    archive = work / "busybox.tar"
    archive.write_bytes(layout_tar())
    rows = []
    daemon = None
    exec_root = work / "exec"
    try:
        sock = work / "dockyard.sock"
        daemon = subprocess.Popen(["dockyardd", "-H", f"unix://{sock}", "--data-root",
                                   str(work / "data"), "--exec-root", str(exec_root)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        deadline = time.monotonic() + 30
        while subprocess.run([DOCKER, "version"], env=env, capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("dockyardd did not start")
            time.sleep(0.1)
        docker(env, "load", "-i", str(archive))
        # dockerd 20.10 does not read OCI layouts: give it our `docker save` of the image.
        saved = work / "busybox-saved.tar"
        docker(env, "save", "-o", str(saved), "busybox:1.38.0-musl")

        def ours() -> list[int]:
            pids = [daemon.pid]
            try:
                pids.append(int((exec_root / "monitor.pid").read_text()))
            except (OSError, ValueError):
                pass
            return pids

        rows.append(measure("dockyardd", env, ours, args.runs, args.containers))
        if shutil.which("dockerd") and PEER.exists():
            penv = dict(os.environ, REF_STATE=str(work / "peer"))
            out = subprocess.run([str(PEER), "start"], env=penv, check=True, capture_output=True,
                                 text=True).stdout
            try:
                for word in out.replace("export ", "").split():
                    key, _, value = word.partition("=")
                    penv[key] = value
                docker(penv, "load", "-i", str(saved))
                rows.append(measure("dockerd", penv, lambda: pids_named(
                    "dockerd --data-root " + str(work / "peer"), "containerd", "containerd-shim"),
                    args.runs, args.containers))
            finally:
                subprocess.run([str(PEER), "stop"], env=penv, capture_output=True)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        try:
            os.kill(int((exec_root / "monitor.pid").read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    keys = ["run --rm true", "run -d sleep", "ps with N running", "RSS per container MiB",
            "PSS per container MiB"]
    print(f"docker CLI {DOCKER}; N = {args.containers}; median of {args.runs}")
    print(f"{'':24}" + "".join(f"{r['engine']:>12}" for r in rows))
    for k in keys:
        print(f"{k:24}" + "".join(f"{r[k]:12.3f}" for r in rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
