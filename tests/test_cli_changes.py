"""`dockyard diff`, `port`, `import`, `system prune`, unknown subcommands of management
commands and pull/push progress, judged against the docker CLI on the same dockyardd."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pexpect
import pytest

from cli_helpers import DOCKYARD, dockyard, registry_server
from engine_daemon import CGROUP_PARENT, DOCKER, Daemon, daemon, docker  # noqa: F401 (fixture)


def _both(d: Daemon, *args: str, input: str | None = None) -> tuple[tuple[str, str, int],
                                                                     tuple[str, str, int]]:
    """(stdout, stderr, status) of docker and of dockyard, with "docker" spelled
    "dockyard" in docker's."""
    import subprocess

    theirs = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input,
                            env=dict(os.environ, DOCKER_HOST=d.host), timeout=60)
    ours = dockyard(d, *args, check=False, input=input)

    def spelled(text: str) -> str:
        return text.replace("docker", "dockyard")

    return ((spelled(theirs.stdout), spelled(theirs.stderr), theirs.returncode),
            (ours.stdout, ours.stderr, ours.returncode))


def _same(d: Daemon, *args: str, input: str | None = None) -> tuple[str, str, int]:
    theirs, ours = _both(d, *args, input=input)
    assert ours == theirs
    return ours


def _run(d: Daemon, name: str, script: str) -> None:
    docker(d, "run", "--cgroup-parent", CGROUP_PARENT, "--name", name, "busybox", "sh", "-c",
           script)


def _rm(d: Daemon, *names: str) -> None:
    docker(d, "rm", "-f", *names, check=False)


def _rootfs_tar(path: Path, payload: bytes = b"hello\n") -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("etc")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        info = tarfile.TarInfo("etc/hello")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


# -- unknown subcommands -----------------------------------------------------------------

@pytest.mark.parametrize("group", ["system", "container", "image", "network", "volume"])
def test_unknown_subcommand_of_management_command(daemon, group):
    out, err, status = _same(daemon, group, "nosuch", "arg")
    assert status == 1 and out == ""
    assert err == (f"dockyard: unknown command: dockyard {group} nosuch\n\n"
                   f"Usage:  dockyard {group}{' COMMAND' if group == 'volume' else ''}\n\n"
                   f"Run 'dockyard {group} --help' for more information\n")


# -- diff --------------------------------------------------------------------------------

def test_diff_lists_changes_as_docker(daemon):
    _run(daemon, "diffed", "mkdir /newdir; echo x > /newdir/f; rm /bin/ls; touch /etc/passwd")
    try:
        out, err, status = _same(daemon, "diff", "diffed")
        assert status == 0 and err == ""
        lines = out.splitlines()
        assert {"A /newdir", "A /newdir/f", "D /bin/ls", "C /bin", "C /etc/passwd"} <= set(lines)
        assert _same(daemon, "container", "diff", "diffed")[0] == out
    finally:
        _rm(daemon, "diffed")


@pytest.mark.parametrize("args", [("diff", "nosuch"), ("diff",), ("diff", "a", "b"),
                                  ("diff", "-x"), ("container", "diff")])
def test_diff_bad_input(daemon, args):
    _out, err, status = _same(daemon, *args)
    assert status in (1, 125) and err


# -- port --------------------------------------------------------------------------------

def test_port_without_published_ports(daemon):
    _run(daemon, "portless", "true")
    try:
        assert _same(daemon, "port", "portless") == ("", "", 0)
        assert _same(daemon, "container", "port", "portless") == ("", "", 0)
        assert _same(daemon, "port", "portless", "80") == (
            "", "Error: No public port '80' published for portless\n", 1)
        assert _same(daemon, "port", "portless", "80/udp")[1] == (
            "Error: No public port '80/udp' published for portless\n")
        short = docker(daemon, "inspect", "-f", "{{.Id}}", "portless").stdout[:6]
        assert _same(daemon, "port", short, "53/")[1] == (
            f"Error: No public port '53/' published for {short}\n")
    finally:
        _rm(daemon, "portless")


@pytest.mark.parametrize("args", [("port", "portbad", "abc"), ("port", "portbad", "99999"),
                                  ("port", "portbad", "/tcp"), ("port", "portbad", "-1"),
                                  ("port",), ("port", "a", "b", "c"), ("port", "nosuch"),
                                  ("port", "nosuch", "80")])
def test_port_bad_input(daemon, args):
    _run(daemon, "portbad", "true")
    try:
        _out, err, status = _same(daemon, *args)
        assert status in (1, 125) and err
    finally:
        _rm(daemon, "portbad")


# -- import ------------------------------------------------------------------------------

def _image_config(d: Daemon, ref: str) -> str:
    return docker(d, "inspect", "-f", "{{json .Config.Cmd}} {{json .Config.Env}} {{.Comment}} "
                  "{{.Architecture}} {{.Size}}", ref).stdout


def test_import_file_and_stdin(daemon, tmp_path):
    archive = _rootfs_tar(tmp_path / "root.tar")
    try:
        theirs = docker(daemon, "import", "-c", 'CMD ["/bin/sh"]', "--change", "ENV A=b",
                        "-m", "imported", "--platform", "linux/AMD64", str(archive),
                        "imp-theirs:1")
        ours = dockyard(daemon, "import", "-c", 'CMD ["/bin/sh"]', "--change", "ENV A=b",
                        "-m", "imported", "--platform", "linux/AMD64", str(archive),
                        "imp-ours:1")
        assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", ours.stdout) and ours.stderr == ""
        assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", theirs.stdout)
        assert ours.stdout.strip() == docker(daemon, "inspect", "-f", "{{.Id}}",
                                             "imp-ours:1").stdout.strip()
        assert _image_config(daemon, "imp-ours:1") == _image_config(daemon, "imp-theirs:1")
        # From stdin, through `image import`, untagged.
        import subprocess

        r = subprocess.run([*DOCKYARD, "image", "import", "-", "imp-stdin"],
                           input=archive.read_bytes(), capture_output=True, timeout=60,
                           env=dict(os.environ, DOCKYARD_HOST=daemon.host))
        assert r.returncode == 0 and r.stderr == b""
        assert re.fullmatch(rb"sha256:[0-9a-f]{64}\n", r.stdout)
        assert _image_config(daemon, "imp-stdin") == _image_config(daemon, "imp-theirs:1").replace(
            '["/bin/sh"] ["A=b"] imported', "null null Imported from -")
    finally:
        docker(daemon, "rmi", "imp-ours:1", "imp-theirs:1", "imp-stdin", check=False)


@pytest.mark.parametrize("args", [("import",), ("import", "/nonexistent.tar"),
                                  ("import", "ROOT", "Bad:Name"),
                                  ("import", "-c", "BOGUS x", "ROOT"),
                                  ("import", "http://127.0.0.1:1/x.tar"),
                                  ("import", "NOTATAR"),
                                  ("import", "--platform", "bogus", "ROOT"),
                                  ("import", "a", "b", "c"), ("import", "--nosuch", "ROOT")])
def test_import_bad_input(daemon, tmp_path, args):
    archive = _rootfs_tar(tmp_path / "root.tar")
    bad = tmp_path / "bad.tar"
    bad.write_text("not a tar\n")
    args = tuple(str(archive) if a == "ROOT" else str(bad) if a == "NOTATAR" else a for a in args)
    before = docker(daemon, "images", "-aq", "--no-trunc").stdout
    _out, err, status = _same(daemon, *args)
    assert status in (1, 125) and err
    assert docker(daemon, "images", "-aq", "--no-trunc").stdout == before


# -- system prune ------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [(), ("-a",), ("--volumes",), ("-a", "--volumes"),
                                   ("--filter", "until=1h", "--filter", "label=z",
                                    "--filter", "label!=q"),
                                   ("--volumes", "--filter", "label=a=1")])
def test_system_prune_prompt(daemon, flags):
    before = docker(daemon, "ps", "-aq").stdout
    out, err, status = _same(daemon, "system", "prune", *flags, input="n\n")
    assert status == 0 and err == ""
    assert out.startswith("WARNING! This will remove:\n")
    assert out.endswith("Are you sure you want to continue? [y/N] ")
    assert docker(daemon, "ps", "-aq").stdout == before


@pytest.mark.parametrize("args", [("system", "prune", "-f", "--volumes", "--filter", "until=1h"),
                                  ("system", "prune", "--filter", "bogus"),
                                  ("system", "prune", "-f", "extra"),
                                  ("system", "prune", "-f", "--filter", "bogus=1")])
def test_system_prune_bad_input(daemon, args):
    _out, err, status = _same(daemon, *args)
    assert status in (1, 125) and err


def _prune_state(d: Daemon, tmp_path: Path, tag: str) -> tuple[list[str], str]:
    """Two stopped containers and a dangling image: their ids."""
    ids = []
    for i in range(2):
        _run(d, f"prunable-{tag}-{i}", f"echo {i} > /file")
        ids.append(docker(d, "inspect", "-f", "{{.Id}}", f"prunable-{tag}-{i}").stdout.strip())
    image = docker(d, "import", str(_rootfs_tar(tmp_path / f"{tag}.tar", tag.encode()))).stdout
    return ids, image.strip()


def _masked(text: str) -> str:
    return re.sub(r"[0-9a-f]{64}", "ID", text)


def test_system_prune_report_matches_docker(daemon, tmp_path):
    try:
        _run(daemon, "prune-keeper", "true")
        docker(daemon, "system", "prune", "-f")  # what earlier tests left
        ids, image = _prune_state(daemon, tmp_path, "theirs")
        theirs = docker(daemon, "system", "prune", "-f")
        assert all(i in theirs.stdout for i in [*ids, image])
        docker(daemon, "system", "prune", "-f")
        ids, image = _prune_state(daemon, tmp_path, "oursxx")
        # The prompt, answered yes, then the same report.
        ours = dockyard(daemon, "system", "prune", input="y\n")
        assert ours.stdout.startswith("WARNING! This will remove:\n")
        report = ours.stdout.split("[y/N] ", 1)[1]
        assert all(i in report for i in [*ids, image])
        # Container order is the daemon's; compare as sets of lines, then the layout. The
        # space reclaimed is the daemon's accounting of two different sets of objects.
        def lines(text: str) -> list[str]:
            return sorted(line for line in _masked(text).splitlines()
                          if not line.startswith("Total reclaimed space: "))

        assert lines(report) == lines(theirs.stdout)
        assert report.startswith("Deleted Containers:\n")
        assert "\n\nDeleted Images:\n" in report
        assert re.search(r"\n\nTotal reclaimed space: [0-9.]+k?B\n\Z", report)
        assert ours.stderr == theirs.stderr == ""
        # Nothing left to prune: both report nothing.
        assert _same(daemon, "system", "prune", "-f") == ("Total reclaimed space: 0B\n", "", 0)
    finally:
        _rm(daemon, "prune-keeper", "prunable-theirs-0", "prunable-theirs-1", "prunable-oursxx-0",
            "prunable-oursxx-1")


def test_system_prune_all_and_volumes_keeps_used_images(daemon, tmp_path):
    _run(daemon, "prune-user", "true")
    docker(daemon, "start", "prune-user")
    archive = _rootfs_tar(tmp_path / "unused.tar", b"unused")
    try:
        # A container that runs keeps busybox; the tagged imported image goes with -a.
        docker(daemon, "run", "-d", "--cgroup-parent", CGROUP_PARENT, "--name", "prune-live",
               "busybox", "sleep", "60")
        docker(daemon, "import", str(archive), "prune-unused:1")
        ours = dockyard(daemon, "system", "prune", "-a", "-f", "--volumes")
        assert "Deleted Containers:\n" in ours.stdout
        assert "untagged: prune-unused:1\n" in ours.stdout
        assert ours.stdout.rstrip().rsplit("\n", 1)[1].startswith("Total reclaimed space: ")
        assert docker(daemon, "images", "-q", "prune-unused").stdout == ""
        assert docker(daemon, "images", "-q", "busybox").stdout != ""
    finally:
        _rm(daemon, "prune-user", "prune-live")
        docker(daemon, "rmi", "prune-unused:1", check=False)


# -- pull and push progress --------------------------------------------------------------

@pytest.fixture
def pushed(daemon, tmp_path):
    """An image of one fresh layer in a local registry, absent from the daemon."""
    with registry_server(tmp_path / "reg") as addr:
        ref = f"{addr}/progress:1"
        archive = _rootfs_tar(tmp_path / "big.tar", os.urandom(3_000_000))
        docker(daemon, "import", str(archive), ref)
        docker(daemon, "push", ref)
        docker(daemon, "rmi", ref)
        try:
            yield ref
        finally:
            docker(daemon, "rmi", ref, check=False)


def test_pull_and_push_output_to_a_pipe_matches_docker(daemon, pushed):
    theirs = docker(daemon, "pull", pushed)
    docker(daemon, "rmi", pushed)
    ours = dockyard(daemon, "pull", pushed)
    assert ours.stdout == theirs.stdout
    assert ": Pulling fs layer\n" in ours.stdout and ": Pull complete\n" in ours.stdout
    assert ours.stdout.endswith(f"Status: Downloaded newer image for {pushed}\n{pushed}\n")
    # Pulled again: up to date.
    assert dockyard(daemon, "pull", pushed).stdout == docker(daemon, "pull", pushed).stdout
    assert dockyard(daemon, "push", pushed).stdout == docker(daemon, "push", pushed).stdout


def _screen(raw: str, cols: int) -> list[str]:
    """The screen a terminal shows after RAW: text, CR, LF, erase line, cursor up/down."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[(\d*)([A-Za-z])|(\r)|(\n)|([^\x1b\r\n])", raw):
        count, op, cr, lf, char = token
        if op == "A":
            row = max(row - int(count or 1), 0)
        elif op == "B":
            row += int(count or 1)
        elif op == "K":
            rows[row] = []
        elif cr:
            col = 0
        elif lf:
            row += 1
            col = 0
        elif char:
            line = rows[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = char
            col = min(col + 1, cols - 1)
        while len(rows) <= row:
            rows.append([])
    return ["".join(r).rstrip() for r in rows]


def _pull_on_terminal(d: Daemon, command: list[str], ref: str) -> tuple[str, int]:
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKYARD_HOST=d.host)
    child = pexpect.spawn(command[0], [*command[1:], "pull", ref], env=env,
                          dimensions=(40, 150), encoding="utf-8", timeout=60)
    try:
        child.expect(pexpect.EOF)
        raw = child.before
    finally:
        child.close()
    return raw, child.exitstatus


def test_pull_on_a_terminal_redraws_lines_like_docker(daemon, pushed):
    theirs, status = _pull_on_terminal(daemon, [DOCKER], pushed)
    assert status == 0
    docker(daemon, "rmi", pushed)
    ours, status = _pull_on_terminal(daemon, DOCKYARD, pushed)
    assert status == 0
    assert "\x1b[2K" in ours and "\x1b[1A" in ours and "\x1b[1B" in ours
    screen = [line for line in _screen(ours, 150) if line]
    assert screen == [line for line in _screen(theirs, 150) if line]
    layer_lines = [line for line in screen if ": Pull" in line and "complete" in line]
    assert len(layer_lines) == 1
    assert not any("Downloading" in line or "Pulling fs layer" in line for line in screen)
