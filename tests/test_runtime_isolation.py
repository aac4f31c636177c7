"""What a process inside sees: its own pid 1, hostname, mounts, network and /proc."""

from __future__ import annotations


def run_out(runtime, bundle, *args: str) -> str:
    path = bundle.args(*args).write()
    res = runtime("run", "--bundle", path, "iso")
    return res.stdout


def test_pid_1_and_hostname(any_runtime, bundle):
    assert run_out(any_runtime, bundle, "sh", "-c", "echo $$; hostname") == "1\nbox\n"


def test_only_its_own_processes(runtime, bundle):
    out = run_out(runtime, bundle, "sh", "-c", "ls /proc | grep -E '^[0-9]+$'")
    # sh itself (1), and ls and grep of the pipeline
    assert set(out.split()) <= {"1", "2", "3", "4"}
    assert "1" in out.split()


def test_network_namespace_has_only_lo(runtime, bundle):
    assert run_out(runtime, bundle, "ls", "/sys/class/net").split() == ["lo"]


def test_only_its_own_mounts(runtime, bundle, tmp_path):
    out = run_out(runtime, bundle, "cat", "/proc/self/mountinfo")
    points = {line.split()[4] for line in out.splitlines()}
    allowed = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
               "/sys/fs/cgroup"}
    extra = {p for p in points if p not in allowed and not p.startswith(("/sys/fs/cgroup/",
                                                                         "/proc/", "/sys/"))}
    assert not extra, f"unexpected mounts inside: {extra}"


def test_host_unreachable(runtime, bundle, tmp_path):
    (tmp_path / "host-secret").write_text("x")
    out = run_out(runtime, bundle, "sh", "-c", "cd /../../..; pwd; ls; ls /proc/1/root/")
    lines = out.split()
    assert lines[0] == "/"
    assert "host-secret" not in out
    assert "bundle" not in lines


def test_domainname_and_uts(runtime, bundle):
    bundle.config["domainname"] = "example.test"
    out = run_out(runtime, bundle, "cat", "/proc/sys/kernel/domainname")
    assert out == "example.test\n"
