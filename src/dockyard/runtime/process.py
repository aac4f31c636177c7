"""Turning the current (forked) process into the configuration's process.

Shared by a container's init and by exec: rlimits, the terminal, the user and
the five capability sets, no_new_privs and seccomp, then execve. The checks
that can be made before forking are in `check`, so that a bad process
description fails in the caller with a clear error, not in a half-built child.
"""

from __future__ import annotations

import os
import resource

from dockyard.errors import InvalidArgument, Unsupported
from dockyard.runtime import capabilities
from dockyard.runtime import linux as L

RLIMITS = {
    "RLIMIT_CPU": resource.RLIMIT_CPU, "RLIMIT_FSIZE": resource.RLIMIT_FSIZE,
    "RLIMIT_DATA": resource.RLIMIT_DATA, "RLIMIT_STACK": resource.RLIMIT_STACK,
    "RLIMIT_CORE": resource.RLIMIT_CORE, "RLIMIT_RSS": resource.RLIMIT_RSS,
    "RLIMIT_NPROC": resource.RLIMIT_NPROC, "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK, "RLIMIT_AS": resource.RLIMIT_AS,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE, "RLIMIT_NICE": resource.RLIMIT_NICE,
    "RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO, "RLIMIT_RTTIME": resource.RLIMIT_RTTIME,
}
_UNLIMITED = 0xFFFFFFFFFFFFFFFF
_CAP_SYS_RESOURCE = 24


def _has_cap(num: int) -> bool:
    return bool(L.capget()[0] >> num & 1)


class Prepared:
    """A process description checked and reduced to what the child applies."""

    __slots__ = ("args", "env", "cwd", "uid", "gid", "groups", "umask", "rlimits", "caps",
                 "no_new_privs", "oom_score_adj", "terminal", "console_size")

    def __init__(self, process: dict) -> None:
        self.args: list[str] = process["args"]
        self.env: list[str] = process.get("env", [])
        self.cwd: str = process.get("cwd", "/")
        user = process.get("user", {})
        self.uid: int = user.get("uid", 0)
        self.gid: int = user.get("gid", 0)
        self.groups: list[int] = user.get("additionalGids", [])
        self.umask: int | None = user.get("umask")
        self.caps = capabilities.masks(process.get("capabilities"))
        self.no_new_privs: bool = process.get("noNewPrivileges", False)
        self.oom_score_adj: int | None = process.get("oomScoreAdj")
        self.terminal: bool = process.get("terminal", False)
        size = process.get("consoleSize") or {}
        self.console_size = (size.get("height", 0), size.get("width", 0))
        self.rlimits: list[tuple[int, int, int]] = []
        for i, rl in enumerate(process.get("rlimits", [])):
            where = f"process.rlimits[{i}]"
            num = RLIMITS.get(rl.get("type", ""))
            if num is None:
                raise InvalidArgument(f"{where}.type: unknown rlimit {rl.get('type')!r}")
            soft, hard = rl.get("soft", 0), rl.get("hard", 0)
            if soft > hard:
                raise InvalidArgument(f"{where}: soft limit {soft} is above hard limit {hard}")
            soft = -1 if soft >= _UNLIMITED else soft
            hard = -1 if hard >= _UNLIMITED else hard
            self.rlimits.append((num, soft, hard))

    def check_privileges(self) -> None:
        """Refuse early what this host's root cannot grant (it may lack CAP_SYS_RESOURCE)."""
        if _has_cap(_CAP_SYS_RESOURCE):
            return
        for i, (num, _soft, hard) in enumerate(self.rlimits):
            cur_hard = resource.getrlimit(num)[1]
            if cur_hard != -1 and (hard == -1 or hard > cur_hard):
                raise Unsupported(
                    f"process.rlimits[{i}]: hard limit {'unlimited' if hard == -1 else hard} is "
                    f"above this host's {cur_hard}, and raising it needs CAP_SYS_RESOURCE, "
                    "which the runtime lacks here")
        if self.oom_score_adj is not None:
            with open("/proc/self/oom_score_adj") as f:
                current = int(f.read())
            if self.oom_score_adj < current:
                raise Unsupported(
                    f"process.oomScoreAdj: {self.oom_score_adj} is below the runtime's own "
                    f"{current}, and lowering it needs CAP_SYS_RESOURCE, which the runtime "
                    "lacks here")


def lookup(args0: str, env: list[str]) -> str:
    """The executable for args[0], searched in the process's PATH as execvp would."""
    if "/" in args0:
        candidates = [args0]
    else:
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for var in env:
            if var.startswith("PATH="):
                path = var[5:]
        candidates = [os.path.join(d or ".", args0) for d in path.split(":")]
    for cand in candidates:
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if st.st_mode & 0o170000 == 0o100000:
            return cand
    if "/" in args0:
        raise InvalidArgument(f'exec: "{args0}": stat {args0}: no such file or directory')
    raise InvalidArgument(f'exec: "{args0}": executable file not found in $PATH')


def apply_limits(p: Prepared) -> None:
    for num, soft, hard in p.rlimits:
        resource.setrlimit(num, (soft, hard))
    if p.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(p.oom_score_adj))


def preload_terminal() -> None:
    """Import what setup_terminal needs while the host's Python library is still
    reachable: after pivot_root only the container's files are."""
    import fcntl  # noqa: F401
    import socket  # noqa: F401
    import struct  # noqa: F401
    import termios  # noqa: F401


def setup_terminal(console_fd: int, size: tuple[int, int]) -> None:
    """Open a pty in the container's devpts (we are past pivot_root, so /dev/ptmx is the
    container's), hand its master to the console socket, and make the slave our
    controlling terminal and stdio."""
    import fcntl
    import socket
    import struct
    import termios

    master, slave = os.openpty()
    os.set_inheritable(master, False)
    if size[0] and size[1]:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    sock = socket.socket(fileno=console_fd)
    # Same message as runc: the master's name with its fd as SCM_RIGHTS.
    socket.send_fds(sock, [b"/dev/ptmx"], [master])
    sock.close()
    os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_identity(p: Prepared) -> None:
    """Drop to the process's bounding set, user, groups and capabilities, in the order the
    kernel needs: the bounding set while CAP_SETPCAP is held, then keep the permitted set
    across setuid, then the final sets."""
    bounding = p.caps["bounding"]
    for cap in range(capabilities.last_cap() + 1):
        if not bounding >> cap & 1:
            L.prctl(L.PR_CAPBSET_DROP, cap)
    L.prctl(L.PR_SET_KEEPCAPS, 1)
    os.setgroups(p.groups)
    os.setresgid(p.gid, p.gid, p.gid)
    os.setresuid(p.uid, p.uid, p.uid)
    L.prctl(L.PR_SET_KEEPCAPS, 0)
    L.capset(p.caps["effective"], p.caps["permitted"], p.caps["inheritable"])
    L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
    # The kernel raises an ambient capability only if it is both permitted and
    # inheritable; like runc, skip the others rather than fail the container.
    ambient = p.caps["ambient"] & p.caps["permitted"] & p.caps["inheritable"]
    for cap in range(capabilities.last_cap() + 1):
        if ambient >> cap & 1:
            L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, cap)
    if p.umask is not None:
        os.umask(p.umask)
    os.chdir(p.cwd)
    try:
        os.getcwd()
    except FileNotFoundError:
        # The kernel says the directory is not under our root: a path such as
        # /proc/self/fd/N led outside the container.
        raise InvalidArgument(f"process.cwd: {p.cwd!r} is outside the container's root") from None


def become(p: Prepared, console, seccomp: tuple[bytes, int] | None) -> str:
    """Turn this process into P: terminal, limits, identity. Returns the executable to run.
    The caller execs it after `seal`."""
    if console is not None:
        setup_terminal(console.detach(), p.console_size)
    apply_limits(p)
    if seccomp and not p.no_new_privs:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we have it.
        L.seccomp_set_filter(*seccomp)
    set_identity(p)
    return lookup(p.args[0], p.env)


def seal(p: Prepared, seccomp: tuple[bytes, int] | None) -> None:
    """The last step before execve: no_new_privs, then the seccomp filter, so that nothing
    the runtime itself still does is filtered."""
    if p.no_new_privs:
        L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
        if seccomp:
            L.seccomp_set_filter(*seccomp)
