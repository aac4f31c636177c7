"""Container lifecycle: create, start, wait, stop/kill, remove, and live restore.

The records live in the ContainerStore, the processes under the container monitor
(one process supervising every container, outliving the daemon). Each started
container has a waiter thread blocked in monitor.wait (a connection of its own); when
it answers, the exit is recorded, the rootfs unmounted, and an AutoRemove container
removed. Every method here blocks: the API calls them in threads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from dockyard.daemon import etcfiles, health, ocispec
from dockyard.daemon import restart as restart_mod
from dockyard.daemon.containers import Container, ContainerStore, prune_filter, summary
from dockyard.daemon.filesystem import container_lock
from dockyard.daemon.logs import log_path, parse_log_config
from dockyard.daemon.monitor import AttachStream, MonitorClient, ensure_monitor
from dockyard.daemon.ociruntime import RuntimeTable
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure
from dockyard.image.store import ImageStore

log = logging.getLogger(__name__)

EmitFn = Callable[[str, Container, dict[str, str] | None], None]

WAIT_CONDITIONS = ("", "not-running", "next-exit", "removed")

# HostConfig fields the lifecycle itself honours, so not the OCI spec's business.
_HANDLED_ELSEWHERE = ("LogConfig", "RestartPolicy", "AutoRemove")


def _now_ns() -> int:
    return time.time_ns()


def _signal_number(sig: str | int) -> int:
    """dockerd's signal.ParseSignal: a number, or a name with or without SIG."""
    if isinstance(sig, int):
        return sig
    text = str(sig).strip()
    if text.isdigit():
        n = int(text)
        if n <= 0:
            raise InvalidArgument(f"Invalid signal: {sig}")
        return n
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {sig}") from None


def _start_error_code(exc: Exception) -> int:
    """The exit code dockerd records for a container that could not start: 127 when
    the command is not there, 126 when it cannot be run, else 128."""
    text = str(exc).lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text:
        return 126
    return 128


class Lifecycle:
    """Containers of one daemon: IMAGES gives the rootfs, MONITOR runs them."""

    def __init__(self, data_root: str, exec_root: str, images: ImageStore, emit: EmitFn,
                 runtimes: RuntimeTable | None = None) -> None:
        self.store = ContainerStore(os.path.join(data_root, "containers"))
        # The OCI runtimes containers may name, published for the monitor (another process).
        self.runtimes = runtimes or RuntimeTable.from_config(None, None)
        os.makedirs(exec_root, mode=0o700, exist_ok=True)
        self.runtimes.publish(exec_root)
        # Exit codes of removed containers, for waits with condition=removed.
        self._last_code: dict[str, int] = {}
        self.images = images
        self.exec_root = exec_root
        self.bundles = os.path.join(exec_root, "bundles")
        os.makedirs(self.bundles, mode=0o700, exist_ok=True)
        self.emit = emit
        self._monitor: MonitorClient | None = None
        self._monitor_lock = threading.Lock()
        self._lock = threading.RLock()
        # Per container: notified (under _cond) whenever its state changes.
        self._cond = threading.Condition(self._lock)
        self._waiters: dict[str, threading.Thread] = {}
        # Attach requests made before start: the start thread attaches them between
        # monitor.create and monitor.start, so no output is lost.
        self._pending_attach: dict[str, list[tuple[Callable[[AttachStream | None], None], bool]]] = {}
        self._starting: set[str] = set()
        # Exec instances (in memory only, as dockerd keeps them): id -> record.
        self._execs: dict[str, dict[str, Any]] = {}
        # Observers (health checks, restart policies...): called after a container
        # started, and after its exit was recorded (from the waiter thread).
        self.on_start: list[Callable[[Container], None]] = []
        self.on_exit: list[Callable[[Container], None]] = []
        # ... and after a pause and an unpause (health checks stop while frozen).
        self.on_pause: list[Callable[[Container], None]] = []
        self.on_unpause: list[Callable[[Container], None]] = []
        # Restart policies: per container, the back-off and a pending restart.
        self._restarts: dict[str, restart_mod.Manager] = {}
        self._started_at: dict[str, float] = {}  # monotonic, for the back-off reset

    @property
    def monitor(self) -> MonitorClient:
        with self._monitor_lock:
            if self._monitor is None:
                self._monitor = ensure_monitor(self.exec_root)
            return self._monitor

    def close(self) -> None:
        with self._monitor_lock:
            if self._monitor is not None:
                self._monitor.close()

    # -- paths ------------------------------------------------------------------------

    def rootfs(self, cid: str) -> str:
        return os.path.join(self.store.dir(cid), "rootfs")

    def bundle(self, cid: str) -> str:
        return os.path.join(self.bundles, cid)

    # -- create -----------------------------------------------------------------------

    def create(self, name: str, config: dict[str, Any], host_config: dict[str, Any]) -> Container:
        # As dockerd, checked before the image is looked up, and stored resolved.
        runtime = self.runtimes.resolve(host_config.get("Runtime"))
        health.validate(config.get("Healthcheck"))  # before the image, as dockerd
        image_ref = config.get("Image") or ""
        if not image_ref:
            raise InvalidArgument("Config.Image: no image specified")
        try:
            img = self.images.get(image_ref)
        except NotFound:
            raise NotFound(f"No such image: {image_ref}") from None
        image_config = dict(img.config.config or {})
        args = ocispec.command(config, image_config)
        # What the daemon stores as Config: the request merged with the image's defaults
        # (as dockerd's merge does), so inspect shows Cmd/Env/WorkingDir as they run.
        cfg = dict(config)
        if not cfg.get("Cmd") and not cfg.get("Entrypoint"):
            cfg["Cmd"] = image_config.get("Cmd")
        if cfg.get("Entrypoint") is None:
            cfg["Entrypoint"] = image_config.get("Entrypoint")
        cfg["Env"] = ocispec.merge_env(list(image_config.get("Env") or []), cfg.get("Env") or [])
        if not cfg.get("WorkingDir"):
            cfg["WorkingDir"] = image_config.get("WorkingDir") or ""
        if not cfg.get("Labels"):
            cfg["Labels"] = dict(image_config.get("Labels") or {})
        if not cfg.get("StopSignal") and image_config.get("StopSignal"):
            cfg["StopSignal"] = image_config["StopSignal"]
        health.merge_config(cfg, image_config)
        hc = dict(host_config)
        hc["Runtime"] = runtime
        hc.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
        hc.setdefault("NetworkMode", "default")
        hc.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
        restart_mod.validate(hc.get("RestartPolicy"), bool(hc.get("AutoRemove")))
        log_config = hc.get("LogConfig") or {}
        parse_log_config(log_config.get("Type") or None, log_config.get("Config") or {})
        if (hc.get("Memory") or 0) > 0 and not hc.get("MemorySwap"):
            hc["MemorySwap"] = hc["Memory"] * 2  # dockerd's default: as much swap as memory
        ocispec.check_create(cfg, hc, image_config, _HANDLED_ELSEWHERE)
        c = Container.new(image_id=str(img.id), config=cfg, host_config=hc, path=args[0],
                          args=args[1:], name=name)
        if not cfg.get("Hostname"):
            cfg["Hostname"] = c.ID[:12]
            c.Config = cfg
        c = self.store.add(c)
        try:
            d = self.store.dir(c.ID)
            c.LogPath = str(log_path(d, c.ID))
            etc = etcfiles.write_etc_files(d, hostname=cfg["Hostname"],
                                           domainname=cfg.get("Domainname") or "",
                                           extra_hosts=hc.get("ExtraHosts"), dns=hc.get("Dns"),
                                           dns_search=hc.get("DnsSearch"),
                                           dns_options=hc.get("DnsOptions"),
                                           network_mode=hc.get("NetworkMode") or "none")
            c.HostnamePath = etc["/etc/hostname"]
            c.HostsPath = etc["/etc/hosts"]
            c.ResolvConfPath = etc["/etc/resolv.conf"]
            top = self.images.unpack(img)
            self.images.snapshots.prepare_container(c.ID, str(top) if top else None)
            c = self.store.save(c)
        except BaseException:
            self._discard(c.ID)
            raise
        self.emit("create", c, None)
        return c

    def _discard(self, cid: str) -> None:
        try:
            self.images.snapshots.remove(cid)
        except DockyardError:
            pass
        try:
            self.store.remove(cid)
        except DockyardError:
            log.exception("removing container %s", cid)

    # -- start ------------------------------------------------------------------------

    def start(self, ref: str) -> None:
        c = self.store.get(ref)
        cid = c.ID
        with self._lock:
            if c.State.Running or cid in self._starting:
                raise _NotModified()
            if c.State.RemovalInProgress:
                raise Conflict(f"cannot start container {cid}: removal in progress")
            self._starting.add(cid)
            # A start by the user begins the restart policy afresh (dockerd's
            # ResetRestartManager): no back-off, no count, not "manually stopped".
            self._restart_manager(cid, reset=True)
            if c.RestartCount or c.HasBeenManuallyStopped:
                c.RestartCount = 0
                c.HasBeenManuallyStopped = False
                c = self.store.save(c)
        self._start_guarded(c)

    def _start_guarded(self, c: Container) -> None:
        """_start, undoing what it did when it fails. The caller has put C in _starting."""
        cid = c.ID
        try:
            self._start(c)
        except BaseException as exc:
            with self._cond:
                self._starting.discard(cid)
                for cb, _stdin in self._pending_attach.pop(cid, []):
                    cb(None)
                self._cond.notify_all()
            self._cleanup_runtime(cid)
            if isinstance(exc, DockyardError):
                self.store.update_state(cid, Error=str(exc), ExitCode=_start_error_code(exc))
                if c.HostConfig.get("AutoRemove"):
                    # As dockerd: a --rm container that cannot start is removed (the
                    # client waits for that), with the error still reported.
                    try:
                        self.remove(cid, force=True)
                    except DockyardError:
                        log.exception("auto-removing container %s", cid)
            raise

    def _start(self, c: Container) -> None:
        cid = c.ID
        rootfs = self.rootfs(cid)
        os.makedirs(rootfs, mode=0o755, exist_ok=True)
        snaps = self.images.snapshots
        # Not while a copy into the stopped container has its root mounted (docker cp).
        with container_lock(cid):
            snaps.mount_container(cid, rootfs)
        image_config: dict[str, Any] = {}
        try:
            image_config = dict(self.images.get(c.Image).config.config or {})
        except NotFound:
            pass
        etc = {"/etc/hostname": c.HostnamePath, "/etc/hosts": c.HostsPath,
               "/etc/resolv.conf": c.ResolvConfPath}
        # Config already holds the image's merged defaults; the image config still
        # matters for the user and anything build_spec reads from it.
        config = dict(c.Config)
        spec = ocispec.build_spec(container_id=cid, name=c.Name, config=config,
                                  host_config=c.HostConfig, image_config=image_config,
                                  rootfs=rootfs, etc_files=etc, init_path=ocispec.find_init(),
                                  handled_elsewhere=_HANDLED_ELSEWHERE)
        bundle = self.bundle(cid)
        os.makedirs(bundle, mode=0o700, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(json.dumps(spec))  # dumps uses the C encoder; dump to a file does not
        mon = self.monitor
        # A container left in the monitor by an earlier run (exited) is replaced.
        try:
            mon.delete(cid, force=True)
        except NotFound:
            pass
        lc = c.HostConfig.get("LogConfig") or {}
        driver = lc.get("Type") or "json-file"
        pid = mon.create(cid, bundle, tty=bool(c.Config.get("Tty")),
                         stdin=bool(c.Config.get("OpenStdin")),
                         log_path=None if driver == "none" else c.LogPath,
                         log_opts=lc.get("Config") or {}, log_driver=driver,
                         runtime=c.HostConfig.get("Runtime") or None)
        with self._cond:
            pending = self._pending_attach.pop(cid, [])
        for cb, want_stdin in pending:
            try:
                cb(mon.attach(cid, stdin=want_stdin and bool(c.Config.get("OpenStdin")),
                              close_stdin=bool(c.Config.get("StdinOnce"))))
            except DockyardError:
                log.exception("attaching to %s", cid)
                cb(None)
        mon.start(cid)
        with self._cond:
            self.store.update_state(cid, Running=True, Restarting=False, Pid=pid,
                                    StartedAt=_now_ns(), ExitCode=0, Error="", OOMKilled=False,
                                    Dead=False, FinishedAt="0001-01-01T00:00:00Z")
            self._started_at[cid] = time.monotonic()
            self._starting.discard(cid)
            self._spawn_waiter(cid)
            self._cond.notify_all()
        started = self.store.get(cid)
        self.emit("start", started, None)
        self._notify(self.on_start, started)

    def _notify(self, observers: list[Callable[[Container], None]], c: Container) -> None:
        for fn in observers:
            try:
                fn(c)
            except Exception:  # an observer's failure must not break the lifecycle
                log.exception("observer %r of container %s", fn, c.ID)

    # -- exits ------------------------------------------------------------------------

    def _spawn_waiter(self, cid: str) -> None:
        t = threading.Thread(target=self._wait_exit, args=(cid,), name=f"wait-{cid[:12]}",
                             daemon=True)
        self._waiters[cid] = t
        t.start()

    def _wait_exit(self, cid: str) -> None:
        try:
            rec = self.monitor.wait(cid, timeout=None)
        except NotFound:
            rec = {"exit_code": 137, "error": "the container monitor lost the container"}
        except Exception as exc:  # the monitor went away: nothing more to learn
            log.error("waiting for container %s: %s", cid, exc)
            return
        self._exited(cid, rec)

    def _exited(self, cid: str, rec: dict[str, Any]) -> None:
        code = int(rec.get("exit_code", 0))
        # Release the run's mount and records before anyone learns of the exit: a start
        # that follows at once (restart, a policy) must not have its mount taken away.
        self._cleanup_runtime(cid)
        try:
            with self._cond:
                delay = self._restart_delay(self.store.get(cid), code)
                # A container about to restart stays "running" (and "restarting"), as in
                # dockerd, so that stop/rm/wait treat it as one that runs.
                self.store.update_state(cid, Running=delay is not None,
                                        Restarting=delay is not None, Paused=False, Pid=0,
                                        ExitCode=code,
                                        FinishedAt=rec.get("exited_at") or _now_ns(),
                                        OOMKilled=bool(rec.get("oom_killed")),
                                        Error=rec.get("error") or "")
                self._waiters.pop(cid, None)
                self._cond.notify_all()
            c = self.store.get(cid)
        except NotFound:
            return  # removed meanwhile (rm -f)
        self._forget_execs_of(cid)
        self.emit("die", c, {"exitCode": str(code)})
        self._notify(self.on_exit, c)
        if delay is not None:
            self._restart_manager(cid).schedule(delay, lambda: self._policy_restart(cid),
                                                f"restart-{cid[:12]}")
            return
        if c.HostConfig.get("AutoRemove"):
            try:
                self.remove(cid, force=True)
            except DockyardError:
                log.exception("auto-removing container %s", cid)

    # -- restart policies -------------------------------------------------------------

    def _restart_manager(self, cid: str, reset: bool = False) -> restart_mod.Manager:
        with self._lock:
            m = self._restarts.get(cid)
            if m is None or reset:
                if m is not None:
                    m.cancel_timer()
                m = self._restarts[cid] = restart_mod.Manager()
            return m

    def _cancel_restart(self, cid: str) -> bool:
        """The user stopped, killed or removed CID: no more policy restarts until it is
        started again (dockerd's ExitOnNext). Whether a restart was pending."""
        m = self._restart_manager(cid)
        m.cancelled = True
        return m.cancel_timer()

    def _restart_delay(self, c: Container, code: int) -> float | None:
        if c.HostConfig.get("AutoRemove") or c.State.RemovalInProgress:
            return None
        started = self._started_at.pop(c.ID, None)
        ran = time.monotonic() - started if started is not None else 0.0
        return self._restart_manager(c.ID).decide(c.HostConfig.get("RestartPolicy"), code,
                                                  c.HasBeenManuallyStopped, ran,
                                                  c.RestartCount)

    def _policy_restart(self, cid: str) -> None:
        with self._cond:
            m = self._restarts.get(cid)
            try:
                c = self.store.get(cid)
            except NotFound:
                return
            if m is None or m.cancelled or not c.State.Restarting or cid in self._starting:
                return
            m.timer = None
            self._starting.add(cid)
            c.RestartCount += 1
            c = self.store.save(c)
        try:
            self._start_guarded(c)
        except DockyardError as exc:
            log.error("restarting container %s: %s", cid, exc)
            with self._cond:
                if cid in self.store:
                    self.store.update_state(cid, Running=False, Restarting=False)
                self._cond.notify_all()

    def _end_restarting(self, cid: str) -> bool:
        """Turn a container waiting for its policy restart into a stopped one."""
        with self._cond:
            self._cancel_restart(cid)
            c = self.store.get(cid)
            if not c.State.Restarting:
                return False
            self.store.update_state(cid, Running=False, Restarting=False)
            self._cond.notify_all()
        return True

    def _cleanup_runtime(self, cid: str) -> None:
        """Release what a run holds: the monitor's record, the rootfs mount, the bundle."""
        try:
            self.monitor.delete(cid, force=True)
        except NotFound:
            pass
        except DockyardError as exc:
            log.warning("deleting %s from the monitor: %s", cid, exc)
        try:
            self.images.snapshots.unmount_container(cid)
        except DockyardError as exc:
            log.debug("unmounting %s: %s", cid, exc)
        shutil.rmtree(self.bundle(cid), ignore_errors=True)

    def restore(self) -> None:
        """Live restore: containers the store thinks running are matched with the
        monitor's; running ones get a waiter again, the others their exit."""
        everything = self.store.all()
        # Containers the daemon died on while they waited for a policy restart.
        for c in everything:
            if c.State.Restarting:
                self.store.update_state(c.ID, Running=False, Restarting=False)
        running = [c for c in everything if c.State.Running and not c.State.Restarting]
        self._restart_stopped([c.ID for c in everything if c not in running])
        if not running:
            return
        try:
            known = {s["id"]: s for s in self.monitor.list()}
        except DockyardError as exc:
            log.error("live restore: %s", exc)
            known = {}
        for c in running:
            st = known.get(c.ID)
            if st is None:
                log.warning("container %s is gone from the monitor", c.ID)
                self._exited(c.ID, {"exit_code": 128, "error": "container lost"})
            elif st.get("status") == "stopped" and "exit_code" in st:
                self._exited(c.ID, st)
            else:
                with self._cond:
                    self._spawn_waiter(c.ID)
                # Observers resume what they do for a running container (health checks).
                self._notify(self.on_start, self.store.get(c.ID))

    def _restart_stopped(self, ids: list[str]) -> None:
        """At daemon start, start again the stopped containers whose policy says so, in
        the background (the daemon serves meanwhile)."""
        todo = []
        for cid in ids:
            try:
                c = self.store.get(cid)
            except NotFound:
                continue
            if c.State.Running or c.State.Dead or not c.HasBeenStartedBefore:
                continue
            if restart_mod.restarts_on_daemon_start(c.HostConfig.get("RestartPolicy"),
                                                     c.State.ExitCode,
                                                     c.HasBeenManuallyStopped, c.RestartCount):
                todo.append(cid)

        def run() -> None:
            for cid in todo:
                try:
                    self.start(cid)
                except _NotModified:
                    pass
                except DockyardError as exc:
                    log.error("restarting container %s at daemon start: %s", cid, exc)

        if todo:
            threading.Thread(target=run, name="restart-on-start", daemon=True).start()

    # -- wait -------------------------------------------------------------------------

    def wait(self, ref: str, condition: str = "not-running",
             cancelled: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        if condition not in WAIT_CONDITIONS:
            raise InvalidArgument(f"invalid condition: {condition!r}")
        c = self.store.get(ref)
        cid = c.ID
        with self._cond:
            start_finished = self._finished_marker(cid)
            while True:
                if cancelled():
                    raise SystemFailure("wait cancelled")
                if cid not in self.store:
                    if condition == "removed":
                        return {"StatusCode": self._last_code.get(cid, 0), "Error": None}
                    raise NotFound(f"No such container: {cid}")
                cur = self.store.get(cid)
                running = cur.State.Running or cid in self._starting
                if condition in ("", "not-running") and not running:
                    return {"StatusCode": cur.State.ExitCode, "Error": None}
                # An exit that leads to a policy restart ends a wait too, as in dockerd.
                if condition in ("", "not-running") and cur.State.Restarting and \
                        self._finished_marker(cid) != start_finished:
                    return {"StatusCode": cur.State.ExitCode, "Error": None}
                if condition == "next-exit" and not running and \
                        self._finished_marker(cid) != start_finished:
                    return {"StatusCode": cur.State.ExitCode, "Error": None}
                self._cond.wait(timeout=1.0)

    def _finished_marker(self, cid: str) -> str:
        try:
            return self.store.get(cid).State.FinishedAt
        except NotFound:
            return ""

    # -- signals ----------------------------------------------------------------------

    def kill(self, ref: str, sig: str | int = "SIGKILL") -> None:
        c = self.store.get(ref)
        num = _signal_number(sig or "SIGKILL")
        if not c.State.Running:
            raise Conflict(f"Cannot kill container: {c.ID}: container {c.ID} is not running")
        if c.State.Restarting:
            raise Conflict(f"Cannot kill container: {c.ID}: Container {c.ID} is restarting, "
                           "wait until the container is running")
        final = num == signal.SIGKILL or num == self._stop_signal(c)
        if final:
            self._cancel_restart(c.ID)  # dockerd's ExitOnNext
        self.monitor.kill(c.ID, num)
        self.emit("kill", c, {"signal": str(num)})
        if final and c.State.Paused:
            self._resume_quietly(c.ID)

    @staticmethod
    def _stop_signal(c: Container) -> int:
        try:
            return _signal_number(c.Config.get("StopSignal") or "SIGTERM")
        except InvalidArgument:
            return int(signal.SIGTERM)

    def _resume_quietly(self, cid: str) -> None:
        """Thaw a paused container a signal was sent to, so that it can act on it."""
        try:
            self.monitor.resume(cid)
        except DockyardError as exc:
            log.debug("resuming %s: %s", cid, exc)
            return
        with self._cond:
            if cid in self.store:
                self.store.update_state(cid, Paused=False)

    def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> bool:
        """False when it was not running (dockerd's 304)."""
        c = self.store.get(ref)
        if not c.State.Running:
            return False
        num = _signal_number(sig or c.Config.get("StopSignal") or "SIGTERM")
        with self._cond:
            c = self.store.get(c.ID)
            if not c.HasBeenManuallyStopped:
                c.HasBeenManuallyStopped = True
                c = self.store.save(c)
        self._cancel_restart(c.ID)
        if self._end_restarting(c.ID):
            self.emit("stop", self.store.get(c.ID), None)
            return True
        if timeout is None:
            timeout = c.Config.get("StopTimeout")
            if timeout is None:
                timeout = 10
        try:
            self.monitor.kill(c.ID, num)
        except DockyardError as exc:
            log.debug("stop signal to %s: %s", c.ID, exc)
        if c.State.Paused:
            self._resume_quietly(c.ID)
        if not self._wait_stopped(c.ID, timeout):
            try:
                self.monitor.kill(c.ID, signal.SIGKILL)
            except DockyardError as exc:
                log.debug("SIGKILL to %s: %s", c.ID, exc)
            self._wait_stopped(c.ID, None)
        self.emit("stop", self.store.get(c.ID), None)
        return True

    def _wait_stopped(self, cid: str, timeout: float | None) -> bool:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._cond:
            while True:
                if cid not in self.store or not self.store.get(cid).State.Running:
                    return True
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 1.0))

    # -- remove -----------------------------------------------------------------------

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        del volumes  # no volumes yet
        c = self.store.get(ref)
        cid = c.ID
        if c.State.Running:
            if not force:
                state = "restarting" if c.State.Restarting else \
                    "paused" if c.State.Paused else "running"
                raise Conflict(f"You cannot remove a {state} container {cid}. Stop the "
                               "container before attempting removal or force remove")
            self._cancel_restart(cid)
            if self._end_restarting(cid):
                c = self.store.get(cid)
        if c.State.Running:
            if c.State.Paused:
                self._resume_quietly(cid)
            try:
                self.monitor.kill(cid, signal.SIGKILL)
            except DockyardError as exc:
                log.debug("kill %s: %s", cid, exc)
            self._wait_stopped(cid, 10)
        with self._cond:
            try:
                cur = self.store.get(cid)
            except NotFound:
                return  # removed meanwhile (AutoRemove)
            if cur.State.RemovalInProgress:
                raise Conflict(f"removal of container {cid} is already in progress")
            self.store.update_state(cid, RemovalInProgress=True)
        try:
            self._cleanup_runtime(cid)
            try:
                self.images.snapshots.remove(cid)
            except NotFound:
                pass
            self.store.remove(cid)
        except BaseException:
            with self._cond:
                if cid in self.store:
                    self.store.update_state(cid, RemovalInProgress=False)
            raise
        with self._cond:
            self._last_code[cid] = cur.State.ExitCode
            m = self._restarts.pop(cid, None)
            if m is not None:
                m.cancel_timer()
            self._started_at.pop(cid, None)
            self._cond.notify_all()
        self.emit("destroy", cur, None)

    # -- restart, pause, rename, prune --------------------------------------------------

    def restart(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.store.get(ref)
        self.stop(c.ID, timeout, sig)
        try:
            self.start(c.ID)
        except _NotModified:
            pass
        self.emit("restart", self.store.get(c.ID), None)

    def pause(self, ref: str) -> None:
        c = self.store.get(ref)
        with self._cond:
            c = self.store.get(c.ID)
            if not c.State.Running:
                raise Conflict(f"Container {c.ID} is not running")
            if c.State.Paused:
                raise Conflict(f"Container {c.ID} is already paused")
            if c.State.Restarting:
                raise Conflict(f"Container {c.ID} is restarting, wait until the container "
                               "is running")
            self.monitor.pause(c.ID)
            c = self.store.update_state(c.ID, Paused=True)
        self.emit("pause", c, None)
        self._notify(self.on_pause, c)

    def unpause(self, ref: str) -> None:
        c = self.store.get(ref)
        with self._cond:
            c = self.store.get(c.ID)
            if not c.State.Paused:
                raise Conflict(f"Container {c.ID} is not paused")
            self.monitor.resume(c.ID)
            c = self.store.update_state(c.ID, Paused=False)
        self.emit("unpause", c, None)
        self._notify(self.on_unpause, c)

    def rename(self, ref: str, new_name: str) -> None:
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        old, new = self.store.rename(ref, new_name)
        c = self.store.get(new)
        self.emit("rename", c, {"oldName": old})

    def prune(self, filters: Any) -> dict[str, Any]:
        """POST /containers/prune: remove the stopped containers FILTERS select (until,
        label, label!)."""
        match = prune_filter(filters)
        deleted: list[str] = []
        reclaimed = 0
        for c in self.store.all():
            if c.State.Running or not match(c):
                continue
            size = self.size_rw(c.ID)
            try:
                self.remove(c.ID)
            except (Conflict, NotFound) as exc:
                log.debug("prune: %s", exc)
                continue
            deleted.append(c.ID)
            reclaimed += size
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def size_rw(self, cid: str) -> int:
        """Bytes in the container's writable layer (what `ps -s` and df show)."""
        try:
            upper = self.images.snapshots.container_dirs(cid)[1]
        except DockyardError:
            return 0
        total = 0
        for root, dirs, files in os.walk(upper):
            for name in files + dirs:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                if not os.path.isdir(os.path.join(root, name)) or os.path.islink(
                        os.path.join(root, name)):
                    total += st.st_size
        return total

    # -- attach -----------------------------------------------------------------------

    def attach_request(self, ref: str, stdin: bool = False) -> _AttachRequest:
        """Register an attach onto the container REF names; the stream comes right away
        when it runs, else when it is started (the docker CLI attaches before it
        starts the container, and must see all of the output). With STDIN, what is
        written to the stream goes to the container's stdin (when it has OpenStdin)."""
        c = self.store.get(ref)
        req = _AttachRequest(self, c.ID)
        stdin = stdin and bool(c.Config.get("OpenStdin"))
        self.emit("attach", c, None)
        with self._cond:
            if not self.store.get(c.ID).State.Running:
                self._pending_attach.setdefault(c.ID, []).append((req.deliver, stdin))
                return req
        try:
            req.deliver(self.monitor.attach(c.ID, stdin=stdin,
                                            close_stdin=bool(c.Config.get("StdinOnce"))))
        except NotFound:
            req.deliver(None)
        return req

    def resize(self, ref: str, height: int, width: int) -> None:
        """Resize the container's terminal (dockerd answers 404/409 as here)."""
        c = self.store.get(ref)
        if not c.State.Running:
            raise Conflict(f"Container {c.ID} is not running")
        self.monitor.resize(c.ID, height, width)

    # -- exec -------------------------------------------------------------------------

    def exec_create(self, ref: str, body: dict[str, Any]) -> str:
        c = self.store.get(ref)
        if not c.State.Running:
            raise Conflict(f"Container {c.ID} is not running")
        if c.State.Paused:
            raise Conflict(f"Container {c.ID} is paused, unpause the container before exec")
        if body.get("Privileged"):
            raise InvalidArgument("privileged exec is not supported")
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            raise InvalidArgument("No exec command specified")
        env = body.get("Env") or []
        if not isinstance(env, list):
            raise InvalidArgument("Env must be a list of strings")
        wd = body.get("WorkingDir") or ""
        if wd and not wd.startswith("/"):
            raise InvalidArgument(f"the working directory '{wd}' is invalid, it needs to be "
                                  "an absolute path")
        eid = os.urandom(32).hex()
        rec = {"ID": eid, "ContainerID": c.ID, "Cmd": list(cmd), "Env": list(env),
               "WorkingDir": wd, "User": body.get("User") or "", "Tty": bool(body.get("Tty")),
               "AttachStdin": bool(body.get("AttachStdin")),
               "AttachStdout": bool(body.get("AttachStdout")),
               "AttachStderr": bool(body.get("AttachStderr")),
               "DetachKeys": str(body.get("DetachKeys") or ""),
               "Running": False, "Started": False, "ExitCode": None, "Pid": 0}
        with self._cond:
            self._execs[eid] = rec
        # dockerd's text: entrypoint, a space, the arguments (so "true " without any).
        self.emit(f"exec_create: {cmd[0]} {' '.join(cmd[1:])}", c, {"execID": eid})
        return eid

    def _exec_record(self, eid: str) -> dict[str, Any]:
        with self._cond:
            rec = self._execs.get(eid)
        if rec is None:
            raise NotFound(f"No such exec instance: {eid}")
        return rec

    def _exec_process(self, c: Container, rec: dict[str, Any]) -> dict[str, Any]:
        try:
            with open(os.path.join(self.bundle(c.ID), "config.json")) as f:
                base = dict(json.load(f).get("process") or {})
        except (OSError, ValueError):
            raise Conflict(f"Container {c.ID} is not running") from None
        proc = dict(base)
        proc["args"] = list(rec["Cmd"])
        env = ocispec.merge_env(list(base.get("env") or []), rec["Env"])
        if rec["User"]:
            resolved = ocispec.resolve_user(self.rootfs(c.ID), rec["User"])
            proc["user"] = resolved["user"]
        proc["env"] = env
        if rec["WorkingDir"]:
            proc["cwd"] = os.path.normpath(rec["WorkingDir"])
        proc["terminal"] = rec["Tty"]
        return proc

    def exec_start(self, eid: str, detach: bool, tty: bool | None = None,
                   console_size: tuple[int, int] | None = None) -> AttachStream | None:
        """Run exec EID; its output stream (None when DETACH). A waiter thread records
        the exit code. CONSOLE_SIZE (height, width) sizes its terminal from the start."""
        rec = self._exec_record(eid)
        with self._cond:
            if rec["Started"]:
                if rec["Running"]:
                    raise Conflict(f"Error: Exec command {eid} is already running")
                raise Conflict(f"Error: Exec command {eid} has already run")
            rec["Started"] = True
        try:
            c = self.store.get(rec["ContainerID"])
            if not c.State.Running:
                raise Conflict(f"Container {c.ID} is not running")
            if tty is not None and tty != rec["Tty"]:
                rec["Tty"] = tty
            process = self._exec_process(c, rec)
            if console_size is not None and rec["Tty"]:
                process["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
            try:
                pid, stream = self.monitor.exec(c.ID, eid, process, tty=rec["Tty"],
                                                stdin=rec["AttachStdin"])
            except DockyardError as exc:
                # The process could not be run: as dockerd, the exec has run and failed
                # with 126 or 127, which is what the client reads back.
                with self._cond:
                    rec["ExitCode"] = _start_error_code(exc) if \
                        _start_error_code(exc) != 128 else 126
                    self._cond.notify_all()
                raise
        except BaseException:
            with self._cond:
                rec["Started"] = rec["ExitCode"] is not None
            raise
        with self._cond:
            rec["Running"] = True
            rec["Pid"] = pid
            self._cond.notify_all()
        threading.Thread(target=self._exec_waiter, args=(rec,), name=f"exec-{eid[:12]}",
                         daemon=True).start()
        cmd = rec["Cmd"]
        self.emit(f"exec_start: {cmd[0]} {' '.join(cmd[1:])}", c, {"execID": eid})
        if detach:
            stream.close()
            return None
        return stream

    def _exec_waiter(self, rec: dict[str, Any]) -> None:
        try:
            res = self.monitor.wait(rec["ID"], timeout=None)
            code = int(res.get("exit_code", 0))
        except Exception as exc:  # the monitor or the container went away
            log.debug("waiting for exec %s: %s", rec["ID"], exc)
            code = 137
        with self._cond:
            rec["Running"] = False
            rec["ExitCode"] = code
            rec["Pid"] = 0
            self._cond.notify_all()
        try:
            self.monitor.release(rec["ID"])  # its exit is recorded here now
        except DockyardError as exc:
            log.debug("releasing exec %s: %s", rec["ID"], exc)
        try:
            c = self.store.get(rec["ContainerID"])
            self.emit("exec_die", c, {"execID": rec["ID"], "exitCode": str(code)})
        except DockyardError:
            pass

    def exec_wait(self, eid: str, timeout: float | None = None) -> int | None:
        rec = self._exec_record(eid)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while rec["Running"]:
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=min(left, 1.0))
            return rec["ExitCode"]

    def exec_forget(self, eid: str) -> None:
        """Drop the record of exec EID once it has ended (health probes, which nobody
        inspects afterwards, would otherwise pile up)."""
        with self._cond:
            rec = self._execs.get(eid)
            if rec is not None and not rec["Running"]:
                del self._execs[eid]

    def _forget_execs_of(self, cid: str) -> None:
        """A container's exec instances end with it, as in dockerd's Cleanup."""
        with self._cond:
            for eid in [e for e, r in self._execs.items() if r["ContainerID"] == cid
                        and not r["Running"]]:
                del self._execs[eid]

    def exec_inspect(self, eid: str) -> dict[str, Any]:
        rec = self._exec_record(eid)
        with self._cond:
            cmd = rec["Cmd"]
            return {"ID": rec["ID"], "Running": rec["Running"], "ExitCode": rec["ExitCode"],
                    "ProcessConfig": {"tty": rec["Tty"], "entrypoint": cmd[0],
                                      "arguments": cmd[1:], "privileged": False,
                                      "user": rec["User"]},
                    "OpenStdin": rec["AttachStdin"], "OpenStderr": rec["AttachStderr"],
                    "OpenStdout": rec["AttachStdout"], "CanRemove": False,
                    "ContainerID": rec["ContainerID"], "DetachKeys": rec["DetachKeys"],
                    "Pid": rec["Pid"]}

    def update(self, ref: str, body: Any) -> list[str]:
        """POST /containers/{id}/update: new limits (live when running) and restart
        policy, persisted in HostConfig; dockerd's warnings."""
        from dockyard.daemon import update as update_mod

        return update_mod.update(self, ref, body)

    # -- reading ----------------------------------------------------------------------

    def list(self, all: bool, filters: Any, limit: int) -> list[dict[str, Any]]:
        def ancestors(ref: str) -> list[str]:
            try:
                return [str(self.images.get(ref).id)]
            except DockyardError:
                return []

        resolved: dict[str, str | None] = {}  # most containers share a few images

        def resolve_image(ref: str) -> str | None:
            if ref not in resolved:
                try:
                    resolved[ref] = str(self.images.resolve(ref))
                except DockyardError:
                    resolved[ref] = None
            return resolved[ref]

        cs = self.store.list(all=all, filters=filters, limit=limit, ancestors=ancestors,
                             copies=False)
        return [summary(c, resolve_image=resolve_image) for c in cs]


class _NotModified(DockyardError):
    """The container is already started (dockerd's 304)."""

    http_status = 304


NotModified = _NotModified


class _AttachRequest:
    def __init__(self, lc: Lifecycle, cid: str) -> None:
        self.lc = lc
        self.cid = cid
        self.ready = threading.Event()
        self.stream: AttachStream | None = None

    def deliver(self, stream: AttachStream | None) -> None:
        self.stream = stream
        self.ready.set()

    def get(self, cancelled: Callable[[], bool]) -> AttachStream | None:
        """The stream (None when the container will not run), waiting for its start."""
        while not self.ready.wait(0.5):
            if cancelled() or self.cid not in self.lc.store:
                with self.lc._cond:
                    pending = self.lc._pending_attach.get(self.cid, [])
                    pending[:] = [p for p in pending if p[0] != self.deliver]
                if not self.ready.is_set():
                    return None
        return self.stream

    def detached(self) -> None:
        """The client typed its detach keys: dockerd's "detach" event."""
        try:
            c = self.lc.store.get(self.cid)
        except NotFound:
            return
        self.lc.emit("detach", c, None)
