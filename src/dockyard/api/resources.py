"""A container's processes and resources: stats (streamed or one-shot, read from its
cgroup), top, and update (limits and restart policy changed while it runs)."""

from __future__ import annotations

from dockyard.api.server import Routes


def register(routes: Routes) -> None:
    pass
