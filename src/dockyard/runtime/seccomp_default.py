"""Docker's default seccomp profile, and resolving Docker-format profiles.

Docker writes profiles in an extended format: `archMap` instead of a flat
`architectures` list, and syscall groups with `includes`/`excludes`
conditions on the container's capabilities, the host architecture and the
kernel version. dockerd resolves those conditions per container and hands
the runtime a plain OCI `linux.seccomp` section; `resolve_docker_profile` does
the same, and `docker_default_profile` applies it to our transcription of the
profile dockerd uses when the user names none (moby's profiles/seccomp
default.json / default_linux.go).

The profile is rebuilt on every call: callers get dicts they may change, and
importing this module stays free (it is imported on every container start).
"""

from __future__ import annotations

import os
import re
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time

from dockyard.runtime.capabilities import DOCKER_DEFAULT
from dockyard.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Iterable

# CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP: clone() may not
# create namespaces without CAP_SYS_ADMIN (the unshare side is denied outright).
_CLONE_NAMESPACE_FLAGS = 0x7E020000
_ENOSYS = 38
_EPERM = 1

# Allowed for every container, whatever its capabilities. One string keeps the
# module cheap to import; split on whitespace when the profile is built.
_ALWAYS_ALLOWED = """
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod
    chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close
    close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
    epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
    eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64
    fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
    fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat
    fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue
    futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents
    getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
    getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
    getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
    getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
    getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel
    ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get
    ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listmount
    listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
    madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat
    mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify
    mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64
    mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
    name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause
    pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
    ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
    pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv
    recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity
    sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
    sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp
    select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64
    sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
    setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list
    setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr setxattrat
    shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask
    sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount statx
    symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink
    unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4
    waitid waitpid write writev
"""

# Everything a container with CAP_SYS_ADMIN may additionally do: mounting,
# namespaces, and the other "admin" syscalls.
_SYS_ADMIN_ALLOWED = """
    bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
    lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
    open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
    umount umount2 unshare
"""

# Capability -> syscalls it unlocks (besides CAP_SYS_ADMIN above), in the
# profile's order.
_CAP_ALLOWED: tuple[tuple[str, str], ...] = (
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    ("CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ("CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
)

# Architecture-specific helpers, allowed only on the named (Docker-spelled) arches.
_ARCH_ALLOWED: tuple[tuple[str, str], ...] = (
    ("ppc64le", "sync_file_range2 swapcontext"),
    ("arm arm64", "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint "
                  "cacheflush set_tls"),
    ("amd64 x32", "arch_prctl"),
    ("amd64 x32 x86", "modify_ldt"),
    ("s390 s390x", "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
    ("riscv64", "riscv_flush_icache"),
)

# Docker's archMap: a host architecture and the compat ABIs its kernel also runs.
_ARCH_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
    ("SCMP_ARCH_LOONGARCH64", ()),
)

# Host architecture, as uname(2), Go or Docker spell it -> Docker's name for it
# (the one `includes.arches` uses).
_ARCH_ALIASES = {
    "x86_64": "amd64", "amd64": "amd64",
    "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86", "386": "x86", "x86": "x86",
    "aarch64": "arm64", "arm64": "arm64",
    "arm": "arm", "armv6l": "arm", "armv7l": "arm", "armv8l": "arm",
    "ppc": "ppc", "ppc64": "ppc64", "ppc64le": "ppc64le",
    "s390": "s390", "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loong64", "loong64": "loong64",
    "mips": "mips", "mipsel": "mipsel", "mipsle": "mipsel",
    "mips64": "mips64", "mips64el": "mipsel64", "mipsel64": "mipsel64", "mips64le": "mipsel64",
    "mips64n32": "mips64n32", "mipsel64n32": "mipsel64n32",
}
# Docker's name for the host -> the SCMP_ARCH_* that selects its archMap entry.
_NATIVE_TO_SCMP = {
    "x86": "SCMP_ARCH_X86", "amd64": "SCMP_ARCH_X86_64", "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64", "loong64": "SCMP_ARCH_LOONGARCH64",
    "mips": "SCMP_ARCH_MIPS", "mipsel": "SCMP_ARCH_MIPSEL", "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32", "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mipsel64n32": "SCMP_ARCH_MIPSEL64N32", "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64", "ppc64le": "SCMP_ARCH_PPC64LE", "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390", "s390x": "SCMP_ARCH_S390X",
}

# What Docker grants a container unless told otherwise.
DOCKER_DEFAULT_CAPABILITIES = DOCKER_DEFAULT


def _allow(names: str, **extra: object) -> dict:
    entry: dict = {"names": names.split(), "action": "SCMP_ACT_ALLOW"}
    entry.update(extra)
    return entry


def _arg(index: int, value: int, op: str, value_two: int = 0) -> dict:
    arg: dict = {"index": index, "value": value, "op": op}
    if value_two:
        arg["valueTwo"] = value_two
    return arg


def docker_default_source() -> dict:
    """Docker's default profile in Docker's own format, conditions unresolved.

    Kept in that format so that it goes through the same resolver as a
    user's `--security-opt seccomp=profile.json`.
    """
    syscalls: list[dict] = [
        _allow(_ALWAYS_ALLOWED),
        # Since 4.8 ptrace can no longer be used to bypass seccomp.
        _allow("process_vm_readv process_vm_writev ptrace", includes={"minKernel": "4.8"}),
        # Every address family but AF_ALG (38) and AF_VSOCK (40).
        _allow("socket", args=[_arg(0, 38, "SCMP_CMP_LT")]),
        _allow("socket", args=[_arg(0, 39, "SCMP_CMP_EQ")]),
        _allow("socket", args=[_arg(0, 40, "SCMP_CMP_GT")]),
    ]
    # personality(): PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
    # 0xffffffff (query). Other personalities disable ASLR and the like.
    for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF):
        syscalls.append(_allow("personality", args=[_arg(0, persona, "SCMP_CMP_EQ")]))
    for arches, names in _ARCH_ALLOWED:
        syscalls.append(_allow(names, includes={"arches": arches.split()}))
    syscalls.append(_allow("open_by_handle_at", includes={"caps": ["CAP_DAC_READ_SEARCH"]}))
    syscalls.append(_allow(_SYS_ADMIN_ALLOWED, includes={"caps": ["CAP_SYS_ADMIN"]}))
    # Without CAP_SYS_ADMIN, clone() may not ask for new namespaces. The flags
    # are argument 0, except on s390 where the first two arguments are swapped.
    syscalls.append(_allow(
        "clone", args=[_arg(0, _CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
        excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}))
    syscalls.append(_allow(
        "clone", args=[_arg(1, _CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
        includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}))
    # clone3() passes its flags in memory, out of a filter's reach, so it is
    # refused; ENOSYS makes glibc fall back to clone(), which is checked.
    syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS,
                     "excludes": {"caps": ["CAP_SYS_ADMIN"]}})
    for cap, names in _CAP_ALLOWED:
        syscalls.append(_allow(names, includes={"caps": [cap]}))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": _EPERM,
        "archMap": [{"architecture": a, "subArchitectures": list(subs) or None}
                    for a, subs in _ARCH_MAP],
        "syscalls": syscalls,
    }


def docker_default_profile(capabilities: Iterable[str], arch: str = "x86_64", *,
                           kernel_release: str | None = None) -> dict:
    """Docker's default profile as an OCI `linux.seccomp` section.

    `capabilities` is the container's bounding set ("CAP_SYS_ADMIN" or
    "SYS_ADMIN"); `arch` the host architecture as uname or Go spell it;
    `kernel_release` defaults to the running kernel's.
    """
    resolved = resolve_docker_profile(docker_default_source(), capabilities, arch,
                                      kernel_release=kernel_release)
    assert resolved is not None  # the source has a default action
    return resolved


def native_arch(arch: str) -> str:
    """Docker's name for a host architecture ("x86_64" -> "amd64")."""
    name = _ARCH_ALIASES.get(arch.lower())
    if name is None:
        raise InvalidArgument(f"unknown architecture {arch!r}")
    return name


def _kernel_version(release: str, what: str) -> tuple[int, int]:
    # Docker compares "<kernel>.<major>" only: 3.12.25-gentoo equals 3.12.
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        raise InvalidArgument(f'{what}: invalid kernel version "{release}", '
                              f'expected "<kernel>.<major>"')
    return int(m.group(1)), int(m.group(2))


def _normalize_cap(cap: str) -> str:
    cap = cap.strip().upper()
    return cap if cap.startswith("CAP_") else "CAP_" + cap


def _str_list(value: object, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{path}: must be an array of strings")
    return value


class _Host:
    """What a rule's conditions are tested against."""

    __slots__ = ("arch", "caps", "all_caps", "release", "_kernel")

    def __init__(self, caps: Iterable[str], arch: str, release: str | None) -> None:
        self.arch = native_arch(arch)
        self.caps = {_normalize_cap(c) for c in caps}
        # Docker expands "ALL" before resolving; accept it unexpanded too.
        self.all_caps = "CAP_ALL" in self.caps
        self.release = release
        self._kernel: tuple[int, int] | None = None

    def has_cap(self, cap: str) -> bool:
        return self.all_caps or _normalize_cap(cap) in self.caps

    def kernel_at_least(self, wanted: str, path: str) -> bool:
        want = _kernel_version(wanted, path)
        if self._kernel is None:
            self._kernel = _kernel_version(self.release or os.uname().release, "kernel release")
        return self._kernel >= want


def _filter(flt: object, path: str) -> dict:
    if flt is None:
        return {}
    if not isinstance(flt, dict):
        raise InvalidArgument(f"{path}: must be an object")
    for key in flt:
        if key not in ("caps", "arches", "minKernel"):
            raise InvalidArgument(f"{path}.{key}: unknown field")
    min_kernel = flt.get("minKernel")
    if min_kernel is not None and not isinstance(min_kernel, str):
        raise InvalidArgument(f"{path}.minKernel: must be a string")
    return flt


def _applies(call: dict, host: _Host, where: str) -> bool:
    """Docker's test: any excludes condition drops the rule, all includes are needed."""
    excludes = _filter(call.get("excludes"), f"{where}.excludes")
    if host.arch in _str_list(excludes.get("arches"), f"{where}.excludes.arches"):
        return False
    if any(host.has_cap(c) for c in _str_list(excludes.get("caps"), f"{where}.excludes.caps")):
        return False
    if excludes.get("minKernel") and host.kernel_at_least(excludes["minKernel"],
                                                          f"{where}.excludes.minKernel"):
        return False
    includes = _filter(call.get("includes"), f"{where}.includes")
    arches = _str_list(includes.get("arches"), f"{where}.includes.arches")
    if arches and host.arch not in arches:
        return False
    if not all(host.has_cap(c) for c in _str_list(includes.get("caps"),
                                                   f"{where}.includes.caps")):
        return False
    if includes.get("minKernel") and not host.kernel_at_least(includes["minKernel"],
                                                              f"{where}.includes.minKernel"):
        return False
    return True


def _architectures(profile: dict, host: _Host, where: str) -> list[str] | None:
    arch_map = profile.get("archMap")
    if not arch_map:
        flat = profile.get("architectures")
        return list(_str_list(flat, f"{where}.architectures")) if flat else None
    if profile.get("architectures"):
        raise InvalidArgument(f"{where}: both 'architectures' and 'archMap' are set, "
                              "use one of them")
    if not isinstance(arch_map, list):
        raise InvalidArgument(f"{where}.archMap: must be an array")
    native = _NATIVE_TO_SCMP.get(host.arch)
    for i, entry in enumerate(arch_map):
        if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
            raise InvalidArgument(f"{where}.archMap[{i}]: must be an object with "
                                  "an \"architecture\" string")
        if entry["architecture"] == native:
            subs = _str_list(entry.get("subArchitectures"),
                             f"{where}.archMap[{i}].subArchitectures")
            return [native, *subs]
    # Hosts missing from the map get no list: the filter covers the native ABI only.
    return None


def resolve_docker_profile(profile: dict, capabilities: Iterable[str], arch: str = "x86_64",
                           *, kernel_release: str | None = None,
                           where: str = "seccomp profile") -> dict | None:
    """Turn a Docker-format profile into an OCI `linux.seccomp` section.

    Resolves `archMap` for the host architecture and keeps only the syscall
    groups whose `includes`/`excludes` match the capabilities, architecture
    and kernel, as dockerd does. Returns None for a profile with neither a
    default action nor syscalls, which Docker takes as "no seccomp".
    Checks only what resolving needs; `seccomp.validate` checks the result.
    """
    if not isinstance(profile, dict):
        raise InvalidArgument(f"{where}: must be a JSON object")
    calls = profile.get("syscalls") or []
    if not isinstance(calls, list):
        raise InvalidArgument(f"{where}.syscalls: must be an array")
    if not profile.get("defaultAction") and not calls:
        return None
    host = _Host(capabilities, arch, kernel_release)

    out: dict = {}
    for key in ("defaultAction", "defaultErrnoRet", "flags", "listenerPath",
                "listenerMetadata"):
        if profile.get(key) is not None:
            out[key] = profile[key]
    architectures = _architectures(profile, host, where)
    if architectures:
        out["architectures"] = architectures

    syscalls: list[dict] = []
    for i, call in enumerate(calls):
        cwhere = f"{where}.syscalls[{i}]"
        if not isinstance(call, dict):
            raise InvalidArgument(f"{cwhere}: must be an object")
        names = call.get("names")
        if call.get("name"):
            # The old single-name spelling, still accepted by Docker.
            if names:
                raise InvalidArgument(f"{cwhere}: both 'name' and 'names' are set, "
                                      "use one of them")
            names = [call["name"]]
        if names is None:
            raise InvalidArgument(f"{cwhere}.names: missing")
        if not _applies(call, host, cwhere):
            continue
        entry: dict = {"names": list(_str_list(names, f"{cwhere}.names")),
                       "action": call.get("action")}
        if call.get("errnoRet") is not None:
            entry["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            if not isinstance(call["args"], list):
                raise InvalidArgument(f"{cwhere}.args: must be an array")
            entry["args"] = [dict(a) if isinstance(a, dict) else a for a in call["args"]]
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out
