"""Volume endpoints, until named volumes arrive with the volume package: there are none,
so the list is empty and a prune reclaims nothing."""

from __future__ import annotations

from aiohttp import web

from dockyard.api.server import Routes, json_response
from dockyard.errors import NotFound


async def list_volumes(request: web.Request) -> web.Response:
    return json_response({"Volumes": [], "Warnings": None})


async def inspect(request: web.Request) -> web.Response:
    raise NotFound(f"get {request.match_info['name']}: no such volume")


async def prune(request: web.Request) -> web.Response:
    return json_response({"VolumesDeleted": None, "SpaceReclaimed": 0})


def register(routes: Routes) -> None:
    routes.add("GET", "/volumes", list_volumes)
    routes.add("GET", "/volumes/{name}", inspect)
    routes.add("POST", "/volumes/prune", prune)
