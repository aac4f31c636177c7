"""A container's life through the runtime's CLI, checked against runc on the same bundles."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from conftest import wait_for


def test_create_start_kill_delete(any_runtime, bundle):
    bundle.args("sleep", "1000")
    path = bundle.write()
    any_runtime("create", "--bundle", path, "c1")
    state = any_runtime.state("c1")
    assert state["status"] == "created"
    assert state["id"] == "c1"
    assert state["pid"] > 0
    assert state["bundle"] == path
    any_runtime("start", "c1")
    assert any_runtime.status("c1") == "running"
    # The init runs the configured program, not yet some runtime code.
    pid = state["pid"]
    assert wait_for(lambda: open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"sleep"),
                    what="init to exec sleep")
    any_runtime("kill", "c1", "KILL")
    wait_for(lambda: any_runtime.status("c1") == "stopped", what="stopped")
    any_runtime("delete", "c1")
    assert any_runtime.status("c1") == "absent"
    assert any_runtime("list", "-q").stdout.split() == []


def test_run_returns_exit_code(any_runtime, bundle):
    path = bundle.args("sh", "-c", "exit 3").write()
    assert any_runtime("run", "--bundle", path, "c2", check=False).returncode == 3
    # Killed by signal N: 128+N. (pid 1 cannot SIGKILL itself: the kill comes from outside.)
    path = bundle.args("sleep", "1000").write()
    fg = subprocess.Popen([any_runtime.binary, "--root", str(any_runtime.root), "run",
                           "--bundle", path, "c3"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: any_runtime.status("c3") == "running", what="running")
        any_runtime("kill", "c3", "KILL")
        assert fg.wait(timeout=30) == 137
    finally:
        fg.kill()
        fg.wait()
    # Foreground run deletes the container afterwards.
    assert any_runtime("list", "-q").stdout.split() == []


def test_run_output_and_detach(any_runtime, bundle):
    path = bundle.args("echo", "hello from the container").write()
    res = any_runtime("run", "--bundle", path, "c4")
    assert res.stdout == "hello from the container\n"
    path = bundle.args("sleep", "1000").write()
    any_runtime("run", "-d", "--bundle", path, "c5")
    assert any_runtime.status("c5") == "running"
    any_runtime("delete", "--force", "c5")
    assert any_runtime.status("c5") == "absent"


def test_pause_resume(any_runtime, bundle, tmp_path):
    # The container counts into a file; while paused the count must not move.
    bundle.config["root"]["readonly"] = False
    path = bundle.args("sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; done").write()
    any_runtime("run", "-d", "--bundle", path, "c6")
    count = bundle.rootfs / "count"

    def read() -> int:
        try:
            return int(count.read_text() or 0)
        except (ValueError, FileNotFoundError):
            return 0

    wait_for(lambda: read() > 10, what="counter to start")
    any_runtime("pause", "c6")
    assert any_runtime.status("c6") == "paused"
    frozen = read()
    pid = any_runtime.state("c6")["pid"]
    # Frozen tasks are parked in the freezer: nothing runs, the counter stays put.
    for _ in range(20):
        os.sched_yield()
        with open(f"/proc/{pid}/stat") as f:
            f.read()
    assert abs(read() - frozen) <= 1
    any_runtime("resume", "c6")
    assert any_runtime.status("c6") == "running"
    wait_for(lambda: read() > frozen + 10, what="counter to move again")
    any_runtime("delete", "--force", "c6")


def test_kill_all_and_signal_names(any_runtime, bundle):
    path = bundle.args("sh", "-c", "trap 'exit 42' TERM; sleep 1000 & wait").write()
    any_runtime("run", "-d", "--bundle", path, "c7")
    pid = any_runtime.state("c7")["pid"]
    wait_for(lambda: len(os.listdir(f"/proc/{pid}/task")) and
             "sleep" in _children_cmdlines(pid), what="sleep child")
    any_runtime("kill", "--all", "c7", "SIGTERM")
    wait_for(lambda: any_runtime.status("c7") == "stopped", what="stopped")
    any_runtime("delete", "c7")


def _children_cmdlines(pid: int) -> str:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = open(f"/proc/{pid}/task/{tid}/children").read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                out.append(open(f"/proc/{kid}/cmdline").read())
            except OSError:
                pass
    return " ".join(out)


def test_list_and_ps(runtime, bundle):
    path = bundle.args("sh", "-c", "sleep 1000 & sleep 1000").write()
    runtime("run", "-d", "--bundle", path, "c8")
    listed = json.loads(runtime("list", "--format", "json").stdout)
    assert [(s["id"], s["status"]) for s in listed] == [("c8", "running")]
    table = runtime("list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[0] == "c8"
    pids = wait_for(lambda: (p := json.loads(runtime("ps", "--format", "json", "c8").stdout))
                    and len(p) == 2 and p, what="two processes")
    assert runtime.state("c8")["pid"] in pids
    assert "sleep" in runtime("ps", "c8").stdout
    runtime("delete", "--force", "c8")


def test_spec_writes_runc_defaults(runtime, tmp_path):
    runtime("spec", "--bundle", str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    assert {n["type"] for n in cfg["linux"]["namespaces"]} == {"pid", "network", "ipc", "uts",
                                                               "mount", "cgroup"}
    res = runtime("spec", "--bundle", str(tmp_path), check=False)
    assert res.returncode != 0 and "config.json exists" in res.stderr


def test_in_process_library(bundle, tmp_path):
    """The daemon's path: a warm Python process forks the container itself."""
    from dockyard.runtime.container import Runtime, wait_exit

    path = bundle.args("sh", "-c", "exit 5").write()
    rt = Runtime(str(tmp_path / "lib-state"))
    # Run it from a forked child of ours that acts as the container's reaper.
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 99
        try:
            from dockyard.runtime import linux

            linux.set_child_subreaper()
            pid = rt.create("lib1", path)
            rt.start("lib1")
            code = wait_exit(pid)
            rt.delete("lib1")
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    result = os.read(r, 1)
    os.waitpid(child, 0)
    assert result == bytes([5])
    assert rt.list() == []
    assert signal.SIGKILL  # keeps the import used for readers grepping signals
