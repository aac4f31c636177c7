"""A pty handed over the console socket, and exec into a running container."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from pathlib import Path

from conftest import wait_for


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {buf!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"pty closed before {needle!r}; got {buf!r}"
            buf += chunk
    return buf


def receive_pty(server: socket.socket) -> tuple[int, str]:
    conn, _ = server.accept()
    with conn:
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    return fds[0], msg.decode()


def test_console_socket_receives_working_pty(any_runtime, bundle, tmp_path):
    bundle.process["terminal"] = True
    path = bundle.args("sh").write()
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    any_runtime("create", "--bundle", path, "--console-socket", sock_path, "tty1")
    master, name = receive_pty(server)
    server.close()
    assert name == "/dev/ptmx"  # what runc sends: the master's name
    any_runtime("start", "tty1")
    os.write(master, b"echo $((6*7)); tty\n")
    out = read_until(master, b"/dev/pts/")
    assert b"42" in out
    os.write(master, b"exit 7\n")
    wait_for(lambda: any_runtime.status("tty1") == "stopped", what="shell to exit")
    os.close(master)
    any_runtime("delete", "tty1")


def test_exec_joins_namespaces_and_cgroup(any_runtime, bundle, tmp_path):
    bundle.config["root"]["readonly"] = False
    path = bundle.args("sleep", "1000").write()
    any_runtime("run", "-d", "--bundle", path, "ex")
    init = any_runtime.state("ex")["pid"]
    res = any_runtime("exec", "--env", "FOO=bar", "--user", "1000:1000", "--cwd", "/tmp", "ex",
                      "sh", "-c", "hostname; id -u; id -g; pwd; echo $FOO; cat /proc/1/cmdline")
    assert res.stdout.split("\n")[:5] == ["box", "1000", "1000", "/tmp", "bar"]
    assert res.stdout.split("\n")[5].startswith("sleep")
    # Detached, with a pid file: compare its namespaces and cgroup with the init's.
    pid_file = tmp_path / "exec.pid"
    any_runtime("exec", "-d", "--pid-file", str(pid_file), "ex", "sleep", "1000",
                stdin=open(os.devnull))
    pid = int(pid_file.read_text())
    for ns in ("pid", "mnt", "net", "uts", "ipc"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
    assert Path(f"/proc/{pid}/cgroup").read_text() == Path(f"/proc/{init}/cgroup").read_text()
    any_runtime("delete", "--force", "ex")


def test_exec_exit_code_and_process_json(runtime, bundle, tmp_path):
    path = bundle.args("sleep", "1000").write()
    runtime("run", "-d", "--bundle", path, "ex2")
    assert runtime("exec", "ex2", "sh", "-c", "exit 9", check=False).returncode == 9
    process = {"args": ["sh", "-c", "echo $A; id -u"], "env": ["A=from-json", "PATH=/bin"],
               "cwd": "/", "user": {"uid": 7, "gid": 7}}
    (tmp_path / "p.json").write_text(json.dumps(process))
    res = runtime("exec", "--process", str(tmp_path / "p.json"), "ex2")
    assert res.stdout.split() == ["from-json", "7"]
    res = runtime("exec", "ex2", "no-such-program", check=False)
    assert res.returncode != 0 and "no-such-program" in res.stderr
    runtime("delete", "--force", "ex2")
