"""Health checks: the HEALTHCHECK of an image or the --health-* options of a container.

As dockerd does it (daemon/health.go): while a container with a probe runs, one thread
per container sleeps an interval, runs the probe as an exec in the container (so it gets
the container's environment, user and working directory, and the exec_create /
exec_start / exec_die events), and folds the result into State.Health: "starting" until
the first success (failures inside the start period do not count), "healthy" on
success, "unhealthy" after Retries consecutive failures. The last five results are kept
in Health.Log. A change of status is a "health_status: <status>" event. When the
container stops the checks stop and the status becomes "unhealthy", as in dockerd.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dockyard.daemon.containers import Container
from dockyard.daemon.gojson import type_error
from dockyard.errors import DockyardError, InvalidArgument, NotFound
from dockyard.image.store import format_go_time, parse_go_time

if TYPE_CHECKING:
    from dockyard.daemon.lifecycle import Lifecycle

log = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000
DEFAULT_INTERVAL_NS = 30 * SECOND_NS        # also the wait before the first probe
DEFAULT_TIMEOUT_NS = 30 * SECOND_NS
DEFAULT_START_PERIOD_NS = 0
DEFAULT_START_INTERVAL_NS = 5 * SECOND_NS
DEFAULT_RETRIES = 3
MINIMUM_DURATION_NS = 1_000_000             # the API's container.MinimumDuration (1ms)
MAX_OUTPUT = 4096                           # bytes of probe output kept
MAX_LOG_ENTRIES = 5
# How long the probe's exec may take to start before the probe is abandoned; starting is
# not the probe's own time, so it does not count towards Timeout (as in dockerd).
EXEC_START_TIMEOUT_S = 30.0

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

_DURATIONS = ("Interval", "Timeout", "StartPeriod", "StartInterval")


# -- configuration ------------------------------------------------------------------------

def validate(doc: Any) -> None:
    """Reject a Config.Healthcheck dockerd would reject at create (400)."""
    if doc is None:
        return
    if not isinstance(doc, Mapping):
        raise type_error(doc, "Config.Healthcheck", "container.HealthConfig")
    test = doc.get("Test")
    if test is not None and (not isinstance(test, list)
                             or not all(isinstance(t, str) for t in test)):
        raise type_error(test, "HealthConfig.Healthcheck.Test", "[]string")
    for key in _DURATIONS:
        value = doc.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise type_error(value, f"HealthConfig.Healthcheck.{key}", "time.Duration")
    retries = doc.get("Retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise type_error(retries, "HealthConfig.Healthcheck.Retries", "int")
    # dockerd's order: Interval, Timeout, Retries, StartPeriod, StartInterval.
    for key in ("Interval", "Timeout"):
        ns = doc.get(key) or 0
        if ns != 0 and ns < MINIMUM_DURATION_NS:
            raise InvalidArgument(f"{key} in Healthcheck cannot be less than "
                                  f"{go_duration(MINIMUM_DURATION_NS)}")
    if (retries or 0) < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")
    for key in ("StartPeriod", "StartInterval"):
        ns = doc.get(key) or 0
        if ns != 0 and ns < MINIMUM_DURATION_NS:
            raise InvalidArgument(f"{key} in Healthcheck cannot be less than "
                                  f"{go_duration(MINIMUM_DURATION_NS)}")


def merge_config(cfg: dict[str, Any], image_config: Mapping[str, Any]) -> None:
    """Give CFG (a container's Config) the image's Healthcheck where the request left it
    unset, field by field, as dockerd's merge does: no Healthcheck takes the image's
    whole; an empty Test, or a zero duration or Retries, takes the image's value.
    `--no-healthcheck` sends Test ["NONE"], which therefore wins over the image."""
    image_hc = image_config.get("Healthcheck")
    user_hc = cfg.get("Healthcheck")
    if not isinstance(image_hc, Mapping):
        if user_hc is None:
            cfg.pop("Healthcheck", None)  # omitempty, as dockerd shows it
        return
    if user_hc is None:
        cfg["Healthcheck"] = copy.deepcopy(dict(image_hc))
        return
    merged = dict(user_hc)
    if not merged.get("Test"):
        merged["Test"] = list(image_hc.get("Test") or [])
    for key in (*_DURATIONS, "Retries"):
        if not merged.get(key) and image_hc.get(key):
            merged[key] = image_hc[key]
    cfg["Healthcheck"] = merged


@dataclass(frozen=True)
class HealthConfig:
    """A container's effective health check, defaults applied."""

    command: list[str]
    interval_ns: int
    timeout_ns: int
    start_period_ns: int
    start_interval_ns: int
    retries: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> HealthConfig | None:
        """The probe of a container's CONFIG; None when it has none (no Healthcheck,
        an empty Test, NONE, or a type dockerd does not know)."""
        hc = config.get("Healthcheck")
        if not isinstance(hc, Mapping):
            return None
        test = hc.get("Test") or []
        if not test:
            return None
        kind = test[0]
        if kind == "CMD":
            command = list(test[1:])
        elif kind == "CMD-SHELL":
            shell = config.get("Shell") or ["/bin/sh", "-c"]
            command = [*shell, *test[1:]]
        else:
            if kind != "NONE":
                log.warning("Unknown healthcheck type '%s' (expected 'CMD')", kind)
            return None

        def ns(key: str, default: int) -> int:
            value = hc.get(key) or 0
            return int(value) if value else default

        retries = int(hc.get("Retries") or 0)
        return cls(command=command, interval_ns=ns("Interval", DEFAULT_INTERVAL_NS),
                   timeout_ns=ns("Timeout", DEFAULT_TIMEOUT_NS),
                   start_period_ns=ns("StartPeriod", DEFAULT_START_PERIOD_NS),
                   start_interval_ns=ns("StartInterval", DEFAULT_START_INTERVAL_NS),
                   retries=retries if retries > 0 else DEFAULT_RETRIES)


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "200ms", "1.5s", "1m30s", "1h0m0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)

    def fraction(value: int, digits: int) -> str:
        text = f"{value:0{digits}d}".rstrip("0")
        return "." + text if text else ""

    if u < SECOND_NS:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{u // 1_000}{fraction(u % 1_000, 3)}µs"
        return f"{sign}{u // 1_000_000}{fraction(u % 1_000_000, 6)}ms"
    secs, rest = divmod(u, SECOND_NS)
    out = f"{secs % 60}{fraction(rest, 9)}s"
    minutes = secs // 60
    if minutes:
        out = f"{minutes % 60}m" + out
        if minutes >= 60:
            out = f"{minutes // 60}h" + out
    return sign + out


# -- results ------------------------------------------------------------------------------

class _LimitedBuffer:
    """Up to MAX_OUTPUT bytes of output; what overflows is dropped and marked "..."."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        keep = max(0, min(MAX_OUTPUT - len(self._data), len(data)))
        self._data += data[:keep]
        if keep < len(data):
            self.truncated = True

    def text(self) -> str:
        out = self._data.decode("utf-8", errors="replace")
        return out + "..." if self.truncated else out


@dataclass
class ProbeResult:
    start_ns: int
    end_ns: int
    exit_code: int
    output: str

    def to_json(self) -> dict[str, Any]:
        """A HealthcheckResult as the API shows it."""
        return {"Start": _go_time(self.start_ns), "End": _go_time(self.end_ns),
                "ExitCode": self.exit_code, "Output": self.output}


def _go_time(ns: int) -> str:
    return format_go_time(ns // SECOND_NS, ns % SECOND_NS)


def _time_ns(text: str | None) -> int:
    t = parse_go_time(text)
    return 0 if t is None else t.seconds * SECOND_NS + t.nanos


def next_health(health: Mapping[str, Any] | None, result: ProbeResult, hc: HealthConfig,
                started_ns: int) -> dict[str, Any]:
    """State.Health after RESULT (dockerd's handleProbeResult); STARTED_NS is when the
    container started, for the start period."""
    h = dict(health or {})
    status = h.get("Status") or UNHEALTHY
    streak = int(h.get("FailingStreak") or 0)
    entries = list(h.get("Log") or [])
    entries.append(result.to_json())
    entries = entries[-MAX_LOG_ENTRIES:]
    if result.exit_code == 0:
        streak = 0
        status = HEALTHY
    else:
        counts = True
        if status == STARTING and result.start_ns - started_ns < hc.start_period_ns:
            counts = False  # still within the start period
        if counts:
            streak += 1
            if streak >= hc.retries:
                status = UNHEALTHY
    return {"Status": status, "FailingStreak": streak, "Log": entries}


# -- the monitor --------------------------------------------------------------------------

@dataclass
class _Check:
    """One container's running checks; STOP ends them."""

    cid: str
    config: HealthConfig
    started_ns: int
    stop: threading.Event
    thread: threading.Thread | None = None


class HealthMonitor:
    """Runs the health checks of LIFECYCLE's containers; driven by its on_start and
    on_exit observers (see watch)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lc = lifecycle
        self._lock = threading.Lock()
        self._checks: dict[str, _Check] = {}

    @classmethod
    def watch(cls, lifecycle: Lifecycle) -> HealthMonitor:
        """A monitor registered on LIFECYCLE's observers."""
        monitor = cls(lifecycle)
        lifecycle.on_start.append(monitor.container_started)
        lifecycle.on_exit.append(monitor.container_exited)
        # As dockerd's updateHealthMonitor: a paused container is not probed and counts
        # as unhealthy; unpaused, its checks start again.
        lifecycle.on_pause.append(monitor.container_exited)
        lifecycle.on_unpause.append(monitor.container_unpaused)
        return monitor

    # -- observers --------------------------------------------------------------------

    def container_started(self, c: Container) -> None:
        """(Re)start the checks of C, started or re-adopted after a daemon restart: the
        status goes back to "starting", the log is kept (dockerd's initHealthMonitor)."""
        self._run_checks(c, reset=True)

    def container_unpaused(self, c: Container) -> None:
        """Probe C again; its status stays as the pause left it until a probe says
        otherwise (dockerd's updateHealthMonitor)."""
        self._run_checks(c, reset=False)

    def _run_checks(self, c: Container, reset: bool) -> None:
        hc = HealthConfig.of(c.Config)
        if hc is None:
            return
        check = _Check(cid=c.ID, config=hc, started_ns=_time_ns(c.State.StartedAt),
                       stop=threading.Event())
        with self._lock:
            old = self._checks.pop(c.ID, None)
            if old is not None:
                old.stop.set()
            if reset:
                health = dict(c.State.Health or {})
                health.update({"Status": STARTING, "FailingStreak": 0})
                health.setdefault("Log", None)
                try:
                    self.lc.store.update_state(c.ID, Health=health)
                except NotFound:
                    return
            self._checks[c.ID] = check
        check.thread = threading.Thread(target=self._run, args=(check,),
                                        name=f"health-{c.ID[:12]}", daemon=True)
        check.thread.start()

    def container_exited(self, c: Container) -> None:
        """Stop C's checks; its status becomes "unhealthy" (dockerd does this, for
        compatibility, whenever the monitor stops), without an event."""
        with self._lock:
            check = self._checks.pop(c.ID, None)
            if check is not None:
                check.stop.set()
            try:
                cur = self.lc.store.get(c.ID)
                # Also without a check of ours: then they ran under an earlier daemon and
                # the exit was found at restore, and they are just as stopped.
                if cur.State.Health is None or cur.State.Health.get("Status") == UNHEALTHY:
                    return
                health = dict(cur.State.Health)
                health["Status"] = UNHEALTHY
                self.lc.store.update_state(c.ID, Health=health)
            except NotFound:
                pass

    def close(self) -> None:
        with self._lock:
            for check in self._checks.values():
                check.stop.set()
            self._checks.clear()

    # -- the checks -------------------------------------------------------------------

    def _interval_s(self, check: _Check) -> float:
        """dockerd's getInterval: StartInterval while starting inside the start period,
        and a probe right when the start period ends."""
        hc = check.config
        elapsed = time.time_ns() - check.started_ns
        if elapsed >= hc.start_period_ns:
            return hc.interval_ns / SECOND_NS
        remaining = hc.start_period_ns - elapsed
        if remaining < hc.interval_ns:
            return remaining / SECOND_NS
        try:
            status = (self.lc.store.get(check.cid).State.Health or {}).get("Status")
        except NotFound:
            status = None
        return (hc.start_interval_ns if status == STARTING else hc.interval_ns) / SECOND_NS

    def _run(self, check: _Check) -> None:
        while not check.stop.wait(self._interval_s(check)):
            try:
                c = self.lc.store.get(check.cid)
            except NotFound:
                return
            if not c.State.Running:
                return
            if c.State.Paused:
                continue  # dockerd does not probe a paused container
            result = self._probe(c, check)
            if result is None:
                return
            self._record(check, result)

    def _record(self, check: _Check, result: ProbeResult) -> None:
        with self._lock:
            if check.stop.is_set():
                return  # stopped while probing: the result is dropped, as in dockerd
            try:
                c = self.lc.store.get(check.cid)
                old = (c.State.Health or {}).get("Status")
                health = next_health(c.State.Health, result, check.config, check.started_ns)
                c = self.lc.store.update_state(check.cid, Health=health)
            except NotFound:
                return
        if health["Status"] != old:
            self.lc.emit(f"health_status: {health['Status']}", c, None)

    def _probe(self, c: Container, check: _Check) -> ProbeResult | None:
        """Run the probe once; None when the checks were stopped meanwhile."""
        start_ns = time.time_ns()
        hc = check.config
        if not hc.command:
            return ProbeResult(start_ns, time.time_ns(), -1, "No exec command specified")
        try:
            eid = self.lc.exec_create(c.ID, {"Cmd": list(hc.command), "AttachStdout": True,
                                             "AttachStderr": True})
            stream = self.lc.exec_start(eid, detach=False)
        except DockyardError as exc:
            if check.stop.is_set() or not self._running(c.ID):
                return None  # the container stopped under the probe
            log.warning("Health check for container %s error: %s", c.ID, exc)
            return ProbeResult(start_ns, time.time_ns(), -1, str(exc))
        assert stream is not None
        pidfd = self._pidfd(eid)
        output = _LimitedBuffer()
        deadline = time.monotonic() + hc.timeout_ns / SECOND_NS
        timed_out = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if check.stop.is_set():
                    break
                try:
                    piece = stream.recv(timeout=min(left, 1.0))
                except TimeoutError:
                    continue
                except OSError:
                    break
                if piece is None:
                    break
                output.write(piece[1])
        finally:
            stream.close()
        code: int | None = None
        if not timed_out:
            left = max(0.0, deadline - time.monotonic())
            code = self.lc.exec_wait(eid, timeout=left)
            timed_out = code is None
        if timed_out:
            self._kill(eid, pidfd)
            # Wait for the probe to go, so that dying probes do not pile up.
            self.lc.exec_wait(eid, timeout=EXEC_START_TIMEOUT_S)
        if pidfd is not None:
            os.close(pidfd)
        self.lc.exec_forget(eid)
        if check.stop.is_set():
            return None
        if timed_out:
            text = output.text()
            msg = f"Health check exceeded timeout ({go_duration(hc.timeout_ns)})"
            return ProbeResult(start_ns, time.time_ns(), -1, f"{msg}: {text}" if text else msg)
        assert code is not None
        return ProbeResult(start_ns, time.time_ns(), code, output.text())

    def _running(self, cid: str) -> bool:
        try:
            return self.lc.store.get(cid).State.Running
        except NotFound:
            return False

    def _pidfd(self, eid: str) -> int | None:
        """A pidfd of the probe's process, taken while its exec is known to run, so that
        a kill on timeout cannot hit a recycled pid."""
        try:
            info = self.lc.exec_inspect(eid)
        except NotFound:
            return None
        pid = int(info.get("Pid") or 0)
        if not pid or not info.get("Running"):
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        if not self.lc.exec_inspect(eid).get("Running"):
            os.close(fd)  # it ended (and may have been reaped) before the pidfd was taken
            return None
        return fd

    def _kill(self, eid: str, pidfd: int | None) -> None:
        if pidfd is None:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError as exc:
            log.warning("killing health check %s: %s", eid, exc)


__all__ = ["HealthConfig", "HealthMonitor", "ProbeResult", "go_duration", "merge_config",
           "next_health", "validate"]
