"""Bad input: a non-zero exit, a message naming the problem, nothing left behind.
And hygiene: many run/delete cycles leave no mount, cgroup, process or state."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest


def assert_clean(runtime, bundle) -> None:
    assert runtime("list", "-q").stdout.split() == []
    state_dirs = [p for p in runtime.root.iterdir() if not p.name.startswith(".")] \
        if runtime.root.exists() else []
    assert state_dirs == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(bundle.path) not in mounts


def fails(runtime, bundle, *words: str, cid: str = "bad") -> None:
    res = runtime("create", "--bundle", str(bundle.path), cid, check=False)
    assert res.returncode != 0
    for w in words:
        assert w in res.stderr, f"{w!r} not in {res.stderr!r}"
    assert_clean(runtime, bundle)


def test_malformed_config(runtime, bundle):
    bundle.write()
    (bundle.path / "config.json").write_text('{"ociVersion": "1.2.0", ')
    fails(runtime, bundle, "config.json", "malformed JSON")


def test_missing_config(runtime, bundle):
    fails(runtime, bundle, "config.json", "no such file")


def test_missing_rootfs(runtime, bundle):
    bundle.config["root"]["path"] = "nowhere"
    bundle.write()
    fails(runtime, bundle, "root.path", "nowhere", "does not exist")


def test_unknown_namespace_type(runtime, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "galaxy"})
    bundle.write()
    fails(runtime, bundle, "linux.namespaces[6].type", "galaxy")


def test_unknown_field_is_named(runtime, bundle):
    bundle.config["linux"]["intelRdt"] = {"closID": "x"}
    bundle.write()
    fails(runtime, bundle, "linux.intelRdt")


def test_program_absent_from_rootfs(runtime, bundle):
    bundle.args("no-such-program").write()
    fails(runtime, bundle, "no-such-program", "not found")


@pytest.mark.parametrize("field, value, words", [
    ("memory", {"limit": -5}, ["linux.resources.memory.limit"]),
    ("cpu", {"period": 10}, ["linux.resources.cpu.period"]),
    ("pids", {"limit": "many"}, ["linux.resources.pids.limit"]),
])
def test_out_of_range_resources(runtime, bundle, field, value, words):
    bundle.config["linux"]["resources"][field] = value
    bundle.write()
    fails(runtime, bundle, *words)


def test_out_of_range_process_fields(runtime, bundle):
    bundle.process["oomScoreAdj"] = 5000
    bundle.write()
    fails(runtime, bundle, "process.oomScoreAdj")
    bundle.process["oomScoreAdj"] = 0
    bundle.process["user"]["uid"] = -1
    bundle.write()
    fails(runtime, bundle, "process.user.uid")


def test_missing_host_privilege_is_explained(runtime, bundle):
    """Root here lacks CAP_SYS_RESOURCE: raising a hard rlimit is refused up front."""
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1 << 30, "soft": 1024}]
    bundle.write()
    fails(runtime, bundle, "process.rlimits[0]", "CAP_SYS_RESOURCE")


def test_duplicate_id(runtime, bundle):
    path = bundle.args("sleep", "1000").write()
    runtime("create", "--bundle", path, "dup")
    res = runtime("create", "--bundle", path, "dup", check=False)
    assert res.returncode != 0 and "dup" in res.stderr and "exists" in res.stderr
    assert runtime.status("dup") == "created"
    runtime("delete", "dup")
    assert_clean(runtime, bundle)


def test_delete_running_needs_force(any_runtime, bundle):
    path = bundle.args("sleep", "1000").write()
    any_runtime("run", "-d", "--bundle", path, "busy")
    res = any_runtime("delete", "busy", check=False)
    assert res.returncode != 0 and "running" in res.stderr
    assert any_runtime.status("busy") == "running"
    any_runtime("delete", "--force", "busy")
    assert any_runtime.status("busy") == "absent"


def test_unknown_container(any_runtime):
    for verb in ("state", "start", "kill", "delete"):
        res = any_runtime(verb, "ghost", check=False)
        assert res.returncode != 0 and "does not exist" in res.stderr, verb
        if any_runtime.binary == "dockyard-runtime":
            assert "ghost" in res.stderr  # clearer than runc: it names the container


def test_fifty_cycles_leave_nothing(runtime, bundle):
    path = bundle.args("true").write()
    before = set(os.listdir("/proc"))
    for i in range(50):
        runtime("run", "--bundle", path, f"cycle{i}")
    assert_clean(runtime, bundle)
    cg = bundle.config["linux"]["cgroupsPath"].lstrip("/")
    assert not any((Path("/sys/fs/cgroup") / h / cg).exists() for h in os.listdir("/sys/fs/cgroup"))
    # No process of ours stays behind (others on the host may come and go).
    leftovers = []
    for p in set(os.listdir("/proc")) - before:
        try:
            if str(bundle.path) in os.readlink(f"/proc/{p}/root"):
                leftovers.append(p)
        except OSError:
            pass
    assert not leftovers


def test_hooks_run_with_state(runtime, bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()

    def hook(name: str) -> dict:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{name}"]}

    bundle.config["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime", "createContainer",
                                                    "poststart", "poststop")}
    # startContainer runs inside the container, after pivot_root: its path is the image's.
    bundle.config["root"]["readonly"] = False
    bundle.config["hooks"]["startContainer"] = [{"path": "/bin/sh",
                                                 "args": ["sh", "-c", "cat > /started"]}]
    path = bundle.args("true").write()
    runtime("run", "--bundle", path, "hooked")
    for name in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        state = json.loads((out / name).read_text())
        assert state["id"] == "hooked", name
        assert state["bundle"] == path
    assert json.loads((bundle.rootfs / "started").read_text())["id"] == "hooked"


def test_failing_hook_aborts_create(runtime, bundle):
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    bundle.write()
    fails(runtime, bundle, "hooks.createRuntime[0]", "/bin/false")


def test_cgroup_of_another_container_is_refused_and_left_alone(runtime, bundle):
    path = bundle.args("sleep", "1000").write()
    runtime("run", "-d", "--bundle", path, "first")
    res = runtime("create", "--bundle", path, "second", check=False)
    assert res.returncode != 0
    assert bundle.config["linux"]["cgroupsPath"] in res.stderr and "has processes" in res.stderr
    # The refused container left no record; the first one is untouched.
    assert runtime("list", "-q").stdout.split() == ["first"]
    assert runtime.status("first") == "running"
    runtime("delete", "--force", "first")


def test_command_line_errors(runtime):
    cases = [
        (["create"], '"dockyard-runtime create" requires a container id'),
        (["create", "--bogus", "x"], "flag provided but not defined: --bogus"),
        (["run", "--bundle"], "flag needs an argument: --bundle"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["kill", "x", "SIGNOPE"], "unknown signal 'SIGNOPE'"),
        (["start", "bad/id"], "invalid container id"),
    ]
    for argv, message in cases:
        res = runtime(*argv, check=False)
        assert res.returncode == 1, argv
        assert message in res.stderr, (argv, res.stderr)
    assert "commands:" in runtime("--help").stdout


def test_host_wide_sysctl_is_refused(runtime, bundle):
    bundle.config["linux"]["sysctl"] = {"kernel.core_pattern": "|/tmp/x"}
    bundle.write()
    fails(runtime, bundle, "linux.sysctl.kernel.core_pattern", "host")


def test_namespaced_sysctl_needs_its_namespace(runtime, bundle):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "network"]
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.write()
    fails(runtime, bundle, "linux.sysctl.net.ipv4.ip_forward", "network namespace")


def test_dev_symlink_cannot_reach_the_host(runtime, bundle, tmp_path):
    """An image whose /dev points outside its root gets its devices inside, and the host
    directory it points at stays untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dev = bundle.rootfs / "dev"
    subprocess.run(["rm", "-rf", str(dev)], check=True)
    os.symlink(str(outside), dev)
    res = runtime("run", "--bundle", bundle.args("sh", "-c", "test -c /dev/null && echo ok").write(),
                  "devlink", check=False)
    assert list(outside.iterdir()) == []
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr


def test_cwd_through_proc_fd_cannot_leave_the_root(runtime, bundle):
    bundle.process["cwd"] = "/proc/self/fd/7"
    res = runtime("run", "--bundle", bundle.args("pwd").write(), "cwdfd", check=False)
    assert res.returncode != 0 and "process.cwd" in res.stderr
    assert res.stdout == ""
    assert_clean(runtime, bundle)


def test_exec_process_is_checked_like_create(runtime, bundle):
    path = bundle.args("sleep", "1000").write()
    runtime("run", "-d", "--bundle", path, "chk")
    res = runtime("exec", "--user", "-1", "chk", "id", check=False)
    assert res.returncode == 1 and "process.user.uid: -1 is out of range" in res.stderr
    res = runtime("exec", "--env", "NOEQUALS", "chk", "true", check=False)
    assert res.returncode == 1 and "process.env" in res.stderr and "NOEQUALS" in res.stderr
    runtime("delete", "--force", "chk")
