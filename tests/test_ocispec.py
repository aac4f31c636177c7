"""The OCI spec built from a Docker create request (daemon/ocispec.py) and the etc files
(daemon/etcfiles.py): the mapping case by case, then real runs of the built specs."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from dockyard.daemon import etcfiles
from dockyard.daemon.ocispec import (build_spec, capability_set, command, environment,
                                     merge_tmpfs_options, parse_bind, resolve_user)
from dockyard.errors import InvalidArgument, Unsupported
from dockyard.runtime import capabilities
from dockyard.runtime.capabilities import DOCKER_DEFAULT
from dockyard.runtime.spec import validate

CID = "0123456789ab" + "c" * 52


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
        "# a comment\n"
        "bob:x:1001:100::/home/bob:/bin/sh\n")
    (root / "etc" / "group").write_text(
        "root:x:0:\nwheel:x:10:root\nusers:x:100:\nalice:x:1000:\n"
        "audio:x:29:alice,bob\nvideo:x:44:bob\n")
    return root


def spec(rootfs: Path, config: dict | None = None, host: dict | None = None,
         image: dict | None = None, **kw) -> dict:
    kw.setdefault("cgroupns_v2", False)
    kw.setdefault("swap_limit", True)
    s = build_spec(container_id=CID, name="/test", config=config or {"Cmd": ["sh"]},
                   host_config=host or {}, image_config=image or {}, rootfs=str(rootfs), **kw)
    validate(s)
    return s


def mounts_by_dest(s: dict) -> dict[str, dict]:
    return {m["destination"]: m for m in s["mounts"]}


# ------------------------------------------------------------------ entrypoint / cmd

@pytest.mark.parametrize("config, image, args", [
    ({}, {"Cmd": ["sh"]}, ["sh"]),
    ({"Cmd": ["ls", "-l"]}, {"Cmd": ["sh"]}, ["ls", "-l"]),
    ({}, {"Entrypoint": ["/init"], "Cmd": ["--flag"]}, ["/init", "--flag"]),
    ({"Cmd": ["x"]}, {"Entrypoint": ["/init"], "Cmd": ["--flag"]}, ["/init", "x"]),
    # --entrypoint clears the image's command
    ({"Entrypoint": ["/bin/echo"]}, {"Entrypoint": ["/init"], "Cmd": ["--flag"]}, ["/bin/echo"]),
    ({"Entrypoint": ["/bin/echo"], "Cmd": ["hi"]}, {"Cmd": ["sh"]}, ["/bin/echo", "hi"]),
    # --entrypoint "" arrives as [""]: no entrypoint, and the image Cmd is not used
    ({"Entrypoint": [""], "Cmd": ["ls"]}, {"Entrypoint": ["/init"], "Cmd": ["sh"]}, ["ls"]),
    # an empty list is Go's len()==0: the image command stays, the entrypoint is reset
    ({"Entrypoint": []}, {"Entrypoint": ["/init"], "Cmd": ["sh"]}, ["sh"]),
    ({"Cmd": "echo hi"}, {}, ["echo hi"]),  # StrSlice accepts a string
])
def test_command_rules(config: dict, image: dict, args: list[str]) -> None:
    assert command(config, image) == args


def test_no_command() -> None:
    with pytest.raises(InvalidArgument, match="No command specified"):
        command({}, {})
    with pytest.raises(InvalidArgument, match="No command specified"):
        command({"Entrypoint": [""]}, {"Cmd": ["sh"]})


# --------------------------------------------------------------------------- env

def test_env_merge_order_and_overrides() -> None:
    env = environment({"Env": ["B=2", "C=3", "A"]}, {"Env": ["PATH=/x", "A=1", "B=1"]},
                      "host1", tty=True)
    assert env == ["PATH=/x", "HOSTNAME=host1", "TERM=xterm", "B=2", "C=3"]


def test_env_default_path_and_hostname_override() -> None:
    env = environment({"Env": ["HOSTNAME=mine"]}, {}, "h", tty=False)
    assert env[0].startswith("PATH=/usr/local/sbin:")
    assert "HOSTNAME=mine" in env and not any(e == "TERM=xterm" for e in env)


def test_spec_env_has_home_and_hostname(rootfs: Path) -> None:
    s = spec(rootfs, {"Cmd": ["sh"], "User": "alice"})
    assert f"HOSTNAME={CID[:12]}" in s["process"]["env"]
    assert "HOME=/home/alice" in s["process"]["env"]
    s = spec(rootfs, {"Cmd": ["sh"], "Env": ["HOME=/elsewhere"]})
    assert [e for e in s["process"]["env"] if e.startswith("HOME=")] == ["HOME=/elsewhere"]


# -------------------------------------------------------------------------- user

@pytest.mark.parametrize("user, expect", [
    ("", {"uid": 0, "gid": 0, "additionalGids": [0, 10]}),
    ("root", {"uid": 0, "gid": 0, "additionalGids": [0, 10]}),
    ("alice", {"uid": 1000, "gid": 1000, "additionalGids": [1000, 29]}),
    ("1000", {"uid": 1000, "gid": 1000, "additionalGids": [1000, 29]}),
    ("bob", {"uid": 1001, "gid": 100, "additionalGids": [100, 29, 44]}),
    ("alice:users", {"uid": 1000, "gid": 100, "additionalGids": [100]}),  # explicit group: no supplementary ones
    ("1000:1000", {"uid": 1000, "gid": 1000, "additionalGids": [1000]}),
    ("4242", {"uid": 4242, "gid": 0, "additionalGids": [0]}),  # unknown uid: fine, gid 0
    ("4242:4343", {"uid": 4242, "gid": 4343, "additionalGids": [4343]}),
    ("alice:4343", {"uid": 1000, "gid": 4343, "additionalGids": [4343]}),
])
def test_user_resolution(rootfs: Path, user: str, expect: dict) -> None:
    assert resolve_user(str(rootfs), user)["user"] == expect


def test_user_unknown_name_and_group(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="unable to find user carol: no matching entries in passwd file"):
        resolve_user(str(rootfs), "carol")
    with pytest.raises(InvalidArgument, match="unable to find group nogroup"):
        resolve_user(str(rootfs), "alice:nogroup")


def test_group_add(rootfs: Path) -> None:
    s = spec(rootfs, {"Cmd": ["sh"], "User": "1000:1000"}, {"GroupAdd": ["video", "777"]})
    assert s["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 44, 777]}
    with pytest.raises(InvalidArgument, match="Unable to find group nope"):
        spec(rootfs, host={"GroupAdd": ["nope"]})


def test_user_from_image_and_symlinked_passwd_stays_inside(rootfs: Path, tmp_path: Path) -> None:
    assert spec(rootfs, image={"User": "alice"})["process"]["user"]["uid"] == 1000
    # A passwd that is an absolute symlink resolves inside the rootfs, never on the host.
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("/etc/passwd2")
    (rootfs / "etc" / "passwd2").write_text("zed:x:7:7::/z:/bin/sh\n")
    assert resolve_user(str(rootfs), "zed")["user"]["uid"] == 7


# ------------------------------------------------------------------ capabilities

def test_default_caps(rootfs: Path) -> None:
    s = spec(rootfs)
    c = s["process"]["capabilities"]
    assert c["bounding"] == list(DOCKER_DEFAULT) == c["effective"] == c["permitted"]
    assert "ambient" not in c and "inheritable" not in c


def test_cap_add_drop_forms() -> None:
    out = capability_set(DOCKER_DEFAULT, ["sys_admin", "CAP_NET_ADMIN"], ["chown", "CAP_KILL"], False)
    assert "CAP_SYS_ADMIN" in out and "CAP_NET_ADMIN" in out
    assert "CAP_CHOWN" not in out and "CAP_KILL" not in out
    assert capability_set(DOCKER_DEFAULT, ["NET_ADMIN"], ["ALL"], False) == ["CAP_NET_ADMIN"]
    assert capability_set(DOCKER_DEFAULT, [], ["all"], False) == []
    full = capability_set(DOCKER_DEFAULT, ["ALL"], ["SYS_ADMIN"], False)
    assert "CAP_SYS_ADMIN" not in full and "CAP_SYS_MODULE" in full
    everything = capability_set(DOCKER_DEFAULT, None, None, True)
    assert set(DOCKER_DEFAULT) < set(everything)
    assert everything == [c for c in capabilities.NAMES if c in everything]  # kernel order
    with pytest.raises(InvalidArgument, match="unknown capability: 'CAP_BOGUS'"):
        capability_set(DOCKER_DEFAULT, ["bogus"], [], False)


# ------------------------------------------------------------------------ mounts

def test_default_mounts_and_shm_size(rootfs: Path) -> None:
    m = mounts_by_dest(spec(rootfs))
    assert list(m) == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                       "/dev/shm"]
    assert "size=67108864" in m["/dev/shm"]["options"]
    assert "ro" in m["/sys"]["options"] and "ro" in m["/sys/fs/cgroup"]["options"]
    m = mounts_by_dest(spec(rootfs, host={"ShmSize": 1 << 20}))
    assert "size=1048576" in m["/dev/shm"]["options"]
    assert "/dev/shm" not in mounts_by_dest(spec(rootfs, host={"IpcMode": "none"}))


def test_binds(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    created = tmp_path / "new" / "dir"
    s = spec(rootfs, host={"Binds": [f"{src}:/data:ro", f"{created}:/x/y", f"{src}:/sl:rslave"]})
    m = mounts_by_dest(s)
    assert m["/data"] == {"destination": "/data", "type": "bind", "source": str(src),
                          "options": ["rbind", "ro", "rprivate"]}
    assert m["/x/y"]["options"] == ["rbind", "rprivate"]
    assert created.is_dir()  # -v creates a missing host directory, as dockerd does
    assert m["/sl"]["options"] == ["rbind", "rslave"]
    assert s["linux"]["rootfsPropagation"] == "rslave"
    with pytest.raises(Unsupported, match="shared mount propagation"):
        spec(rootfs, host={"Binds": [f"{src}:/sh:rshared"]})
    # user mounts come after the defaults, parents first
    dests = [x["destination"] for x in s["mounts"]]
    assert dests.index("/data") > dests.index("/dev/shm")
    assert dests.index("/data") < dests.index("/x/y")


@pytest.mark.parametrize("bind, message", [
    ("/a:rel", "mount path must be absolute"),
    ("/a:/", "destination can't be '/'"),
    ("/a::/b", "empty section between colons"),
    ("/a:/b:bogus", "invalid mode: bogus"),
    ("/a:/b:ro,rw", "invalid mode"),
    ("/data:rw", "invalid volume specification"),
    ("/a:/b:c:d", "invalid volume specification"),
])
def test_bind_errors(bind: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_bind(bind)


def test_named_and_anonymous_volumes_unsupported() -> None:
    with pytest.raises(Unsupported, match="named volumes"):
        parse_bind("myvol:/data")
    with pytest.raises(Unsupported, match="anonymous volumes"):
        parse_bind("/data")


def test_mount_api(rootfs: Path, tmp_path: Path) -> None:
    s = spec(rootfs, host={"Mounts": [
        {"Type": "bind", "Source": str(tmp_path), "Target": "/b", "ReadOnly": True,
         "BindOptions": {"Propagation": "rslave"}},
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1770}},
    ]})
    m = mounts_by_dest(s)
    assert m["/b"]["options"] == ["rbind", "ro", "rslave"]
    assert m["/t"]["options"] == ["noexec", "nosuid", "nodev", "rprivate", "mode=1770", "size=64m"]
    assert s["linux"]["rootfsPropagation"] == "rslave"


def test_mount_bind_missing_source(rootfs: Path, tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(InvalidArgument, match=f'invalid mount config for type "bind": bind source '
                                              f"path does not exist: {missing}"):
        spec(rootfs, host={"Mounts": [{"Type": "bind", "Source": str(missing), "Target": "/b"}]})
    assert not missing.exists()
    with pytest.raises(Unsupported, match="type 'volume'"):
        spec(rootfs, host={"Mounts": [{"Type": "volume", "Source": "v", "Target": "/b"}]})


def test_tmpfs(rootfs: Path) -> None:
    m = mounts_by_dest(spec(rootfs, host={"Tmpfs": {"/run": "", "/tmp": "exec,size=10m,mode=1777"}}))
    assert m["/run"]["options"] == ["noexec", "nosuid", "nodev", "rprivate"]
    assert m["/tmp"]["options"] == ["nosuid", "nodev", "rprivate", "exec", "size=10m", "mode=1777"]
    assert merge_tmpfs_options(["size=1m", "ro", "size=2m", "rw"]) == ["size=2m", "rw"]
    with pytest.raises(InvalidArgument, match="invalid tmpfs option"):
        spec(rootfs, host={"Tmpfs": {"/t": "bogus=1"}})
    with pytest.raises(InvalidArgument, match="must be absolute"):
        spec(rootfs, host={"Tmpfs": {"rel": ""}})


def test_duplicate_mount_points(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /x"):
        spec(rootfs, host={"Binds": [f"{tmp_path}:/x", f"{tmp_path}:/x/"]})
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /x"):
        spec(rootfs, host={"Binds": [f"{tmp_path}:/x"], "Tmpfs": {"/x": ""}})


def test_user_mount_replaces_default(rootfs: Path, tmp_path: Path) -> None:
    m = mounts_by_dest(spec(rootfs, host={"Tmpfs": {"/dev/shm": "size=1m"}}))
    assert m["/dev/shm"]["source"] == "tmpfs" and "size=1m" in m["/dev/shm"]["options"]


def test_etc_files_and_readonly_rootfs(rootfs: Path, tmp_path: Path) -> None:
    etc = {"/etc/hosts": str(tmp_path / "hosts"), "/etc/hostname": str(tmp_path / "hostname"),
           "/etc/resolv.conf": str(tmp_path / "resolv.conf")}
    m = mounts_by_dest(spec(rootfs, etc_files=etc))
    assert m["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind",
                               "source": etc["/etc/hosts"], "options": ["rbind", "rprivate"]}
    s = spec(rootfs, host={"ReadonlyRootfs": True, "Binds": [f"{tmp_path}:/etc/hosts"]},
             etc_files=etc)
    m = mounts_by_dest(s)
    assert s["root"]["readonly"] is True
    assert m["/etc/hosts"]["source"] == str(tmp_path)  # the user's mount wins
    assert m["/etc/resolv.conf"]["options"] == ["rbind", "ro", "rprivate"]


# ------------------------------------------------------------------- namespaces

def test_namespaces(rootfs: Path) -> None:
    types = lambda s: [n["type"] for n in s["linux"]["namespaces"]]  # noqa: E731
    assert types(spec(rootfs)) == ["mount", "network", "uts", "pid", "ipc"]
    assert "cgroup" in types(spec(rootfs, cgroupns_v2=True))
    assert "cgroup" in types(spec(rootfs, host={"CgroupnsMode": "private"}))
    assert "cgroup" not in types(spec(rootfs, host={"CgroupnsMode": "host"}, cgroupns_v2=True))
    host = spec(rootfs, host={"NetworkMode": "host"})
    assert "network" not in types(host)
    assert host["hostname"] == os.uname().nodename
    assert "sysctl" not in host["linux"]
    assert "network" in types(spec(rootfs, host={"NetworkMode": "none"}))
    assert "pid" not in types(spec(rootfs, host={"PidMode": "host"}))
    uts = spec(rootfs, host={"UTSMode": "host"})
    assert "uts" not in types(uts) and "hostname" not in uts
    with pytest.raises(Unsupported, match="NetworkMode"):
        spec(rootfs, host={"NetworkMode": "mynet"})
    with pytest.raises(Unsupported, match="NetworkMode"):
        spec(rootfs, host={"NetworkMode": "container:abc"})


def test_hostname_and_domainname(rootfs: Path) -> None:
    s = spec(rootfs, {"Cmd": ["sh"], "Hostname": "web", "Domainname": "example.com"})
    assert s["hostname"] == "web" and s["domainname"] == "example.com"
    assert spec(rootfs)["hostname"] == CID[:12]


def test_masked_paths(rootfs: Path) -> None:
    s = spec(rootfs)
    assert "/proc/kcore" in s["linux"]["maskedPaths"]
    assert "/proc/sys" in s["linux"]["readonlyPaths"]
    p = spec(rootfs, host={"Privileged": True})
    assert "maskedPaths" not in p["linux"] and "readonlyPaths" not in p["linux"]
    u = spec(rootfs, host={"SecurityOpt": ["systempaths=unconfined"]})
    assert "maskedPaths" not in u["linux"]


# -------------------------------------------------------------------- resources

def test_memory_and_swap(rootfs: Path) -> None:
    res = lambda h, **kw: spec(rootfs, host=h, **kw)["linux"]["resources"]  # noqa: E731
    assert res({"Memory": 64 << 20})["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert res({"Memory": 64 << 20, "MemorySwap": -1})["memory"] == {"limit": 64 << 20, "swap": -1}
    assert res({"Memory": 64 << 20, "MemorySwap": 100 << 20})["memory"]["swap"] == 100 << 20
    assert res({"Memory": 64 << 20}, swap_limit=False)["memory"] == {"limit": 64 << 20}
    assert res({"MemoryReservation": 32 << 20, "MemorySwappiness": -1})["memory"] == \
        {"reservation": 32 << 20}
    assert res({"MemorySwappiness": 10, "OomKillDisable": True})["memory"] == \
        {"swappiness": 10, "disableOOMKiller": True}
    assert "memory" not in res({})
    for host, msg in [({"Memory": 1 << 20}, "Minimum memory limit allowed is 6MB"),
                      ({"MemorySwap": 1 << 30}, "always set the Memory limit"),
                      ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, "larger than memory limit"),
                      ({"Memory": 64 << 20, "MemoryReservation": 128 << 20}, "reservation"),
                      ({"MemorySwappiness": 101}, "swappiness range is 0-100")]:
        with pytest.raises(InvalidArgument, match=msg):
            res(host)


def test_cpu(rootfs: Path) -> None:
    res = lambda h: spec(rootfs, host=h)["linux"]["resources"]  # noqa: E731
    assert res({"NanoCpus": 1_500_000_000})["cpu"] == {"period": 100000, "quota": 150000}
    assert res({"CpuShares": 512, "CpuPeriod": 50000, "CpuQuota": 25000, "CpusetCpus": "0",
                "CpusetMems": "0"})["cpu"] == \
        {"shares": 512, "period": 50000, "quota": 25000, "cpus": "0", "mems": "0"}
    assert res({"CpuShares": 1})["cpu"] == {"shares": 2}
    with pytest.raises(InvalidArgument, match="Nano CPUs and CPU Period"):
        res({"NanoCpus": 10**9, "CpuPeriod": 100000})
    with pytest.raises(InvalidArgument, match="Range of CPUs"):
        res({"NanoCpus": (os.cpu_count() + 1) * 10**9})
    with pytest.raises(InvalidArgument, match="cfs period"):
        res({"CpuPeriod": 10})


def test_pids_and_blkio(rootfs: Path) -> None:
    res = lambda h: spec(rootfs, host=h)["linux"]["resources"]  # noqa: E731
    assert res({"PidsLimit": 100})["pids"] == {"limit": 100}
    assert res({"PidsLimit": 0})["pids"] == {"limit": -1}
    assert res({"PidsLimit": -1})["pids"] == {"limit": -1}
    assert "pids" not in res({"PidsLimit": None})
    assert res({"BlkioWeight": 300})["blockIO"] == {"weight": 300}
    with pytest.raises(InvalidArgument, match="blkio weight"):
        res({"BlkioWeight": 5})


def test_ulimits_and_oom(rootfs: Path) -> None:
    s = spec(rootfs, host={"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                           "OomScoreAdj": 100})
    assert s["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}]
    assert s["process"]["oomScoreAdj"] == 100
    with pytest.raises(InvalidArgument, match="invalid ulimit type: bogus"):
        spec(rootfs, host={"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]})
    with pytest.raises(InvalidArgument, match="soft limit must be less"):
        spec(rootfs, host={"Ulimits": [{"Name": "nproc", "Soft": 2, "Hard": 1}]})
    with pytest.raises(InvalidArgument, match="oom score adj"):
        spec(rootfs, host={"OomScoreAdj": 2000})


# ----------------------------------------------------------------------- devices

def test_devices(rootfs: Path) -> None:
    s = spec(rootfs, host={"Devices": ["/dev/null:/dev/mynull:rw",
                                       {"PathOnHost": "/dev/zero", "PathInContainer": "",
                                        "CgroupPermissions": ""}]})
    devs = s["linux"]["devices"]
    assert devs[0]["path"] == "/dev/mynull" and (devs[0]["type"], devs[0]["major"],
                                                   devs[0]["minor"]) == ("c", 1, 3)
    assert devs[1]["path"] == "/dev/zero" and devs[1]["minor"] == 5
    rules = s["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in rules
    assert {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"} in rules
    with pytest.raises(InvalidArgument, match="not a device node"):
        spec(rootfs, host={"Devices": ["/etc/passwd"]})
    with pytest.raises(InvalidArgument, match="no such file"):
        spec(rootfs, host={"Devices": ["/dev/does-not-exist"]})


def test_privileged(rootfs: Path) -> None:
    s = spec(rootfs, host={"Privileged": True})
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in s["linux"]["devices"])
    assert not any(d["path"].startswith("/dev/pts/") for d in s["linux"]["devices"])
    assert "seccomp" not in s["linux"]
    m = mounts_by_dest(s)
    assert "ro" not in m["/sys"]["options"] and "ro" not in m["/sys/fs/cgroup"]["options"]


# ----------------------------------------------------------------- sysctl, seccomp

def test_sysctls(rootfs: Path) -> None:
    s = spec(rootfs, host={"Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"}})
    sc = s["linux"]["sysctl"]
    assert sc["net.ipv4.ip_forward"] == "1" and sc["kernel.shmmax"] == "1000"
    assert sc["net.ipv4.ip_unprivileged_port_start"] == "0"
    with pytest.raises(InvalidArgument, match="not allowed in host network namespace"):
        spec(rootfs, host={"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}})
    with pytest.raises(Unsupported, match="kernel.panic"):
        spec(rootfs, host={"Sysctls": {"kernel.panic": "1"}})  # host-wide: the runtime refuses


def test_seccomp_options(rootfs: Path) -> None:
    s = spec(rootfs)
    assert s["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "seccomp" not in spec(rootfs, host={"SecurityOpt": ["seccomp=unconfined"]})["linux"]
    assert "seccomp" not in spec(rootfs, host={"SecurityOpt": ["seccomp:unconfined"]})["linux"]
    assert "seccomp" not in spec(rootfs, seccomp_default=False)["linux"]
    # with CAP_SYS_ADMIN the default profile allows mount
    names = lambda s: {n for c in s["linux"]["seccomp"]["syscalls"]  # noqa: E731
                       if c["action"] == "SCMP_ACT_ALLOW" for n in c["names"]}
    assert "mount" not in names(s)
    assert "mount" in names(spec(rootfs, host={"CapAdd": ["SYS_ADMIN"]}))
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                            {"names": ["chroot"], "action": "SCMP_ACT_ERRNO",
                             "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}
    c = spec(rootfs, host={"SecurityOpt": ["seccomp=" + json.dumps(profile)]})
    assert c["linux"]["seccomp"]["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    with pytest.raises(InvalidArgument, match="Decoding seccomp profile failed"):
        spec(rootfs, host={"SecurityOpt": ["seccomp={not json"]})


def test_security_opts(rootfs: Path) -> None:
    assert spec(rootfs, host={"SecurityOpt": ["no-new-privileges"]})["process"]["noNewPrivileges"]
    assert spec(rootfs, host={"SecurityOpt": ["no-new-privileges:true"]})["process"]["noNewPrivileges"]
    assert not spec(rootfs, host={"SecurityOpt": ["no-new-privileges=false"]})["process"]["noNewPrivileges"]
    spec(rootfs, host={"SecurityOpt": ["apparmor=unconfined", "label=disable"]})
    with pytest.raises(InvalidArgument, match="invalid --security-opt"):
        spec(rootfs, host={"SecurityOpt": ["no-new-privileges=maybe"]})
    with pytest.raises(InvalidArgument, match="invalid --security-opt"):
        spec(rootfs, host={"SecurityOpt": ["bogus=1"]})
    with pytest.raises(Unsupported, match="AppArmor"):
        spec(rootfs, host={"SecurityOpt": ["apparmor=docker-default"]})


# ----------------------------------------------------------------- unsupported

@pytest.mark.parametrize("host, field", [
    ({"CpuRealtimePeriod": 1000}, "HostConfig.CpuRealtimePeriod"),
    ({"DeviceCgroupRules": ["c 1:3 rwm"]}, "HostConfig.DeviceCgroupRules"),
    ({"BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1}]}, "HostConfig.BlkioDeviceReadBps"),
    ({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}, "HostConfig.PortBindings"),
    ({"VolumesFrom": ["other"]}, "HostConfig.VolumesFrom"),
    ({"StorageOpt": {"size": "1G"}}, "HostConfig.StorageOpt"),
    ({"Isolation": "hyperv"}, "HostConfig.Isolation"),
    ({"SomethingNew": 1}, "HostConfig.SomethingNew"),
])
def test_unsupported_host_fields_named(rootfs: Path, host: dict, field: str) -> None:
    with pytest.raises(Unsupported, match=field):
        spec(rootfs, host=host)


def test_init_runs_the_command_under_tini(rootfs: Path) -> None:
    s = spec(rootfs, {"Cmd": ["sleep", "1"]}, host={"Init": True}, init_path="/usr/bin/tini-static")
    assert s["process"]["args"] == ["/sbin/docker-init", "--", "sleep", "1"]
    m = [m for m in s["mounts"] if m["destination"] == "/sbin/docker-init"]
    assert m and m[0]["source"] == "/usr/bin/tini-static" and "ro" in m[0]["options"]
    with pytest.raises(Unsupported, match="HostConfig.Init: no init binary"):
        spec(rootfs, {"Cmd": ["sleep", "1"]}, host={"Init": True}, init_path=None)


def test_unsupported_config_fields_named(rootfs: Path) -> None:
    with pytest.raises(Unsupported, match="Config.MacAddress"):
        spec(rootfs, {"Cmd": ["sh"], "MacAddress": "02:42:ac:11:00:02"})
    with pytest.raises(Unsupported, match="Config.Volumes"):
        spec(rootfs, {"Cmd": ["sh"], "Volumes": {"/data": {}}})
    with pytest.raises(Unsupported, match="image Volumes"):
        spec(rootfs, image={"Cmd": ["sh"], "Volumes": {"/data": {}}})


def test_docker_cli_defaults_pass(rootfs: Path) -> None:
    """What `docker run busybox` sends: every field at its default."""
    host = {
        "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "default", "PortBindings": {}, "RestartPolicy": {"Name": "no",
                                                                         "MaximumRetryCount": 0},
        "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [24, 80],
        "CapAdd": None, "CapDrop": None, "CgroupnsMode": "", "Dns": [], "DnsOptions": [],
        "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None, "IpcMode": "", "Cgroup": "",
        "Links": None, "OomScoreAdj": 0, "PidMode": "", "Privileged": False,
        "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
        "UTSMode": "", "UsernsMode": "", "ShmSize": 0, "Isolation": "", "CpuShares": 0,
        "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
        "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
        "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
        "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
        "OomKillDisable": None, "PidsLimit": None, "Ulimits": None, "CpuCount": 0,
        "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0, "MaskedPaths": None,
        "ReadonlyPaths": None,
    }
    config = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
              "AttachStdout": True, "AttachStderr": True, "Tty": False, "OpenStdin": False,
              "StdinOnce": False, "Env": None, "Cmd": ["true"], "Image": "busybox",
              "Volumes": {}, "WorkingDir": "", "Entrypoint": None, "OnBuild": None,
              "Labels": {}}
    s = spec(rootfs, config, host, {"Cmd": ["sh"]})
    assert s["process"]["args"] == ["true"]
    assert "consoleSize" not in s["process"]  # only with a terminal


def test_cgroups_path(rootfs: Path) -> None:
    assert spec(rootfs)["linux"]["cgroupsPath"] == f"/dockyard/{CID}"
    assert spec(rootfs, host={"CgroupParent": "custom"})["linux"]["cgroupsPath"] == f"/custom/{CID}"


def test_working_dir(rootfs: Path) -> None:
    assert spec(rootfs, image={"Cmd": ["sh"], "WorkingDir": "/srv/"})["process"]["cwd"] == "/srv"
    assert spec(rootfs, {"Cmd": ["sh"], "WorkingDir": "/app"})["process"]["cwd"] == "/app"
    with pytest.raises(InvalidArgument, match="absolute path"):
        spec(rootfs, {"Cmd": ["sh"], "WorkingDir": "rel"})


# ---------------------------------------------------------------------- etcfiles

HOST_RESOLV = ("# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n"
               "search corp.example\noptions edns0 trust-ad\n")


def test_hosts_file() -> None:
    text = etcfiles.hosts_content("web", extra_hosts=["db:10.1.2.3", "v6:fd00::1"])
    lines = text.splitlines()
    assert lines[:6] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                         "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix",
                         "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    assert lines[6:] == ["10.1.2.3\tdb", "fd00::1\tv6"]
    assert "web" not in text  # no address, no entry
    with_addr = etcfiles.hosts_content("web", "example.com", addresses=["172.17.0.2"])
    assert with_addr.splitlines()[-1] == "172.17.0.2\tweb.example.com web"
    with pytest.raises(Unsupported, match="host-gateway"):
        etcfiles.hosts_content("web", extra_hosts=["gw:host-gateway"])
    with pytest.raises(InvalidArgument, match="invalid IP"):
        etcfiles.hosts_content("web", extra_hosts=["x:notanip"])


def test_resolv_conf() -> None:
    text = etcfiles.resolv_content(HOST_RESOLV)
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == ["nameserver 10.0.0.2", "search corp.example", "options edns0 trust-ad"]
    only_local = etcfiles.resolv_content("nameserver 127.0.0.1\n")
    assert "nameserver 8.8.8.8" in only_local and "127.0.0.1" not in only_local
    custom = etcfiles.resolv_content(HOST_RESOLV, dns=["1.1.1.1"], dns_search=["."],
                                     dns_options=["ndots:2"])
    body = [line for line in custom.splitlines() if line and not line.startswith("#")]
    assert body == ["nameserver 1.1.1.1", "options ndots:2"]
    with pytest.raises(InvalidArgument, match="not an ip address"):
        etcfiles.resolv_content(HOST_RESOLV, dns=["dns.example"])


def test_write_etc_files(tmp_path: Path) -> None:
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text(HOST_RESOLV)
    paths = etcfiles.write_etc_files(str(tmp_path / "c"), hostname="web",
                                     extra_hosts=["db:10.1.2.3"],
                                     host_resolv_conf=str(host_resolv))
    assert Path(paths["/etc/hostname"]).read_text() == "web\n"
    assert "10.1.2.3\tdb" in Path(paths["/etc/hosts"]).read_text()
    assert "127.0.0.53" not in Path(paths["/etc/resolv.conf"]).read_text()
    assert oct(os.stat(paths["/etc/hosts"]).st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(tmp_path / "c")) == ["hostname", "hosts", "resolv.conf"]  # no temp left
    hostnet = etcfiles.write_etc_files(str(tmp_path / "h"), hostname="web", network_mode="host",
                                       host_resolv_conf=str(host_resolv))
    assert Path(hostnet["/etc/resolv.conf"]).read_text() == HOST_RESOLV


# ------------------------------------------------------------------ real runs

def run_spec(bundle, runtime, tmp_path: Path, config: dict, host: dict | None = None,
             image: dict | None = None, hostname: str = "") -> tuple[dict, object]:
    etc = etcfiles.write_etc_files(str(tmp_path / "etc"), hostname=hostname or CID[:12],
                                   extra_hosts=(host or {}).get("ExtraHosts"))
    cid = uuid.uuid4().hex
    s = build_spec(container_id=cid, name="/e2e", config=config, host_config=host or {},
                   image_config=image or {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:"
                                                  "/usr/sbin:/usr/bin:/sbin:/bin"],
                                          "Cmd": ["sh"]},
                   rootfs=str(bundle.rootfs), cgroup_parent="/dockyard-test", etc_files=etc)
    validate(s)
    bundle.config = s
    path = bundle.write()
    res = runtime("run", "--bundle", path, cid[:20], check=False)
    return s, res


def test_run_plain(bundle, runtime, tmp_path: Path) -> None:
    script = "id; hostname; cat /etc/hosts; grep -E 'CapEff|Seccomp:' /proc/self/status; env"
    s, res = run_spec(bundle, runtime, tmp_path,
                      {"Cmd": ["sh", "-c", script], "Hostname": "box1"},
                      {"ExtraHosts": ["db:10.1.2.3"]}, hostname="box1")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.splitlines()[0].startswith("uid=0(root) gid=0(root) groups=0(root),10(wheel)")
    assert out.splitlines()[1] == "box1"
    assert "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" in out
    assert "10.1.2.3\tdb" in out
    assert "CapEff:\t00000000a80425fb" in out
    assert "Seccomp:\t2" in out
    assert "HOSTNAME=box1" in out and "HOME=/root" in out


def test_run_user(bundle, runtime, tmp_path: Path) -> None:
    s, res = run_spec(bundle, runtime, tmp_path, {"Cmd": ["sh", "-c", "id; grep CapEff /proc/self/status"],
                                                  "User": "1000:1000"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "uid=1000 gid=1000 groups=1000"
    assert "CapEff:\t0000000000000000" in res.stdout
    s, res = run_spec(bundle, runtime, tmp_path, {"Cmd": ["id"], "User": "nobody"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("uid=65534(nobody) gid=65534(nobody)")


def test_run_readonly_rootfs_with_tmpfs(bundle, runtime, tmp_path: Path) -> None:
    script = "touch /tmp/ok && echo tmp-ok; touch /nope 2>/dev/null || echo root-ro; " \
             "echo x > /etc/hosts 2>/dev/null || echo hosts-ro"
    s, res = run_spec(bundle, runtime, tmp_path, {"Cmd": ["sh", "-c", script]},
                      {"ReadonlyRootfs": True, "Tmpfs": {"/tmp": "size=1m"}})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["tmp-ok", "root-ro", "hosts-ro"]


def test_run_memory_limit(bundle, runtime, tmp_path: Path) -> None:
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
              "cat /sys/fs/cgroup/memory.max")
    s, res = run_spec(bundle, runtime, tmp_path, {"Cmd": ["sh", "-c", script]},
                      {"Memory": 64 << 20, "CgroupnsMode": "private"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(64 << 20)


def test_run_seccomp_unconfined(bundle, runtime, tmp_path: Path) -> None:
    s, res = run_spec(bundle, runtime, tmp_path,
                      {"Cmd": ["grep", "Seccomp:", "/proc/self/status"]},
                      {"SecurityOpt": ["seccomp=unconfined", "no-new-privileges"]})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "Seccomp:\t0"


def test_run_privileged(bundle, runtime, tmp_path: Path) -> None:
    s, res = run_spec(bundle, runtime, tmp_path,
                      {"Cmd": ["sh", "-c", "grep -E 'CapEff|CapBnd|Seccomp:' /proc/self/status; "
                                           "ls /dev/null /dev/zero"]},
                      {"Privileged": True})
    assert res.returncode == 0, res.stderr
    with open("/proc/self/status") as f:
        ours = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    # All capabilities, as far as the runtime itself holds them (a container host may
    # withhold some, e.g. CAP_SYS_RESOURCE, from us).
    assert f"CapEff:\t{ours['CapBnd']}" in res.stdout
    assert "Seccomp:\t0" in res.stdout
