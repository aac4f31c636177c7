"""Network endpoints, for as long as the daemon runs as dockerd with `--bridge=none`:
the predefined networks (network/predefined.py), listed and inspected, and nothing to
prune."""

from __future__ import annotations

from aiohttp import web

from dockyard.api.server import Routes, engine, json_response
from dockyard.network import predefined


async def list_networks(request: web.Request) -> web.Response:
    return json_response(predefined.all_records(engine(request).id))


async def inspect(request: web.Request) -> web.Response:
    return json_response(predefined.find(engine(request).id, request.match_info["id"]))


async def prune(request: web.Request) -> web.Response:
    return json_response({"NetworksDeleted": None})


def register(routes: Routes) -> None:
    routes.add("GET", "/networks", list_networks)
    routes.add("GET", "/networks/{id}", inspect)
    routes.add("POST", "/networks/prune", prune)
