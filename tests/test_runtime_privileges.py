"""Capabilities, no_new_privs, seccomp, masked and read-only paths, user namespaces."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from dockyard.runtime.capabilities import DOCKER_DEFAULT
from dockyard.runtime.seccomp_default import docker_default_profile
from conftest import wait_for


def caps(bundle, names) -> None:
    names = list(names)
    bundle.process["capabilities"] = {"bounding": names, "effective": names,
                                      "permitted": names}


def run(runtime, bundle, script: str, cid: str = "priv"):
    path = bundle.args("sh", "-c", script).write()
    return runtime("run", "--bundle", path, cid, check=False)


def test_docker_default_capabilities(runtime, bundle):
    caps(bundle, DOCKER_DEFAULT)
    bundle.config["root"]["readonly"] = False
    res = run(runtime, bundle, "touch /f && chown 1000 /f && echo chown-ok;"
                               "ip link add d0 type dummy 2>/dev/null || echo ip-denied;"
                               "mount -t tmpfs none /mnt 2>/dev/null || echo mount-denied")
    assert res.stdout.split() == ["chown-ok", "ip-denied", "mount-denied"], res.stderr


def test_no_capabilities(runtime, bundle):
    caps(bundle, [])
    bundle.config["root"]["readonly"] = False
    res = run(runtime, bundle, "touch /f; chown 1000 /f 2>/dev/null || echo chown-denied;"
                               "grep CapEff /proc/self/status")
    assert res.stdout.split() == ["chown-denied", "CapEff:", "0000000000000000"]


def test_no_new_privileges(runtime, bundle):
    bundle.process["noNewPrivileges"] = True
    assert "NoNewPrivs:\t1" in run(runtime, bundle, "cat /proc/self/status").stdout
    bundle.process["noNewPrivileges"] = False
    assert "NoNewPrivs:\t0" in run(runtime, bundle, "cat /proc/self/status").stdout


def test_masked_and_readonly_paths(runtime, bundle):
    # /proc/timer_list is masked (it exists on this kernel; /proc/kcore does not).
    res = run(runtime, bundle, "wc -c < /proc/timer_list; ls /sys/firmware | wc -l;"
                               "echo x > /proc/sys/kernel/domainname 2>/dev/null || echo ro-denied;"
                               "touch /newfile 2>/dev/null || echo rootfs-ro")
    assert res.stdout.split() == ["0", "0", "ro-denied", "rootfs-ro"]


def test_writable_root_when_not_readonly(runtime, bundle):
    bundle.config["root"]["readonly"] = False
    assert run(runtime, bundle, "touch /newfile && echo ok").stdout == "ok\n"
    assert (bundle.rootfs / "newfile").exists()


# Programs that need precise syscalls run under the host's Python, bound read-only
# into an otherwise empty root.
PROBE = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    def call(name, *args):
        r = getattr(libc, name)(*args)
        return "ok" if r >= 0 else os.strerror(ctypes.get_errno())
    print("unshare", call("unshare", 0x00020000))
    print("mount", call("mount", b"none", b"/tmp", b"tmpfs", 0, None))
    print("keyctl", call("syscall", 250, 0, 0, 0, 0, 0))
    print("getpid", "ok" if os.getpid() == 1 else "bad")
    with open("/proc/self/status") as f:
        print("seccomp", [l.split()[1] for l in f if l.startswith("Seccomp:")][0])
""")


@pytest.fixture
def python_bundle(bundle):
    """busybox plus the host's /usr (and its python3) bound read-only at /usr."""
    rootfs: Path = bundle.rootfs
    for d in ("usr", "tmp"):
        (rootfs / d).mkdir(exist_ok=True)
    # The host's dynamic loader is found through /lib64.
    if (rootfs / "lib64").is_symlink():
        (rootfs / "lib64").unlink()
    os.symlink("usr/lib64", rootfs / "lib64")
    bundle.config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                                    "options": ["rbind", "ro"]})
    # busybox's /lib holds its own libc; the host's Python needs the host's.
    bundle.config["mounts"].append({"destination": "/lib", "type": "bind", "source": "/usr/lib",
                                    "options": ["rbind", "ro"]})
    bundle.config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["nosuid", "nodev"]})
    return bundle


def probe(runtime, bundle) -> dict[str, str]:
    path = bundle.args("/usr/bin/python3", "-S", "-c", PROBE).write()
    res = runtime("run", "--bundle", path, "probe", check=False)
    assert res.returncode == 0, res.stderr
    return dict(line.split(" ", 1) for line in res.stdout.splitlines())


def test_seccomp_default_profile_blocks(runtime, python_bundle):
    # CAP_SYS_ADMIN granted, so what refuses unshare and mount is the profile, not caps.
    granted = list(DOCKER_DEFAULT) + ["CAP_SYS_ADMIN"]
    caps(python_bundle, granted)
    unconfined = probe(runtime, python_bundle)
    assert unconfined["unshare"] == "ok" and unconfined["mount"] == "ok"
    assert unconfined["seccomp"] == "0"
    python_bundle.config["linux"]["seccomp"] = docker_default_profile(DOCKER_DEFAULT)
    confined = probe(runtime, python_bundle)
    assert confined["seccomp"] == "2"
    assert confined["unshare"] == "Operation not permitted"
    assert confined["mount"] == "Operation not permitted"
    assert confined["keyctl"] == "Operation not permitted"
    assert confined["getpid"] == "ok"


def test_user_namespace_root_is_unprivileged_outside(runtime, bundle):
    # Root of the user namespace is uid 100000 outside: like runc, the runtime needs the
    # bundle's path to be searchable by it.
    for parent in bundle.path.parents:
        if str(parent) == "/tmp":
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    # As with Docker's userns-remap, the root filesystem belongs to the mapped root.
    subprocess.run(["chown", "-R", "100000:100000", str(bundle.rootfs)], check=True)
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    path = bundle.args("sh", "-c", "id -u; sleep 1000").write()
    out = bundle.path / "out"
    with open(out, "w") as f:
        runtime("run", "-d", "--bundle", path, "userns", stdout=f)
    pid = runtime.state("userns")["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")][0]
    assert uids == ["100000"] * 4
    wait_for(lambda: out.read_text() == "0\n", what="id -u inside")
    runtime("delete", "--force", "userns")
