"""Interactive containers through a real dockyardd: stdin, TTYs, resize, detach keys and
the websocket attach, judged by the real docker CLI driven through a pty (pexpect), by
docker-py and by aiohttp's websocket client."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest

from engine_daemon import CGROUP_PARENT, DOCKER, Daemon, daemon, docker, run  # noqa: F401

TIMEOUT = 30


# -- helpers ------------------------------------------------------------------------------

def _name() -> str:
    return "ia-" + uuid.uuid4().hex[:12]


def spawn(d: Daemon, *args: str, rows: int = 24, cols: int = 80) -> pexpect.spawn:
    """The docker CLI on a pty of ROWS x COLS."""
    env = dict(os.environ, DOCKER_HOST=d.host, TERM="xterm")
    return pexpect.spawn(DOCKER, list(args), env=env, dimensions=(rows, cols),
                         timeout=TIMEOUT, encoding="utf-8", codec_errors="replace")


def finish(child: pexpect.spawn) -> int:
    """Wait for the CLI to exit (with the deadline of its timeout); its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.exitstatus


def wait_for(pred: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def resize_and_see(child: pexpect.spawn, old: tuple[int, int], new: tuple[int, int],
                   what: str) -> None:
    """Resize CHILD's pty from OLD to NEW (rows, columns) and poll `stty size` in the shell
    it runs until WHAT sees the new size."""
    # The kernel tells the CLI (SIGWINCH), which asks the daemon to resize.
    child.setwinsize(*new)
    deadline = time.monotonic() + TIMEOUT
    while True:
        child.sendline("stty size")
        if child.expect([rf"{new[0]} {new[1]}\r\n", rf"{old[0]} {old[1]}\r\n"]) == 0:
            return
        assert time.monotonic() < deadline, f"the resize never reached {what}"


def running(d: Daemon, ref: str) -> bool:
    return docker(d, "inspect", "-f", "{{.State.Running}}", ref).stdout.strip() == "true"


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(self.path)


def request(d: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One API request; (status, decoded JSON body or None)."""
    conn = _UnixHTTP(str(d.sock))
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw.strip() else None)
    finally:
        conn.close()


class Hijacked:
    """A hijacked connection; what came along with the 101 answer is read first."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self.sock = sock
        self.pending = pending

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Hijacked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recv(self, timeout: float) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)


def hijack(d: Daemon, path: str, body: Any = None) -> Hijacked:
    """POST PATH asking for the connection upgrade; the connection after the 101."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(str(d.sock))
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            f"Upgrade: tcp\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    s.sendall(head.encode() + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, f"connection closed before the answer: {buf!r}"
        buf += chunk
    head_text, rest = buf.split(b"\r\n\r\n", 1)
    assert head_text.startswith(b"HTTP/1.1 101"), head_text
    return Hijacked(s, rest)


def read_until(s: Hijacked, needle: bytes, timeout: float = TIMEOUT) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while needle not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}: {buf!r}"
        chunk = s.recv(left)
        assert chunk, f"EOF before {needle!r}: {buf!r}"
        buf += chunk
    return buf


def read_to_eof(s: Hijacked, timeout: float = TIMEOUT) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for EOF: {buf!r}"
        chunk = s.recv(left)
        if not chunk:
            return buf
        buf += chunk


def type_then_detach(s: Hijacked, command: bytes, echoed: bytes, *keys: bytes) -> None:
    """Send COMMAND and wait for ECHOED, then the detach KEYS (one write each): the daemon
    must end the stream."""
    s.sendall(command)
    read_until(s, echoed)
    for key in keys:
        s.sendall(key)
    read_to_eof(s)


def demux(data: bytes) -> dict[int, bytes]:
    """stdcopy frames by stream id."""
    out: dict[int, bytes] = {1: b"", 2: b""}
    while data:
        assert len(data) >= 8, data
        sid, size = data[0], int.from_bytes(data[4:8], "big")
        out[sid] = out.get(sid, b"") + data[8:8 + size]
        data = data[8 + size:]
    return out


@pytest.fixture
def names(daemon: Daemon) -> Iterator[list[str]]:
    """Containers a test makes, removed afterwards whatever happens."""
    made: list[str] = []
    yield made
    if made:
        docker(daemon, "rm", "-f", *made, check=False)


def detached_shell(d: Daemon, names: list[str], *opts: str) -> str:
    name = _name()
    names.append(name)
    run(d, "-d", "--name", name, *opts, "busybox", "sh")
    wait_for(lambda: running(d, name), "the container to run")
    return name


# -- docker run -------------------------------------------------------------------------------

def test_run_it_shell(daemon, names):
    name = _name()
    names.append(name)
    with spawn(daemon, "run", "-it", "--rm", "--name", name, "--cgroup-parent", CGROUP_PARENT,
               "busybox", "sh") as child:
        child.expect("# ")
        child.sendline("echo hi$((1+1))")
        child.expect("hi2")
        child.sendline("exit 3")
        assert finish(child) == 3
    wait_for(lambda: docker(daemon, "ps", "-aq", "--filter", f"name={name}").stdout == "",
             "--rm to remove the container")


def test_run_i_pipes_stdin(daemon):
    env = dict(os.environ, DOCKER_HOST=daemon.host)
    r = subprocess.run([DOCKER, "run", "-i", "--rm", "--cgroup-parent", CGROUP_PARENT,
                        "busybox", "cat"], input="data\n", capture_output=True, text=True,
                       env=env, timeout=TIMEOUT)
    assert (r.returncode, r.stdout) == (0, "data\n"), r.stderr
    big = "".join(f"line {i}\n" for i in range(20000))  # more than any pipe buffer
    r = subprocess.run([DOCKER, "run", "-i", "--rm", "--cgroup-parent", CGROUP_PARENT,
                        "busybox", "wc", "-l"], input=big, capture_output=True, text=True,
                       env=env, timeout=TIMEOUT)
    assert (r.returncode, r.stdout.strip()) == (0, "20000"), r.stderr


def test_run_it_terminal_size_and_resize(daemon, names):
    name = _name()
    names.append(name)
    with spawn(daemon, "run", "-it", "--rm", "--name", name, "--cgroup-parent", CGROUP_PARENT,
               "busybox", "sh", rows=33, cols=101) as child:
        child.expect("# ")
        child.sendline("stty size")
        child.expect(r"33 101\r\n")
        resize_and_see(child, (33, 101), (41, 123), "the container")
        child.sendline("exit")
        assert finish(child) == 0


def test_start_ai(daemon, names):
    name = _name()
    names.append(name)
    docker(daemon, "create", "-it", "--name", name, "--cgroup-parent", CGROUP_PARENT, "busybox", "sh")
    with spawn(daemon, "start", "-ai", name) as child:
        child.expect("# ")
        child.sendline("echo st$((9-1))")
        child.expect("st8")
        child.sendline("exit 2")
        assert finish(child) == 2


# -- docker exec -----------------------------------------------------------------------------

def test_exec_it(daemon, names):
    name = detached_shell(daemon, names, "-i")
    with spawn(daemon, "exec", "-it", name, "sh", rows=30, cols=90) as child:
        child.expect("# ")
        child.sendline("echo ex$((40+2)); stty size")
        child.expect("ex42")
        child.expect(r"30 90\r\n")
        resize_and_see(child, (30, 90), (35, 100), "the exec")
        child.sendline("exit 5")
        assert finish(child) == 5
    assert running(daemon, name)


def test_exec_i_pipes_stdin(daemon, names):
    name = detached_shell(daemon, names, "-i")
    env = dict(os.environ, DOCKER_HOST=daemon.host)
    r = subprocess.run([DOCKER, "exec", "-i", name, "cat"], input="x\n", capture_output=True,
                       text=True, env=env, timeout=TIMEOUT)
    assert (r.returncode, r.stdout) == (0, "x\n"), r.stderr
    r = subprocess.run([DOCKER, "exec", "-i", name, "sh", "-c", "read a; exit $a"], input="4\n",
                       capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert r.returncode == 4, r.stderr
    # More than the daemon buffers: the client is made to wait, nothing is lost.
    big = b"z" * (6 * 1024 * 1024)
    r2 = subprocess.run([DOCKER, "exec", "-i", name, "wc", "-c"], input=big, capture_output=True,
                        env=env, timeout=TIMEOUT)
    assert (r2.returncode, r2.stdout.strip()) == (0, str(len(big)).encode()), r2.stderr


# -- docker attach and detach keys ------------------------------------------------------------

def test_attach_and_detach_with_default_keys(daemon, names):
    name = detached_shell(daemon, names, "-it")
    with spawn(daemon, "attach", name) as child:
        child.sendline("echo att$((2+3))")
        child.expect("att5")
        child.send("\x10\x11")  # ctrl-p ctrl-q
        child.expect("read escape sequence")
        # `docker attach` returns the escape "error" (exit 1); `docker run` does not.
        assert finish(child) == 1
    assert running(daemon, name)
    # Attach again: the shell is the same one.
    with spawn(daemon, "attach", name) as child:
        child.sendline("echo again$((1+1))")
        child.expect("again2")
        child.sendline("exit 7")
        assert finish(child) == 7
    wait_for(lambda: not running(daemon, name), "the container to exit")


def test_attach_custom_detach_keys(daemon, names):
    name = detached_shell(daemon, names, "-it")
    with spawn(daemon, "attach", "--detach-keys", "ctrl-x,y", name) as child:
        child.sendline("echo k$((3*3))")
        child.expect("k9")
        child.send("\x10\x11")  # the default keys are now just input
        child.sendline("echo still$((1+2))")
        child.expect("still3")
        child.send("\x18y")
        child.expect("read escape sequence")
        assert finish(child) == 1
    assert running(daemon, name)


def test_run_it_detach(daemon, names):
    name = _name()
    names.append(name)
    with spawn(daemon, "run", "-it", "--name", name, "--cgroup-parent", CGROUP_PARENT,
               "busybox", "sh") as child:
        child.expect("# ")
        child.send("\x10\x11")
        assert finish(child) == 0  # `docker run` takes the detach quietly
    assert running(daemon, name)


def test_daemon_detach_keys_on_attach_socket(daemon, names):
    """A client that does not look for the keys itself (docker-py): the daemon ends the
    attach when they come, and the container keeps running."""
    name = detached_shell(daemon, names, "-it")
    with hijack(daemon, f"/containers/{name}/attach?stream=1&stdin=1&stdout=1&stderr=1"
                        "&detachKeys=ctrl-a,b") as s:
        type_then_detach(s, b"echo sock$((5+5))\n", b"sock10", b"\x01", b"b")
    assert running(daemon, name)
    # A sequence broken off is input after all.
    with hijack(daemon, f"/containers/{name}/attach?stream=1&stdin=1&stdout=1"
                        "&detachKeys=q,z") as s:
        type_then_detach(s, b"echo aqqa\n", b"aqqa\r\n", b"q", b"z")
    assert running(daemon, name)
    # Without detachKeys, ctrl-p ctrl-q.
    with hijack(daemon, f"/containers/{name}/attach?stream=1&stdin=1&stdout=1") as s:
        type_then_detach(s, b"echo p$((2+2))\n", b"p4", b"\x10\x11")
    assert running(daemon, name)


def test_bad_detach_keys(daemon, names):
    name = detached_shell(daemon, names, "-it")
    for keys in ("ctrl-xx", "a,,b", "ctrl-P"):
        status, body = request(daemon, "POST", f"/containers/{name}/attach?stream=1&stdout=1"
                                               f"&detachKeys={keys}")
        assert status == 400, body
        assert body["message"] == f"Invalid detach keys ({keys}) provided"
    status, body = request(daemon, "POST", "/containers/nosuch/attach?detachKeys=ctrl-xx")
    assert status == 400  # as dockerd, the keys are checked first
    status, body = request(daemon, "POST", f"/containers/{name}/exec",
                           {"Cmd": ["true"], "DetachKeys": "ctrl-"})
    assert status == 400 and body["message"] == "Invalid escape keys (ctrl-) provided"
    with spawn(daemon, "attach", "--detach-keys", "bogus", name) as child:
        # The CLI reports only the status of the refused upgrade, as with dockerd.
        child.expect("unable to upgrade to tcp, received 400")
        assert finish(child) != 0
    assert running(daemon, name)


def test_exec_detach_keys(daemon, names):
    name = detached_shell(daemon, names, "-i")
    status, body = request(daemon, "POST", f"/containers/{name}/exec",
                           {"Cmd": ["sh"], "AttachStdin": True, "AttachStdout": True,
                            "Tty": True, "DetachKeys": "ctrl-e"})
    assert status == 201, body
    eid = body["Id"]
    with hijack(daemon, f"/exec/{eid}/start", {"Tty": True}) as s:
        type_then_detach(s, b"echo e$((6*7))\n", b"e42", b"\x05")
    status, info = request(daemon, "GET", f"/exec/{eid}/json")
    assert status == 200 and info["Running"] is True  # detached, not ended


# -- docker-py ------------------------------------------------------------------------------

def test_sdk_attach_socket_stdin(daemon, names):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.APIClient(base_url=daemon.host)
    try:
        name = _name()
        names.append(name)
        c = client.create_container("busybox", ["sh", "-c", "read a; echo got $a; exit 9"],
                                    name=name, stdin_open=True, host_config=client.create_host_config(
                                        cgroup_parent=CGROUP_PARENT))
        sock = client.attach_socket(c["Id"], params={"stdin": 1, "stdout": 1, "stream": 1})
        with Hijacked(sock._sock, b"") as raw:
            client.start(c["Id"])
            raw.sendall(b"hello\n")
            out = demux(read_to_eof(raw))
        assert out[1] == b"got hello\n"
        assert client.wait(c["Id"], timeout=TIMEOUT)["StatusCode"] == 9
    finally:
        client.close()


def test_sdk_exec_socket_stdin(daemon, names):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.APIClient(base_url=daemon.host)
    name = detached_shell(daemon, names, "-i")
    try:
        eid = client.exec_create(name, ["sh", "-c", "cat; echo done >&2"], stdin=True)["Id"]
        sock = client.exec_start(eid, socket=True)
        with Hijacked(sock._sock, b"") as raw:
            raw.sendall(b"one\ntwo\n")
            raw.shutdown(socket.SHUT_WR)  # the end of stdin closes the exec's stdin
            out = demux(read_to_eof(raw))
        assert out == {1: b"one\ntwo\n", 2: b"done\n"}
        wait_for(lambda: client.exec_inspect(eid)["ExitCode"] == 0, "the exec's exit code")
    finally:
        client.close()


def test_attach_logs_and_stream_selection(daemon, names):
    name = _name()
    names.append(name)
    run(daemon, "--name", name, "busybox", "sh", "-c", "echo out1; echo err1 >&2")
    # logs=1 without stream: the log so far, then the end.
    with hijack(daemon, f"/containers/{name}/attach?logs=1&stdout=1&stderr=1") as s:
        assert demux(read_to_eof(s)) == {1: b"out1\n", 2: b"err1\n"}
    with hijack(daemon, f"/containers/{name}/attach?logs=1&stderr=1") as s:
        assert demux(read_to_eof(s)) == {1: b"", 2: b"err1\n"}
    # Nothing asked for: nothing, and the connection ends.
    with hijack(daemon, f"/containers/{name}/attach?logs=1") as s:
        assert read_to_eof(s) == b""


def test_attach_stream_selection(daemon, names):
    """One attach takes stdout only, another gives stdin only: its end (a half-close)
    ends that attach without closing the container's stdin (no StdinOnce)."""
    name = _name()
    names.append(name)
    run(daemon, "-d", "-i", "--name", name, "busybox", "sh", "-c",
        "read a; echo o$a; echo e$a >&2; read b; echo o$b")
    with hijack(daemon, f"/containers/{name}/attach?stream=1&stdout=1") as out:
        with hijack(daemon, f"/containers/{name}/attach?stream=1&stdin=1") as inp:
            inp.sendall(b"1\n")
            inp.shutdown(socket.SHUT_WR)
            assert read_to_eof(inp) == b""
        got = read_until(out, b"o1\n")
        assert running(daemon, name)  # still reading its stdin
        with hijack(daemon, f"/containers/{name}/attach?stream=1&stdin=1") as inp:
            inp.sendall(b"2\n")
            inp.shutdown(socket.SHUT_WR)
            read_to_eof(inp)
        assert demux(got + read_to_eof(out)) == {1: b"o1\no2\n", 2: b""}


# -- resize -----------------------------------------------------------------------------------

def test_resize(daemon, names):
    name = detached_shell(daemon, names, "-it")
    status, _ = request(daemon, "POST", f"/containers/{name}/resize?h=17&w=43")
    assert status == 200
    r = docker(daemon, "exec", name, "stty", "-F", "/proc/1/fd/0", "size")
    assert r.stdout == "17 43\n"
    plain = detached_shell(daemon, names, "-i")  # no TTY: nothing to resize, as dockerd
    status, _ = request(daemon, "POST", f"/containers/{plain}/resize?h=17&w=43")
    assert status == 200


def test_resize_bad_input(daemon, names):
    status, body = request(daemon, "POST", "/containers/nosuch/resize?h=10&w=10")
    assert status == 404 and body["message"] == "No such container: nosuch"
    name = detached_shell(daemon, names, "-it")
    for query, message in (("h=abc&w=10", 'strconv.Atoi: parsing "abc": invalid syntax'),
                           ("w=10", 'strconv.Atoi: parsing "": invalid syntax'),
                           ("h=10&w=1.5", 'strconv.Atoi: parsing "1.5": invalid syntax')):
        status, body = request(daemon, "POST", f"/containers/{name}/resize?{query}")
        assert status == 400 and body["message"] == message, body
    status, body = request(daemon, "POST", f"/containers/{name}/resize?h=-1&w=10")
    assert status == 400 and "invalid terminal size" in body["message"]
    stopped = _name()
    names.append(stopped)
    docker(daemon, "create", "--name", stopped, "-t", "busybox", "sh")
    status, body = request(daemon, "POST", f"/containers/{stopped}/resize?h=10&w=10")
    assert status == 409 and "is not running" in body["message"]
    status, body = request(daemon, "POST", "/exec/nosuch/resize?h=10&w=10")
    assert status == 404
    assert running(daemon, name)


# -- websocket attach ----------------------------------------------------------------------

async def _ws_session(d: Daemon, path: str, send: bytes | None, until: bytes,
                      close_after: bool = True, kinds: set[str] | None = None) -> bytes:
    """Connect a websocket to PATH, send SEND, collect output until UNTIL has come (or,
    with an empty UNTIL, until the daemon closes). KINDS collects the frame types."""
    aiohttp = pytest.importorskip("aiohttp")
    got = b""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(d.sock))) as session:
        async with session.ws_connect("http://localhost" + path) as ws:
            if send is not None:
                await ws.send_bytes(send)
            while until not in got or not until:
                msg = await ws.receive()
                if kinds is not None:
                    kinds.add(msg.type.name)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    got += msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    got += msg.data.encode()
                else:
                    break  # closed by the daemon
            if close_after:
                await ws.close()
    return got


def _ws(session: Any) -> bytes:
    return asyncio.run(asyncio.wait_for(session, TIMEOUT))


def test_websocket_attach(daemon, names):
    name = detached_shell(daemon, names, "-i")
    got = _ws(_ws_session(
        daemon, f"/v1.45/containers/{name}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1",
        b"echo ws$((3+4)); echo wserr >&2\n", b"wserr"))
    assert b"ws7\n" in got and b"wserr\n" in got  # not multiplexed
    assert running(daemon, name)
    # logs=1 replays; stream=0 then ends the session.
    got = _ws(_ws_session(daemon, f"/v1.45/containers/{name}/attach/ws?logs=1&stdout=1",
                                  None, b""))
    assert got == b"ws7\n"


def test_websocket_attach_ends_with_container(daemon, names):
    name = detached_shell(daemon, names, "-i")
    got = _ws(_ws_session(
        daemon, f"/containers/{name}/attach/ws?stream=1&stdin=1&stdout=1",
        b"echo bye; exit 0\n", b"", close_after=False))
    assert got == b"bye\n"
    wait_for(lambda: not running(daemon, name), "the container to exit")


def test_websocket_bad_input(daemon, names):
    status, body = request(daemon, "GET", "/containers/nosuch/attach/ws?stream=1")
    assert status == 404 and body["message"] == "No such container: nosuch"
    name = detached_shell(daemon, names, "-i")
    status, body = request(daemon, "GET", f"/containers/{name}/attach/ws?detachKeys=nope")
    assert status == 400 and body["message"] == "Invalid detach keys (nope) provided"


def test_websocket_attach_old_api_text_frames(daemon, names):
    """Before API 1.28 the frames are text; before 1.42 all streams are attached
    whatever the query says."""
    name = detached_shell(daemon, names, "-i")
    kinds: set[str] = set()
    got = _ws(_ws_session(daemon, f"/v1.27/containers/{name}/attach/ws?stream=1",
                          b"echo old$((1+1)) >&2\n", b"old2", kinds=kinds))
    assert got == b"old2\n"
    assert "TEXT" in kinds and "BINARY" not in kinds


def test_attach_paused_container(daemon, names):
    name = detached_shell(daemon, names, "-i")
    docker(daemon, "pause", name)
    try:
        status, body = request(daemon, "POST", f"/containers/{name}/attach?stream=1&stdout=1")
        assert status == 409
        assert body["message"] == f"container {name} is paused, unpause the container before attach"
        status, body = request(daemon, "GET", f"/containers/{name}/attach/ws?stream=1")
        assert status == 409
    finally:
        docker(daemon, "unpause", name, check=False)


def test_attach_and_detach_events(daemon, names):
    since = str(time.time() - 1)
    name = detached_shell(daemon, names, "-it")
    with hijack(daemon, f"/containers/{name}/attach?stream=1&stdin=1&stdout=1") as s:
        s.sendall(b"\x10\x11")
        read_to_eof(s)
    until = str(time.time() + 1)
    r = docker(daemon, "events", "--since", since, "--until", until, "--filter",
               f"container={name}", "--format", "{{.Action}}")
    actions = r.stdout.split()
    assert "attach" in actions and "detach" in actions
    assert actions.index("attach") < actions.index("detach")
