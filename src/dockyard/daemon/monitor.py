"""The container monitor: one process per exec-root that supervises every container.

Docker runs one containerd-shim per container and podman one conmon; Dockyard runs ONE
monitor for all of them, so a container costs it a few fds and buffers. The monitor is
started by `ensure_monitor` (in its own session, so the daemon's death, restart or
SIGKILL does not touch it) and is the child subreaper of every container init it
creates, so it reaps them and learns their exit codes. One event loop (selectors) serves:

- the control socket EXEC_ROOT/monitor.sock (see monitor_protocol for the formats);
- the containers' stdout/stderr pipes or pty masters, copied into their json-file log
  (daemon.logs.LogWriter) and to attached clients; stdin from attached clients;
- SIGCHLD, through the signal wakeup fd: reap with waitpid(-1, WNOHANG).

Layout of EXEC_ROOT: monitor.sock, monitor.pid, monitor.lock (held while it runs, so two
monitors never share a root), monitor.log, runtime/ (the in-process Runtime's state root),
runtimes/<name>/ (the state root of each OCI runtime binary used, see daemon.ociruntime) and
containers/<id>/ with meta.json (what the container was created with, its runtime included)
and, once its init exited, exit.json {"exit_code", "exited_at", "oom_killed"}, written
atomically before any waiter is answered so that a daemon that was down learns the exit later.

Known limits, by construction:
- If the monitor ITSELF dies (SIGKILL, OOM), its containers keep running but are
  reparented away from it: a new monitor adopts them (pid + start time, from the
  runtime's state), but cannot reap them. It watches a pidfd instead and records
  exit code 255 with "exit code unknown: the monitor restarted". Their stdio is lost:
  the pipes' read ends died with the old monitor, so a container writing to stdout
  then gets SIGPIPE/EPIPE, and a TTY container gets SIGHUP when the pty master closes.
- Runtime calls (create, start, delete, exec) run in the loop and block it for their
  duration (tens of milliseconds); output is buffered by the kernel meanwhile.
"""

from __future__ import annotations

import argparse
import collections
import errno
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from dockyard.daemon import monitor_protocol as proto
from dockyard.daemon.ociruntime import OWN_RUNTIME, STATE_DIR, OCIRuntime, RuntimeSpec, lookup
from dockyard.daemon.logs import LogWriter, format_time_ns
from dockyard.atomicfile import write_atomic
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure

log = logging.getLogger("dockyard.monitor")

EXIT_UNKNOWN = 255
UNKNOWN_REASON = "exit code unknown: the monitor restarted"
SOCKET_NAME = "monitor.sock"
PID_NAME = "monitor.pid"
LOCK_NAME = "monitor.lock"
LOG_NAME = "monitor.log"
_READ_SIZE = 64 * 1024
# Output queued for an attached client that does not read; past this it is detached
# rather than letting one slow client grow the monitor without bound.
_ATTACH_QUEUE_MAX = 8 * 1024 * 1024
_STDIN_MAX = 1024 * 1024


def _exit_code(status: int) -> int:
    """As a shell shows it: 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _signal_number(sig: int | str) -> int:
    if isinstance(sig, int):
        return sig
    if sig.isdigit():
        return int(sig)
    name = sig.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"invalid signal: {sig}") from None


# -- records -----------------------------------------------------------------------------

@dataclass
class ExitRecord:
    exit_code: int
    exited_at: str
    oom_killed: bool = False
    error: str | None = None  # why the code is not the real one (adopted containers)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["error"] is None:
            del d["error"]
        return d


@dataclass(eq=False)
class Attach:
    """One client's attach socket onto a process's stdio."""

    sock: socket.socket
    proc: Proc
    stdin: bool
    close_stdin: bool
    out: collections.deque[bytes] = field(default_factory=collections.deque)
    queued: int = 0
    registered: int = 0  # the selector events currently registered


@dataclass(eq=False)
class Proc:
    """A supervised process: a container's init, or an exec."""

    id: str
    pid: int
    tty: bool
    container: Container | None = None
    outputs: dict[int, str] = field(default_factory=dict)  # fd -> stream name
    stdin_fd: int = -1
    stdin_buf: bytearray = field(default_factory=bytearray)
    stdin_eof: bool = False  # close stdin once stdin_buf is written
    master: int = -1
    log: LogWriter | None = None
    attaches: list[Attach] = field(default_factory=list)
    waiters: list[Conn] = field(default_factory=list)
    exit: ExitRecord | None = None
    pidfd: int = -1  # adopted: readable when the process exits
    released: bool = False  # an exec the daemon is done with: forgotten once drained

    @property
    def done(self) -> bool:
        return self.exit is not None and not self.outputs


@dataclass(eq=False)
class Container:
    id: str
    meta: dict[str, Any]
    proc: Proc
    adopted: bool = False
    execs: dict[str, Proc] = field(default_factory=dict)


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    rbuf: bytearray = field(default_factory=bytearray)
    wbuf: bytearray = field(default_factory=bytearray)
    busy: bool = False  # a deferred answer (wait) is pending: later requests queue
    closed: bool = False
    registered: int = 0


# -- the monitor ---------------------------------------------------------------------------

class Monitor:
    def __init__(self, exec_root: str) -> None:
        from dockyard.runtime.container import Runtime

        self.root = os.path.abspath(exec_root)
        self.cdir = os.path.join(self.root, "containers")
        self.runtime = Runtime(os.path.join(self.root, "runtime"))
        # Containers created with an OCI runtime binary (runc, crun...): one adapter per
        # runtime, made when first needed.
        self.oci: dict[tuple[str, str, tuple[str, ...]], OCIRuntime] = {}
        self.sel = selectors.DefaultSelector()
        self.containers: dict[str, Container] = {}
        self.procs: dict[str, Proc] = {}  # wait targets: container ids and exec ids
        self.by_pid: dict[int, Proc] = {}
        self.stopping = False
        self.lock_fd = -1
        self.listener: socket.socket | None = None
        self.wake_r = self.wake_w = -1

    # setup / teardown -----------------------------------------------------------------

    def acquire(self) -> bool:
        os.makedirs(self.cdir, 0o711, exist_ok=True)
        self.lock_fd = os.open(os.path.join(self.root, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def setup(self) -> None:
        from dockyard.runtime import linux

        linux.set_child_subreaper()
        # Python ignores SIGPIPE (so writes to a gone client give EPIPE here) and SIGXFSZ,
        # but an ignored signal survives exec: the runtime's forks must give containers
        # the defaults.
        os.register_at_fork(after_in_child=_child_signals)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # A Python handler (doing nothing) so that the C handler writes the wakeup fd.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_signal)
        path = os.path.join(self.root, SOCKET_NAME)
        try:
            os.unlink(path)  # stale: we hold the lock, so no live monitor owns it
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        self.listener = sock
        self.sel.register(sock, selectors.EVENT_READ, self._on_accept)
        self.adopt()
        write_atomic(os.path.join(self.root, PID_NAME), str(os.getpid()).encode())
        log.info("monitor %d serving %s (%d containers adopted)", os.getpid(), self.root,
                 len(self.containers))

    def teardown(self) -> None:
        for name in (SOCKET_NAME, PID_NAME):
            try:
                os.unlink(os.path.join(self.root, name))
            except FileNotFoundError:
                pass
        for c in list(self.containers.values()):
            self._close_proc(c.proc)
        log.info("monitor %d exits", os.getpid())

    def run(self) -> None:
        while not self.stopping:
            try:
                events = self.sel.select()
            except InterruptedError:
                continue
            for key, mask in events:
                try:
                    key.data(key, mask)
                except Exception:
                    # One broken container or client must never take the others down.
                    log.exception("handling fd %s", key.fd)
        # Let the last answers (shutdown's) go out.
        for key in list(self.sel.get_map().values()):
            if isinstance(key.data, _ConnHandler):
                self._flush(key.data.conn)

    # adoption after a restart ----------------------------------------------------------------

    def adopt(self) -> None:
        """Re-learn the containers of a previous monitor from containers/<id>/."""
        try:
            names = sorted(os.listdir(self.cdir))
        except FileNotFoundError:
            return
        for cid in names:
            d = os.path.join(self.cdir, cid)
            try:
                with open(os.path.join(d, "meta.json"), "rb") as f:
                    meta = json.loads(f.read())
            except (OSError, ValueError):
                log.warning("ignoring %s: no readable meta.json", d)
                continue
            proc = Proc(id=cid, pid=meta.get("pid", 0), tty=meta.get("tty", False))
            c = Container(id=cid, meta=meta, proc=proc, adopted=True)
            proc.container = c
            try:
                with open(os.path.join(d, "exit.json"), "rb") as f:
                    proc.exit = ExitRecord(**json.loads(f.read()))
            except FileNotFoundError:
                self._watch_adopted(c)
            except (OSError, ValueError, TypeError):
                log.warning("%s: unreadable exit.json", cid)
                self._record_exit(proc, EXIT_UNKNOWN, UNKNOWN_REASON)
            self.containers[cid] = c
            self.procs[cid] = proc

    def _watch_adopted(self, c: Container) -> None:
        proc = c.proc
        try:
            st = self._rt(c).state(c.id)
        except DockyardError:
            st = {"status": "stopped", "pid": 0}
        pidfd = -1
        if st["status"] in ("created", "running", "paused") and st["pid"]:
            try:
                pidfd = os.pidfd_open(st["pid"])
                # The pidfd names the process for good; check it is still the container's
                # init (not a reused pid) now that the pidfd holds it.
                if self._rt(c).state(c.id)["pid"] != st["pid"]:
                    os.close(pidfd)
                    pidfd = -1
            except (OSError, DockyardError):
                if pidfd >= 0:
                    os.close(pidfd)
                pidfd = -1
        if pidfd < 0:
            # It exited while no monitor was watching: the code is lost.
            self._record_exit(proc, EXIT_UNKNOWN, UNKNOWN_REASON)
            return
        proc.pid = st["pid"]
        proc.pidfd = pidfd
        self.sel.register(pidfd, selectors.EVENT_READ, lambda key, mask: self._on_pidfd(proc))
        log.info("adopted container %s (pid %d)", c.id, proc.pid)

    def _on_pidfd(self, proc: Proc) -> None:
        self.sel.unregister(proc.pidfd)
        os.close(proc.pidfd)
        proc.pidfd = -1
        self._exited(proc, EXIT_UNKNOWN, UNKNOWN_REASON)

    # signals ----------------------------------------------------------------------------

    def _on_signal(self, key: selectors.SelectorKey, mask: int) -> None:
        received = b""
        try:
            while chunk := os.read(self.wake_r, 512):
                received += chunk  # the wakeup fd carries the signal numbers
        except BlockingIOError:
            pass
        self.reap()
        if (signal.SIGTERM in received or signal.SIGINT in received) and not self.containers:
            # With nothing to supervise, a polite request to end is honoured; with
            # containers it is not: they would lose their reaper and their logs.
            log.info("ending on signal: no containers to supervise")
            self.stopping = True

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.by_pid.pop(pid, None)
            if proc is None:
                log.debug("reaped pid %d (not a supervised process)", pid)
                continue
            self._exited(proc, _exit_code(status))

    # exits -----------------------------------------------------------------------------

    def _record_exit(self, proc: Proc, code: int, error: str | None = None) -> None:
        """Set PROC's exit record and, for a container's init, persist it."""
        oom = False
        c = proc.container
        is_init = c is not None and c.proc is proc
        if c is not None and is_init and error is None:
            try:
                # Before anyone deletes the cgroup: the kernel's count is all we have.
                oom = bool(self._rt(c).state(proc.id).get("oomKilled"))
            except DockyardError:
                pass
        proc.exit = ExitRecord(code, format_time_ns(time.time_ns()), oom, error)
        if is_init:
            path = os.path.join(self.cdir, proc.id, "exit.json")
            try:
                write_atomic(path, json.dumps(proc.exit.to_dict()).encode())
            except OSError as e:
                log.error("recording the exit of %s: %s", proc.id, e)

    def _exited(self, proc: Proc, code: int, error: str | None = None) -> None:
        log.info("%s %s exited: %d", "container" if proc.container and proc.container.proc is proc
                 else "exec", proc.id, code)
        # What the process wrote just before it died goes to the log before a waiter hears
        # of its exit (a `docker run` prints the logs after wait).
        for fd in list(proc.outputs):
            self._drain(proc, fd)
        self._record_exit(proc, code, error)
        self._close_stdin(proc)
        answer = {"ok": True, **proc.exit.to_dict()}  # type: ignore[union-attr]
        for conn in proc.waiters:
            self._answer(conn, answer)
        proc.waiters.clear()
        if proc.done:
            self._finish(proc)

    def _finish(self, proc: Proc) -> None:
        """Exited and its output drained: flush the log, tell attached clients (EOF)."""
        if proc.log is not None:
            try:
                proc.log.close()
            except (OSError, ValueError) as e:
                log.error("closing the log of %s: %s", proc.id, e)
            proc.log = None
        for a in list(proc.attaches):
            if a.out:
                a.proc = proc  # keep until its queued output is sent; closed when empty
                continue
            self._detach(a)
        if proc.released:
            self._forget_exec(proc)

    # outputs -------------------------------------------------------------------------------

    def _add_output(self, proc: Proc, fd: int, stream: str) -> None:
        os.set_blocking(fd, False)
        proc.outputs[fd] = stream
        self.sel.register(fd, selectors.EVENT_READ, lambda key, mask: self._on_output(proc, fd))

    def _on_output(self, proc: Proc, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: a pty whose other side is all closed
                log.warning("reading output of %s: %s", proc.id, e)
            data = b""
        if not data:
            self._close_output(proc, fd)
            return
        self._deliver(proc, proc.outputs[fd], data)

    def _drain(self, proc: Proc, fd: int) -> None:
        for _ in range(64):  # bounded: a process of the container may still be writing
            if fd not in proc.outputs:
                return
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_output(proc, fd)
                return
            self._deliver(proc, proc.outputs[fd], data)

    def _deliver(self, proc: Proc, stream: str, data: bytes) -> None:
        if proc.log is not None:
            try:
                proc.log.write(stream, data)
            except (OSError, ValueError) as e:
                log.error("writing the log of %s: %s", proc.id, e)
        if proc.attaches:
            tag = bytes((proto.STREAM_IDS[stream],))
            msgs = [tag + data[i:i + proto.MAX_MESSAGE] for i in range(0, len(data), proto.MAX_MESSAGE)]
            for a in list(proc.attaches):
                for m in msgs:
                    a.out.append(m)
                    a.queued += len(m)
                if a.queued > _ATTACH_QUEUE_MAX:
                    log.warning("%s: detaching a client that does not read", proc.id)
                    self._detach(a)
                else:
                    self._attach_send(a)

    def _close_output(self, proc: Proc, fd: int) -> None:
        if proc.outputs.pop(fd, None) is None:
            return
        self.sel.unregister(fd)
        os.close(fd)
        if fd == proc.master:
            proc.master = -1
        if proc.done:
            self._finish(proc)

    # stdin ---------------------------------------------------------------------------------

    def _write_stdin(self, proc: Proc) -> None:
        while proc.stdin_buf and proc.stdin_fd >= 0:
            try:
                n = os.write(proc.stdin_fd, proc.stdin_buf)
            except BlockingIOError:
                break
            except OSError:
                # The container closed its stdin (or is gone): what was typed is dropped.
                proc.stdin_buf.clear()
                self._close_stdin(proc)
                return
            del proc.stdin_buf[:n]
        if proc.stdin_fd < 0:
            return
        want = selectors.EVENT_WRITE if proc.stdin_buf else 0
        key = self.sel.get_map().get(proc.stdin_fd)
        if want and key is None:
            self.sel.register(proc.stdin_fd, want, lambda key, mask: self._write_stdin(proc))
        elif not want and key is not None:
            self.sel.unregister(proc.stdin_fd)
        if not proc.stdin_buf and proc.stdin_eof:
            self._close_stdin(proc)
        for a in proc.attaches:
            self._attach_update(a)

    def _close_stdin(self, proc: Proc) -> None:
        if proc.stdin_fd >= 0:
            if proc.stdin_fd in self.sel.get_map():
                self.sel.unregister(proc.stdin_fd)
            os.close(proc.stdin_fd)
            proc.stdin_fd = -1
        proc.stdin_buf.clear()

    # attach sockets ------------------------------------------------------------------------

    def _attach_update(self, a: Attach) -> None:
        """Register what A waits for: its client's stdin while the container's stdin is
        not backed up (backpressure), and writability while output is queued."""
        want = 0
        # Reading also tells a detach (EOF); it pauses only while the container's stdin is
        # backed up.
        if not (a.stdin and len(a.proc.stdin_buf) >= _STDIN_MAX):
            want |= selectors.EVENT_READ
        if a.out:
            want |= selectors.EVENT_WRITE
        if want == a.registered:
            return
        if a.registered and want:
            self.sel.modify(a.sock, want, self._attach_handler(a))
        elif a.registered:
            self.sel.unregister(a.sock)
        else:
            self.sel.register(a.sock, want, self._attach_handler(a))
        a.registered = want

    def _attach_handler(self, a: Attach) -> Callable[[selectors.SelectorKey, int], None]:
        return lambda key, mask: self._on_attach(a, mask)

    def _on_attach(self, a: Attach, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._attach_send(a)
            if a.sock.fileno() < 0:
                return
        if mask & selectors.EVENT_READ:
            try:
                msg = a.sock.recv(proto.MAX_MESSAGE + 1)
            except BlockingIOError:
                return
            except OSError:
                msg = b""
            if not msg:
                # The client closed its end: a detach (with stdin_once, its stdin's end too).
                if a.stdin and a.close_stdin and not a.proc.tty and a.proc.stdin_fd >= 0:
                    a.proc.stdin_eof = True
                    self._write_stdin(a.proc)
                self._detach(a)
                return
            proc = a.proc
            if msg[0] != proto.STDIN or not a.stdin:
                return
            if len(msg) == 1:
                # An explicit EOF message: the client's stdin ended. A TTY's stdin is the
                # terminal, which stays.
                if not proc.tty and proc.stdin_fd >= 0:
                    proc.stdin_eof = True
                    self._write_stdin(proc)
                return
            if proc.stdin_fd >= 0:
                proc.stdin_buf += msg[1:]
                self._write_stdin(proc)

    def _attach_send(self, a: Attach) -> None:
        while a.out:
            try:
                a.sock.send(a.out[0], socket.MSG_NOSIGNAL)
            except BlockingIOError:
                break
            except OSError:
                self._detach(a)
                return
            a.queued -= len(a.out.popleft())
        if not a.out and a.proc.done:
            self._detach(a)  # everything delivered: EOF for the client
            return
        self._attach_update(a)

    def _detach(self, a: Attach) -> None:
        if a.registered:
            self.sel.unregister(a.sock)
            a.registered = 0
        if a in a.proc.attaches:
            a.proc.attaches.remove(a)
        a.out.clear()
        a.sock.close()

    def _new_attach(self, proc: Proc, stdin: bool, close_stdin: bool) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        ours.setblocking(False)
        a = Attach(ours, proc, stdin and proc.stdin_fd >= 0, close_stdin)
        proc.attaches.append(a)
        self._attach_update(a)
        return theirs

    # control connections ---------------------------------------------------------------------

    def _on_accept(self, key: selectors.SelectorKey, mask: int) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        conn = Conn(sock)
        conn.registered = selectors.EVENT_READ
        self.sel.register(sock, selectors.EVENT_READ, _ConnHandler(self, conn))

    def _on_conn(self, conn: Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if conn.closed or not mask & selectors.EVENT_READ:
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.rbuf += data
        if len(conn.rbuf) > 16 * 1024 * 1024:
            self._drop(conn)
            return
        self._process(conn)

    def _process(self, conn: Conn) -> None:
        while not conn.busy and not conn.closed:
            nl = conn.rbuf.find(b"\n")
            if nl < 0:
                return
            line = bytes(conn.rbuf[:nl])
            del conn.rbuf[:nl + 1]
            if not line.strip():
                continue
            try:
                req = proto.decode(line)
                op = req.get("op")
                handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
                if handler is None:
                    raise InvalidArgument(f"unknown request {op!r}")
                answer = handler(conn, req)
            except Exception as e:
                if not isinstance(e, (DockyardError, OSError)):
                    log.exception("request failed")
                answer = proto.error_answer(e)
            if answer is _ANSWERED:
                continue
            if answer is None:
                conn.busy = True  # deferred: answered later by _answer
            else:
                self._answer(conn, answer)

    def _answer(self, conn: Conn, answer: dict[str, Any], fds: list[int] | None = None) -> None:
        if conn.closed:
            return
        data = proto.encode(answer)
        if fds:
            # The fd rides with the answer's first byte; the answer is the only thing this
            # connection has outstanding (the client sends one request and waits).
            self._flush(conn)
            try:
                n = conn.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))],
                                      socket.MSG_NOSIGNAL)
            except OSError:
                self._drop(conn)
                return
            data = data[n:]
        conn.wbuf += data
        was_busy = conn.busy
        conn.busy = False
        self._flush(conn)
        if was_busy:
            self._process(conn)

    def _flush(self, conn: Conn) -> None:
        while conn.wbuf and not conn.closed:
            try:
                n = conn.sock.send(conn.wbuf, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                break
            except OSError:
                self._drop(conn)
                return
            del conn.wbuf[:n]
        if conn.closed:
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.wbuf else 0)
        if want != conn.registered:
            self.sel.modify(conn.sock, want, _ConnHandler(self, conn))
            conn.registered = want

    def _drop(self, conn: Conn) -> None:
        """A client went away (maybe mid-request): forget it, touch nothing else."""
        if conn.closed:
            return
        conn.closed = True
        self.sel.unregister(conn.sock)
        conn.sock.close()
        for proc in self.procs.values():
            if conn in proc.waiters:
                proc.waiters.remove(conn)

    # requests ------------------------------------------------------------------------------

    def _resolve_runtime(self, name: Any) -> RuntimeSpec | None:
        """A create request's runtime: None for our own, in this process."""
        if name in (None, "", OWN_RUNTIME):
            return None
        if not isinstance(name, str):
            raise InvalidArgument(f"unknown or invalid runtime name: {name}")
        return lookup(self.root, name)

    def _runtime_for(self, spec: RuntimeSpec | None) -> Any:
        """The runtime driving containers made with SPEC (the in-process one for None)."""
        if spec is None:
            return self.runtime
        key = (spec.name, spec.path, spec.args)
        rt = self.oci.get(key)
        if rt is None:
            rt = self.oci[key] = OCIRuntime(spec, os.path.join(self.root, STATE_DIR, spec.name))
        return rt

    def _rt(self, c: Container) -> Any:
        """C's runtime, as recorded when it was created (so also after a restart)."""
        recorded = c.meta.get("runtime")
        return self._runtime_for(RuntimeSpec.from_dict(recorded) if recorded else None)

    def _container(self, req: dict[str, Any]) -> Container:
        cid = req.get("id")
        c = self.containers.get(cid) if isinstance(cid, str) else None
        if c is None:
            raise NotFound(f"No such container: {cid}")
        return c

    def op_ping(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "containers": len(self.containers)}

    def op_create(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        cid = req.get("id")
        if not isinstance(cid, str) or not cid or "/" in cid or cid in (".", ".."):
            raise InvalidArgument(f"invalid container id {cid!r}")
        if cid in self.containers or cid in self.procs:
            raise Conflict(f"container with id exists: {cid}")
        tty, want_stdin = bool(req.get("tty")), bool(req.get("stdin"))
        log_path = req.get("log_path")
        runtime = self._resolve_runtime(req.get("runtime"))
        rt = self._runtime_for(runtime)
        d = os.path.join(self.cdir, cid)
        os.mkdir(d, 0o700)
        opened: list[int] = []  # our ends, closed if anything fails
        theirs: list[int] = []  # the container's ends, always closed here after create
        console = None
        writer = None
        try:
            if log_path:
                writer = LogWriter(log_path, req.get("log_opts") or {}, driver=req.get("log_driver"))
            proc = Proc(id=cid, pid=0, tty=tty, log=writer)
            if tty:
                ours, console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    pid = rt.create(cid, req["bundle"], console_socket=console)
                    from dockyard.runtime.console import receive_master

                    master = receive_master(ours)
                finally:
                    ours.close()
                opened.append(master)
                proc.master = master
                if want_stdin:
                    proc.stdin_fd = os.dup(master)
                    opened.append(proc.stdin_fd)
                    os.set_blocking(proc.stdin_fd, False)
            else:
                if want_stdin:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    theirs.append(r)
                    opened.append(w)
                    proc.stdin_fd = w
                    os.set_blocking(w, False)
                    stdin_fd = r
                else:
                    stdin_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                    theirs.append(stdin_fd)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                opened.append(out_r)
                theirs.append(out_w)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                opened.append(err_r)
                theirs.append(err_w)
                pid = rt.create(cid, req["bundle"], stdio=(stdin_fd, out_w, err_w))
        except BaseException:
            for fd in opened:
                os.close(fd)
            if writer is not None:
                writer.close()
            _remove_dir(d)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
            if console is not None:
                console.close()
        proc.pid = pid
        meta = {"id": cid, "bundle": req["bundle"], "tty": tty, "stdin": want_stdin, "log_path": log_path,
                "log_opts": req.get("log_opts") or {}, "log_driver": req.get("log_driver"), "pid": pid,
                "runtime": None if runtime is None else runtime.to_dict()}
        write_atomic(os.path.join(d, "meta.json"), json.dumps(meta).encode())
        c = Container(cid, meta, proc)
        proc.container = c
        if tty:
            self._add_output(proc, proc.master, "stdout")
        else:
            self._add_output(proc, out_r, "stdout")
            self._add_output(proc, err_r, "stderr")
        self.containers[cid] = c
        self.procs[cid] = proc
        self.by_pid[pid] = proc
        log.info("created container %s (pid %d)", cid, pid)
        return {"ok": True, "pid": pid}

    def op_start(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        self._rt(c).start(c.id)
        return {"ok": True}

    def op_kill(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        self._rt(c).kill(c.id, _signal_number(req.get("signal", signal.SIGTERM)), bool(req.get("all")))
        return {"ok": True}

    def op_pause(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        self._rt(c).pause(c.id)
        return {"ok": True}

    def op_resume(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        self._rt(c).resume(c.id)
        return {"ok": True}

    def op_delete(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        force = bool(req.get("force"))
        proc = c.proc
        if proc.exit is None and not force:
            try:
                status = self._rt(c).state(c.id)["status"]
            except NotFound:
                status = "stopped"
            if status in ("running", "paused"):
                raise Conflict(f"cannot delete container {c.id} that is not stopped: {status}")
        try:
            self._rt(c).delete(c.id, force=True)
        except NotFound:
            pass
        if proc.exit is None and proc.pid in self.by_pid:
            # Killed by the delete: reap it now, so waiters hear 137 and nothing lingers.
            try:
                _, status = os.waitpid(proc.pid, 0)
                self.by_pid.pop(proc.pid, None)
                self._exited(proc, _exit_code(status))
            except ChildProcessError:
                pass
        for e in list(c.execs.values()):
            self._close_proc(e)
            self.procs.pop(e.id, None)
        self._close_proc(proc)
        self.containers.pop(c.id, None)
        self.procs.pop(c.id, None)
        _remove_dir(os.path.join(self.cdir, c.id))
        log.info("deleted container %s", c.id)
        return {"ok": True}

    def _close_proc(self, proc: Proc) -> None:
        """Release everything PROC holds (its process may live on, unsupervised)."""
        for fd in list(proc.outputs):
            self.sel.unregister(fd)
            os.close(fd)
        proc.outputs.clear()
        proc.master = -1
        self._close_stdin(proc)
        if proc.pidfd >= 0:
            self.sel.unregister(proc.pidfd)
            os.close(proc.pidfd)
            proc.pidfd = -1
        self.by_pid.pop(proc.pid, None)
        if proc.log is not None:
            proc.log.close()
            proc.log = None
        for a in list(proc.attaches):
            self._detach(a)
        gone = proto.error_answer(NotFound(f"No such container: {proc.id}"))
        for conn in proc.waiters:
            self._answer(conn, gone)
        proc.waiters.clear()

    def _describe(self, c: Container) -> dict[str, Any]:
        try:
            st = self._rt(c).state(c.id)
        except NotFound:
            st = {"id": c.id, "status": "stopped", "pid": 0}
        if c.proc.exit is not None:
            st["status"] = "stopped"  # whatever the runtime says, we saw it exit
            st.update(c.proc.exit.to_dict())
        st["adopted"] = c.adopted
        st["tty"] = c.proc.tty
        st["execs"] = len(c.execs)  # those the daemon has not released yet
        return st

    def op_state(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "state": self._describe(self._container(req))}

    def op_list(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "containers": [self._describe(c) for c in self.containers.values()]}

    def op_wait(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any] | None:
        pid = req.get("id")
        proc = self.procs.get(pid) if isinstance(pid, str) else None
        if proc is None:
            raise NotFound(f"No such container: {pid}")
        if proc.exit is not None:
            return {"ok": True, **proc.exit.to_dict()}
        proc.waiters.append(conn)
        return None

    def op_attach(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        pid = req.get("id")
        proc = self.procs.get(pid) if isinstance(pid, str) else None
        if proc is None:
            raise NotFound(f"No such container: {pid}")
        if proc.done:
            raise Conflict("You cannot attach to a stopped container, start it first")
        theirs = self._new_attach(proc, bool(req.get("stdin")), bool(req.get("close_stdin")))
        try:
            self._answer(conn, {"ok": True, "tty": proc.tty}, [theirs.fileno()])
        finally:
            theirs.close()
        return _ANSWERED

    def op_resize(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        pid = req.get("id")
        proc = self.procs.get(pid) if isinstance(pid, str) else None
        if proc is None:
            raise NotFound(f"No such container: {pid}")
        h, w = int(req.get("height", 0)), int(req.get("width", 0))
        if not (0 <= h < 65536 and 0 <= w < 65536):
            raise InvalidArgument(f"invalid terminal size {h}x{w}")
        if proc.master < 0:
            return {"ok": True}  # no terminal: nothing to resize (containerd's shims agree)
        fcntl.ioctl(proc.master, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
        return {"ok": True}

    def op_exec(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        eid = req.get("exec_id")
        if not isinstance(eid, str) or not eid:
            raise InvalidArgument("exec: exec_id is required")
        if eid in self.procs:
            raise Conflict(f"exec id in use: {eid}")
        tty, want_stdin = bool(req.get("tty")), bool(req.get("stdin"))
        process = dict(req.get("process") or {})
        process["terminal"] = tty
        proc = Proc(id=eid, pid=0, tty=tty, container=c)
        opened: list[int] = []
        theirs: list[int] = []
        try:
            if tty:
                ours, console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    pid = self._rt(c).exec(c.id, process, console_socket=console, detach=True)
                    from dockyard.runtime.console import receive_master

                    proc.master = receive_master(ours)
                    opened.append(proc.master)
                finally:
                    ours.close()
                    console.close()
                if want_stdin:
                    proc.stdin_fd = os.dup(proc.master)
                    opened.append(proc.stdin_fd)
                    os.set_blocking(proc.stdin_fd, False)
                outs = [(proc.master, "stdout")]
            else:
                if want_stdin:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    theirs.append(r)
                    opened.append(w)
                    os.set_blocking(w, False)
                    proc.stdin_fd, stdin_fd = w, r
                else:
                    stdin_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                    theirs.append(stdin_fd)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                opened += [out_r, err_r]
                theirs += [out_w, err_w]
                pid = self._rt(c).exec(c.id, process, detach=True, stdio=(stdin_fd, out_w, err_w))
                outs = [(out_r, "stdout"), (err_r, "stderr")]
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        proc.pid = pid
        for fd, stream in outs:
            self._add_output(proc, fd, stream)
        c.execs[eid] = proc
        self.procs[eid] = proc
        self.by_pid[pid] = proc
        # The attach socket exists before any output can be read, so none is lost.
        theirs_sock = self._new_attach(proc, want_stdin, True)
        try:
            self._answer(conn, {"ok": True, "pid": pid, "tty": tty}, [theirs_sock.fileno()])
        finally:
            theirs_sock.close()
        return _ANSWERED

    def op_release(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        """The daemon has an exec's exit code: forget the exec (at once when it has
        ended and its output is drained, else then), so that a container running for
        months with a health check does not keep every probe."""
        eid = req.get("id")
        proc = self.procs.get(eid) if isinstance(eid, str) else None
        if proc is None:
            return {"ok": True}
        c = proc.container
        if c is None or c.proc is proc:
            raise InvalidArgument(f"{eid} is a container, not an exec")
        proc.released = True
        if proc.done:
            self._forget_exec(proc)
        return {"ok": True}

    def _forget_exec(self, proc: Proc) -> None:
        self._close_proc(proc)
        if proc.container is not None:
            proc.container.execs.pop(proc.id, None)
        self.procs.pop(proc.id, None)

    def op_shutdown(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        if self.containers and not req.get("force"):
            raise Conflict(f"the monitor still supervises {len(self.containers)} containers")
        self.stopping = True
        return {"ok": True}


class _Answered(dict):
    """Marker: the handler answered itself (with fds)."""


_ANSWERED = _Answered()


class _ConnHandler:
    __slots__ = ("monitor", "conn")

    def __init__(self, monitor: Monitor, conn: Conn) -> None:
        self.monitor, self.conn = monitor, conn

    def __call__(self, key: selectors.SelectorKey, mask: int) -> None:
        self.monitor._on_conn(self.conn, mask)


def _child_signals() -> None:
    """In a child forked by the runtime: the defaults a container should start with."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    # Python itself ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _remove_dir(d: str) -> None:
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return
    for e in entries:
        os.unlink(e.path)
    os.rmdir(d)


# -- the monitor's entry point --------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dockyard-monitor", description="Dockyard's container monitor")
    parser.add_argument("--root", required=True, help="the exec-root it supervises")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s [%(process)d] %(message)s")
    m = Monitor(args.root)
    if not m.acquire():
        log.info("another monitor serves %s", m.root)
        return 0
    m.setup()
    try:
        m.run()
    finally:
        m.teardown()
    return 0


# -- the client -------------------------------------------------------------------------------

class AttachStream:
    """The client's end of an attach socket (see monitor_protocol)."""

    def __init__(self, sock: socket.socket, tty: bool) -> None:
        self.sock = sock
        self.tty = tty

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next piece of output as (stream id, data); None at end-of-file."""
        self.sock.settimeout(timeout)
        msg = self.sock.recv(proto.MAX_MESSAGE + 1)
        if not msg:
            return None
        return msg[0], msg[1:]

    def write(self, data: bytes) -> None:
        self.sock.settimeout(None)
        for i in range(0, len(data), proto.MAX_MESSAGE):
            self.sock.send(bytes((proto.STDIN,)) + data[i:i + proto.MAX_MESSAGE])

    def close_stdin(self) -> None:
        self.sock.settimeout(None)
        self.sock.send(bytes((proto.STDIN,)))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AttachStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MonitorClient:
    """Synchronous access to the monitor of EXEC_ROOT. Thread-safe: calls share one
    connection under a lock; wait/attach/exec take a connection each."""

    def __init__(self, exec_root: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.exec_root = os.path.abspath(exec_root)
        self.path = os.path.join(self.exec_root, SOCKET_NAME)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._rbuf = bytearray()
        self.process: subprocess.Popen[bytes] | None = None  # set when ensure_monitor spawned it

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise SystemFailure(f"container monitor at {self.path}: {e.strerror}") from None
        return sock

    @staticmethod
    def _exchange(sock: socket.socket, rbuf: bytearray, msg: dict[str, Any], timeout: float | None,
                  want_fds: bool = False) -> tuple[dict[str, Any], list[int]]:
        sock.settimeout(timeout)
        sock.sendall(proto.encode(msg))
        fds: list[int] = []
        while b"\n" not in rbuf:
            if want_fds:
                data, got, _flags, _addr = socket.recv_fds(sock, 65536, 4)
                fds += got
            else:
                data = sock.recv(65536)
            if not data:
                for fd in fds:
                    os.close(fd)
                raise SystemFailure("the container monitor closed the connection")
            rbuf += data
        nl = rbuf.index(b"\n")
        answer = proto.decode(bytes(rbuf[:nl]))
        del rbuf[:nl + 1]
        if not answer.get("ok"):
            for fd in fds:
                os.close(fd)
            proto.raise_error(answer)
        return answer, fds

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with self._lock:
            if self._sock is None:
                self._sock = self._connect()
                self._rbuf.clear()
            try:
                answer, _ = self._exchange(self._sock, self._rbuf, {"op": op, **args}, self.timeout)
            except (OSError, SystemFailure) as e:
                if isinstance(e, SystemFailure) and "closed the connection" not in str(e):
                    raise
                self._sock.close()
                self._sock = None
                if isinstance(e, OSError):
                    raise SystemFailure(f"container monitor: {e}") from None
                raise
            return answer

    def _call_own(self, msg: dict[str, Any], timeout: float | None, want_fds: bool = False) -> tuple[dict[str, Any], list[int]]:
        sock = self._connect()
        try:
            return self._exchange(sock, bytearray(), msg, timeout, want_fds)
        except OSError as e:
            raise SystemFailure(f"container monitor: {e}") from None
        finally:
            sock.close()

    # requests
    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    @property
    def pid(self) -> int:
        return int(self.ping()["pid"])

    def create(self, cid: str, bundle: str, *, tty: bool = False, stdin: bool = False,
               log_path: str | None = None, log_opts: dict[str, str] | None = None,
               log_driver: str | None = None, runtime: str | None = None) -> int:
        """Create CID from BUNDLE with RUNTIME (None: the monitor's own in-process one;
        else the name of an OCI runtime binary such as runc or crun)."""
        return int(self.call("create", id=cid, bundle=str(bundle), tty=tty, stdin=stdin,
                             log_path=None if log_path is None else str(log_path),
                             log_opts=log_opts or {}, log_driver=log_driver,
                             runtime=runtime)["pid"])

    def start(self, cid: str) -> None:
        self.call("start", id=cid)

    def kill(self, cid: str, sig: int | str = signal.SIGTERM, all: bool = False) -> None:
        self.call("kill", id=cid, signal=int(sig) if isinstance(sig, int) else sig, all=all)

    def pause(self, cid: str) -> None:
        self.call("pause", id=cid)

    def resume(self, cid: str) -> None:
        self.call("resume", id=cid)

    def delete(self, cid: str, force: bool = False) -> None:
        self.call("delete", id=cid, force=force)

    def state(self, cid: str) -> dict[str, Any]:
        return self.call("state", id=cid)["state"]

    def list(self) -> list[dict[str, Any]]:
        return self.call("list")["containers"]

    def wait(self, cid: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until CID (a container or exec id) exits: {exit_code, exited_at, ...}."""
        answer, _ = self._call_own({"op": "wait", "id": cid}, timeout)
        answer.pop("ok", None)
        return answer

    def attach(self, cid: str, stdin: bool = False, close_stdin: bool = False) -> AttachStream:
        answer, fds = self._call_own({"op": "attach", "id": cid, "stdin": stdin, "close_stdin": close_stdin},
                                     self.timeout, want_fds=True)
        return AttachStream(socket.socket(fileno=fds[0]), bool(answer.get("tty")))

    def resize(self, cid: str, height: int, width: int) -> None:
        self.call("resize", id=cid, height=height, width=width)

    def exec(self, cid: str, exec_id: str, process: dict[str, Any], *, tty: bool = False,
             stdin: bool = False) -> tuple[int, AttachStream]:
        answer, fds = self._call_own({"op": "exec", "id": cid, "exec_id": exec_id, "process": process,
                                      "tty": tty, "stdin": stdin}, self.timeout, want_fds=True)
        return int(answer["pid"]), AttachStream(socket.socket(fileno=fds[0]), tty)

    def release(self, exec_id: str) -> None:
        """Let the monitor forget exec EXEC_ID, whose exit the caller has recorded."""
        self.call("release", id=exec_id)

    def shutdown(self, force: bool = False) -> None:
        self.call("shutdown", force=force)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> MonitorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_monitor(exec_root: str | os.PathLike[str], timeout: float = 15.0) -> MonitorClient:
    """A client of EXEC_ROOT's monitor, starting the monitor when none answers."""
    client = MonitorClient(exec_root)
    try:
        client.ping()
        return client
    except SystemFailure:
        client.close()
    os.makedirs(client.exec_root, 0o711, exist_ok=True)
    logf = open(os.path.join(client.exec_root, LOG_NAME), "ab")
    try:
        # Its own session: a signal to the daemon's process group or terminal spares it.
        proc = subprocess.Popen([sys.executable, "-m", "dockyard.daemon.monitor", "--root", client.exec_root],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
                                start_new_session=True, close_fds=True)
    finally:
        logf.close()
    client.process = proc
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return client
        except SystemFailure:
            client.close()
        code = proc.poll()
        if code is not None and code != 0:
            raise SystemFailure(f"the container monitor exited with {code}: see "
                                f"{os.path.join(client.exec_root, LOG_NAME)}")
        if time.monotonic() > deadline:
            raise SystemFailure(f"the container monitor did not answer within {timeout}s: see "
                                f"{os.path.join(client.exec_root, LOG_NAME)}")
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
