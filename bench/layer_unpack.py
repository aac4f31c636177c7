"""Benchmark: unpacking a layer blob, Dockyard's layer.apply against `tar -xzf`.

    sudo /opt/dockyard/bin/python bench/layer_unpack.py [--runs N] [--blob PATH]

Default blob: the official busybox layer from the shared test images, then the
Alpine minirootfs tarball. Prints the median of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def default_blobs() -> list[Path]:
    out = []
    layout = SHARED / "images" / "busybox" / "1.38.0-glibc"
    if layout.exists():
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
        out.append(layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:])
    alpine = SHARED / "images" / "alpine" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    if alpine.exists():
        out.append(alpine)
    return out


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        dest = tempfile.mkdtemp(prefix="dockyard-unpack-")
        try:
            start = time.perf_counter()
            fn(dest)
            times.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(dest)
    return statistics.median(times[1:]) * 1000


def main() -> None:
    from dockyard.image import layer

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--blob", type=Path, action="append")
    args = ap.parse_args()
    print(f"{'blob':40} {'dockyard':>10} {'tar -xzf':>10} {'ratio':>7}")
    for blob in args.blob or default_blobs():
        def ours(dest: str) -> None:
            with open(blob, "rb") as f:
                layer.apply(f, dest)

        def tar(dest: str) -> None:
            subprocess.run(["tar", "-xzf", str(blob), "-C", dest], check=True)

        a, b = median_ms(ours, args.runs), median_ms(tar, args.runs)
        name = blob.name if len(blob.name) < 40 else blob.name[:12] + "…"
        print(f"{name:40} {a:8.1f}ms {b:8.1f}ms {b / a:6.2f}x")


if __name__ == "__main__":
    main()
