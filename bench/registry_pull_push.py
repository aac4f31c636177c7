"""Benchmark: push and pull of a ~200 MB, 4-layer image against a registry on loopback,
Dockyard's registry client side by side with `skopeo copy` of the same image.

    sudo /opt/dockyard/bin/python bench/registry_pull_push.py [--layers 4] [--layer-mb 50]

The image is generated (incompressible layers, so the wire carries ~200 MB); each
transfer goes to a fresh `dockyard registry serve` so no blob is already there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path


def make_layout(path: Path, layers: int, layer_mb: int) -> None:
    """An OCI layout of LAYERS gzip layers, each one file of random bytes."""
    import gzip
    import hashlib
    import io

    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return digest

    descs, diff_ids = [], []
    for i in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            payload = os.urandom(layer_mb << 20)
            info = tarfile.TarInfo(f"layer{i}.bin")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
        gz = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": "sha256:" + put(gz), "size": len(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + put(config), "size": len(config)},
                           "layers": descs}).encode()
    mdigest = put(manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mdigest,
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))


class Registry:
    """A fresh `dockyard registry serve` on a free loopback port."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(["dockyard", "registry", "serve", "--addr",
                                      f"127.0.0.1:{self.port}", "--root", str(root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("registry did not start")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from dockyard.distribution.client import RegistryClient
    from dockyard.image.content import ContentStore

    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mb", type=int, default=50)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-reg-"))
    try:
        layout = work / "layout"
        make_layout(layout, args.layers, args.layer_mb)
        size = sum(f.stat().st_size for f in (layout / "blobs" / "sha256").iterdir())
        mdigest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]

        # The image in a content store, as the engine holds it before a push.
        source = ContentStore(str(work / "source"))
        for blob in (layout / "blobs" / "sha256").iterdir():
            with open(blob, "rb") as f:
                source.put(f.read())

        results = {}
        reg = Registry(work / "reg-skopeo")
        try:
            results["skopeo push"] = timed(lambda: subprocess.run(
                ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:bench",
                 f"docker://{reg.host}/bench/img:1"], check=True))
            results["skopeo pull"] = timed(lambda: subprocess.run(
                ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{reg.host}/bench/img:1",
                 f"oci:{work / 'skopeo-out'}:bench"], check=True))
        finally:
            reg.stop()

        reg = Registry(work / "reg-ours")
        try:
            async def push() -> None:
                async with RegistryClient() as c:
                    await c.push(source, f"{reg.host}/bench/img:1", mdigest)

            async def pull() -> None:
                async with RegistryClient() as c:
                    await c.pull(ContentStore(str(work / "pulled")), f"{reg.host}/bench/img:1")

            results["dockyard push"] = timed(lambda: asyncio.run(push()))
            results["dockyard pull"] = timed(lambda: asyncio.run(pull()))
        finally:
            reg.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = size / (1 << 20)
    print(f"image: {args.layers} layers, {mb:.0f} MiB compressed; registry: dockyard registry serve on loopback")
    print(f"{'':16} {'seconds':>8} {'MiB/s':>8}")
    for name, secs in results.items():
        print(f"{name:16} {secs:8.2f} {mb / secs:8.1f}")
    for op in ("push", "pull"):
        print(f"{op}: dockyard/skopeo time ratio {results['dockyard ' + op] / results['skopeo ' + op]:.2f}")


if __name__ == "__main__":
    main()
