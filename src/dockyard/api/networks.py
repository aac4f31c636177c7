"""Network endpoints, for as long as the daemon runs as dockerd with `--bridge=none`:
the predefined "host" and "none" networks, listed and inspected, and nothing to prune.
Bridge networks and user-defined ones come with the network package."""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from dockyard.api.server import Routes, engine, json_response
from dockyard.errors import NotFound

_PREDEFINED = ("host", "none")


def _network(engine_id: str, name: str) -> dict[str, Any]:
    return {
        "Name": name,
        # Stable for a daemon, as dockerd's are once created.
        "Id": hashlib.sha256(f"{engine_id}/{name}".encode()).hexdigest(),
        "Created": "0001-01-01T00:00:00Z", "Scope": "local",
        "Driver": "host" if name == "host" else "null", "EnableIPv4": False,
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": None},
        "Internal": False, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {}, "Options": {},
        "Labels": {},
    }


async def list_networks(request: web.Request) -> web.Response:
    eid = engine(request).id
    return json_response([_network(eid, n) for n in _PREDEFINED])


async def inspect(request: web.Request) -> web.Response:
    eid = engine(request).id
    ref = request.match_info["id"]
    for name in _PREDEFINED:
        net = _network(eid, name)
        if ref == name or (len(ref) >= 1 and net["Id"].startswith(ref)):
            return json_response(net)
    raise NotFound(f"network {ref} not found")


async def prune(request: web.Request) -> web.Response:
    return json_response({"NetworksDeleted": None})


def register(routes: Routes) -> None:
    routes.add("GET", "/networks", list_networks)
    routes.add("GET", "/networks/{id}", inspect)
    routes.add("POST", "/networks/prune", prune)
