"""OCI runtime binaries (runc, crun, or any named in daemon.json) as the monitor's runtimes.

The monitor runs containers with Dockyard's own runtime in its process by default. A
container created with another runtime is driven through that binary's command line, with
runc's verbs (`create`, `start`, `kill`, `delete`, `state`, `pause`, `resume`, `exec`),
which crun and the other OCI runtimes share. `OCIRuntime` offers the same methods the
monitor calls on the in-process `dockyard.runtime.container.Runtime`, so the monitor
picks one per container and otherwise does not care:

- `create` runs `<runtime> create` with the container's stdio as its fds 0-2. The runtime
  forks the container's init and exits; the init is reparented to the monitor (a child
  subreaper), which reaps it as it reaps its own. The same holds for a detached `exec`.
- a terminal's master arrives on a console socket path the runtime connects to; it is
  handed on over the caller's socket, as the in-process runtime hands it.
- each runtime keeps its state under its own root, EXEC_ROOT/runtimes/<name>.

The daemon decides which runtimes exist (`RuntimeTable`, from daemon.json's "runtimes"
and "default-runtime"), and publishes the table in EXEC_ROOT/runtimes.json: the monitor,
another process that outlives the daemon, resolves a container's runtime name there when
the container is created, and records what it resolved in the container's meta.json so
that a re-adopted container is driven by the same binary.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from dockyard.atomicfile import write_atomic
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure

log = logging.getLogger(__name__)

OWN_RUNTIME = "dockyard"
# What `docker info` shows as the in-process runtime's path: the CLI wrapping the same library.
OWN_RUNTIME_PATH = "dockyard-runtime"
# Names that always exist. As dockerd: "runc" and containerd's runc shim name the stock runc;
# crun is offered by name as well when the host has it.
STOCK_RUNTIMES = {"runc": "runc", "io.containerd.runc.v2": "runc", "crun": "crun"}
# Names daemon.json's "runtimes" may not redefine.
RESERVED = ("runc", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux", OWN_RUNTIME)
TABLE_NAME = "runtimes.json"
STATE_DIR = "runtimes"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_CALL_TIMEOUT = 60.0
_UNIFIED = "/sys/fs/cgroup/unified"


@dataclass(frozen=True)
class RuntimeSpec:
    """A named OCI runtime: its binary (as configured) and the global options it gets."""

    name: str
    path: str
    args: tuple[str, ...] = ()

    @property
    def own(self) -> bool:
        return self.name == OWN_RUNTIME

    def info(self) -> dict[str, Any]:
        """As `docker info` lists it."""
        out: dict[str, Any] = {"path": self.path}
        if self.args:
            out["runtimeArgs"] = list(self.args)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "args": list(self.args)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeSpec:
        return cls(str(d["name"]), str(d["path"]), tuple(str(a) for a in d.get("args") or ()))


@dataclass
class RuntimeTable:
    """The runtimes a daemon offers and its default."""

    runtimes: dict[str, RuntimeSpec] = field(default_factory=dict)
    default: str = OWN_RUNTIME

    @classmethod
    def from_config(cls, configured: dict[str, dict[str, Any]] | None, default: str | None) -> RuntimeTable:
        """From daemon.json's "runtimes" and "default-runtime"; errors as dockerd words them."""
        table: dict[str, RuntimeSpec] = {OWN_RUNTIME: RuntimeSpec(OWN_RUNTIME, OWN_RUNTIME_PATH)}
        for name, binary in STOCK_RUNTIMES.items():
            if binary == "runc" or shutil.which(binary):
                table[name] = RuntimeSpec(name, binary)
        for name, conf in sorted((configured or {}).items()):
            if name in RESERVED:
                raise InvalidArgument(f"runtime name '{name}' is reserved")
            if not _NAME.match(name):
                raise InvalidArgument(f"invalid runtime name '{name}': use letters, digits and _ . + -")
            path = (conf or {}).get("path") or ""
            if not isinstance(path, str) or not path:
                raise InvalidArgument(f"runtime {name}: a path is required")
            args = (conf or {}).get("runtimeArgs") or []
            if not all(isinstance(a, str) for a in args):
                raise InvalidArgument(f"runtime {name}: runtimeArgs must be strings")
            table[name] = RuntimeSpec(name, path, tuple(args))
        default = default or OWN_RUNTIME
        if default not in table:
            raise InvalidArgument(f"specified default runtime '{default}' does not exist")
        return cls(table, default)

    def resolve(self, name: str | None) -> str:
        """The name a container's HostConfig.Runtime stores: the default when empty."""
        if not name:
            return self.default
        if name not in self.runtimes:
            raise InvalidArgument(f"unknown or invalid runtime name: {name}")
        return name

    def info(self) -> dict[str, dict[str, Any]]:
        return {name: spec.info() for name, spec in sorted(self.runtimes.items())}

    def publish(self, exec_root: str) -> None:
        """Write the table where the monitor reads it (EXEC_ROOT/runtimes.json)."""
        data = {"default": self.default,
                "runtimes": {n: s.to_dict() for n, s in self.runtimes.items()}}
        write_atomic(os.path.join(exec_root, TABLE_NAME), json.dumps(data).encode())


def lookup(exec_root: str, name: str) -> RuntimeSpec:
    """NAME as the daemon published it (stock names need no table), with its binary's
    absolute path, so that a later change of PATH or of daemon.json leaves it alone."""
    spec: RuntimeSpec | None = None
    try:
        with open(os.path.join(exec_root, TABLE_NAME), "rb") as f:
            entry = json.loads(f.read()).get("runtimes", {}).get(name)
        if entry:
            spec = RuntimeSpec.from_dict(entry)
    except (OSError, ValueError, KeyError, TypeError):
        spec = None
    if spec is None and name in STOCK_RUNTIMES:
        spec = RuntimeSpec(name, STOCK_RUNTIMES[name])
    if spec is None:
        raise InvalidArgument(f"unknown or invalid runtime name: {name}")
    exe = shutil.which(spec.path)
    if exe is None:
        raise SystemFailure(f"runtime {name}: {spec.path}: executable file not found in $PATH")
    return RuntimeSpec(spec.name, os.path.abspath(exe), spec.args)


# -- the adapter -----------------------------------------------------------------------------

def _hybrid_cgroups() -> bool:
    return os.path.ismount(_UNIFIED) and not os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _hide_unified() -> None:
    """In the runtime's child, before exec: a private mount namespace where the hybrid
    host's cgroup2 mount is covered, so a runtime refusing hybrid hosts sees plain v1."""
    from dockyard.runtime import linux as L

    L.unshare(L.CLONE_NEWNS)
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
    L.mount("none", _UNIFIED, "tmpfs", 0, "size=4k")


def _error_message(log_path: str, stderr: bytes) -> str:
    """The runtime's last error: from its JSON log, else its stderr."""
    msgs: list[str] = []
    try:
        with open(log_path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    msgs.append(str(entry.get("msg", "")).strip())
    except OSError:
        pass
    if msgs:
        return msgs[-1]
    text = stderr.decode(errors="replace").strip()
    return text.splitlines()[-1] if text else "exited without saying why"


def _classify(name: str, verb: str, cid: str, msg: str) -> DockyardError:
    low = msg.lower()
    if "does not exist" in low and "container" in low:
        return NotFound(f"container {cid} does not exist")
    if any(w in low for w in ("not running", "not paused", "not stopped", "is paused", "already",
                              "is stopped")):
        return Conflict(f"{name} {verb}: {msg}")
    return SystemFailure(f"OCI runtime {verb} failed: {name}: {msg}")


class OCIRuntime:
    """The containers SPEC's binary runs under STATE_ROOT (its --root)."""

    def __init__(self, spec: RuntimeSpec, state_root: str) -> None:
        self.spec = spec
        self.root = os.path.abspath(state_root)
        self.name = spec.name
        crun = os.path.basename(spec.path).startswith("crun")
        # Debian's crun 1.8 refuses hybrid cgroup hosts, and any ociVersion past 1.0.x
        # (though it implements what Docker's specs use), and writes an unlimited pids
        # limit (-1) as is, which cgroup v1 rejects: it gets plain v1, and a copy of the
        # configuration marked 1.0.2 without the no-op limit.
        self._preexec = _hide_unified if crun and _hybrid_cgroups() else None
        self._oci_version = "1.0.2" if crun else None

    def _work(self) -> str:
        """A private directory for one call's files (log, pid file, console socket): kept
        out of the state root, which holds only what the runtime puts there."""
        parent = os.path.join(os.path.dirname(self.root), ".work")
        os.makedirs(parent, 0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{self.name}-", dir=parent)

    def _run(self, verb: str, cid: str, args: list[str], *, stdio: tuple[int, int, int] | None = None,
             capture: bool = False, work: str | None = None) -> bytes:
        own_work = work is None
        work = work or self._work()
        log_path = os.path.join(work, "log.json")
        argv = [self.spec.path, *self.spec.args, f"--root={self.root}", f"--log={log_path}",
                "--log-format=json", verb, *args]
        devnull = -1
        try:
            if stdio is None:
                devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                stdin, stdout = devnull, (subprocess.PIPE if capture else devnull)
                stderr: int = subprocess.PIPE
            else:
                stdin, stdout, stderr = stdio
            try:
                res = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                     preexec_fn=self._preexec, timeout=_CALL_TIMEOUT, check=False)
            except FileNotFoundError:
                raise SystemFailure(f"runtime {self.name}: {self.spec.path}: no such file") from None
            except subprocess.TimeoutExpired:
                raise SystemFailure(f"runtime {self.name}: {verb} of {cid} did not finish within "
                                    f"{_CALL_TIMEOUT:.0f}s") from None
            except subprocess.SubprocessError as e:
                # Only _hide_unified runs in the child before exec.
                raise SystemFailure(f"runtime {self.name}: cannot hide the host's cgroup2 mount "
                                    f"({_UNIFIED}) from it: {e}") from None
            if res.returncode != 0:
                msg = _error_message(log_path, res.stderr if isinstance(res.stderr, bytes) else b"")
                log.info("%s %s %s failed (%d): %s", self.name, verb, cid, res.returncode, msg)
                raise _classify(self.name, verb, cid, msg)
            return res.stdout if capture and isinstance(res.stdout, bytes) else b""
        finally:
            if devnull >= 0:
                os.close(devnull)
            if own_work:
                shutil.rmtree(work, ignore_errors=True)

    # -- the Runtime interface the monitor uses -------------------------------------------

    def create(self, cid: str, bundle: str, *, console_socket: socket.socket | None = None,
               stdio: tuple[int, int, int] | None = None) -> int:
        """Create CID and leave its init waiting for `start`; its pid. With CONSOLE_SOCKET
        the terminal's master is sent over it (SCM_RIGHTS), as the in-process runtime does."""
        os.makedirs(self.root, 0o700, exist_ok=True)
        work = self._work()
        try:
            pid_file = os.path.join(work, "pid")
            args = ["--bundle", bundle, f"--pid-file={pid_file}"]
            if self._oci_version:
                args.append(f"--config={self._config_copy(bundle, work)}")
            with _ConsoleRelay(work, console_socket) as relay:
                if relay.path:
                    args.append(f"--console-socket={relay.path}")
                try:
                    self._run("create", cid, [*args, cid], stdio=stdio, work=work)
                    relay.forward()
                except BaseException:
                    self._forget(cid, bundle)
                    raise
            return _read_pid(pid_file)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _config_copy(self, bundle: str, work: str) -> str:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            config = json.loads(f.read())
        config["ociVersion"] = self._oci_version
        resources = (config.get("linux") or {}).get("resources") or {}
        if (resources.get("pids") or {}).get("limit", 1) <= 0:
            del resources["pids"]
        path = os.path.join(work, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def start(self, cid: str) -> None:
        self._run("start", cid, [cid])

    def kill(self, cid: str, sig: int = signal.SIGTERM, all: bool = False) -> None:
        self._run("kill", cid, [*(["--all"] if all else []), cid, str(int(sig))])

    def pause(self, cid: str) -> None:
        self._run("pause", cid, [cid])

    def resume(self, cid: str) -> None:
        self._run("resume", cid, [cid])

    def delete(self, cid: str, force: bool = False) -> None:
        if not os.path.isdir(os.path.join(self.root, cid)):
            raise NotFound(f"container {cid} does not exist")
        self._run("delete", cid, [*(["--force"] if force else []), cid])

    def state(self, cid: str) -> dict[str, Any]:
        """The runtime's OCI state, with oomKilled (read from the cgroup) once stopped."""
        if not os.path.isdir(os.path.join(self.root, cid)):
            raise NotFound(f"container {cid} does not exist")
        out = self._run("state", cid, [cid], capture=True)
        try:
            st = json.loads(out)
        except ValueError:
            raise SystemFailure(f"runtime {self.name}: state of {cid}: not JSON: {out[:200]!r}") from None
        if st.get("status") == "stopped":
            st["pid"] = 0
            if _oom_killed(st.get("bundle") or ""):
                st["oomKilled"] = True
        return st

    def exec(self, cid: str, process: dict[str, Any], *, console_socket: socket.socket | None = None,
             detach: bool = True, stdio: tuple[int, int, int] | None = None) -> int:
        """Start PROCESS in CID, detached; its pid (the process is reparented to the
        caller when the runtime exits, as a container's init is)."""
        if not detach:
            raise InvalidArgument("exec through an OCI runtime binary is always detached")
        process = dict(process)
        process.setdefault("cwd", "/")
        process.setdefault("user", {"uid": 0, "gid": 0})
        work = self._work()
        try:
            pid_file = os.path.join(work, "pid")
            proc_file = os.path.join(work, "process.json")
            with open(proc_file, "w") as f:
                json.dump(process, f)
            args = [f"--process={proc_file}", "--detach", f"--pid-file={pid_file}"]
            with _ConsoleRelay(work, console_socket) as relay:
                if relay.path:
                    args.append(f"--console-socket={relay.path}")
                self._run("exec", cid, [*args, cid], stdio=stdio, work=work)
                relay.forward()
            return _read_pid(pid_file)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _forget(self, cid: str, bundle: str) -> None:
        """After a failed create: what the runtime left behind (crun 1.8 leaves the cgroup)."""
        try:
            self.delete(cid, force=True)
        except NotFound:
            pass
        except DockyardError as e:
            log.warning("%s: removing the half-made container %s: %s", self.name, cid, e)
        cg = _cgroup(bundle)
        try:
            if cg is not None and cg.exists() and not cg.pids():
                cg.destroy()
        except (OSError, DockyardError) as e:
            log.warning("%s: removing the cgroup of the half-made container %s: %s", self.name, cid, e)


class _ConsoleRelay:
    """A console socket path for the runtime; the master it sends is passed on to TARGET."""

    def __init__(self, work: str, target: socket.socket | None) -> None:
        self.target = target
        self.path = ""
        self.listener: socket.socket | None = None
        if target is not None:
            self.path = os.path.join(work, "console.sock")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.listener.bind(self.path)
            self.listener.listen(1)

    def forward(self) -> None:
        """After the runtime exited: it connected and sent the master, queued in the
        listener's backlog."""
        if self.listener is None or self.target is None:
            return
        self.listener.settimeout(5.0)
        try:
            conn, _ = self.listener.accept()
        except OSError as e:
            raise SystemFailure(f"the runtime sent no terminal on its console socket: {e}") from None
        with conn:
            conn.settimeout(5.0)
            msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
            if not fds:
                raise SystemFailure("the runtime closed its console socket without a terminal")
            try:
                socket.send_fds(self.target, [msg or b"pty"], fds)
            finally:
                for fd in fds:
                    os.close(fd)

    def __enter__(self) -> _ConsoleRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.listener is not None:
            self.listener.close()


def _read_pid(path: str) -> int:
    # Written (atomically, by runc and crun) before the runtime exits successfully.
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError) as e:
        raise SystemFailure(f"the runtime wrote no pid file: {e}") from None


def _cgroup(bundle: str) -> Any:
    """The container's cgroup, from the bundle's cgroupsPath (as the cgroupfs driver of
    runc and crun reads it); None when there is none to find."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            path = (json.loads(f.read()).get("linux") or {}).get("cgroupsPath") or ""
    except (OSError, ValueError):
        return None
    if not path or ":" in path:  # a systemd slice:prefix:name, which we do not resolve
        return None
    from dockyard.runtime.cgroups import open_cgroup

    try:
        return open_cgroup(path)
    except DockyardError:
        return None


def _oom_killed(bundle: str) -> bool:
    """Whether the kernel OOM-killed in the container's cgroup (memory.events or
    oom_control): the runtimes' state does not say."""
    cg = _cgroup(bundle)
    try:
        return cg is not None and bool(cg.oom_killed())
    except (OSError, DockyardError):
        return False
