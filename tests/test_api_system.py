"""dockyardd's system endpoints and its life cycle: configuration, negotiation,
headers, events, clean shutdown."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_api_images import Daemon, docker, start_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    yield from start_daemon(tmp_path_factory.mktemp("dockyardd"))


def _run_daemon(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dockyard.daemon.main",
                           "--data-root", str(tmp_path / "data"),
                           "--exec-root", str(tmp_path / "exec"),
                           "-H", f"unix://{tmp_path / 's.sock'}", *args],
                          capture_output=True, text=True, timeout=30)


def test_ping_headers(daemon):
    for method in ("GET", "HEAD"):
        status, headers, body = daemon.request(method, "/_ping")
        assert status == 200
        assert headers["api-version"] == "1.45"
        assert headers["docker-experimental"] == "false"
        assert headers["ostype"] == "linux"
        assert headers["server"].startswith("Docker/") and headers["server"].endswith("(linux)")
        assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert headers["pragma"] == "no-cache"
        assert body == (b"OK" if method == "GET" else b"")


def test_version_negotiation(daemon):
    status, _, body = daemon.request("GET", "/v1.24/version")
    assert status == 200 and json.loads(body)["ApiVersion"] == "1.45"
    status, _, body = daemon.request("GET", "/v1.12/version")
    assert status == 400 and json.loads(body)["message"] == (
        "client version 1.12 is too old. Minimum supported API version is 1.24, please "
        "upgrade your client to a newer version")
    status, _, body = daemon.request("GET", "/v1.99/version")
    assert status == 400 and json.loads(body)["message"] == (
        "client version 1.99 is too new. Maximum supported API version is 1.45")


def test_unknown_route(daemon):
    for method, path in (("GET", "/nope"), ("GET", "/v1.45/nope"), ("PUT", "/version")):
        status, _, body = daemon.request(method, path)
        assert status == 404 and json.loads(body) == {"message": "page not found"}


def test_cli_version_and_info(daemon):
    out = docker(daemon, "version").stdout
    assert "API version:      1.45 (minimum version 1.24)" in out
    info = json.loads(docker(daemon, "info", "--format", "{{json .}}").stdout)
    assert info["Driver"] == "overlay2" and info["OSType"] == "linux"
    assert info["DockerRootDir"] == str(daemon.data_root)
    assert info["CgroupDriver"] == "cgroupfs" and info["NCPU"] >= 1
    assert info["Containers"] == 0 and info["DefaultRuntime"] in info["Runtimes"]
    text = docker(daemon, "info").stdout
    assert "Storage Driver: overlay2" in text and "Docker Root Dir:" in text


def test_system_df(daemon):
    status, _, body = daemon.request("GET", "/v1.45/system/df")
    doc = json.loads(body)
    assert status == 200 and doc["Images"] == [] and doc["LayersSize"] == 0


def test_events_stream_live(daemon):
    """A subscriber sees an event as it happens; filters and until apply."""
    got: list[bytes] = []
    ready = threading.Event()

    def listen() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(daemon.sock))
            until = time.time() + 3
            s.sendall(f"GET /v1.45/events?until={until:.3f}&filters=%7B%22type%22%3A%5B%22image%22%5D%7D "
                      "HTTP/1.0\r\n\r\n".encode())
            data = s.recv(4096)
            ready.set()
            while chunk := s.recv(4096):
                data += chunk
            got.append(data)

    t = threading.Thread(target=listen)
    t.start()
    assert ready.wait(10)
    status, _, body = daemon.request("POST", "/v1.45/images/prune")
    assert status == 200 and json.loads(body)["SpaceReclaimed"] == 0
    t.join(10)
    payload = got[0].partition(b"\r\n\r\n")[2]
    events = [json.loads(x) for x in payload.splitlines() if x.strip()]
    assert [e["Action"] for e in events] == ["prune"]
    status, _, body = daemon.request("GET", "/v1.45/events?filters=%7B%22bogus%22%3A%5B%5D%7D")
    assert status == 400 and json.loads(body)["message"] == "invalid filter 'bogus'"


def test_config_unknown_key(tmp_path):
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"debug": True, "no-such-option": 1}))
    proc = _run_daemon(tmp_path, "--config-file", str(cfg))
    assert proc.returncode == 1
    assert "don't match any configuration option: no-such-option" in proc.stderr


def test_config_missing_given_file(tmp_path):
    proc = _run_daemon(tmp_path, "--config-file", str(tmp_path / "absent.json"))
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr


def test_refuses_public_tcp_and_bad_tls(tmp_path):
    proc = _run_daemon(tmp_path, "--config-file", "/dev/null", "-H", "tcp://0.0.0.0:2375")
    assert proc.returncode == 1 and "without TLS" in proc.stderr
    absent = tmp_path / "absent.pem"
    proc = _run_daemon(tmp_path, "--config-file", "/dev/null", "--tlsverify",
                       "--tlscert", str(absent))
    assert proc.returncode == 1 and f"open {absent}: no such file or directory" in proc.stderr


def test_config_file_values_and_sigint(tmp_path):
    """daemon.json settings apply (flags win), and SIGINT with a stream open still
    shuts down cleanly: socket and pidfile gone, exit status 0."""
    d = Daemon(tmp_path, config={"insecure-registries": ["10.0.0.0/8"], "debug": False})
    try:
        status, _, body = d.request("GET", "/info")
        assert "10.0.0.0/8" in json.loads(body)["RegistryConfig"]["InsecureRegistryCIDRs"]
        assert d.pidfile.read_text().strip() == str(d.proc.pid)
        listener = socket.socket(socket.AF_UNIX)
        listener.connect(str(d.sock))
        listener.sendall(b"GET /events HTTP/1.0\r\n\r\n")
        listener.recv(1024)
        import signal
        assert d.stop(signal.SIGINT) == 0
        listener.close()
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
    assert not d.sock.exists() and not d.pidfile.exists()
