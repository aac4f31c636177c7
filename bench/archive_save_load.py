"""Benchmark: `save` and `load` of a ~55 MB image, Dockyard's archive module against
Debian's dockerd (`docker save` / `docker load`) on the same archive, same run.

    sudo /opt/dockyard/bin/python bench/archive_save_load.py [--mb 55] [--runs 5]

The image: one imported layer of incompressible bytes (as `docker import` makes). Dockyard is measured as a library (the daemon is a later
step); docker through its CLI and a private dockerd started by the shared peers
script, so each docker figure includes one CLI round trip.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DOCKYARD_SHARED", HERE.parent.parent / "shared"))
PEER = SHARED / "peers" / "dockerd-private.sh"


def build_image(store, mb: int) -> str:
    """One layer of MB random bytes, tagged bench/image:1."""
    from dockyard.image import archive

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = os.urandom(mb << 20)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    buf.seek(0)
    archive.import_rootfs(store, buf, "bench/image:1")
    return "bench/image:1"


def median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from dockyard.image import archive
    from dockyard.image.store import ImageStore

    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=55)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-archive-"))
    env = dict(os.environ, REF_STATE=str(work / "peer"))
    docker = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
    started = False
    try:
        store = ImageStore(str(work / "store"))
        ref = build_image(store, args.mb)
        saved = work / "saved.tar"

        def our_save() -> None:
            with open(saved, "wb") as f:
                archive.save(store, [ref], f)

        n = [0]

        def our_load() -> None:
            n[0] += 1
            with open(saved, "rb") as f:
                archive.load(ImageStore(str(work / f"load{n[0]}")), f)

        results = {"dockyard save": median(our_save, args.runs),
                   "dockyard load": median(our_load, args.runs)}
        size = saved.stat().st_size

        if shutil.which("dockerd") and PEER.exists():
            out = subprocess.run([str(PEER), "start"], env=env, check=True, capture_output=True,
                                 text=True).stdout
            started = True
            for word in out.replace("export ", "").split():
                key, _, value = word.partition("=")
                env[key] = value
            subprocess.run([docker, "load", "-q", "-i", str(saved)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            dsaved = work / "docker-saved.tar"
            results["docker save"] = median(lambda: subprocess.run(
                [docker, "save", "-o", str(dsaved), ref], env=env, check=True), args.runs)

            def docker_load() -> None:
                subprocess.run([docker, "rmi", "-f", ref], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                subprocess.run([docker, "load", "-q", "-i", str(dsaved)], env=env, check=True,
                               stdout=subprocess.DEVNULL)

            results["docker load"] = median(docker_load, args.runs)
    finally:
        if started:
            subprocess.run([str(PEER), "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"image {size / (1 << 20):.0f} MiB as an archive; median of {args.runs}")
    for name, secs in results.items():
        print(f"{name:14} {secs:6.2f} s")
    for op in ("save", "load"):
        if f"docker {op}" in results:
            print(f"{op}: dockyard/docker time ratio {results['dockyard ' + op] / results['docker ' + op]:.2f}")


if __name__ == "__main__":
    main()
