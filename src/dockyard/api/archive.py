"""A container's filesystem over the API: archive GET/HEAD/PUT (what `docker cp` uses),
export and changes."""

from __future__ import annotations

from dockyard.api.server import Routes


def register(routes: Routes) -> None:
    pass
