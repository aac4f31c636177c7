"""A container's filesystem over the API (archive HEAD/GET/PUT, export, changes), judged
by the docker CLI (`docker cp`, `docker export`, `docker diff`), docker-py and raw HTTP
against a real dockyardd."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from engine_daemon import DOCKER, Daemon, daemon, docker, run  # noqa: F401 (daemon: fixture)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(self._path)
        self.sock = s


def call(d: Daemon, method: str, path: str, params: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = _UnixConnection(str(d.sock))
    try:
        url = "/v1.45" + path + ("?" + urlencode(params) if params else "")
        conn.request(method, url, body=body,
                     headers={"Content-Type": "application/x-tar"} if body is not None else {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def message(data: bytes) -> str:
    return json.loads(data)["message"]


def mounts(d: Daemon) -> list[str]:
    """Mount points under the daemon's directories (container roots of running ones)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f if str(d.root) in line.split()[4])


def tar_of(entries: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar with files (bytes), directories (None) and symlinks (LINKS: name -> target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


@pytest.fixture(scope="module")
def ctr(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    vol = tmp_path_factory.mktemp("bind")
    (vol / "from-host").write_text("bound\n")
    cid = run(daemon, "-d", "--name", "cpbox", "-v", f"{vol}:/data",
              "--tmpfs", "/scratch", "busybox", "sleep", "1000").stdout.strip()
    try:
        yield cid
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


@pytest.fixture()
def stopped(daemon: Daemon) -> Iterator[str]:
    cid = docker(daemon, "create", "busybox", "cat", "/tmp/in/hello.txt").stdout.strip()
    try:
        yield cid
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


# -- docker cp ------------------------------------------------------------------------

def test_cp_file_both_ways(daemon, ctr, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_text("hello from the host\n")
    docker(daemon, "cp", str(src), f"{ctr}:/tmp/hello.txt")
    assert docker(daemon, "exec", ctr, "cat", "/tmp/hello.txt").stdout == "hello from the host\n"
    out = tmp_path / "back.txt"
    docker(daemon, "cp", f"{ctr}:/tmp/hello.txt", str(out))
    assert out.read_text() == "hello from the host\n"
    docker(daemon, "cp", f"{ctr}:/etc/passwd", str(tmp_path))
    assert (tmp_path / "passwd").read_text().startswith("root:")


def test_cp_directory_both_ways(daemon, ctr, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_text("A")
    (tree / "sub" / "b").write_text("B")
    docker(daemon, "cp", str(tree), f"{ctr}:/home/")
    r = docker(daemon, "exec", ctr, "sh", "-c", "cat /home/tree/a /home/tree/sub/b")
    assert r.stdout == "AB"
    back = tmp_path / "back"
    docker(daemon, "cp", f"{ctr}:/home/tree", str(back))
    assert (back / "sub" / "b").read_text() == "B"
    # The contents only, with the trailing /. form.
    only = tmp_path / "only"
    only.mkdir()
    docker(daemon, "cp", f"{ctr}:/home/tree/.", str(only))
    assert sorted(p.name for p in only.iterdir()) == ["a", "sub"]


def test_cp_symlink(daemon, ctr, tmp_path):
    docker(daemon, "exec", ctr, "sh", "-c", "echo target > /tmp/t; ln -sf /tmp/t /tmp/link")
    out = tmp_path / "link"
    docker(daemon, "cp", f"{ctr}:/tmp/link", str(out))
    assert out.is_symlink() and os.readlink(out) == "/tmp/t"
    followed = tmp_path / "followed"
    docker(daemon, "cp", "-L", f"{ctr}:/tmp/link", str(followed))
    assert not followed.is_symlink() and followed.read_text() == "target\n"
    host_link = tmp_path / "hostlink"
    host_link.symlink_to("/etc/passwd")
    docker(daemon, "cp", str(host_link), f"{ctr}:/tmp/hostlink")
    assert docker(daemon, "exec", ctr, "readlink", "/tmp/hostlink").stdout == "/etc/passwd\n"


def test_cp_to_stdout_is_a_tar(daemon, ctr):
    r = subprocess.run([DOCKER, "cp", f"{ctr}:/etc/passwd", "-"], capture_output=True,
                       env=dict(os.environ, DOCKER_HOST=daemon.host), timeout=60)
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        assert tf.getnames() == ["passwd"]
        assert tf.extractfile("passwd").read().startswith(b"root:")


def test_cp_into_stopped_container_then_start(daemon, stopped, tmp_path):
    before = mounts(daemon)
    d = tmp_path / "in"
    d.mkdir()
    (d / "hello.txt").write_text("written while stopped\n")
    docker(daemon, "cp", str(d), f"{stopped}:/tmp/")
    assert mounts(daemon) == before
    # Read back while still stopped, then run it.
    out = tmp_path / "back.txt"
    docker(daemon, "cp", f"{stopped}:/tmp/in/hello.txt", str(out))
    assert out.read_text() == "written while stopped\n"
    assert mounts(daemon) == before
    r = docker(daemon, "start", "-a", stopped)
    assert r.stdout == "written while stopped\n"


def test_cp_out_of_bind_mount_of_running_container(daemon, ctr, tmp_path):
    docker(daemon, "cp", f"{ctr}:/data/from-host", str(tmp_path / "x"))
    assert (tmp_path / "x").read_text() == "bound\n"
    # And into it: the host sees it in the bind's source.
    (tmp_path / "up").write_text("to the bind\n")
    docker(daemon, "cp", str(tmp_path / "up"), f"{ctr}:/data/up")
    assert docker(daemon, "exec", ctr, "cat", "/data/up").stdout == "to the bind\n"


def test_cp_errors_from_cli(daemon, ctr, tmp_path):
    r = docker(daemon, "cp", f"{ctr}:/no/such", str(tmp_path), check=False)
    assert r.returncode != 0 and "Could not find the file /no/such in container" in r.stderr
    r = docker(daemon, "cp", "nosuchcontainer:/etc/passwd", str(tmp_path), check=False)
    assert r.returncode != 0 and "No such container" in r.stderr


# -- the endpoints, directly ------------------------------------------------------------

def _stat(headers: http.client.HTTPMessage) -> dict:
    return json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))


def test_head_stat(daemon, ctr):
    status, headers, body = call(daemon, "HEAD", f"/containers/{ctr}/archive", {"path": "/bin"})
    assert status == 200 and body == b""
    st = _stat(headers)
    assert st["name"] == "bin" and st["mode"] & (1 << 31) and st["linkTarget"] == ""
    assert st["mtime"].endswith("Z") and "T" in st["mtime"]
    docker(daemon, "exec", ctr, "sh", "-c", "ln -sf /bin/busybox /tmp/bb; chmod 4755 /tmp/bb")
    st = _stat(call(daemon, "HEAD", f"/containers/{ctr}/archive", {"path": "/tmp/bb"})[1])
    assert st["mode"] & (1 << 27) and st["linkTarget"] == "/bin/busybox"
    st = _stat(call(daemon, "HEAD", f"/containers/{ctr}/archive", {"path": "/bin/busybox"})[1])
    assert st["mode"] & 0o777 == 0o755 and st["size"] > 100_000
    # A relative path is taken from the root, as dockerd does.
    status, headers, _ = call(daemon, "HEAD", f"/containers/{ctr}/archive", {"path": "etc/passwd"})
    assert status == 200 and _stat(headers)["name"] == "passwd"


def test_get_archive_of_a_directory(daemon, ctr):
    docker(daemon, "exec", ctr, "sh", "-c", "mkdir -p /srv/d/e && echo 1 > /srv/d/e/f")
    status, headers, body = call(daemon, "GET", f"/containers/{ctr}/archive", {"path": "/srv/d"})
    assert status == 200 and headers["Content-Type"] == "application/x-tar"
    assert names(body) == ["d", "d/e", "d/e/f"]
    assert _stat(headers)["name"] == "d"


def test_tmpfs_is_not_in_the_view(daemon, ctr):
    # dockerd's view of a container is its root and its volumes, not its tmpfs mounts.
    docker(daemon, "exec", ctr, "sh", "-c", "echo x > /scratch/only-in-tmpfs")
    status, _, body = call(daemon, "HEAD", f"/containers/{ctr}/archive",
                           {"path": "/scratch/only-in-tmpfs"})
    assert status == 404


def test_archive_bad_inputs(daemon, ctr):
    before = mounts(daemon)
    for method in ("GET", "PUT"):
        status, _, body = call(daemon, method, "/containers/nosuch/archive", {"path": "/"},
                               body=b"" if method == "PUT" else None)
        assert status == 404 and message(body) == "No such container: nosuch"
    status, _, _ = call(daemon, "HEAD", "/containers/nosuch/archive", {"path": "/"})
    assert status == 404
    status, _, body = call(daemon, "GET", f"/containers/{ctr}/archive", {"path": "/nope"})
    assert status == 404 and message(body) == "Could not find the file /nope in container " + ctr
    status, _, body = call(daemon, "GET", "/containers/cpbox/archive", {"path": "/nope/x"})
    assert status == 404 and message(body) == "Could not find the file /nope/x in container cpbox"
    for method in ("GET", "PUT"):
        status, _, body = call(daemon, method, f"/containers/{ctr}/archive", {},
                               body=b"" if method == "PUT" else None)
        assert status == 400 and message(body) == "bad parameter: path cannot be empty"
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive", {"path": "/nope"},
                           body=tar_of({"x": b"x"}))
    assert status == 404 and message(body) == "Could not find the file /nope in container " + ctr
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive",
                           {"path": "/etc/passwd"}, body=tar_of({"x": b"x"}))
    assert status == 400 and message(body) == "extraction point is not a directory"
    assert mounts(daemon) == before


def test_put_non_tar_is_refused(daemon, ctr):
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive", {"path": "/tmp"},
                           body=b"this is not a tar archive\n" * 100)
    # dockerd answers an unreadable archive as a server error (errdefs.System).
    assert status == 500 and "invalid tar header" in message(body)


def test_put_escaping_entries_are_refused_whole(daemon, ctr):
    docker(daemon, "exec", ctr, "mkdir", "-p", "/tmp/esc")
    bad = tar_of({"first": b"must not be written", "../evil": b"x"})
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive", {"path": "/tmp/esc"},
                           body=bad)
    assert status == 500 and message(body) == '"../evil" is outside of "/tmp/esc"'
    bad = tar_of({"ok": b"x"}, links={"up": "../../../etc"})
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive", {"path": "/tmp/esc"},
                           body=bad)
    assert status == 500 and message(body) == 'invalid symlink "/tmp/esc/up" -> "../../../etc"'
    assert docker(daemon, "exec", ctr, "ls", "-A", "/tmp/esc").stdout == ""
    assert docker(daemon, "exec", ctr, "ls", "/evil", check=False).returncode != 0


def test_put_symlink_in_container_stays_inside(daemon, ctr):
    # A symlink in the container pointing at the host's idea of / must resolve in the
    # container: the write lands in the container, never on the host.
    marker = f"/tmp/dockyard-cp-escape-{os.getpid()}"
    docker(daemon, "exec", ctr, "sh", "-c", "mkdir -p /tmp/jail && ln -sfn / /tmp/jail/root")
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive",
                           {"path": "/tmp/jail/root" + os.path.dirname(marker)},
                           body=tar_of({os.path.basename(marker): b"x"}))
    assert status == 200, body
    assert not os.path.exists(marker)
    assert docker(daemon, "exec", ctr, "cat", marker).stdout == "x"


def test_put_no_overwrite_dir_non_dir(daemon, ctr):
    docker(daemon, "exec", ctr, "mkdir", "-p", "/tmp/ow/isdir")
    status, _, body = call(daemon, "PUT", f"/containers/{ctr}/archive",
                           {"path": "/tmp/ow", "noOverwriteDirNonDir": "1"},
                           body=tar_of({"isdir": b"file now"}))
    assert status == 500 and "cannot overwrite directory" in message(body)
    status, _, _ = call(daemon, "PUT", f"/containers/{ctr}/archive", {"path": "/tmp/ow"},
                        body=tar_of({"isdir": b"file now"}))
    assert status == 200
    assert docker(daemon, "exec", ctr, "cat", "/tmp/ow/isdir").stdout == "file now"


def test_put_read_only(daemon, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cid = run(daemon, "-d", "--read-only", "-v", f"{ro}:/ro:ro", "busybox",
              "sleep", "1000").stdout.strip()
    try:
        status, _, body = call(daemon, "PUT", f"/containers/{cid}/archive", {"path": "/tmp"},
                               body=tar_of({"x": b"x"}))
        assert status == 400 and message(body) == "container rootfs is marked read-only"
        status, _, body = call(daemon, "PUT", f"/containers/{cid}/archive", {"path": "/ro"},
                               body=tar_of({"x": b"x"}))
        assert status == 400 and message(body) == "mounted volume is marked read-only"
        assert list(ro.iterdir()) == []
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_put_copy_uid_gid(daemon, tmp_path):
    cid = docker(daemon, "create", "-u", "nobody", "busybox", "true").stdout.strip()
    try:
        status, _, _ = call(daemon, "PUT", f"/containers/{cid}/archive",
                            {"path": "/tmp", "copyUIDGID": "1"}, body=tar_of({"owned": b"x"}))
        assert status == 200
        status, headers, body = call(daemon, "GET", f"/containers/{cid}/archive",
                                     {"path": "/tmp/owned"})
        with tarfile.open(fileobj=io.BytesIO(body)) as tf:
            info = tf.getmember("owned")
        assert (info.uid, info.gid) == (65534, 65534)
    finally:
        docker(daemon, "rm", "-f", cid, check=False)


def test_sdk_get_and_put_archive(daemon, ctr):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.APIClient(base_url=daemon.host)
    try:
        assert client.put_archive(ctr, "/tmp", tar_of({"sdk/one": b"1", "sdk/two": b"22"}))
        stream, st = client.get_archive(ctr, "/tmp/sdk")
        data = b"".join(stream)
        assert st["name"] == "sdk" and st["mode"] & (1 << 31)
        assert names(data) == ["sdk", "sdk/one", "sdk/two"]
        with pytest.raises(docker_sdk.errors.NotFound):
            client.get_archive(ctr, "/tmp/missing")
    finally:
        client.close()


# -- export and changes ---------------------------------------------------------------

def test_export(daemon, ctr):
    p = subprocess.run(f"{DOCKER} export {ctr} | tar -t", shell=True, capture_output=True,
                       text=True, env=dict(os.environ, DOCKER_HOST=daemon.host), timeout=120)
    assert p.returncode == 0, p.stderr
    listed = p.stdout.split()
    assert "bin/busybox" in listed and "etc/passwd" in listed
    # The binds are not part of the export (dockerd exports the container's own layer).
    assert "data/from-host" not in listed
    status, _, body = call(daemon, "GET", "/containers/nosuch/export")
    assert status == 404 and message(body) == "No such container: nosuch"


def test_diff(daemon):
    cid = run(daemon, "-d", "busybox", "sh", "-c", "touch /new; rm /bin/ls; sleep 1000"
              ).stdout.strip()
    try:
        deadline = time.monotonic() + 20
        while True:
            out = docker(daemon, "diff", cid).stdout.splitlines()
            if "A /new" in out and "D /bin/ls" in out or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "A /new" in out and "D /bin/ls" in out and "C /bin" in out
        status, _, body = call(daemon, "GET", f"/containers/{cid}/changes")
        kinds = {c["Path"]: c["Kind"] for c in json.loads(body)}
        assert kinds["/new"] == 1 and kinds["/bin/ls"] == 2 and kinds["/bin"] == 0
    finally:
        docker(daemon, "rm", "-f", cid, check=False)
    status, _, body = call(daemon, "GET", "/containers/nosuch/changes")
    assert status == 404 and message(body) == "No such container: nosuch"
    fresh = docker(daemon, "create", "busybox", "true").stdout.strip()
    try:
        status, _, body = call(daemon, "GET", f"/containers/{fresh}/changes")
        assert status == 200 and json.loads(body) is None
    finally:
        docker(daemon, "rm", "-f", fresh, check=False)


def test_events(daemon, ctr, tmp_path):
    since = str(int(time.time()) - 1)
    docker(daemon, "cp", f"{ctr}:/etc/hostname", str(tmp_path / "h"))
    (tmp_path / "e").write_text("e")
    docker(daemon, "cp", str(tmp_path / "e"), f"{ctr}:/tmp/e")
    until = str(int(time.time()) + 1)
    r = docker(daemon, "events", "--since", since, "--until", until, "--filter",
               f"container={ctr}", "--format", "{{.Action}}")
    actions = r.stdout.split()
    assert "archive-path" in actions and "extract-to-dir" in actions


def test_quote_path(daemon, ctr):
    # Paths with spaces and unicode go through the query string intact.
    docker(daemon, "exec", ctr, "sh", "-c", "echo s > '/tmp/with space é'")
    status, headers, _ = call(daemon, "HEAD", f"/containers/{ctr}/archive",
                              {"path": "/tmp/with space é"})
    assert status == 200 and _stat(headers)["name"] == "with space é"


def test_cp_sees_the_etc_files_docker_writes(daemon, tmp_path):
    """dockerd's view of a container includes its /etc/hostname, /etc/hosts and
    /etc/resolv.conf (bind-mounted by the runtime), running or not."""
    cid = docker(daemon, "create", "--name", "etcview", "--hostname", "etchost",
                 "--add-host", "db:10.1.2.3", "busybox", "sleep", "100").stdout.strip()
    try:
        for running in (False, True):
            if running:
                docker(daemon, "start", cid)
            docker(daemon, "cp", f"{cid}:/etc/hostname", str(tmp_path / "hostname"))
            assert (tmp_path / "hostname").read_text() == "etchost\n"
            docker(daemon, "cp", f"{cid}:/etc/hosts", str(tmp_path / "hosts"))
            assert "10.1.2.3\tdb" in (tmp_path / "hosts").read_text()
    finally:
        docker(daemon, "rm", "-f", cid, check=False)
