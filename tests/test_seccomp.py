"""Seccomp: compiling OCI sections, Docker's default profile, the on-disk cache.

The kernel checks load each compiled program into a forked child (as the
container init would, right before exec) and probe real syscalls there;
the parent only reads the child's report, so nothing here is filtered.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.errors import InvalidArgument, Unsupported
from dockyard.runtime import linux
from dockyard.runtime import seccomp
from dockyard.runtime.seccomp_default import (
    docker_default_profile,
    docker_default_source,
    resolve_docker_profile,
)

DOCKER_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# x86_64 syscall numbers, for calls Python has no wrapper for or that we call
# with chosen register values (the filter sees registers, not intentions).
NR_SCHED_YIELD, NR_CLONE, NR_GETPPID, NR_GETEGID, NR_GETPGRP = 24, 56, 110, 108, 111
NR_PERSONALITY, NR_KEYCTL, NR_CLONE3, NR_SOCKET = 135, 250, 435, 41
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3
AF_UNIX, AF_VSOCK, SOCK_STREAM = 1, 40, 1
MISSING = "/nonexistent-dockyard-seccomp-test"

on_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                               reason="syscall numbers in the probes are x86_64's")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sys_call(nr: int, *args: int) -> tuple[int, int]:
    """Raw syscall: (return value, errno or 0)."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return ret, (ctypes.get_errno() if ret == -1 else 0)


def err(nr: int, *args: int) -> int:
    return sys_call(nr, *args)[1]


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


def run_filtered(bpf: bytes, flags: int, probe: Callable[[], dict]) -> dict:
    """Run `probe` in a child under the filter; return its JSON report."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            linux.seccomp_set_filter(bpf, flags)
            payload = json.dumps(probe()).encode()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = json.dumps({"child error": repr(e)}).encode()
        try:
            while payload:
                payload = payload[os.write(w, payload):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status:#x}"
    report = json.loads(b"".join(chunks))
    assert "child error" not in report, report["child error"]
    return report


def exit_status_filtered(bpf: bytes, flags: int, probe: Callable[[], object]) -> int:
    """Run `probe` under the filter; return the raw wait status (for kill actions)."""
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            linux.seccomp_set_filter(bpf, flags)
            probe()
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


# --- Docker's default profile, resolved ------------------------------------------------


def _names(profile: dict, action: str = "SCMP_ACT_ALLOW", with_args: bool = False) -> set[str]:
    return {n for s in profile["syscalls"] if s["action"] == action
            and bool(s.get("args")) == with_args for n in s["names"]}


def test_default_profile_shape_for_default_caps() -> None:
    p = docker_default_profile(DOCKER_CAPS, kernel_release="6.1.0-13-amd64")
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _names(p)
    for name in ("read", "write", "getpid", "execve", "chroot", "ptrace", "arch_prctl",
                 "modify_ldt", "statx", "openat2"):
        assert name in allowed
    for name in ("mount", "unshare", "setns", "keyctl", "reboot", "bpf", "io_uring_setup",
                 "clone", "kexec_load", "open_by_handle_at", "s390_runtime_instr"):
        assert name not in allowed
    clone = [s for s in p["syscalls"] if s["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS} \
        in p["syscalls"]
    assert len([s for s in p["syscalls"] if s["names"] == ["personality"]]) == 5
    assert [s["args"][0]["op"] for s in p["syscalls"] if s["names"] == ["socket"]] == \
        ["SCMP_CMP_LT", "SCMP_CMP_EQ", "SCMP_CMP_GT"]


def test_default_profile_conditions() -> None:
    admin = docker_default_profile([*DOCKER_CAPS, "SYS_ADMIN"], kernel_release="6.1")
    assert {"mount", "unshare", "setns", "clone", "clone3", "bpf"} <= _names(admin)
    assert "clone3" not in _names(admin, "SCMP_ACT_ERRNO")
    assert not [s for s in admin["syscalls"] if s.get("args") and s["names"] == ["clone"]]

    old = docker_default_profile(DOCKER_CAPS, kernel_release="4.4.0-generic")
    assert "ptrace" not in _names(old)
    assert "ptrace" in _names(docker_default_profile(["CAP_SYS_PTRACE"], kernel_release="4.4"))
    assert "chroot" not in _names(docker_default_profile([], kernel_release="6.1"))

    s390 = docker_default_profile(DOCKER_CAPS, "s390x", kernel_release="6.1")
    assert s390["architectures"] == ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    assert [s["args"][0]["index"] for s in s390["syscalls"] if s["names"] == ["clone"]] == [1]
    assert "s390_runtime_instr" in _names(s390) and "arch_prctl" not in _names(s390)

    arm = docker_default_profile(DOCKER_CAPS, "aarch64", kernel_release="6.1")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "cacheflush" in _names(arm) and "modify_ldt" not in _names(arm)
    # Hosts missing from Docker's archMap get no list (native ABI only).
    assert "architectures" not in docker_default_profile(DOCKER_CAPS, "ppc64le",
                                                         kernel_release="6.1")
    with pytest.raises(InvalidArgument, match="architecture"):
        docker_default_profile(DOCKER_CAPS, "z80")


def test_default_profile_is_fresh_each_call() -> None:
    a = docker_default_profile(DOCKER_CAPS, kernel_release="6.1")
    a["syscalls"][0]["names"].clear()
    b = docker_default_profile(DOCKER_CAPS, kernel_release="6.1")
    assert "read" in b["syscalls"][0]["names"]
    assert docker_default_source()["archMap"][0]["subArchitectures"] == [
        "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_resolve_docker_profile_formats() -> None:
    assert resolve_docker_profile({}, DOCKER_CAPS) is None
    legacy = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
              "syscalls": [{"name": "mount", "action": "SCMP_ACT_ERRNO",
                            "comment": "old style"}]}
    assert resolve_docker_profile(legacy, DOCKER_CAPS) == {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\].*both 'name' and 'names'"):
        resolve_docker_profile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]}, [])
    with pytest.raises(InvalidArgument, match="both 'architectures' and 'archMap'"):
        resolve_docker_profile({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x"],
                                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, [])
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]\.includes\.minKernel"):
        resolve_docker_profile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}]},
            [])


# --- the default profile in the kernel -------------------------------------------------


@pytest.fixture(scope="module")
def default_filter() -> tuple[bytes, int]:
    return seccomp.compile_filter(docker_default_profile(DOCKER_CAPS))


@on_x86_64
def test_default_profile_blocks_and_allows(default_filter: tuple[bytes, int],
                                           tmp_path: Path) -> None:
    bpf, flags = default_filter
    assert len(bpf) % 8 == 0 and len(bpf) // 8 <= 4096
    scratch = tmp_path / "scratch"

    def probe() -> dict:
        out: dict = {}
        out["unshare_user"] = errno_of(lambda: linux.unshare(linux.CLONE_NEWUSER))
        out["unshare_ns"] = errno_of(lambda: linux.unshare(linux.CLONE_NEWNS))
        out["mount"] = errno_of(lambda: linux.mount("none", MISSING, "tmpfs"))
        out["keyctl"] = err(NR_KEYCTL, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
        ret, e = sys_call(NR_CLONE, linux.CLONE_NEWNS | signal.SIGCHLD, 0, 0, 0, 0)
        if ret == 0:  # filter failed open: we are a stray copy, leave at once
            os._exit(0)
        if ret > 0:
            os.waitpid(ret, 0)
        out["clone_newns"] = e
        out["clone3"] = err(NR_CLONE3, 0, 0)
        out["getpid"] = os.getpid() == sys_call(39)[0]
        fd = os.open(scratch, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"seccomp")
        os.lseek(fd, 0, os.SEEK_SET)
        out["read"] = os.read(fd, 16).decode()
        os.close(fd)
        child = os.fork()
        if child == 0:
            os._exit(7)
        out["fork_status"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        # glibc tries clone3 first and must fall back to clone on ENOSYS.
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(1))
        t.start()
        t.join()
        out["thread"] = seen == [1]
        out["personality_query"] = err(NR_PERSONALITY, 0xFFFFFFFF)
        out["personality_no_aslr"] = err(NR_PERSONALITY, 0x0040000)
        out["socket_vsock"] = err(NR_SOCKET, AF_VSOCK, SOCK_STREAM, 0)
        ret, out["socket_unix"] = sys_call(NR_SOCKET, AF_UNIX, SOCK_STREAM, 0)
        if ret >= 0:
            os.close(ret)
        # CAP_SYS_CHROOT is in the set, so the kernel, not the filter, answers.
        out["chroot"] = errno_of(lambda: os.chroot(MISSING))
        return out

    got = run_filtered(bpf, flags, probe)
    assert got == {
        "unshare_user": errno.EPERM, "unshare_ns": errno.EPERM, "mount": errno.EPERM,
        "keyctl": errno.EPERM, "clone_newns": errno.EPERM, "clone3": errno.ENOSYS,
        "getpid": True, "read": "seccomp", "fork_status": 7, "thread": True,
        "personality_query": 0, "personality_no_aslr": errno.EPERM,
        "socket_vsock": errno.EPERM, "socket_unix": 0, "chroot": errno.ENOENT,
    }


@on_x86_64
@as_root
def test_default_profile_with_sys_admin_allows_mount() -> None:
    bpf, flags = seccomp.compile_filter(docker_default_profile([*DOCKER_CAPS, "CAP_SYS_ADMIN"]))

    def probe() -> dict:
        return {
            # Reaching the path lookup proves the filter let mount() through.
            "mount": errno_of(lambda: linux.mount("none", MISSING, "tmpfs")),
            "unshare_ns": errno_of(lambda: linux.unshare(linux.CLONE_NEWNS)),
            "clone3_filtered": err(NR_CLONE3, 0, 0) in (errno.ENOSYS, errno.EPERM),
        }

    assert run_filtered(bpf, flags, probe) == {
        "mount": errno.ENOENT, "unshare_ns": 0, "clone3_filtered": False}


# --- the compiler on hand-written sections ---------------------------------------------


def _allow_all(*syscalls: dict, **extra: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(syscalls), **extra}


@on_x86_64
def test_errno_and_argument_conditions() -> None:
    section = _allow_all(
        # Two conditions on one argument: alternatives, as runc reads them.
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
         "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 6, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO", "errnoRet": 43,
         "args": [{"index": 1, "value": 0xF0, "valueTwo": 0x30, "op": "SCMP_CMP_MASKED_EQ"}]},
        # Conditions on different arguments: all must hold.
        {"names": ["sched_yield"], "action": "SCMP_ACT_ERRNO", "errnoRet": 44,
         "args": [{"index": 0, "value": 100, "op": "SCMP_CMP_GT"},
                  {"index": 1, "value": 5, "op": "SCMP_CMP_LE"},
                  {"index": 2, "value": 3, "op": "SCMP_CMP_NE"},
                  {"index": 3, "value": 10, "op": "SCMP_CMP_LT"},
                  {"index": 4, "value": 2, "op": "SCMP_CMP_GE"}]},
        {"names": ["getegid"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},  # same as default: skipped
    )
    bpf, flags = seccomp.compile_filter(section)

    def probe() -> dict:
        return {
            "ppid5": err(NR_GETPPID, 5), "ppid6": err(NR_GETPPID, 6), "ppid7": err(NR_GETPPID, 7),
            "pgrp_hit": err(NR_GETPGRP, 0, 0x35), "pgrp_miss": err(NR_GETPGRP, 0, 0x45),
            "yield_hit": err(NR_SCHED_YIELD, 101, 5, 0, 9, 2),
            "yield_arg1": err(NR_SCHED_YIELD, 101, 6, 0, 9, 2),
            "yield_arg2": err(NR_SCHED_YIELD, 101, 5, 3, 9, 2),
            "yield_arg4": err(NR_SCHED_YIELD, 101, 5, 0, 9, 1),
            "egid": err(NR_GETEGID),
        }

    assert run_filtered(bpf, flags, probe) == {
        "ppid5": 42, "ppid6": 42, "ppid7": 0, "pgrp_hit": 43, "pgrp_miss": 0,
        "yield_hit": 44, "yield_arg1": 0, "yield_arg2": 0, "yield_arg4": 0,
        "egid": errno.EPERM,
    }


@on_x86_64
def test_other_actions() -> None:
    bpf, flags = seccomp.compile_filter(_allow_all(
        {"names": ["getppid"], "action": "SCMP_ACT_TRACE"},
        {"names": ["getpgrp"], "action": "SCMP_ACT_LOG"},
        {"names": ["getegid"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["sched_yield"], "action": "SCMP_ACT_TRAP"},
    ))
    # With no tracer attached the kernel fails a TRACE'd call with ENOSYS.
    assert run_filtered(bpf, flags, lambda: {"trace": err(NR_GETPPID),
                                             "log": err(NR_GETPGRP)}) == {"trace": errno.ENOSYS,
                                                                          "log": 0}
    for nr in (NR_GETEGID, NR_SCHED_YIELD):
        status = exit_status_filtered(bpf, flags, lambda nr=nr: sys_call(nr))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS

    for action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_ERRNO"):
        assert seccomp.compile_filter(_allow_all({"names": ["getppid"], "action": action}))[0]


def test_architectures_and_flags() -> None:
    arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"]
    rule = {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}
    native, _ = seccomp.compile_filter(_allow_all(rule))
    multi, _ = seccomp.compile_filter(_allow_all(rule, architectures=arches))
    assert len(multi) > len(native)

    assert seccomp.compile_filter(_allow_all(rule, flags=[]))[1] == 0
    both = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]
    assert seccomp.compile_filter(_allow_all(rule, flags=both))[1] == (
        seccomp.SECCOMP_FILTER_FLAG_LOG | seccomp.SECCOMP_FILTER_FLAG_TSYNC)
    # runc's default when the spec says nothing: SPEC_ALLOW, where supported.
    assert seccomp.compile_filter(_allow_all(rule))[1] in (
        0, seccomp.SECCOMP_FILTER_FLAG_SPEC_ALLOW)


def _base() -> dict:
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def apply(section: dict) -> None:
        target = section
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


_DELETE = object()

ERROR_CASES = [
    (_set(("syscalls", 1, "action"), "SCMP_ACT_FOO"), InvalidArgument,
     'linux.seccomp.syscalls[1].action: unknown action "SCMP_ACT_FOO"'),
    (_set(("defaultAction",), "SCMP_ACT_BAR"), InvalidArgument,
     'linux.seccomp.defaultAction: unknown action "SCMP_ACT_BAR"'),
    (_set(("defaultAction",), _DELETE), InvalidArgument, "linux.seccomp.defaultAction: missing"),
    (_set(("syscalls", 0, "args", 0, "op"), "SCMP_CMP_FOO"), InvalidArgument,
     'linux.seccomp.syscalls[0].args[0].op: unknown operator "SCMP_CMP_FOO"'),
    (_set(("architectures", 1), "SCMP_ARCH_Z80"), InvalidArgument,
     'linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_Z80"'),
    (_set(("syscalls", 1, "action"), "SCMP_ACT_NOTIFY"), Unsupported,
     "linux.seccomp.syscalls[1].action"),
    (_set(("defaultAction",), "SCMP_ACT_NOTIFY"), Unsupported, "linux.seccomp.defaultAction"),
    (_set(("listenerPath",), "/run/agent.sock"), Unsupported, "linux.seccomp.listenerPath"),
    (_set(("syscalls", 0, "args", 0, "index"), 6), InvalidArgument,
     "linux.seccomp.syscalls[0].args[0].index"),
    (_set(("syscalls", 0, "args", 0, "index"), "0"), InvalidArgument,
     "linux.seccomp.syscalls[0].args[0].index"),
    (_set(("syscalls", 0, "args", 0, "value"), -1), InvalidArgument,
     "linux.seccomp.syscalls[0].args[0].value"),
    (_set(("syscalls", 0, "args", 0, "value"), True), InvalidArgument,
     "linux.seccomp.syscalls[0].args[0].value"),
    (_set(("syscalls", 1, "names"), _DELETE), InvalidArgument,
     "linux.seccomp.syscalls[1].names: missing"),
    (_set(("syscalls", 1, "names"), "read"), InvalidArgument, "linux.seccomp.syscalls[1].names"),
    (_set(("syscalls", 1, "names"), ["read", ""]), InvalidArgument,
     "linux.seccomp.syscalls[1].names[1]"),
    (_set(("syscalls", 1, "errnoRet"), "EPERM"), InvalidArgument,
     "linux.seccomp.syscalls[1].errnoRet"),
    (_set(("syscalls", 1, "comment"), "x"), Unsupported, "linux.seccomp.syscalls[1].comment"),
    (_set(("syscalls",), {"names": []}), InvalidArgument, "linux.seccomp.syscalls: must be"),
    (_set(("flags",), ["SECCOMP_FILTER_FLAG_BOGUS"]), InvalidArgument,
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_BOGUS"'),
    (_set(("flags",), ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]), Unsupported,
     "linux.seccomp.flags[0]"),
]


@pytest.mark.parametrize(("mutate", "kind", "message"), ERROR_CASES,
                         ids=[c[2].split(":")[0] + ":" + str(i) for i, c in enumerate(ERROR_CASES)])
def test_errors_name_the_field(mutate: Callable[[dict], None], kind: type[Exception],
                               message: str) -> None:
    section = _base()
    mutate(section)
    with pytest.raises(kind, match=re.escape(message)):
        seccomp.validate(section)
    with pytest.raises(kind, match=re.escape(message)):
        seccomp.compile_filter(section)


def test_not_an_object_and_is_enabled() -> None:
    with pytest.raises(InvalidArgument, match="linux.seccomp: must be an object"):
        seccomp.compile_filter(["SCMP_ACT_ALLOW"])  # type: ignore[arg-type]
    assert not seccomp.is_enabled(None) and not seccomp.is_enabled({})
    assert seccomp.is_enabled(_base())


# --- the cache -------------------------------------------------------------------------


def test_cache_round_trip(tmp_path: Path, default_filter: tuple[bytes, int]) -> None:
    section = docker_default_profile(DOCKER_CAPS)
    cache = tmp_path / "made" / "on-demand"  # created when first needed
    first = seccomp.compile_filter(section, str(cache))
    assert first == default_filter
    files = list(cache.iterdir())
    assert len(files) == 1 and re.fullmatch(r"[0-9a-f]{64}\.bpf", files[0].name)
    # Key order is not part of the key; content is.
    reordered = json.loads(json.dumps(section, sort_keys=True))
    assert seccomp.compile_filter(reordered, str(cache)) == first
    assert len(list(cache.iterdir())) == 1
    seccomp.compile_filter(_base(), str(cache))
    assert len(list(cache.iterdir())) == 2

    files[0].write_bytes(b"garbage")
    assert seccomp.compile_filter(section, str(cache)) == first
    assert files[0].read_bytes().endswith(first[0])


def test_cached_compile_does_not_import_pyseccomp(tmp_path: Path,
                                                  default_filter: tuple[bytes, int]) -> None:
    section = docker_default_profile(DOCKER_CAPS)
    seccomp.compile_filter(section, str(tmp_path))
    script = (
        "import json, sys\n"
        "from dockyard.runtime import seccomp\n"
        "section = json.load(sys.stdin)\n"
        "cache = sys.argv[1] if len(sys.argv) > 1 else None\n"
        "bpf, flags = seccomp.compile_filter(section, cache)\n"
        "print(json.dumps({'pyseccomp': 'pyseccomp' in sys.modules,"
        " 'bpf': bpf.hex(), 'flags': flags}))\n"
    )

    def run(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", script, *args], input=json.dumps(section),
                              capture_output=True, text=True, check=True, timeout=60)
        return json.loads(proc.stdout)

    cached = run(str(tmp_path))
    assert cached == {"pyseccomp": False, "bpf": default_filter[0].hex(),
                      "flags": default_filter[1]}
    # The control: without the cache, compiling does load it.
    assert run()["pyseccomp"] is True
