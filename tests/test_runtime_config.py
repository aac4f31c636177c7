"""Configuration fields mapped to the kernel: joined namespaces, process identity and
limits, devices, sysctls, mount options."""

from __future__ import annotations

import os
from pathlib import Path


def run(runtime, bundle, script: str, cid: str = "cfg") -> str:
    path = bundle.args("sh", "-c", script).write()
    return runtime("run", "--bundle", path, cid).stdout


def test_join_network_namespace_by_path(any_runtime, bundle):
    path = bundle.args("sleep", "1000").write()
    any_runtime("run", "-d", "--bundle", path, "owner")
    owner = any_runtime.state("owner")["pid"]
    netns = f"/proc/{owner}/ns/net"
    for ns in bundle.config["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = netns
    bundle.config["linux"]["cgroupsPath"] += "-joiner"
    out = run(any_runtime, bundle, "readlink /proc/self/ns/net", cid="joiner")
    assert out.strip() == os.readlink(netns)
    any_runtime("delete", "--force", "owner")


def test_user_groups_umask_and_cwd(any_runtime, bundle):
    bundle.config["root"]["readonly"] = False
    bundle.process["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o077}
    bundle.process["cwd"] = "/srv/app"
    out = run(any_runtime, bundle, "id -u; id -g; id -G; umask; pwd").split()
    assert out[:2] == ["1000", "1000"]
    assert set(out[2:-2]) == {"1000", "10", "20"}
    assert out[-2] == "0077"
    assert out[-1] == "/srv/app"


def test_rlimits_and_oom_score_adj(any_runtime, bundle):
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256},
                                 {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]
    bundle.process["oomScoreAdj"] = 500
    out = run(any_runtime, bundle, "ulimit -n; ulimit -Hn; ulimit -c; cat /proc/self/oom_score_adj")
    assert out.split() == ["256", "512", "0", "500"]


def test_linux_devices_and_default_devices(any_runtime, bundle):
    bundle.config["linux"]["devices"] = [{"type": "c", "path": "/dev/mynull", "major": 1,
                                          "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0}]
    out = run(any_runtime, bundle,
              "echo x > /dev/mynull && echo written; ls -l /dev/mynull | cut -c1-10;"
              "for d in null zero full random urandom tty; do test -c /dev/$d && echo $d; done;"
              "readlink /dev/fd; readlink /dev/ptmx")
    lines = out.split()
    assert lines[:2] == ["written", "crw-------"]
    assert lines[2:8] == ["null", "zero", "full", "random", "urandom", "tty"]
    assert lines[8:] == ["/proc/self/fd", "pts/ptmx"]


def test_device_cgroup_denies_other_devices(runtime, bundle):
    # mknod is allowed (as Docker allows it), but opening a node the device cgroup does
    # not list is refused.
    bundle.config["root"]["readonly"] = False
    caps = ["CAP_MKNOD", "CAP_DAC_OVERRIDE"]
    bundle.process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    out = run(runtime, bundle, "mknod /tmp/lp b 7 200 && echo made; cat /tmp/lp 2>&1 | head -1")
    lines = out.splitlines()
    assert lines[0] == "made"
    assert "not permitted" in lines[1]


def test_sysctl(any_runtime, bundle):
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}
    out = run(any_runtime, bundle, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax")
    assert out.split() == ["1", "4096"]
    # The host's value is untouched: the container has its own ipc namespace.
    assert Path("/proc/sys/kernel/msgmax").read_text().strip() != "4096"


def test_bind_mount_options(any_runtime, bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("hi\n")
    bundle.config["mounts"].append({"destination": "/data", "type": "bind", "source": str(shared),
                                    "options": ["rbind", "ro", "nosuid", "nodev", "rprivate"]})
    bundle.config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["noexec", "size=1m", "mode=1777"]})
    out = run(any_runtime, bundle,
              "cat /data/hello; touch /data/x 2>/dev/null || echo ro;"
              "grep -E ' /(data|scratch) ' /proc/self/mountinfo | cut -d' ' -f5,6")
    lines = out.splitlines()
    assert lines[:2] == ["hi", "ro"]
    opts = dict(line.split(" ", 1) for line in lines[2:])
    assert {"ro", "nosuid", "nodev"} <= set(opts["/data"].split(","))
    assert "noexec" in opts["/scratch"].split(",")


def test_unsupported_resource_is_named(runtime, bundle):
    # This host's blkio hierarchy has no weight file: the field is refused, not ignored.
    if any(Path("/sys/fs/cgroup/blkio").glob("*weight")):
        return
    bundle.config["linux"]["resources"]["blockIO"] = {"weight": 500}
    path = bundle.write()
    res = runtime("create", "--bundle", path, "blk", check=False)
    assert res.returncode != 0 and "linux.resources.blockIO.weight" in res.stderr
    assert runtime("list", "-q").stdout == ""


def test_device_replaces_a_symlink_at_its_path(runtime, bundle):
    # /dev/ptmx is a symlink to pts/ptmx by default; a device listed there replaces it.
    bundle.config["linux"]["devices"] = [{"type": "c", "path": "/dev/ptmx", "major": 5,
                                          "minor": 2, "fileMode": 0o666}]
    out = run(runtime, bundle, "test -c /dev/ptmx && ! test -L /dev/ptmx && echo node")
    assert out == "node\n"


def test_signals_start_at_their_defaults(runtime, bundle):
    # The runtime is Python, which ignores SIGPIPE and SIGXFSZ: the container must not
    # inherit that (SigIgn all zero, nothing blocked).
    out = run(runtime, bundle, "grep -E '^Sig(Ign|Blk)' /proc/self/status")
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]
