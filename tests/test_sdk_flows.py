"""The Docker SDK for Python driving dockyardd through a whole working session, as a
user's script would: containers from run to removal, exec, files, resources, images
through a registry, archives, pruning, disk usage and events."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator

import pytest

docker_py = pytest.importorskip("docker")

from dockyard.distribution.server import RegistryThread  # noqa: E402
from engine_daemon import CGROUP_PARENT, daemon  # noqa: E402,F401 (daemon: fixture)


@pytest.fixture()
def client(daemon) -> Iterator["docker_py.DockerClient"]:
    c = docker_py.DockerClient(base_url=daemon.host, timeout=60)
    try:
        yield c
    finally:
        for ctr in c.containers.list(all=True):
            ctr.remove(force=True)
        c.close()


def _poll(fn, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_container_session(client):
    since = int(time.time()) - 1
    out = client.containers.run("busybox", ["echo", "hello"], remove=True,
                                cgroup_parent=CGROUP_PARENT)
    assert out == b"hello\n"

    c = client.containers.run("busybox", ["sh", "-c", "echo started; exec sleep 300"],
                              detach=True, name="worker", mem_limit="64m",
                              labels={"role": "worker"}, cgroup_parent=CGROUP_PARENT)
    _poll(lambda: b"started" in c.logs())
    c.reload()
    assert c.status == "running" and c.labels == {"role": "worker"}
    assert c.attrs["HostConfig"]["Memory"] == 64 << 20

    code, output = c.exec_run(["sh", "-c", "echo $((6*7)); exit 3"])
    assert (code, output) == (3, b"42\n")
    code, output = c.exec_run("id -u", user="nobody")
    assert output.strip() == b"65534"

    # Files in and out.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"payload\n"
        info = tarfile.TarInfo("note.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert c.put_archive("/tmp", buf.getvalue())
    stream, stat = c.get_archive("/tmp/note.txt")
    assert stat["name"] == "note.txt" and stat["size"] == 8
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        assert tar.extractfile("note.txt").read() == b"payload\n"  # type: ignore[union-attr]
    assert {"Path": "/tmp/note.txt", "Kind": 1} in c.diff()

    # Processes and resources.
    top = c.top()
    assert "PID" in top["Titles"] and any("sleep" in " ".join(p) for p in top["Processes"])
    stats = c.stats(stream=False)
    assert stats["memory_stats"]["limit"] == 64 << 20
    c.update(mem_limit="96m", memswap_limit="192m")
    c.reload()
    assert c.attrs["HostConfig"]["Memory"] == 96 << 20

    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.rename("renamed")
    c.reload()
    assert c.name == "renamed"
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"

    assert client.containers.list(filters={"label": "role=worker"})[0].id == c.id
    c.kill()
    assert c.wait()["StatusCode"] == 137
    c.reload()
    assert c.status == "exited"

    image = c.commit(repository="committed", tag="v1", message="from the sdk", author="me")
    assert image.attrs["Comment"] == "from the sdk" and image.attrs["Author"] == "me"
    assert client.containers.run("committed:v1", ["cat", "/tmp/note.txt"], remove=True,
                                 cgroup_parent=CGROUP_PARENT) == b"payload\n"
    c.remove()
    client.images.remove("committed:v1")

    df = client.df()
    assert {"Images", "Containers", "Volumes", "LayersSize"} <= set(df)
    pruned = client.containers.prune()
    assert "SpaceReclaimed" in pruned

    events = client.events(since=since, until=int(time.time()) + 1, decode=True,
                           filters={"type": "container"})
    actions = {e["Action"] for e in events}
    assert {"create", "start", "die", "destroy", "pause", "unpause", "rename", "kill",
            "commit"} <= actions, actions


def test_image_session(client, tmp_path):
    with RegistryThread(str(tmp_path / "registry")) as reg:
        img = client.images.get("busybox")
        assert img.tag(f"{reg.address}/tools/busybox", "1")
        lines = list(client.images.push(f"{reg.address}/tools/busybox", "1", stream=True,
                                        decode=True))
        assert any("Digest" in (line.get("aux") or {}) for line in lines), lines
        client.images.remove(f"{reg.address}/tools/busybox:1")
        pulled = client.images.pull(f"{reg.address}/tools/busybox", tag="1")
        assert pulled.id == img.id
        assert f"{reg.address}/tools/busybox:1" in pulled.tags

        saved = b"".join(pulled.save(named=True))
        client.images.remove(f"{reg.address}/tools/busybox:1")
        loaded = client.images.load(saved)
        assert loaded[0].id == img.id
        assert [h for h in img.history() if h.get("CreatedBy")]
        client.images.remove(f"{reg.address}/tools/busybox:1")
    assert client.images.prune(filters={"dangling": True}) is not None
    with pytest.raises(docker_py.errors.ImageNotFound):
        client.images.get("nosuch:tag")
    with pytest.raises(docker_py.errors.NotFound):
        client.containers.get("nosuch")
