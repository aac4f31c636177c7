"""Benchmark: `run` of a bundle whose process is /bin/true.

Prints the median wall time and peak memory of dockyard-runtime's CLI, of the
in-process library path (a warm Python process forking the container, as the
daemon does), of runc and crun, and of `unshare` as the kernel's floor, with
each one's ratio to the in-process path.

    sudo /opt/dockyard/bin/python bench/runtime_run.py [--runs N]

It re-executes itself in a private mount namespace where the hybrid host's
/sys/fs/cgroup/unified is hidden, since Debian's crun refuses hybrid cgroups;
every runtime is measured in that same namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSYBOX = Path(os.environ.get("DOCKYARD_SHARED", HERE.parent.parent / "shared")) / "images" / "busybox" / "1.38.0-glibc"


def make_bundle(workdir: Path) -> Path:
    """busybox from the shared OCI layout, else Debian's busybox-static."""
    bundle = workdir / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    if BUSYBOX.exists():
        index = json.loads((BUSYBOX / "index.json").read_text())
        manifest = json.loads((BUSYBOX / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
        for layer in manifest["layers"]:
            subprocess.run(["tar", "-xzf", str(BUSYBOX / "blobs/sha256" / layer["digest"][7:]),
                            "-C", str(rootfs)], check=True)
    else:
        (rootfs / "bin").mkdir()
        shutil.copy("/bin/busybox", rootfs / "bin/busybox")
        subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    from dockyard.runtime.spec import default_spec

    cfg = default_spec()
    cfg["ociVersion"] = "1.0.2"  # the newest Debian's crun 1.8 accepts
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds of one command, and its peak RSS (KiB) as GNU time reports it.

    The peak comes from a second run under /usr/bin/time: a process forked from this
    Python would carry our own RSS into its high-water mark, time's fork does not.
    """
    start = time.perf_counter()
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {res.returncode}")
    peak = 0
    if shutil.which("time") and os.path.exists("/usr/bin/time"):
        argv = [a.replace("bench-", "bench-peak-") for a in argv]
        out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        peak = int(out.stderr.split()[-1])
    return elapsed, peak


def measure_cli(name: str, argv_for, runs: int) -> dict:
    times, peaks = [], []
    for i in range(runs + 2):
        t, rss = timed(argv_for(f"bench-{name.split()[0]}-{i}"))
        if i >= 2:  # warm-up
            times.append(t)
            peaks.append(rss)
    return {"name": name, "median_ms": statistics.median(times) * 1000, "peak_kib": max(peaks)}


def measure_library(bundle: Path, state: Path, runs: int) -> dict:
    from dockyard.runtime import linux
    from dockyard.runtime.container import Runtime

    linux.set_child_subreaper()
    rt = Runtime(str(state))
    times: list[float] = []
    peaks: list[int] = []

    for i in range(runs + 2):
        start = time.perf_counter()
        pid = rt.create(f"bench-lib-{i}", str(bundle), stdio=(devnull(), devnull(), devnull()))
        rt.start(f"bench-lib-{i}")
        _, status, usage = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - start
        peaks.append(usage.ru_maxrss)
        rt.delete(f"bench-lib-{i}")
        if code != 0:
            raise RuntimeError(f"in-process run exited {code}")
        if i >= 2:
            times.append(elapsed)
    # The forked init's high-water mark counts the pages it shares with us, copy-on-write.
    return {"name": "dockyard (in-process)", "median_ms": statistics.median(times) * 1000,
            "peak_kib": max(peaks)}


_DEVNULL: int | None = None


def devnull() -> int:
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDWR)
    return _DEVNULL


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.inner:
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                              __file__, "--inner", "--runs", str(args.runs)])
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        sys.exit("--inner must run in a private mount namespace")
    if os.path.ismount("/sys/fs/cgroup/unified"):
        subprocess.run(["mount", "-t", "tmpfs", "none", "/sys/fs/cgroup/unified"], check=True)
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    try:
        bundle = make_bundle(work)
        results = [measure_library(bundle, work / "lib-state", args.runs)]
        ours = shutil.which("dockyard-runtime")
        if ours:
            results.append(measure_cli("dockyard-runtime (CLI)", lambda cid: [
                ours, "--root", str(work / "cli-state"), "run", "--bundle", str(bundle), cid],
                args.runs))
        for peer in ("runc", "crun"):
            exe = shutil.which(peer)
            if not exe:
                continue
            try:
                results.append(measure_cli(peer, lambda cid, exe=exe, peer=peer: [
                    exe, "--root", str(work / f"{peer}-state"), "run", "--bundle", str(bundle), cid],
                    args.runs))
            except RuntimeError as e:
                results.append({"name": peer, "error": str(e)})
        results.append(measure_cli("unshare (kernel floor)", lambda cid: [
            "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "true"], args.runs))
    finally:
        subprocess.run(["umount", "-R", str(work)], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]["median_ms"]
    print(f"run of /bin/true, median of {args.runs} runs; peak RSS: GNU time's for commands, the "
          "forked init's (shared pages included) for the in-process path")
    print(f"{'runtime':28} {'median':>10} {'peak RSS':>10} {'vs in-process':>14}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:28} {'failed: ' + r['error']}")
            continue
        print(f"{r['name']:28} {r['median_ms']:8.1f}ms {r['peak_kib'] / 1024:8.1f}MiB "
              f"{r['median_ms'] / base:13.2f}x")


if __name__ == "__main__":
    main()
