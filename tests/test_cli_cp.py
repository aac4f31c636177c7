"""`dockyard cp` both ways, judged against what `docker cp` does on the same daemon."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest

from cli_helpers import DOCKYARD, dockyard
from engine_daemon import CGROUP_PARENT, daemon, docker  # noqa: F401 (daemon: fixture)


@pytest.fixture
def box(daemon, tmp_path):
    docker(daemon, "run", "-d", "--name", "cpbox", "--cgroup-parent", CGROUP_PARENT, "busybox",
           "sleep", "1000")
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "file").write_text("a\n")
    (src / "dir" / "sub" / "x").write_text("b\n")
    yield daemon, src
    docker(daemon, "rm", "-f", "cpbox", check=False)


def _tree(root) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def _box_tree(d, path: str) -> list[str]:
    return sorted(docker(d, "exec", "cpbox", "find", path).stdout.split())


def test_into_the_container_as_docker(box):
    d, src = box
    for tool in ("docker", "dockyard"):
        run = docker if tool == "docker" else dockyard
        base = f"/tmp/{tool}"
        docker(d, "exec", "cpbox", "mkdir", base)
        run(d, "cp", str(src / "file"), f"cpbox:{base}/")
        run(d, "cp", str(src / "dir"), f"cpbox:{base}/newdir")
        run(d, "cp", str(src / "file"), f"cpbox:{base}/renamed")
        run(d, "cp", str(src / "dir"), f"cpbox:{base}/newdir")  # into the existing dir
    ours = [p.replace("/tmp/dockyard", "") for p in _box_tree(d, "/tmp/dockyard")]
    theirs = [p.replace("/tmp/docker", "") for p in _box_tree(d, "/tmp/docker")]
    assert ours == theirs
    assert docker(d, "exec", "cpbox", "cat", "/tmp/dockyard/renamed").stdout == "a\n"
    assert docker(d, "exec", "cpbox", "stat", "-c", "%u", "/tmp/dockyard/file").stdout == "0\n"


def test_out_of_the_container_as_docker(box, tmp_path):
    d, src = box
    dockyard(d, "cp", str(src / "dir"), "cpbox:/tmp/newdir")
    for tool in ("docker", "dockyard"):
        run = docker if tool == "docker" else dockyard
        out = tmp_path / tool
        out.mkdir()
        run(d, "cp", "cpbox:/etc/hostname", str(out / "host"))
        run(d, "cp", "cpbox:/tmp/newdir", str(out / "copy"))
        run(d, "cp", "cpbox:/tmp/newdir", str(out / "copy"))
        run(d, "cp", "cpbox:/etc/hostname", str(out))
    assert _tree(tmp_path / "dockyard") == _tree(tmp_path / "docker")
    assert (tmp_path / "dockyard" / "host").read_text() == (tmp_path / "docker" / "host").read_text()


def test_tar_streams(box, tmp_path):
    d, src = box
    env = {"DOCKYARD_HOST": d.host, "PATH": "/usr/bin:/bin"}
    r = subprocess.run([*DOCKYARD, "cp", "cpbox:/etc/hostname", "-"], capture_output=True, env=env)
    assert r.returncode == 0
    assert tarfile.open(fileobj=io.BytesIO(r.stdout)).getnames() == ["hostname"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("fromstdin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    r = subprocess.run([*DOCKYARD, "cp", "-", "cpbox:/tmp"], input=buf.getvalue(),
                       capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    assert docker(d, "exec", "cpbox", "cat", "/tmp/fromstdin").stdout == "hi\n"


@pytest.mark.parametrize("args", [["cpbox:/nosuch", "{tmp}"], ["{tmp}/nosuch", "cpbox:/tmp"],
                                  ["{tmp}/src/file", "cpbox:/nosuchdir/x"],
                                  ["a:/x", "b:/y"], ["{tmp}", "{tmp}"], ["nosuch:/x", "{tmp}"]])
def test_errors_as_docker(box, tmp_path, args):
    d, _ = box
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    ours, theirs = dockyard(d, "cp", *args, check=False), docker(d, "cp", *args, check=False)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr == theirs.stderr
