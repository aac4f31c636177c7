"""`dockyard run`, `ps`, `inspect` and the container lifecycle commands against a real
dockyardd, beside the docker CLI where the output should be the same."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from cli_helpers import DOCKYARD, dockyard
from engine_daemon import CGROUP_PARENT, Daemon, daemon, docker  # noqa: F401 (daemon: fixture)


def dy_run(d, *args: str, check: bool = True):
    return dockyard(d, "run", "--cgroup-parent", CGROUP_PARENT, *args, check=check)


@pytest.fixture
def clean(daemon):
    """Every container a test makes is gone afterwards, whether it passed or not."""
    yield daemon
    ids = docker(daemon, "ps", "-aq", check=False).stdout.split()
    if ids:
        docker(daemon, "rm", "-f", *ids, check=False)


def _no_containers(d) -> bool:
    return docker(d, "ps", "-aq").stdout.strip() == ""


def test_run_rm_echo(clean):
    r = dy_run(clean, "--rm", "busybox", "echo", "hi")
    assert (r.stdout, r.stderr) == ("hi\n", "")
    assert _no_containers(clean)


def test_run_propagates_exit_status_and_streams(clean):
    r = dy_run(clean, "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
               check=False)
    assert r.returncode == 3
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    assert _no_containers(clean)


def test_flag_parsing_stops_at_the_image(clean):
    # -c, -d, -e and --rm after the image belong to the command.
    r = dy_run(clean, "--rm", "busybox", "sh", "-c", "echo $0 $1", "-d", "--rm")
    assert r.stdout == "-d --rm\n"
    r = dy_run(clean, "--rm", "-e", "A=1", "busybox", "echo", "x", "-e", "A=2")
    assert r.stdout == "x -e A=2\n"
    assert _no_containers(clean)


def test_unknown_flag_is_a_usage_error(clean):
    r = dy_run(clean, "--foo", "busybox", check=False)
    assert r.returncode == 125
    assert r.stdout == ""
    assert r.stderr == ("unknown flag: --foo\n\nUsage:  dockyard run [OPTIONS] IMAGE [COMMAND] "
                        "[ARG...]\n\nRun 'dockyard run --help' for more information\n")
    r = dockyard(clean, "run", "-z", "busybox", check=False)
    assert r.returncode == 125 and r.stderr.startswith("unknown shorthand flag: 'z' in -z\n")
    assert _no_containers(clean)


@pytest.mark.parametrize("args, message", [
    (["-m", "lots"], 'invalid argument "lots" for "-m, --memory" flag: invalid size: \'lots\''),
    (["--cpus", "x"], 'invalid argument "x" for "--cpus" flag: failed to parse x as a rational number'),
    (["--pids-limit", "x"], 'invalid argument "x" for "--pids-limit" flag: strconv.ParseInt: parsing "x": invalid syntax'),
    (["--health-interval", "5"], 'invalid argument "5" for "--health-interval" flag: time: invalid duration "5"'),
    (["--ulimit", "nofile"], 'invalid argument "nofile" for "--ulimit" flag: invalid ulimit argument: nofile'),
])
def test_bad_flag_values(clean, args, message):
    r = dy_run(clean, *args, "busybox", "true", check=False)
    assert r.returncode == 125
    assert r.stderr.splitlines()[0] == message
    assert _no_containers(clean)


@pytest.mark.parametrize("args, message", [
    (["-e"], "flag needs an argument: 'e' in -e"),
    (["busybox", "--name"], None),  # after the image it is the command's
    (["--name"], "flag needs an argument: --name"),
])
def test_flag_without_value(clean, args, message):
    r = dockyard(clean, "run", *args, check=False)
    if message is None:
        assert r.returncode == 127  # `--name` is run as the command
        docker(clean, "container", "prune", "-f", check=False)
        return
    assert r.returncode == 125
    assert r.stderr.splitlines()[0] == message


@pytest.mark.parametrize("args, message", [
    (["--rm", "--restart", "always"], "Conflicting options: --restart and --rm"),
    (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts with --health-* options"),
    (["-d", "-a", "stdout"], "Conflicting options: -a and -d"),
    (["--pull", "sometimes"], "invalid pull option: 'sometimes'"),
])
def test_conflicting_flags(clean, args, message):
    r = dy_run(clean, *args, "busybox", "true", check=False)
    assert r.returncode == 125
    assert message in r.stderr
    assert _no_containers(clean)


def test_run_without_image(clean):
    r = dockyard(clean, "run", check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("dockyard: 'dockyard run' requires at least 1 argument\n")


def test_missing_command_is_127_and_nothing_is_left(clean):
    r = dy_run(clean, "--rm", "busybox", "nosuchcmd", check=False)
    assert r.returncode == 127
    assert r.stderr == ('dockyard: Error response from daemon: exec: "nosuchcmd": executable '
                        "file not found in $PATH\n\nRun 'dockyard run --help' for more "
                        "information\n")
    assert _no_containers(clean)
    r = dy_run(clean, "-d", "busybox", "nosuchcmd", check=False)
    assert r.returncode == 127


def test_missing_image_and_daemon_errors_are_125(clean):
    r = dy_run(clean, "--pull", "never", "nosuchimage", check=False)
    assert r.returncode == 125
    assert r.stderr.startswith("dockyard: Error response from daemon: No such image: ")
    r = dy_run(clean, "--name", "bad/name", "busybox", check=False)
    assert r.returncode == 125
    assert "Invalid container name" in r.stderr
    assert _no_containers(clean)


def test_run_applies_the_flags(clean):
    script = "echo $A $B; id -u; pwd; hostname; cat /sys/fs/cgroup/pids.max 2>/dev/null || true"
    r = dy_run(clean, "--rm", "-e", "A=1", "--env", "B=two", "-u", "123", "-w", "/tmp",
               "-h", "box", "busybox", "sh", "-c", script)
    assert r.stdout.splitlines()[:4] == ["1 two", "123", "/tmp", "box"]
    cid = dy_run(clean, "-d", "--name", "flags", "-l", "a=b", "-m", "64m", "--pids-limit", "50",
                 "--cap-drop", "ALL", "--read-only", "--tmpfs", "/run", "--stop-signal",
                 "SIGUSR1", "--restart", "on-failure:2", "--health-cmd", "true",
                 "--health-interval", "1m30s", "--entrypoint", "sleep", "busybox",
                 "1000").stdout.strip()
    doc = json.loads(docker(clean, "inspect", cid).stdout)[0]
    hc, cfg = doc["HostConfig"], doc["Config"]
    assert cfg["Labels"] == {"a": "b"}
    assert cfg["Entrypoint"] == ["sleep"] and cfg["Cmd"] == ["1000"]
    assert cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert cfg["Healthcheck"]["Interval"] == 90 * 10**9
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["PidsLimit"] == 50
    assert hc["CapDrop"] == ["ALL"] and hc["ReadonlyRootfs"] is True
    assert hc["Tmpfs"] == {"/run": ""}
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}


def _wait_equal(a, b, timeout: float = 10):
    # CREATED and STATUS read the clock: compare until both land in the same second.
    deadline = time.monotonic() + timeout
    while True:
        x, y = a(), b()
        if x == y or time.monotonic() > deadline:
            return x, y


def test_ps_matches_docker(clean):
    dy_run(clean, "-d", "--name", "running", "busybox", "sleep", "1000")
    dy_run(clean, "--name", "exited", "busybox", "sh", "-c", "exit 2", check=False)
    dockyard(clean, "create", "--cgroup-parent", CGROUP_PARENT, "--name", "quoted", "busybox",
             "sh", "-c", 'echo "a long command line that is cut"')
    for args in (["ps"], ["ps", "-a"], ["ps", "-a", "--no-trunc"], ["ps", "-aq"], ["ps", "-q"],
                 ["ps", "-a", "-s"], ["ps", "-n", "2"], ["ps", "-l"], ["ps", "-a", "--format", "json"],
                 ["ps", "-a", "--filter", "status=exited"], ["ps", "-a", "--filter", "name=quot"],
                 ["ps", "-a", "--format", "table {{.Names}}\t{{.Status}}"],
                 ["container", "ls", "-a"], ["container", "list", "-aq"]):
        ours, theirs = _wait_equal(lambda: dockyard(clean, *args).stdout,
                                   lambda: docker(clean, *args).stdout)
        assert ours == theirs, args
    header = dockyard(clean, "ps").stdout.splitlines()[0]
    assert re.split(r"\s{2,}", header) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED",
                                           "STATUS", "PORTS", "NAMES"]
    # Cut to 20 characters with an ellipsis, then quoted as Go quotes.
    assert '"sh -c \'echo \\"a long…"' in dockyard(clean, "ps", "-a").stdout


def test_ps_bad_input(clean):
    r = dockyard(clean, "ps", "-n", "x", check=False)
    assert r.returncode == 125
    assert r.stderr.startswith('invalid argument "x" for "-n, --last" flag: strconv.ParseInt')
    r = dockyard(clean, "ps", "--filter", "nonsense", check=False)
    assert r.returncode == 125 and "bad format of filter" in r.stderr
    r = dockyard(clean, "ps", "--filter", "colour=red", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ")


def test_inspect_matches_docker(clean):
    cid = dy_run(clean, "-d", "--name", "insp", "busybox", "sleep", "1000").stdout.strip()
    for args in (["inspect", "insp"], ["inspect", cid, "busybox"], ["container", "inspect", "insp"],
                 ["image", "inspect", "busybox"], ["inspect", "--type", "image", "busybox"],
                 ["inspect", "-s", "insp"]):
        assert dockyard(clean, *args).stdout == docker(clean, *args).stdout, args
    for net in docker(clean, "network", "ls", "--format", "{{.Name}}").stdout.split()[:2]:
        for args in (["inspect", net], ["inspect", "--type", "network", net]):
            assert dockyard(clean, *args).stdout == docker(clean, *args).stdout, args
    assert dockyard(clean, "inspect", "-f", "{{.State.Status}}", "insp").stdout == "running\n"
    assert dockyard(clean, "inspect", "--format", "{{.Name}}", "insp").stdout == "/insp\n"


@pytest.mark.parametrize("args", [["inspect", "nosuch"], ["inspect", "insp2", "nosuch"],
                                  ["inspect", "--type", "container", "busybox"],
                                  ["inspect", "--type", "volume2", "x"],
                                  ["inspect", "--type", "volume", "x"],
                                  ["inspect", "--type", "network", "x"],
                                  ["container", "inspect", "nosuch"]])
def test_inspect_errors_match_docker(clean, args):
    dy_run(clean, "-d", "--name", "insp2", "busybox", "sleep", "1000")
    ours, theirs = dockyard(clean, *args, check=False), docker(clean, *args, check=False)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    assert ours.stderr == theirs.stderr.replace("docker", "dockyard")


@pytest.mark.parametrize("cmd", ["start", "stop", "kill", "rm", "wait", "logs", "inspect",
                                 "pause", "restart"])
def test_unknown_container(clean, cmd):
    r = dockyard(clean, cmd, "x", check=False)
    assert r.returncode == 1
    if cmd == "inspect":
        assert r.stderr == "Error: No such object: x\n"
    elif cmd in ("pause", "restart") and "page not found" in r.stderr:
        pytest.skip(f"the daemon has no {cmd} endpoint yet")
    else:
        assert r.stderr.startswith("Error response from daemon: No such container: x\n")


def test_lifecycle(clean):
    cid = dockyard(clean, "create", "--cgroup-parent", CGROUP_PARENT, "--name", "life",
                   "busybox", "sh", "-c", "echo one; echo two >&2; exit 5").stdout.strip()
    assert len(cid) == 64
    assert dockyard(clean, "start", "life").stdout == "life\n"
    assert dockyard(clean, "wait", "life").stdout == "5\n"
    logs = dockyard(clean, "logs", "life")
    assert (logs.stdout, logs.stderr) == ("one\n", "two\n")
    assert dockyard(clean, "logs", "--tail", "0", "life").stdout == ""
    stamped = dockyard(clean, "logs", "-t", "life").stdout.splitlines()
    assert stamped[0].endswith("Z one") and stamped[0][:4].isdigit()
    assert dockyard(clean, "logs", "--since", "1h", "life").stdout == "one\n"
    r = dockyard(clean, "start", "-a", "life", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (5, "one\n", "two\n")
    r = dockyard(clean, "rm", "life", "nosuch", check=False)
    assert r.returncode == 1
    assert r.stdout == "life\n"
    assert r.stderr == "Error response from daemon: No such container: nosuch\n"
    assert _no_containers(clean)


def test_stop_kill_rm_running(clean):
    dy_run(clean, "-d", "--name", "sleeper", "busybox", "sleep", "1000")
    r = dockyard(clean, "rm", "sleeper", check=False)
    assert r.returncode == 1 and "You cannot remove a running container" in r.stderr
    assert dockyard(clean, "stop", "-t", "1", "sleeper").stdout == "sleeper\n"
    assert dockyard(clean, "inspect", "-f", "{{.State.ExitCode}}", "sleeper").stdout == "137\n"
    dockyard(clean, "start", "sleeper")
    assert dockyard(clean, "kill", "-s", "KILL", "sleeper").stdout == "sleeper\n"
    assert dockyard(clean, "wait", "sleeper").stdout == "137\n"
    r = dockyard(clean, "kill", "-s", "NOPE", "sleeper", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ")
    r = dockyard(clean, "start", "sleeper", "nosuch1", "nosuch2", check=False)
    assert r.returncode == 1 and r.stdout == "sleeper\n"
    assert r.stderr.endswith("Error: failed to start containers: nosuch1, nosuch2\n")
    assert dockyard(clean, "rm", "-f", "sleeper").stdout == "sleeper\n"
    assert _no_containers(clean)


def test_exec(clean):
    dy_run(clean, "-d", "--name", "ex", "busybox", "sleep", "1000")
    r = dockyard(clean, "exec", "ex", "sh", "-c", "echo in; echo err >&2; exit 4", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, "in\n", "err\n")
    r = dockyard(clean, "exec", "-e", "A=1", "-w", "/tmp", "-u", "7", "ex", "sh", "-c",
                 "echo $A $(pwd) $(id -u)")
    assert r.stdout == "1 /tmp 7\n"
    assert dockyard(clean, "exec", "-d", "ex", "touch", "/tmp/detached").stdout == ""
    r = dockyard(clean, "exec", "ex", check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("dockyard: 'dockyard exec' requires at least 2 arguments\n")
    r = dockyard(clean, "exec", "nosuch", "true", check=False)
    assert r.returncode == 1 and r.stderr == "Error response from daemon: No such container: nosuch\n"


def test_argument_counts(clean):
    r = dockyard(clean, "logs", check=False)
    assert r.returncode == 1
    assert r.stderr == ("dockyard: 'dockyard logs' requires 1 argument\n\nUsage:  dockyard logs "
                        "[OPTIONS] CONTAINER\n\nRun 'dockyard logs --help' for more information\n")
    r = dockyard(clean, "stop", check=False)
    assert r.returncode == 1 and "'dockyard stop' requires at least 1 argument" in r.stderr
    r = dockyard(clean, "rename", "a", check=False)
    assert r.returncode == 1 and "'dockyard rename' requires 2 arguments" in r.stderr


def test_ps_templates(clean):
    dy_run(clean, "-d", "--name", "tmpl", "-l", "team=blue", "busybox", "sleep", "1000")
    for args in (["ps", "--format", '{{.Names}} {{.Label "team"}}'],
                 ["ps", "--format", "table {{.ID}}\\t{{.Labels}}"],
                 ["ps", "--format", "{{json .Names}}"],
                 ["ps", "--format", "{{.Names}}\\t{{.State}}"]):
        assert dockyard(clean, *args).stdout == docker(clean, *args).stdout, args
    r = dockyard(clean, "ps", "--format", "{{.Nope}}", check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("failed to execute template: template: :1:2: executing \"\" at "
                               "<.Nope>: can't evaluate field Nope in type "
                               "*formatter.ContainerContext")
    r = dockyard(clean, "ps", "--format", "{{", check=False)
    assert (r.returncode, r.stderr) == (1, "failed to parse template: template: :1: unclosed action\n")


def test_run_interactive_stdin(clean):
    try:
        r = dockyard(clean, "run", "-i", "--rm", "--cgroup-parent", CGROUP_PARENT, "busybox",
                     "sh", "-c", "cat; echo done", input="hello\n", timeout=20)
    except Exception as exc:  # subprocess.TimeoutExpired: the daemon kept stdin open
        pytest.fail(f"stdin was not relayed to the end: {exc}")
    assert (r.returncode, r.stdout) == (0, "hello\ndone\n")
    assert _no_containers(clean)


def _spawn(d, *args: str):
    pexpect = pytest.importorskip("pexpect")
    env = {"DOCKYARD_HOST": d.host, "PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb"}
    child = pexpect.spawn(DOCKYARD[0], [*DOCKYARD[1:], *args], env=env, timeout=20,
                          dimensions=(33, 97), encoding="utf-8")
    return child


def test_run_interactive_tty(clean):
    child = _spawn(clean, "run", "-it", "--rm", "--cgroup-parent", CGROUP_PARENT, "busybox", "sh")
    try:
        child.expect_exact("# ")
        child.sendline("echo $((6*7)); stty size")
        child.expect_exact("42")
        child.expect_exact("33 97")  # our terminal's size, sent on start
        child.sendline("exit 3")
        child.expect(pytest.importorskip("pexpect").EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 3
    assert _no_containers(clean)


def test_run_tty_detach_keys(clean):
    child = _spawn(clean, "run", "-it", "--name", "detached", "--cgroup-parent", CGROUP_PARENT,
                   "busybox", "sh")
    try:
        child.expect_exact("# ")
        child.send("\x10\x11")  # ctrl-p ctrl-q
        child.expect(pytest.importorskip("pexpect").EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert dockyard(clean, "inspect", "-f", "{{.State.Running}}", "detached").stdout == "true\n"


def test_tty_needs_a_terminal(clean):
    r = dockyard(clean, "run", "-it", "busybox", "true", input="", check=False)
    assert (r.returncode, r.stderr) == (1, "the input device is not a TTY\n")
    r = dockyard(clean, "exec", "-it", "x", "true", input="", check=False)
    assert (r.returncode, r.stderr) == (1, "the input device is not a TTY\n")
    assert _no_containers(clean)


@contextlib.contextmanager
def _running_dockyard(d: Daemon, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`dockyard ARGS` against D, its output piped; killed if it outlives the block."""
    proc = subprocess.Popen([*DOCKYARD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, DOCKYARD_HOST=d.host))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_forwards_signals(clean):
    import signal

    with _running_dockyard(clean, "run", "--rm", "--name", "trapper", "--cgroup-parent",
                           CGROUP_PARENT, "busybox", "sh", "-c",
                           "trap 'echo got; exit 7' TERM; echo ready; "
                           "while true; do sleep 0.1; done") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (7, "got\n")
    assert _no_containers(clean)


def test_pause_restart_rename(clean):
    dy_run(clean, "-d", "--name", "p1", "busybox", "sleep", "1000")
    assert dockyard(clean, "pause", "p1").stdout == "p1\n"
    assert dockyard(clean, "inspect", "-f", "{{.State.Paused}}", "p1").stdout == "true\n"
    assert "(Paused)" in dockyard(clean, "ps", "--format", "{{.Status}}").stdout
    assert dockyard(clean, "unpause", "p1").stdout == "p1\n"
    assert dockyard(clean, "rename", "p1", "p2").stdout == ""
    pid = dockyard(clean, "inspect", "-f", "{{.State.Pid}}", "p2").stdout
    assert dockyard(clean, "restart", "-t", "1", "p2").stdout == "p2\n"
    assert dockyard(clean, "inspect", "-f", "{{.State.Pid}}", "p2").stdout != pid
    r = dockyard(clean, "rename", "nosuch", "p3", check=False)
    assert r.returncode == 1
    assert r.stderr == ("Error response from daemon: No such container: nosuch\n"
                        "Error: failed to rename container named nosuch\n")


def test_top_commit_export_prune(clean, tmp_path):
    dy_run(clean, "-d", "--name", "tp", "busybox", "sleep", "1000")
    assert dockyard(clean, "top", "tp", "-o", "pid,comm").stdout == \
        docker(clean, "top", "tp", "-o", "pid,comm").stdout
    for args in (["top", "tp"], ["container", "top", "tp"]):
        # ps -ef's C column is the CPU use of the moment: it may change between the calls.
        def without_c(text: str) -> list[list[str]]:
            return [(row := line.split(None, 7))[:3] + row[4:] for line in text.splitlines()]
        assert without_c(dockyard(clean, *args).stdout) == without_c(docker(clean, *args).stdout)
    r = dockyard(clean, "top", "nosuch", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: No such container: nosuch\n")
    dockyard(clean, "exec", "tp", "touch", "/made-here")
    try:
        image_id = dockyard(clean, "commit", "-m", "a note", "tp", "committed:1").stdout.strip()
        assert image_id.startswith("sha256:")
        assert dockyard(clean, "image", "inspect", "-f", "{{.Comment}}",
                        "committed:1").stdout == "a note\n"
    finally:
        docker(clean, "rmi", "committed:1", check=False)
    dockyard(clean, "export", "-o", str(tmp_path / "fs.tar"), "tp")
    import tarfile

    with tarfile.open(tmp_path / "fs.tar") as tar:
        assert "made-here" in tar.getnames()
    r = dockyard(clean, "export", "-o", str(tmp_path / "none.tar"), "nosuch", check=False)
    assert r.returncode == 1 and not (tmp_path / "none.tar").exists()
    dockyard(clean, "rm", "-f", "tp")
    dy_run(clean, "--name", "stopped", "busybox", "true")
    cid = dockyard(clean, "inspect", "-f", "{{.Id}}", "stopped").stdout.strip()
    r = dockyard(clean, "container", "prune", "-f")
    assert r.stdout == f"Deleted Containers:\n{cid}\n\nTotal reclaimed space: 0B\n"
    assert dockyard(clean, "container", "prune", input="n\n").stdout.startswith(
        "WARNING! This will remove all stopped containers.\n")
    assert _no_containers(clean)


def test_attach(clean):
    dy_run(clean, "-d", "--name", "att", "busybox", "sh", "-c",
           "trap 'exit 9' TERM; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo late; exit 6")
    with _running_dockyard(clean, "attach", "att") as proc:
        # Attached once the daemon has the connection; then let the container talk.
        deadline = time.monotonic() + 10
        while "attach" not in docker(clean, "events", "--since", "0", "--until", "0s",
                                     "--filter", "container=att").stdout:
            assert time.monotonic() < deadline, "never attached"
            time.sleep(0.05)
        # Not checked: the container may end, and take the exec with it, before the
        # exec's own exit is seen.
        dockyard(clean, "exec", "att", "touch", "/tmp/go", check=False)
        out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (6, "late\n")
    r = dockyard(clean, "attach", "att", check=False)
    assert (r.returncode, r.stderr) == (1, "You cannot attach to a stopped container, start it first\n")
    r = dockyard(clean, "attach", "nosuch", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: No such container: nosuch\n")


def test_stats_no_stream(clean):
    dy_run(clean, "-d", "--name", "st", "busybox", "sleep", "1000")
    for args in (["stats", "--no-stream", "--format", "{{.ID}} {{.Name}} {{.PIDs}} {{.NetIO}}"],
                 ["stats", "--no-stream", "--no-trunc", "--format", "{{.ID}} {{.Container}}", "st"],
                 ["container", "stats", "--no-stream", "--format", "{{json .Name}}", "st"]):
        assert dockyard(clean, *args).stdout == docker(clean, *args).stdout, args
    lines = dockyard(clean, "stats", "--no-stream").stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT",
                                             "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    assert re.match(r"[0-9a-f]{12}   st        \d+\.\d\d%   .+iB / .+iB   \d+\.\d\d%   ", lines[1])
    r = dockyard(clean, "stats", "--no-stream", "nosuch", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: No such container: nosuch\n")


def test_update(clean):
    dy_run(clean, "-d", "--name", "up", "busybox", "sleep", "1000")
    assert dockyard(clean, "update", "-m", "64m", "--memory-swap", "128m", "--pids-limit", "20",
                    "--cpus", "0.5", "--restart", "on-failure:3", "up").stdout == "up\n"
    hc = json.loads(dockyard(clean, "inspect", "up").stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["PidsLimit"], hc["NanoCpus"]) == (
        64 << 20, 128 << 20, 20, 500_000_000)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    for args in (["update", "up"], ["update", "--pids-limit", "5", "nosuch"],
                 ["update", "-m", "x", "up"]):
        ours, theirs = dockyard(clean, *args, check=False), docker(clean, *args, check=False)
        assert ours.returncode == theirs.returncode, args
        assert ours.stderr.splitlines()[0] == theirs.stderr.splitlines()[0], args


def test_logs_follow(clean):
    dy_run(clean, "-d", "--name", "fol", "busybox", "sh", "-c",
           "for i in 1 2 3; do echo $i; sleep 0.2; done")
    r = dockyard(clean, "logs", "-f", "fol")
    assert r.stdout == "1\n2\n3\n"
    assert dockyard(clean, "logs", "-n", "1", "fol").stdout == "3\n"


@pytest.mark.parametrize("flags", [
    [],
    ["-i", "-e", "A=1", "-m", "64m", "--restart", "on-failure:2", "--name", "{name}"],
    ["--rm", "--cap-add", "net_admin", "--cap-drop", "ALL", "--tmpfs", "/run", "--read-only",
     "--init", "-l", "x=y"],
    ["--pids-limit", "5", "--ulimit", "nofile=10:20", "--cpus", "1", "--entrypoint", "sh", "-w",
     "/tmp", "-u", "1:2", "-a", "stdout"],
    ["--health-cmd", "true", "--health-interval", "5s", "--health-retries", "2", "--stop-signal",
     "USR1", "--stop-timeout", "3", "--dns", "1.1.1.1", "--add-host", "a:1.2.3.4"],
    ["--no-healthcheck", "--mount", "type=tmpfs,target=/y", "--security-opt",
     "no-new-privileges", "--network", "none", "-h", "box", "--privileged", "--entrypoint="],
])
def test_create_sends_what_docker_sends(clean, flags):
    docs = []
    for tool, name in ((docker, "by-docker"), (dockyard, "by-dockyard")):
        args = [f.replace("{name}", name) for f in flags]
        if "--name" not in args:
            args += ["--name", name]
        tool(clean, "create", "--cgroup-parent", CGROUP_PARENT, *args, "busybox", "echo", "hi")
        docs.append(json.loads(docker(clean, "inspect", name).stdout)[0])
    for section in ("Config", "HostConfig"):
        ours, theirs = dict(docs[1][section]), dict(docs[0][section])
        ours.pop("Hostname", None)
        theirs.pop("Hostname", None)
        assert ours == theirs, section


@pytest.mark.parametrize("args", [
    ["inspect", "-f", "{{.Foo}}", "tmpl"],
    ["inspect", "-f", "{{.Foo}}", "tmpl", "busybox", "nosuch", "tmpl"],
    ["inspect", "-f", "{{.Id}} {{.Foo}}", "busybox"],
    ["inspect", "-f", "{{.Name}}", "nosuch", "tmpl"],
    ["inspect", "-f", "{{.Config.Labels.k}} {{.Config.Labels.zz}}", "tmpl"],
    ["inspect", "-f", "{{.Config.Labels.zz}}", "busybox"],
    ["inspect", "-f", "{{.State.Health.Status}}", "tmpl"],
    ["inspect", "-f", "{{json .Config.Labels}} {{.Config.Labels}}", "tmpl"],
    ["inspect", "-f", "{{.Foo", "tmpl"],
    ["inspect", "-f", "json", "tmpl", "busybox", "nosuch"],
    ["inspect", "-f", "json", "nosuch"],
    ["container", "inspect", "-f", "{{.NetworkSettings.Foo}}", "tmpl"],
    ["image", "inspect", "-f", "{{.Foo}}", "busybox"],
    ["ps", "--format", "{{json .}}"], ["ps", "--format", "json"],
    ["ps", "--format", "{{json .Labels}} {{.Label \"k\"}}"],
    ["images", "--format", "{{json .}}"],
])
def test_templates_and_json_as_docker(clean, args):
    dy_run(clean, "-d", "--name", "tmpl", "-l", "k=<v&>", "busybox", "sleep", "1000")
    ours, theirs = dockyard(clean, *args, check=False), docker(clean, *args, check=False)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout,
                                                           theirs.stderr)


@pytest.mark.parametrize("args", [
    ["run", "--rm=maybe", "busybox", "true"], ["run", "-d=x", "busybox"], ["ps", "-a=x"],
    ["ps", "--no-trunc=yes"], ["run", "-it=2", "busybox"], ["--debug=x", "ps"],
    ["--bogus"], ["container", "--bogus"], ["container", "ls", "--quiet=no"],
])
def test_bad_bool_flag_values_as_docker(clean, args):
    ours, theirs = dockyard(clean, *args, check=False), docker(clean, *args, check=False)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (125, "")
    assert ours.stderr == theirs.stderr.replace("docker", "dockyard")
    assert _no_containers(clean)


def test_bool_flags_take_a_joined_value(clean):
    # --rm=false keeps the container; -d=false stays attached; -t=false needs no terminal.
    assert dy_run(clean, "--rm=false", "--name", "kept", "busybox", "echo", "a").stdout == "a\n"
    assert docker(clean, "inspect", "-f", "{{.HostConfig.AutoRemove}}", "kept").stdout == "false\n"
    assert dy_run(clean, "-d=false", "--rm", "busybox", "echo", "b").stdout == "b\n"
    assert dy_run(clean, "--rm=true", "-it=false", "busybox", "echo", "c").stdout == "c\n"
    assert dockyard(clean, "run", "--rm", "-i=1", "-t=0", "busybox", "cat",
                    input="in").stdout == "in"
    r = dy_run(clean, "--rm", "--privileged=false", "--init=t", "busybox", "sh", "-c",
               "grep CapEff /proc/self/status; cat /proc/1/comm")
    assert r.stdout == "CapEff:\t00000000a80425fb\ndocker-init\n"
    assert "true" in dy_run(clean, "--rm", "--privileged", "busybox", "echo", "true").stdout
    # --sig-proxy is a flag too: bare, or with a joined value; never the next argument.
    assert dy_run(clean, "--rm", "--sig-proxy", "busybox", "echo", "d").stdout == "d\n"
    assert dy_run(clean, "--rm", "--sig-proxy=false", "busybox", "echo", "e").stdout == "e\n"
    # The last one given wins; flags after the image belong to the command.
    assert dy_run(clean, "--rm=false", "--rm", "busybox", "echo", "f").stdout == "f\n"
    r = dy_run(clean, "--rm", "busybox", "echo", "--rm=false", "-d=false")
    assert r.stdout == "--rm=false -d=false\n"
    assert dockyard(clean, "ps", "-a=true", "-q", "--no-trunc=false").stdout == (
        docker(clean, "ps", "-aq").stdout)
    assert docker(clean, "ps", "-a", "--format", "{{.Names}}").stdout == "kept\n"


def test_tty_size_is_sent_with_run_and_exec(clean):
    pexpect = pytest.importorskip("pexpect")
    for args in (["run", "-it", "--rm", "--cgroup-parent", CGROUP_PARENT, "busybox", "stty", "size"],
                 ["run", "-t", "--name", "sized", "--cgroup-parent", CGROUP_PARENT, "busybox",
                  "stty", "size"]):
        child = _spawn(clean, *args)
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        # The first line the container writes already has our terminal's size.
        assert child.before.splitlines()[0] == "33 97", args
    assert docker(clean, "inspect", "-f", "{{json .HostConfig.ConsoleSize}}", "sized").stdout == (
        "[33,97]\n")
    dy_run(clean, "-d", "--name", "execsize", "busybox", "sleep", "1000")
    for flags in (["-it"], ["-t"]):
        child = _spawn(clean, "exec", *flags, "execsize", "stty", "size")
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.before.splitlines()[0] == "33 97", flags
    # Without a terminal there is no size to send.
    dockyard(clean, "create", "-t", "--name", "nosize", "busybox")
    assert docker(clean, "inspect", "-f", "{{json .HostConfig.ConsoleSize}}", "nosize").stdout == (
        "[0,0]\n")


@pytest.mark.parametrize("command", [["run", "-it", "--rm", "--cgroup-parent", CGROUP_PARENT,
                                      "busybox", "sh"],
                                     ["exec", "-it", "resized", "sh"]])
def test_tty_follows_a_resize(clean, command):
    pexpect = pytest.importorskip("pexpect")
    dy_run(clean, "-d", "--name", "resized", "busybox", "sleep", "1000")
    child = _spawn(clean, *command)
    try:
        child.expect_exact("# ")
        child.setwinsize(40, 100)  # SIGWINCH to the dockyard process
        deadline = time.monotonic() + 10
        while True:
            child.sendline("stty size")
            if child.expect([r"\r\n40 100\r\n", r"\r\n\d+ \d+\r\n"]) == 0:
                break
            assert time.monotonic() < deadline, "the size never followed"
            time.sleep(0.05)
        child.sendline("exit 0")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
