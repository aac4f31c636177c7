"""Restart policies: whether a container that exited runs again, and after how long.

The rules are dockerd's restart manager's: "always" restarts whatever the exit code,
"unless-stopped" unless the user stopped it, "on-failure[:N]" on a non-zero code at
most N times (0: no limit). The delay starts at 100 ms, doubles with each restart up
to a minute, and drops back once a run lasted 10 s or more, so a crash loop does not
spin the machine while a container that fails now and then restarts at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.errors import InvalidArgument

POLICIES = ("no", "always", "on-failure", "unless-stopped")
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
BACKOFF = 2
RESET_AFTER = 10.0  # seconds of running that reset the delay


def validate(policy: Mapping[str, Any] | None, auto_remove: bool = False) -> None:
    """dockerd's checks of a HostConfig.RestartPolicy, with its messages."""
    if not policy:
        return
    name = policy.get("Name") or ""
    count = policy.get("MaximumRetryCount") or 0
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidArgument("invalid restart policy: maximum retry count must be an integer")
    if name in ("", "no", "always", "unless-stopped"):
        if count != 0:
            raise InvalidArgument("invalid restart policy: maximum retry count can only be "
                                  "used with 'on-failure'"
                                  + (" and cannot be negative" if count < 0 else ""))
    elif name == "on-failure":
        if count < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be "
                                  "negative")
    else:
        raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one of "
                              "'no', 'always', 'on-failure', or 'unless-stopped'")
    if auto_remove and name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")


@dataclass
class Manager:
    """One container's restart state (in memory, as dockerd keeps it)."""

    delay: float = 0.0
    cancelled: bool = False
    timer: threading.Timer | None = field(default=None, repr=False)

    def decide(self, policy: Mapping[str, Any] | None, exit_code: int, manually_stopped: bool,
               ran_seconds: float, restart_count: int) -> float | None:
        """The delay before restarting, or None when the container stays stopped."""
        if self.cancelled:
            return None
        if ran_seconds >= RESET_AFTER:
            self.delay = 0.0
        if self.delay == 0.0:
            self.delay = FIRST_DELAY
        elif self.delay < MAX_DELAY:
            self.delay = min(self.delay * BACKOFF, MAX_DELAY)
        name = (policy or {}).get("Name") or "no"
        limit = (policy or {}).get("MaximumRetryCount") or 0
        if name == "always":
            restart = True
        elif name == "unless-stopped":
            restart = not manually_stopped
        elif name == "on-failure":
            restart = exit_code != 0 and (limit == 0 or restart_count < limit)
        else:
            restart = False
        return self.delay if restart else None

    def schedule(self, delay: float, fn: Callable[[], None], name: str) -> None:
        self.cancel_timer()
        self.timer = threading.Timer(delay, fn)
        self.timer.name = name
        self.timer.daemon = True
        self.timer.start()

    def cancel_timer(self) -> bool:
        """Stop a pending restart; whether one was pending."""
        t, self.timer = self.timer, None
        if t is None:
            return False
        t.cancel()
        return True


def restarts_on_daemon_start(policy: Mapping[str, Any] | None, exit_code: int,
                             manually_stopped: bool, restart_count: int) -> bool:
    """Whether a stopped container is started when the daemon starts: dockerd asks its
    restart manager the same question as at an exit (so "always" comes back even after
    `docker stop`, "unless-stopped" does not)."""
    return Manager().decide(policy, exit_code, manually_stopped, 0.0, restart_count) is not None
