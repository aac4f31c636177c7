"""Bad input to the container endpoints: Docker's status codes, a message naming the
problem, and nothing half-created left behind (no record, no directory, no mount)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any

import pytest

from engine_daemon import daemon, docker, run  # noqa: F401 (daemon: fixture)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(d, method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    conn = _UnixHTTP(str(d.sock))
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, url, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text.decode(errors="replace")
    finally:
        conn.close()


def _nothing_left(d, before: set[str]) -> None:
    status, listed = call(d, "GET", "/containers/json?all=1")
    assert status == 200 and {c["Id"] for c in listed} == before
    on_disk = {n for n in os.listdir(d.data_root / "containers") if not n.startswith(".")}
    assert on_disk == before, on_disk - before
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(d.root) in line.split()[4]]


@pytest.fixture()
def existing(daemon):
    _, listed = call(daemon, "GET", "/containers/json?all=1")
    return {c["Id"] for c in listed}


@pytest.mark.parametrize("body, status, message", [
    ({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Memory": 1}}, 400,
     "Minimum memory limit allowed is 6MB"),
    ({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NanoCpus": 10 ** 15}}, 400,
     "Range of CPUs is from 0.01"),
    ({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"CapAdd": ["CAP_NONSENSE"]}}, 400,
     "CAP_NONSENSE"),
    ({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": ["relative:/x"]}}, 400,
     "relative"),
    ({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"StorageOpt": {"size": "1G"}}}, 400,
     "HostConfig.StorageOpt"),
    ({"Image": "busybox", "Cmd": ["true"], "WorkingDir": "relative"}, 400,
     "needs to be an absolute path"),
    ({"Image": "busybox", "Cmd": ["true"],
      "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, 400, "invalid restart policy"),
    ({"Image": "nosuch:1", "Cmd": ["true"]}, 404, "No such image: nosuch:1"),
    ({"Cmd": ["true"]}, 400, "no image specified"),
])
def test_create_refusals_leave_nothing(daemon, existing, body, status, message):
    got, answer = call(daemon, "POST", "/containers/create?name=refused", body)
    assert got == status, answer
    assert message in answer["message"], answer
    _nothing_left(daemon, existing)


def test_invalid_json_and_bad_names(daemon, existing):
    got, answer = call(daemon, "POST", "/containers/create", raw=b"{not json")
    assert got == 400 and "invalid JSON" in answer["message"]
    got, answer = call(daemon, "POST", "/containers/create?name=bad%20name",
                       {"Image": "busybox", "Cmd": ["true"]})
    assert got == 400 and "Invalid container name (bad name)" in answer["message"]
    _nothing_left(daemon, existing)


def test_name_in_use_is_a_conflict(daemon, existing):
    got, first = call(daemon, "POST", "/containers/create?name=twin",
                      {"Image": "busybox", "Cmd": ["true"]})
    assert got == 201
    try:
        got, answer = call(daemon, "POST", "/containers/create?name=twin",
                           {"Image": "busybox", "Cmd": ["true"]})
        assert got == 409
        assert answer["message"] == (
            f'Conflict. The container name "/twin" is already in use by container '
            f'"{first["Id"]}". You have to remove (or rename) that container to be able to '
            "reuse that name.")
        _nothing_left(daemon, existing | {first["Id"]})
    finally:
        call(daemon, "DELETE", "/containers/twin?force=1")


@pytest.mark.parametrize("method, url", [
    ("POST", "/containers/ghost/start"), ("POST", "/containers/ghost/stop"),
    ("POST", "/containers/ghost/kill"), ("POST", "/containers/ghost/restart"),
    ("POST", "/containers/ghost/pause"), ("POST", "/containers/ghost/unpause"),
    ("POST", "/containers/ghost/rename?name=x2"), ("POST", "/containers/ghost/wait"),
    ("GET", "/containers/ghost/json"), ("GET", "/containers/ghost/logs?stdout=1"),
    ("DELETE", "/containers/ghost"), ("POST", "/containers/ghost/exec"),
])
def test_unknown_container_is_404(daemon, method, url):
    body = {"Cmd": ["true"]} if url.endswith("/exec") else None
    got, answer = call(daemon, method, url, body)
    assert got == 404, (url, answer)
    assert answer["message"] == "No such container: ghost"


def test_running_container_refusals(daemon, existing):
    cid = run(daemon, "-d", "--name", "busy", "busybox", "sleep", "300").stdout.strip()
    try:
        got, answer = call(daemon, "DELETE", "/containers/busy")
        assert got == 409 and "You cannot remove a running container" in answer["message"]
        got, answer = call(daemon, "POST", "/containers/busy/kill?signal=NOPE")
        assert got == 400 and "Invalid signal: NOPE" in answer["message"]
        got, _ = call(daemon, "POST", "/containers/busy/start")
        assert got == 304
        got, answer = call(daemon, "POST", "/containers/busy/wait?condition=whenever")
        assert got == 400 and "condition" in answer["message"]
        assert docker(daemon, "inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
    finally:
        call(daemon, "DELETE", "/containers/busy?force=1")
    _nothing_left(daemon, existing)


def test_start_failure_records_the_error(daemon, existing):
    r = run(daemon, "--name", "nocmd", "busybox", "/no/such/binary", check=False)
    assert r.returncode == 127, r.stderr
    assert "no such file or directory" in r.stderr.lower() or "not found" in r.stderr.lower()
    state = docker(daemon, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "nocmd")
    assert state.stdout.split()[1] == "127"
    docker(daemon, "rm", "nocmd")
    _nothing_left(daemon, existing)
