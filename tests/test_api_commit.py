"""POST /commit (`docker commit`), judged by the docker CLI and docker-py against a real
dockyardd: the new image runs, carries the container's changes and the requested
config, and history/inspect show what dockerd shows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from engine_daemon import Daemon, daemon, docker, run  # noqa: F401 (daemon: fixture)
from test_api_archive import call, message, mounts


@pytest.fixture()
def marked(daemon: Daemon) -> Iterator[str]:
    cid = run(daemon, "--name", "commitme", "-e", "KEEP=1", "busybox", "sh", "-c",
              "echo committed > /marker; rm /bin/ls").stdout
    cid = docker(daemon, "ps", "-aq", "--filter", "name=commitme", "--no-trunc").stdout.strip()
    try:
        yield cid
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def _rmi(d: Daemon, *refs: str) -> None:
    docker(d, "rmi", "-f", *refs, check=False)


def test_commit_with_change_message_author(daemon, marked):
    try:
        r = docker(daemon, "commit", "-c", 'CMD ["cat","/marker"]', "-m", "msg", "-a", "me",
                   marked, "committed:tag")
        image_id = r.stdout.strip()
        assert image_id.startswith("sha256:")
        assert docker(daemon, "run", "--rm", "committed:tag").stdout == "committed\n"
        # The deletion is part of the layer too.
        r = docker(daemon, "run", "--rm", "committed:tag", "sh", "-c",
                   "test -e /bin/ls && echo present || echo gone")
        assert r.stdout == "gone\n"
        info = json.loads(docker(daemon, "image", "inspect", "committed:tag").stdout)[0]
        assert info["Id"] == image_id
        assert info["Author"] == "me" and info["Comment"] == "msg"
        assert info["Config"]["Cmd"] == ["cat", "/marker"]
        assert "KEEP=1" in info["Config"]["Env"]  # completed from the container's config
        base = json.loads(docker(daemon, "image", "inspect", "busybox").stdout)[0]
        assert info["Parent"] == base["Id"]
        assert info["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
        assert len(info["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        hist = json.loads(docker(daemon, "history", "--no-trunc", "--format", "{{json .}}",
                                 "committed:tag").stdout.splitlines()[0])
        assert hist["Comment"] == "msg" and hist["ID"] == image_id
        assert "echo committed" in hist["CreatedBy"]
    finally:
        _rmi(daemon, "committed:tag")


def test_commit_nothing_changed_adds_an_empty_layer_entry(daemon):
    cid = docker(daemon, "create", "busybox", "true").stdout.strip()
    try:
        image_id = docker(daemon, "commit", cid, "same:1").stdout.strip()
        info = json.loads(docker(daemon, "image", "inspect", image_id).stdout)[0]
        base = json.loads(docker(daemon, "image", "inspect", "busybox").stdout)[0]
        assert info["RootFS"]["Layers"] == base["RootFS"]["Layers"]
        # The empty layer shows in history with size 0.
        rows = [json.loads(line) for line in docker(
            daemon, "history", "--format", "{{json .}}", "same:1").stdout.splitlines()]
        assert rows[0]["Size"] in ("0B", "0")
    finally:
        docker(daemon, "rm", "-f", cid, check=False)
        _rmi(daemon, "same:1")


def test_commit_sdk_with_config_and_event(daemon, marked):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.APIClient(base_url=daemon.host)
    since = int(time.time()) - 1
    try:
        res = client.commit(marked, repository="sdkrepo", tag="v1", message="from sdk",
                            conf={"Labels": {"k": "v"}, "WorkingDir": "/tmp"},
                            changes=["ENV NEW=2"])
        image_id = res["Id"]
        info = client.inspect_image("sdkrepo:v1")
        assert info["Id"] == image_id
        assert info["Config"]["Labels"] == {"k": "v"} and info["Config"]["WorkingDir"] == "/tmp"
        assert "NEW=2" in info["Config"]["Env"] and "KEEP=1" in info["Config"]["Env"]
        events = list(client.events(since=since, until=int(time.time()) + 1, decode=True))
        commits = [e for e in events if e.get("Action") == "commit"]
        assert commits and commits[-1]["Type"] == "container"
        attrs = commits[-1]["Actor"]["Attributes"]
        assert attrs["imageID"] == image_id and attrs["imageRef"] == "sdkrepo:v1"
        assert attrs["comment"] == "from sdk"
    finally:
        client.close()
        _rmi(daemon, "sdkrepo:v1")


def test_commit_running_container(daemon):
    cid = run(daemon, "-d", "busybox", "sh", "-c", "echo live > /live; sleep 1000").stdout.strip()
    try:
        deadline = time.monotonic() + 20
        while docker(daemon, "exec", cid, "cat", "/live", check=False).stdout != "live\n":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        docker(daemon, "commit", cid, "live:1")
        assert docker(daemon, "run", "--rm", "live:1", "cat", "/live").stdout == "live\n"
    finally:
        docker(daemon, "rm", "-f", cid, check=False)
        _rmi(daemon, "live:1")


def test_commit_bad_inputs(daemon, marked):
    before_images = docker(daemon, "images", "-aq").stdout.split()
    before_mounts = mounts(daemon)
    status, _, body = call(daemon, "POST", "/commit", {"container": "nosuch"})
    assert status == 404 and message(body) == "No such container: nosuch"
    r = docker(daemon, "commit", "nosuch", "x:y", check=False)
    assert r.returncode != 0 and "No such container: nosuch" in r.stderr
    status, _, body = call(daemon, "POST", "/commit", {"container": marked, "repo": "Bad/Name"})
    assert status == 400 and "invalid reference format" in message(body)
    status, _, body = call(daemon, "POST", "/commit", {"container": marked, "repo": "ok",
                                                       "tag": "bad tag"})
    assert status == 400 and "invalid" in message(body)
    status, _, body = call(daemon, "POST", "/commit", {"container": marked,
                                                       "changes": "FROM busybox"})
    assert status == 400 and message(body) == "from is not a valid change command"
    status, _, body = call(daemon, "POST", "/commit", {"container": marked}, body=b"{not json")
    assert status == 400
    assert docker(daemon, "images", "-aq").stdout.split() == before_images
    assert mounts(daemon) == before_mounts
