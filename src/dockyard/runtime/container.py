"""The runtime's operations on containers: create, start, state, kill, delete, exec, ...

`Runtime` is the library the daemon calls in-process and the CLI wraps. A
container's record lives in ROOT/ID/ (state.json, the exec fifo, the compiled
seccomp program); its status is derived from the kernel each time it is asked
for, so a crash of whoever created it cannot leave a stale answer.

Creating a container forks twice: the first child joins the cgroup and the
namespaces and unshares new ones; its child, the container's init, is the
first process inside a new pid namespace. The init builds the root filesystem,
reports "ready", and blocks opening the exec fifo for writing until `start`
opens it for reading; then it execs the configured program.
"""

from __future__ import annotations

import _signal as signal
import _socket as socket
import os
import time

from dockyard.atomicfile import write_atomic
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure, Unsupported
from dockyard.runtime import hooks as hooks_mod
from dockyard.runtime import fastjson
from dockyard.runtime import linux as L
from dockyard.runtime import spec
from dockyard.runtime.process import Prepared

DEFAULT_ROOT = "/run/dockyard-runtime"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
_ERRORS = {c.__name__: c for c in (InvalidArgument, Unsupported, NotFound, Conflict, SystemFailure)}
# The order namespaces are joined in: the user namespace first, so that joining the
# others is allowed; the mount namespace last, since it changes how paths resolve.
_JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def _check_id(cid: str) -> None:
    if not cid or not set(cid) <= _ID_CHARS or cid in (".", ".."):
        raise InvalidArgument(f"invalid container id {cid!r}: use letters, digits, _ + - .")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks, or None when it is gone or a zombie.
    Together with the pid it names one process, whatever pids are reused later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_exit(pid: int) -> int:
    """Reap PID (our child) and return its exit code as a shell shows it: 128+N for signal N."""
    while True:
        try:
            return _exit_code(os.waitpid(pid, 0)[1])
        except InterruptedError:
            continue


def _send(sock: socket.socket, msg: dict) -> None:
    sock.send(fastjson.dumps(msg).encode())


def _recv(sock: socket.socket) -> dict | None:
    data = sock.recv(65536)
    return fastjson.loads(data) if data else None


def _child_failed(sock: socket.socket, exc: BaseException) -> None:
    """Report an exception from a forked child to the parent (or, once the parent has
    stopped listening, to the container's stderr), then die."""
    if isinstance(exc, DockyardError):
        kind, msg = type(exc).__name__, str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        kind = "SystemFailure"
        msg = exc.strerror if exc.strerror.endswith(str(exc.filename)) or not exc.filename \
            else f"{exc.strerror}: {exc.filename}"
    else:
        kind, msg = "SystemFailure", f"{type(exc).__name__}: {exc}"
    try:
        if sock.fileno() >= 0:
            _send(sock, {"t": "error", "kind": kind, "msg": msg})
        else:
            os.write(2, f"container init: {msg}\n".encode())
    except BaseException:
        pass
    os._exit(1)


def _close_fds_except(keep: set[int], first: int = 3) -> None:
    """Close every fd from FIRST up but KEEP: nothing the caller holds (a daemon's sockets,
    a directory) may reach the container, where a directory fd could lead out of its root."""
    low = first
    for fd in sorted(k for k in keep if k >= first):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _reset_signals() -> None:
    """Default dispositions and an empty mask, as a container's program expects: Python
    ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across execve."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass  # numbers the kernel reserves (glibc's real-time signals)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _fork_child(body, stdio: tuple[int, int, int] | None) -> tuple[int, socket.socket]:
    """Fork a child that runs BODY(report_socket) with STDIO as its 0, 1, 2; return its pid
    and our end of the report socket. The child never returns into the caller's code."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            if stdio:
                for i, fd in enumerate(stdio):
                    os.dup2(fd, i)
            body(child)
        except BaseException as e:
            _child_failed(child, e)
        os._exit(0)
    child.close()
    return pid, parent


def _join(cgroup, joins: list[tuple[str, int, str]]) -> None:
    """Enter the cgroup (before any new cgroup namespace is made), then the namespaces
    given by path, all opened first since joining the mount namespace changes paths."""
    for path in cgroup.procs_files():
        with open(path, "w") as f:
            f.write("0")
    fds = [(os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag, kind) for kind, flag, path in joins]
    for fd, flag, kind in fds:
        try:
            L.setns(fd, flag)
        except OSError as e:
            raise SystemFailure(f"joining the {kind} namespace: {e.strerror}") from None
        os.close(fd)


def _fork_reporting_pid(sock: socket.socket, body) -> None:
    """Fork (so that a new or joined pid namespace applies), report the child's pid, exit.
    The child waits for our exit before running BODY, so the pid report comes first."""
    gate_r, gate_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(gate_w)
            os.read(gate_r, 1)  # returns at end-of-file: when our parent has exited
            os.close(gate_r)
            body()
        except BaseException as e:
            _child_failed(sock, e)
        os._exit(1)
    _send(sock, {"t": "pid", "pid": pid})
    os._exit(0)


def _raise_from(msg: dict) -> None:
    raise _ERRORS.get(msg.get("kind", ""), SystemFailure)(msg.get("msg", "container init failed"))


def _connect_console(console_socket: str | socket.socket | None) -> socket.socket | None:
    """The socket the init sends its pty master through: a path to connect to (as runc's
    --console-socket), or an already connected socket of the caller's."""
    if console_socket is None:
        return None
    if isinstance(console_socket, socket.socket):
        return socket.socket(fileno=os.dup(console_socket.fileno()))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(console_socket)
    except OSError as e:
        sock.close()
        raise InvalidArgument(f"--console-socket {console_socket}: {e.strerror}") from None
    return sock


def _env_dict(env: list[str]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in env)


def _exec_or_die(exe: str, p: Prepared, keep_fds: int) -> None:
    os.closerange(3 + keep_fds, 1 << 20)
    try:
        os.execve(exe, p.args, _env_dict(p.env))
    except OSError as e:
        os.write(2, f"exec {p.args[0]}: {e.strerror}\n".encode())
        os._exit(126 if e.errno == 13 else 127)


class Runtime:
    """Containers kept under ROOT. Thread-unsafe; one call at a time per container."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    # -- records ---------------------------------------------------------------

    def _dir(self, cid: str) -> str:
        _check_id(cid)
        return os.path.join(self.root, cid)

    def _load(self, cid: str) -> dict:
        try:
            with open(os.path.join(self._dir(cid), "state.json"), "rb") as f:
                return fastjson.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"container {cid} does not exist") from None

    def _save(self, rec: dict) -> None:
        write_atomic(os.path.join(self.root, rec["id"], "state.json"),
                     fastjson.dumps(rec).encode(), durable=False)

    def _cgroup(self, rec: dict):  # -> Cgroup
        from dockyard.runtime.cgroups import open_cgroup

        return open_cgroup(rec["cgroupsPath"])

    def _status(self, rec: dict) -> str:
        pid = rec.get("pid", 0)
        if not pid:
            return "creating"
        if _start_time(pid) != rec.get("starttime"):
            return "stopped"
        if os.path.exists(os.path.join(self.root, rec["id"], "exec.fifo")):
            return "created"
        try:
            if self._cgroup(rec).frozen():
                return "paused"
        except OSError:
            pass
        return "running"

    def state(self, cid: str) -> dict:
        """The OCI state of the container, with the extra fields runc reports."""
        rec = self._load(cid)
        status = self._status(rec)
        out = {"ociVersion": spec.OCI_VERSION, "id": cid, "status": status,
               "pid": rec["pid"] if status in ("created", "running", "paused") else 0,
               "bundle": rec["bundle"], "rootfs": rec["rootfs"], "created": rec["created"],
               "owner": ""}
        if rec.get("annotations"):
            out["annotations"] = rec["annotations"]
        if status == "stopped":
            try:
                if self._cgroup(rec).oom_killed():
                    out["oomKilled"] = True
            except OSError:
                pass
        return out

    def state_config(self, cid: str) -> dict:
        """The configuration the container was created with."""
        return self._load(cid)["config"]

    def list(self) -> list[dict]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                out.append(self.state(name))
            except (NotFound, InvalidArgument):
                continue
        return out

    def _hook_state(self, rec: dict, status: str) -> dict:
        return {"ociVersion": spec.OCI_VERSION, "id": rec["id"], "status": status,
                "pid": rec.get("pid", 0), "bundle": rec["bundle"],
                "annotations": rec.get("annotations", {})}

    # -- create ----------------------------------------------------------------

    def create(self, cid: str, bundle: str, *, console_socket: str | socket.socket | None = None,
               pid_file: str | None = None, stdio: tuple[int, int, int] | None = None,
               preserve_fds: int = 0) -> int:
        """Build the container and leave its init waiting for `start`; return its pid."""
        from dockyard.runtime.cgroups import open_cgroup
        from dockyard.runtime.rootfs import DEFAULT_DEVICE_RULES

        cdir = self._dir(cid)
        bundle = os.path.abspath(bundle)
        config = spec.load(bundle)
        rootfs = spec.rootfs_path(bundle, config)
        if not os.path.isdir(rootfs):
            raise NotFound(f"root.path: rootfs {rootfs} does not exist or is not a directory")
        proc = Prepared(config["process"])
        proc.check_privileges()
        linux = config.get("linux", {})
        new_flags, joins = self._namespaces(linux.get("namespaces", []))
        if not new_flags & L.CLONE_NEWNS:
            raise Unsupported("linux.namespaces: a new mount namespace is required")
        if proc.terminal and not console_socket:
            raise InvalidArgument("process.terminal: a terminal needs a console socket "
                                  "(--console-socket)")
        if console_socket and not proc.terminal:
            raise InvalidArgument("--console-socket given but process.terminal is false")
        resources = dict(linux.get("resources") or {})
        resources["devices"] = list(resources.get("devices", [])) + DEFAULT_DEVICE_RULES + [
            {"allow": True, "type": "c" if d["type"] == "u" else d["type"],
             "major": d.get("major"), "minor": d.get("minor"), "access": "rwm"}
            for d in linux.get("devices", []) if d["type"] != "p"]
        cgroups_path = linux.get("cgroupsPath") or f"/dockyard/{cid}"
        cgroup = open_cgroup(cgroups_path)
        cgroup.validate(resources)
        seccomp = None
        if linux.get("seccomp"):
            from dockyard.runtime.seccomp import compile_filter

            seccomp = compile_filter(linux["seccomp"], cache_dir=os.path.join(self.root, ".seccomp"))

        os.makedirs(self.root, 0o700, exist_ok=True)
        try:
            os.mkdir(cdir, 0o711)
        except FileExistsError:
            raise Conflict(f"container with id exists: {cid}") from None
        rec = {"id": cid, "pid": 0, "starttime": None, "bundle": bundle, "rootfs": rootfs,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
               "annotations": config.get("annotations", {}), "cgroupsPath": cgroups_path,
               "config": config}
        pid = 0
        ours = None
        try:
            self._save(rec)
            if seccomp:
                write_atomic(os.path.join(cdir, "seccomp.bpf"), seccomp[0], durable=False)
                rec["seccompFlags"] = seccomp[1]
            fifo = os.path.join(cdir, "exec.fifo")
            os.mkfifo(fifo, 0o622)
            # Writable by the init whatever user it became (the umask took w from others).
            os.chmod(fifo, 0o622)
            cgroup.create(resources)
            ours = cgroup
            pid = self._spawn_init(rec, config, proc, cgroup, new_flags, joins, seccomp,
                                   console_socket, stdio, preserve_fds)
            rec["pid"], rec["starttime"] = pid, _start_time(pid)
            self._save(rec)
            if pid_file:
                write_atomic(os.path.abspath(pid_file), str(pid).encode(), durable=False)
        except BaseException:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                # A cgroup that create() refused (another container's) is not ours to remove.
                if ours is not None:
                    ours.destroy()
            except DockyardError as cleanup:
                import logging

                logging.getLogger(__name__).error("cleaning up container %s: %s", cid, cleanup)
            self._remove_record(cid)
            raise
        return pid

    def _namespaces(self, namespaces: list[dict]) -> tuple[int, list[tuple[str, int, str]]]:
        new = 0
        joins = []
        for ns in namespaces:
            flag = L.NAMESPACES[ns["type"]][0]
            if ns.get("path"):
                joins.append((ns["type"], flag, ns["path"]))
            else:
                new |= flag
        joins.sort(key=lambda j: _JOIN_ORDER.index(j[0]))
        return new, joins

    def _spawn_init(self, rec: dict, config: dict, proc: Prepared, cgroup, new_flags: int,
                    joins: list, seccomp: tuple[bytes, int] | None, console_socket: str | socket.socket | None,
                    stdio: tuple[int, int, int] | None, preserve_fds: int) -> int:
        console = _connect_console(console_socket)
        # A handle on the fifo itself, not its directory: a directory fd reaching the init
        # could become its working directory on the host (runc's CVE-2024-21626).
        fifo_fd = os.open(os.path.join(self.root, rec["id"], "exec.fifo"),
                            os.O_PATH | os.O_CLOEXEC)
        linux = config.get("linux", {})
        hooks = config.get("hooks", {})
        first, parent = _fork_child(
            lambda sock: self._stage1(sock, rec, config, proc, cgroup, new_flags, joins, seccomp,
                                      console, fifo_fd, preserve_fds), stdio)
        os.close(fifo_fd)
        if console:
            console.close()
        init_pid = 0
        try:
            while True:
                msg = _recv(parent)
                if msg is None:
                    raise SystemFailure("container init exited before it was ready")
                t = msg["t"]
                if t == "userns":
                    self._write_id_maps(first, linux)
                    _send(parent, {"t": "ok"})
                elif t == "pid":
                    init_pid = msg["pid"]
                    rec["pid"] = init_pid
                elif t == "hooks":
                    state = self._hook_state(rec, "creating")
                    hooks_mod.run("prestart", hooks.get("prestart", []), state)
                    hooks_mod.run("createRuntime", hooks.get("createRuntime", []), state)
                    _send(parent, {"t": "ok"})
                elif t == "ready":
                    return init_pid
                elif t == "error":
                    _raise_from(msg)
        except BaseException:
            if init_pid:
                try:
                    os.kill(init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
        finally:
            parent.close()
            os.waitpid(first, 0)

    @staticmethod
    def _write_id_maps(pid: int, linux: dict) -> None:
        for key, name in (("gidMappings", "gid_map"), ("uidMappings", "uid_map")):
            lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n"
                            for m in linux.get(key, []))
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(lines)
            except OSError as e:
                raise InvalidArgument(f"linux.{key}: the kernel refused them: {e.strerror}") from None

    def _stage1(self, sock: socket.socket, rec: dict, config: dict, proc: Prepared, cgroup,
                new_flags: int, joins: list, seccomp, console, fifo_fd: int,
                preserve_fds: int) -> None:
        """First child: cgroup, namespaces; forks the init and reports its pid."""
        # Not dumpable while the host's interpreter runs inside the container's namespaces:
        # its /proc/PID/exe must not be reachable from there (runc's CVE-2019-5736).
        # execve makes the container's program dumpable again.
        L.prctl(L.PR_SET_DUMPABLE, 0)
        _join(cgroup, joins)
        in_userns = bool(new_flags & L.CLONE_NEWUSER) or any(j[0] == "user" for j in joins)
        if new_flags & L.CLONE_NEWUSER:
            L.unshare(L.CLONE_NEWUSER)
            _send(sock, {"t": "userns"})
            if _recv(sock) is None:
                os._exit(1)
        if in_userns:
            try:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            except OSError:
                raise InvalidArgument("linux.uidMappings: container uid and gid 0 must be mapped") from None
        L.unshare(new_flags & ~L.CLONE_NEWUSER)
        _fork_reporting_pid(sock, lambda: self._stage2(
            sock, rec, config, proc, cgroup, new_flags, in_userns, seccomp, console, fifo_fd,
            preserve_fds))

    def _stage2(self, sock: socket.socket, rec: dict, config: dict, proc: Prepared, cgroup,
                new_flags: int, in_userns: bool, seccomp, console, fifo_fd: int,
                preserve_fds: int) -> None:
        """The container's init: root filesystem, identity, then wait for start and exec."""
        from dockyard.runtime import process as P
        from dockyard.runtime import rootfs as R

        linux = config.get("linux", {})
        hooks = config.get("hooks", {})
        _close_fds_except({sock.fileno(), fifo_fd, console.fileno() if console else -1},
                          first=3 + preserve_fds)
        _reset_signals()
        os.setsid()
        rootfs = rec["rootfs"]
        prop = R.PROPAGATION.get(linux.get("rootfsPropagation", ""), L.MS_PRIVATE | L.MS_REC)
        L.mount(None, "/", None, prop | L.MS_REC)
        L.mount(rootfs, rootfs, None, L.MS_BIND | L.MS_REC)
        mounts = config.get("mounts", [])
        cgroup_mounts = cgroup.mounts() if any(m.get("type") == "cgroup" for m in mounts) else []
        for i, m in enumerate(mounts):
            R.mount_one(rootfs, i, m, cgroup_mounts, bool(new_flags & L.CLONE_NEWNET))
        dev_is_bind = any(m["destination"] == "/dev" and
                          (m.get("type") == "bind" or "bind" in m.get("options", []) or
                           "rbind" in m.get("options", [])) for m in mounts)
        if not dev_is_bind:
            R.create_default_devices(rootfs, in_userns)
        for dev in linux.get("devices", []):
            R.make_device(rootfs, dev, in_userns)
        cwd = R.secure_join(rootfs, proc.cwd)
        if not os.path.isdir(cwd):
            try:
                os.makedirs(cwd, 0o755, exist_ok=True)
            except OSError as e:
                raise InvalidArgument(f"process.cwd: cannot create {proc.cwd!r} in the "
                                      f"container: {e.strerror}") from None
        if hooks.get("prestart") or hooks.get("createRuntime"):
            _send(sock, {"t": "hooks"})
            if _recv(sock) is None:
                os._exit(1)
        state = self._hook_state(rec, "creating")
        state["pid"] = 0
        hooks_mod.run("createContainer", hooks.get("createContainer", []), state)
        # Modules used after pivot_root must be loaded before it: the host's library goes.
        if console is not None:
            P.preload_terminal()
        if hooks.get("startContainer"):
            import subprocess  # noqa: F401
        R.pivot(rootfs)
        if prop & (L.MS_SHARED | L.MS_SLAVE):
            L.mount(None, "/", None, prop)
        R.write_sysctls(linux.get("sysctl", {}))
        R.readonly_paths(linux.get("readonlyPaths", []))
        R.mask_paths(linux.get("maskedPaths", []))
        if config["root"].get("readonly"):
            R.remount_bind("/", L.MS_RDONLY)
        if config.get("hostname"):
            L.sethostname(config["hostname"])
        if config.get("domainname"):
            L.setdomainname(config["domainname"])
        exe = P.become(proc, console, seccomp)
        _send(sock, {"t": "ready"})
        sock.close()
        # Reopened through the handle the privileged parent made: the state directory may
        # be out of this (possibly unprivileged) process's reach, and out of its root.
        try:
            fifo = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Unsupported("mounts: the container needs /proc mounted to be started") from None
        os.close(fifo_fd)
        os.write(fifo, b"0")
        os.close(fifo)
        if hooks.get("startContainer"):
            state["status"], state["pid"] = "created", 1
            hooks_mod.run("startContainer", hooks["startContainer"], state)
        P.seal(proc, seccomp)
        _exec_or_die(exe, proc, preserve_fds)

    # -- start, kill, pause ------------------------------------------------------

    def start(self, cid: str) -> None:
        rec = self._load(cid)
        status = self._status(rec)
        if status != "created":
            raise Conflict(f"cannot start a container that is {status}" if status != "stopped"
                           else "cannot start a container that has stopped")
        fifo_path = os.path.join(self.root, cid, "exec.fifo")
        fd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            import select

            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if poller.poll(100):
                    if os.read(fd, 1):
                        break
                    # The writer end closed without writing: another start got there first,
                    # or the init died.
                    if _start_time(rec["pid"]) == rec["starttime"]:
                        raise Conflict(f"container {cid} is already started")
                if _start_time(rec["pid"]) != rec["starttime"]:
                    raise SystemFailure(f"container {cid}: its init process died before start")
        finally:
            os.close(fd)
        os.unlink(fifo_path)
        hooks_mod.run("poststart", rec["config"].get("hooks", {}).get("poststart", []),
                      self._hook_state(rec, "running"), fatal=False)

    def kill(self, cid: str, sig: int = signal.SIGTERM, all: bool = False) -> None:
        rec = self._load(cid)
        status = self._status(rec)
        if status == "creating":
            # No init yet: its pid is recorded as 0, and kill(0) would hit our own group.
            raise Conflict(f"container {cid} is still being created")
        if status == "stopped" and not all:
            raise Conflict(f"container {cid} is not running")
        if all:
            self._cgroup(rec).kill_all(sig)
        else:
            os.kill(rec["pid"], sig)

    def pause(self, cid: str) -> None:
        rec = self._load(cid)
        status = self._status(rec)
        if status != "running":
            raise Conflict(f"container {cid} is {status}, not running")
        self._cgroup(rec).freeze()

    def resume(self, cid: str) -> None:
        rec = self._load(cid)
        status = self._status(rec)
        if status != "paused":
            raise Conflict(f"container {cid} is {status}, not paused")
        self._cgroup(rec).thaw()

    def ps(self, cid: str) -> list[int]:
        rec = self._load(cid)
        return self._cgroup(rec).pids()

    # -- delete ----------------------------------------------------------------

    def delete(self, cid: str, force: bool = False) -> None:
        rec = self._load(cid)
        status = self._status(rec)
        cgroup = self._cgroup(rec)
        if status in ("running", "paused") and not force:
            raise Conflict(f"cannot delete container {cid} that is not stopped: {status}")
        if status != "stopped" or cgroup.pids():
            if status == "paused":
                cgroup.thaw()
            cgroup.kill_all(signal.SIGKILL)
            if rec.get("pid"):
                try:
                    os.kill(rec["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._destroy(rec, cgroup, run_poststop=True)

    def _destroy(self, rec: dict, cgroup, run_poststop: bool) -> None:
        """Remove the container's cgroup, run poststop hooks, drop its record. If the cgroup
        cannot go, the record stays, so that a later delete can finish the job."""
        cgroup.destroy()
        if run_poststop:
            hooks_mod.run("poststop", rec["config"].get("hooks", {}).get("poststop", []),
                          self._hook_state(rec, "stopped"), fatal=False)
        self._remove_record(rec["id"])

    def _remove_record(self, cid: str) -> None:
        # The state directory holds only flat files: no need for shutil (slow to import).
        cdir = os.path.join(self.root, cid)
        try:
            entries = list(os.scandir(cdir))
        except FileNotFoundError:
            return
        for entry in entries:
            os.unlink(entry.path)
        os.rmdir(cdir)

    # -- run, exec -------------------------------------------------------------

    def run(self, cid: str, bundle: str, *, detach: bool = False, console_socket: str | socket.socket | None = None,
            pid_file: str | None = None, preserve_fds: int = 0, keep: bool = False) -> int:
        """create + start; without DETACH, wait for the init and delete the container
        (unless KEEP), returning the exit code (128+N when killed by signal N)."""
        if not detach:
            # The init is reparented to us when its first parent exits: we reap it.
            L.set_child_subreaper()
        pid = self.create(cid, bundle, console_socket=console_socket, pid_file=pid_file,
                          preserve_fds=preserve_fds)
        if detach:
            self.start(cid)
            return 0
        forward = _SignalForwarder(pid)
        try:
            self.start(cid)
            code = forward.wait()
        except BaseException:
            self.delete(cid, force=True)
            raise
        finally:
            forward.restore()
        if not keep:
            self.delete(cid, force=True)
        return code

    def exec(self, cid: str, process: dict, *, console_socket: str | socket.socket | None = None,
             detach: bool = False, pid_file: str | None = None,
             stdio: tuple[int, int, int] | None = None) -> int:
        """Run PROCESS inside the running container. Detached: return its pid; otherwise
        wait and return its exit code."""
        rec = self._load(cid)
        status = self._status(rec)
        if status in ("stopped", "paused", "creating"):
            raise Conflict(f"cannot exec in a {status} container")
        process = dict(process)
        process.setdefault("cwd", "/")
        process.setdefault("user", {"uid": 0, "gid": 0})
        spec.validate_process(process)
        proc = Prepared(process)
        proc.check_privileges()
        if proc.terminal and not console_socket:
            raise InvalidArgument("process.terminal: a terminal needs a console socket "
                                  "(--console-socket)")
        seccomp = None
        bpf_path = os.path.join(self.root, cid, "seccomp.bpf")
        if os.path.exists(bpf_path):
            with open(bpf_path, "rb") as f:
                seccomp = (f.read(), rec.get("seccompFlags", 0))
        if not detach:
            L.set_child_subreaper()
        pid = self._spawn_exec(rec, proc, seccomp, console_socket, stdio)
        if pid_file:
            write_atomic(os.path.abspath(pid_file), str(pid).encode(), durable=False)
        if detach:
            return pid
        forward = _SignalForwarder(pid)
        try:
            return forward.wait()
        finally:
            forward.restore()

    def _spawn_exec(self, rec: dict, proc: Prepared, seccomp, console_socket: str | socket.socket | None,
                    stdio: tuple[int, int, int] | None) -> int:
        init = rec["pid"]
        joins = []
        for kind in _JOIN_ORDER:
            flag, name = L.NAMESPACES[kind]
            path = f"/proc/{init}/ns/{name}"
            try:
                if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                    joins.append((kind, flag, path))
            except FileNotFoundError:
                continue
        console = _connect_console(console_socket)
        cgroup = self._cgroup(rec)
        first, parent = _fork_child(
            lambda sock: self._exec_stage1(sock, proc, cgroup, joins, seccomp, console), stdio)
        if console:
            console.close()
        pid = 0
        try:
            while True:
                msg = _recv(parent)
                if msg is None:
                    break  # the exec succeeded: our end of a close-on-exec socket closed
                if msg["t"] == "pid":
                    pid = msg["pid"]
                elif msg["t"] == "error":
                    _raise_from(msg)
        finally:
            parent.close()
            os.waitpid(first, 0)
        if not pid:
            raise SystemFailure("exec: the process could not be started")
        return pid

    def _exec_stage1(self, sock: socket.socket, proc: Prepared, cgroup, joins: list,
                     seccomp, console) -> None:
        L.prctl(L.PR_SET_DUMPABLE, 0)  # as in _stage1
        _join(cgroup, joins)
        _fork_reporting_pid(sock, lambda: self._exec_stage2(sock, proc, seccomp, console))

    @staticmethod
    def _exec_stage2(sock: socket.socket, proc: Prepared, seccomp, console) -> None:
        from dockyard.runtime import process as P

        # Keep the report socket until execve: its closing tells the parent it worked.
        _close_fds_except({sock.fileno(), console.fileno() if console else -1})
        os.set_inheritable(sock.fileno(), False)
        _reset_signals()
        os.setsid()
        exe = P.become(proc, console, seccomp)
        P.seal(proc, seccomp)
        try:
            os.execve(exe, proc.args, _env_dict(proc.env))
        except OSError as e:
            raise SystemFailure(f"exec {proc.args[0]}: {e.strerror}") from None


class _SignalForwarder:
    """While the runtime waits for a process, signals sent to the runtime go to it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
               signal.SIGUSR2, signal.SIGWINCH)

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.saved = {}
        for sig in self.SIGNALS:
            self.saved[sig] = signal.signal(sig, self._forward)

    def _forward(self, sig: int, _frame: object) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        return wait_exit(self.pid)

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
