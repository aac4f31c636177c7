"""A container's filesystem over the API: archive GET/HEAD/PUT (what `docker cp` uses),
export and changes; and POST /commit, which dockerd files with the containers too."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from typing import Any

from aiohttp import web

from dockyard.api.server import Routes, bool_param, engine, json_response
from dockyard.daemon import commit as commit_mod
from dockyard.daemon import filesystem
from dockyard.errors import InvalidArgument
from dockyard.image.manifest import go_json

_CHUNK = 1 << 20
STAT_HEADER = "X-Docker-Container-Path-Stat"


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _stat_header(st: filesystem.PathStat) -> str:
    return base64.b64encode(go_json(st.to_json())).decode()


async def _send(request: web.Request, stream: filesystem.ArchiveStream,
                headers: dict[str, str]) -> web.StreamResponse:
    try:
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = "application/x-tar"
        await resp.prepare(request)
        while True:
            chunk = await asyncio.to_thread(stream.read, _CHUNK)
            if not chunk:
                break
            await resp.write(chunk)
    finally:
        await asyncio.to_thread(stream.close)
    await resp.write_eof()
    return resp


async def get_archive(request: web.Request) -> web.StreamResponse:
    lc = engine(request).lifecycle
    path = request.query.get("path", "")
    if request.method == "HEAD":
        st = await asyncio.to_thread(filesystem.stat_path, lc, _id(request), path)
        return web.Response(status=200, headers={STAT_HEADER: _stat_header(st)})
    stream = await asyncio.to_thread(filesystem.archive_path, lc, _id(request), path)
    return await _send(request, stream, {STAT_HEADER: _stat_header(stream.stat)})


async def put_archive(request: web.Request) -> web.Response:
    eng = engine(request)
    path = request.query.get("path", "")
    if not path:
        raise InvalidArgument("bad parameter: path cannot be empty")
    # Spooled first: the archive is checked whole before anything is written.
    with tempfile.TemporaryFile(dir=eng.images.tmp) as body:
        async for chunk in request.content.iter_chunked(_CHUNK):
            await asyncio.to_thread(body.write, chunk)
        await asyncio.to_thread(
            filesystem.extract, eng.lifecycle, _id(request), path, body,
            no_overwrite_dir_non_dir=bool_param(request, "noOverwriteDirNonDir"),
            copy_uid_gid=bool_param(request, "copyUIDGID"))
    return web.Response(status=200)


async def export(request: web.Request) -> web.StreamResponse:
    lc = engine(request).lifecycle
    stream = await asyncio.to_thread(filesystem.export, lc, _id(request))
    return await _send(request, stream, {})


async def changes(request: web.Request) -> web.Response:
    lc = engine(request).lifecycle
    return json_response(await asyncio.to_thread(filesystem.changes, lc, _id(request)))


async def commit(request: web.Request) -> web.Response:
    eng = engine(request)
    config: dict[str, Any] | None = None
    raw = await request.read()
    if raw.strip():
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"invalid JSON: {exc}") from None
        if doc is not None and not isinstance(doc, dict):
            raise InvalidArgument("invalid JSON: the commit config must be an object")
        config = doc or None
    q = request.query
    image_id = await asyncio.to_thread(
        commit_mod.commit, eng.lifecycle, eng.image_event, q.get("container", ""),
        repo=q.get("repo", ""), tag=q.get("tag", ""), author=q.get("author", ""),
        comment=q.get("comment", ""), pause=bool_param(request, "pause", True),
        changes=q.getall("changes", []), config=config)
    return json_response({"Id": image_id}, 201)


def register(routes: Routes) -> None:
    routes.add("GET", "/containers/{id}/archive", get_archive)  # HEAD comes along
    routes.add("PUT", "/containers/{id}/archive", put_archive)
    routes.add("GET", "/containers/{id}/export", export)
    routes.add("GET", "/containers/{id}/changes", changes)
    routes.add("POST", "/commit", commit)
