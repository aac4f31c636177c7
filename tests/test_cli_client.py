"""dockyard.client, the Engine API client the `dockyard` command is built on, against a
real dockyardd: version negotiation, errors as the DockyardError hierarchy with the
daemon's message, JSON streams, multiplexed logs and hijacked attach and exec."""

from __future__ import annotations

import pytest

from dockyard.client import Client
from dockyard.client.http import DaemonUnreachable, is_api_error, parse_host
from dockyard.errors import Conflict, InvalidArgument, NotFound
from engine_daemon import CGROUP_PARENT, daemon, docker  # noqa: F401 (daemon: fixture)


@pytest.fixture
def client(daemon):
    c = Client(daemon.host)
    yield c
    ids = docker(daemon, "ps", "-aq", check=False).stdout.split()
    if ids:
        docker(daemon, "rm", "-f", *ids, check=False)


def _config(*cmd: str, **extra) -> dict:
    return {"Image": "busybox", "Cmd": list(cmd),
            "HostConfig": {"CgroupParent": CGROUP_PARENT}, **extra}


def test_negotiation_and_system(client):
    assert client.system.ping()["api-version"] == "1.45"
    assert client.http.version is None  # negotiated on the first versioned request
    assert client.system.version()["ApiVersion"] == "1.45"
    assert client.http.version == "1.45"
    assert client.system.info()["Images"] >= 1


def test_older_version_is_spoken_when_asked(daemon, monkeypatch):
    monkeypatch.setenv("DOCKYARD_API_VERSION", "1.40")
    c = Client(daemon.host)
    assert c.http.negotiate() == "1.40"
    assert isinstance(c.containers.list(), list)
    monkeypatch.setenv("DOCKYARD_API_VERSION", "9.99")
    with pytest.raises(InvalidArgument, match="client version 9.99 is too new"):
        Client(daemon.host).containers.list()


def test_errors_carry_the_daemon_message(client):
    with pytest.raises(NotFound) as info:
        client.containers.inspect("nosuch")
    assert str(info.value) == "No such container: nosuch"
    assert is_api_error(info.value) and info.value.status == 404
    cid = client.containers.create(_config("true"), name="twice")["Id"]
    with pytest.raises(Conflict, match="is already in use by container"):
        client.containers.create(_config("true"), name="twice")
    client.containers.remove(cid)
    with pytest.raises(InvalidArgument):
        client.containers.list(filters={"colour": ["red"]})


def test_unreachable():
    with pytest.raises(DaemonUnreachable) as info:
        Client("unix:///nonexistent.sock").containers.list()
    assert not is_api_error(info.value)
    assert "unix:///nonexistent.sock" in str(info.value)


@pytest.mark.parametrize("text, url", [("unix:///a/b.sock", "unix:///a/b.sock"),
                                       ("/a/b.sock", "unix:///a/b.sock"),
                                       ("tcp://1.2.3.4", "tcp://1.2.3.4:2375"),
                                       ("tcp://1.2.3.4:99", "tcp://1.2.3.4:99"),
                                       ("tcp://[::1]:5", "tcp://[::1]:5")])
def test_parse_host(text, url):
    assert parse_host(text).url == url


@pytest.mark.parametrize("text", ["foo://x", "unix://", "tcp://h:x", "tcp://h:0"])
def test_parse_host_refuses(text):
    with pytest.raises(InvalidArgument, match="invalid bind address format"):
        parse_host(text)


def test_logs_are_demultiplexed(client):
    cid = client.containers.create(_config("sh", "-c", "echo out; echo err >&2"))["Id"]
    client.containers.start(cid)
    assert client.containers.wait(cid)["StatusCode"] == 0
    with client.containers.logs(cid) as r:
        frames = list(r.iter_frames(False))
    assert sorted(frames) == [(1, b"out\n"), (2, b"err\n")]


def test_attach_wait_start(client):
    cid = client.containers.create(_config("sh", "-c", "echo hello; exit 4"))["Id"]
    attach = client.containers.attach(cid)
    with attach:
        attach.close_write()
        waiter = client.containers.wait_request(cid, "next-exit")
        with waiter:
            assert client.containers.start(cid) is True
            assert list(attach.iter_frames(False)) == [(1, b"hello\n")]
            assert waiter.json()["StatusCode"] == 4


def test_exec_hijacked_and_detached(client):
    cid = client.containers.create(_config("sleep", "1000"))["Id"]
    client.containers.start(cid)
    exec_id = client.execs.create(cid, {"Cmd": ["sh", "-c", "echo x; exit 2"],
                                        "AttachStdout": True, "AttachStderr": True})
    resp = client.execs.start(exec_id)
    assert resp is not None
    with resp:
        resp.close_write()
        assert b"".join(d for _, d in resp.iter_frames(False)) == b"x\n"
    assert client.execs.inspect(exec_id)["ExitCode"] == 2
    assert client.execs.start(client.execs.create(cid, {"Cmd": ["true"]}), detach=True) is None


def test_image_streams(client, tmp_path):
    with client.images.save(["busybox"]) as r:
        data = b"".join(r.iter_raw())
    assert len(data) > 100_000
    messages = list(client.images.load(iter([data[i:i + 65536]
                                              for i in range(0, len(data), 65536)])))
    assert any("Loaded image" in m.get("stream", "") for m in messages)
    assert client.images.inspect("busybox")["Id"].startswith("sha256:")
    assert client.images.history("busybox")[0]["Id"].startswith("sha256:")
