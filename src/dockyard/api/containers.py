"""Container endpoints: create, start, wait, list, inspect, logs, stop, kill, remove.
Attach and resize are in api/attach.py, the filesystem ones in api/archive.py; stats, top
and update in api/resources.py."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from aiohttp import web

from dockyard.api.server import (Routes, api_version, bool_param, engine, filters_param,
                                 json_response, version_less)
from dockyard.daemon import logs as logs_mod
from dockyard.daemon.lifecycle import WAIT_CONDITIONS, NotModified
from dockyard.errors import InvalidArgument

log = logging.getLogger(__name__)


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _int_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name, "")
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {text!r}") from None


async def create(request: web.Request) -> web.Response:
    eng = engine(request)
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("config cannot be empty in order to create a container")
    host_config = body.pop("HostConfig", None) or {}
    body.pop("NetworkingConfig", None)
    hc = body.get("Healthcheck")
    if isinstance(hc, dict) and version_less(api_version(request), "1.44"):
        hc.pop("StartInterval", None)  # not in the API before 1.44: dockerd drops it
    c = await asyncio.to_thread(eng.lifecycle.create, request.query.get("name", ""), body,
                                host_config)
    return json_response({"Id": c.ID, "Warnings": []}, 201)


async def start(request: web.Request) -> web.Response:
    eng = engine(request)
    try:
        await asyncio.to_thread(eng.lifecycle.start, _id(request))
    except NotModified:
        return web.Response(status=304)
    return web.Response(status=204)


async def wait(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    condition = request.query.get("condition", "")
    if condition not in WAIT_CONDITIONS:
        raise InvalidArgument(f"invalid condition: {condition!r}")
    cid = await asyncio.to_thread(eng.lifecycle.store.resolve_id, _id(request))
    # dockerd sends the headers at once (the CLI waits for them before starting the
    # container), then the body when the condition is met.
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    gone = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(eng.lifecycle.wait, cid, condition,
                                                   gone.is_set))
    await resp.prepare(request)
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        gone.set()
        raise
    except Exception as exc:  # after the headers only the body can carry it
        result = {"StatusCode": -1, "Error": {"Message": str(exc)}}
    try:
        await resp.write(json.dumps(result).encode() + b"\n")
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nobody is left to tell
    return resp


async def list_containers(request: web.Request) -> web.Response:
    eng = engine(request)
    limit = _int_param(request, "limit") or 0
    out = await asyncio.to_thread(eng.lifecycle.list, bool_param(request, "all"),
                                  filters_param(request), limit)
    return json_response(out)


async def inspect(request: web.Request) -> web.Response:
    eng = engine(request)
    c = await asyncio.to_thread(eng.lifecycle.store.get, _id(request))
    return json_response(c.inspect())


async def container_logs(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    lc = eng.lifecycle
    c = await asyncio.to_thread(lc.store.get, _id(request))
    stdout, stderr = bool_param(request, "stdout"), bool_param(request, "stderr")
    if not (stdout or stderr):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    follow = bool_param(request, "follow")
    timestamps = bool_param(request, "timestamps")
    tty = bool(c.Config.get("Tty"))
    driver = (c.HostConfig.get("LogConfig") or {}).get("Type") or "json-file"
    cid = c.ID
    done = threading.Event()

    def stopped() -> bool:
        if done.is_set():
            return True
        try:
            cur = lc.store.get(cid)
        except Exception:
            return True
        return not (cur.State.Running or cid in lc._starting)

    records = logs_mod.read_logs(c.LogPath, stdout=stdout, stderr=stderr,
                                 since=request.query.get("since") or None,
                                 until=request.query.get("until") or None,
                                 tail=request.query.get("tail") or "all", follow=follow,
                                 stop=stopped, driver=driver)
    resp = web.StreamResponse(status=200)
    resp.content_type = ("application/vnd.docker.raw-stream" if tty
                         else "application/vnd.docker.multiplexed-stream")
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)

    def pump() -> None:
        try:
            for rec in records:
                if done.is_set():
                    break
                data = logs_mod.format_record(rec, tty=tty, timestamps=timestamps)
                asyncio.run_coroutine_threadsafe(q.put(data), loop).result()
        except Exception:
            log.exception("reading the logs of %s", cid)
        finally:
            if not done.is_set():
                asyncio.run_coroutine_threadsafe(q.put(None), loop).result()

    await resp.prepare(request)
    worker = asyncio.ensure_future(asyncio.to_thread(pump))
    try:
        while True:
            data = await q.get()
            if data is None:
                break
            await resp.write(data)
    finally:
        done.set()
        while not q.empty():
            q.get_nowait()
        if not worker.done():
            # Unblock a put the pump may be waiting on.
            with_space = q.put_nowait
            try:
                with_space(None)
            except asyncio.QueueFull:
                pass
    await resp.write_eof()
    return resp


async def stop(request: web.Request) -> web.Response:
    eng = engine(request)
    t = _int_param(request, "t")
    stopped = await asyncio.to_thread(eng.lifecycle.stop, _id(request), t,
                                      request.query.get("signal") or None)
    return web.Response(status=204 if stopped else 304)


async def kill(request: web.Request) -> web.Response:
    eng = engine(request)
    await asyncio.to_thread(eng.lifecycle.kill, _id(request),
                            request.query.get("signal") or "SIGKILL")
    return web.Response(status=204)


async def remove(request: web.Request) -> web.Response:
    eng = engine(request)
    await asyncio.to_thread(eng.lifecycle.remove, _id(request), bool_param(request, "force"),
                            bool_param(request, "v"))
    return web.Response(status=204)


async def restart(request: web.Request) -> web.Response:
    eng = engine(request)
    await asyncio.to_thread(eng.lifecycle.restart, _id(request), _int_param(request, "t"),
                            request.query.get("signal") or None)
    return web.Response(status=204)


async def pause(request: web.Request) -> web.Response:
    await asyncio.to_thread(engine(request).lifecycle.pause, _id(request))
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.Response:
    await asyncio.to_thread(engine(request).lifecycle.unpause, _id(request))
    return web.Response(status=204)


async def rename(request: web.Request) -> web.Response:
    await asyncio.to_thread(engine(request).lifecycle.rename, _id(request),
                            request.query.get("name", ""))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    eng = engine(request)
    return json_response(await asyncio.to_thread(eng.container_prune, filters_param(request)))


def register(routes: Routes) -> None:
    routes.add("POST", "/containers/create", create)
    routes.add("POST", "/containers/prune", prune)
    routes.add("POST", "/containers/{id}/restart", restart)
    routes.add("POST", "/containers/{id}/pause", pause)
    routes.add("POST", "/containers/{id}/unpause", unpause)
    routes.add("POST", "/containers/{id}/rename", rename)
    routes.add("GET", "/containers/json", list_containers)
    routes.add("GET", "/containers/{id}/json", inspect)
    routes.add("GET", "/containers/{id}/logs", container_logs)
    routes.add("POST", "/containers/{id}/start", start)
    routes.add("POST", "/containers/{id}/wait", wait)
    routes.add("POST", "/containers/{id}/stop", stop)
    routes.add("POST", "/containers/{id}/kill", kill)
    routes.add("DELETE", "/containers/{id}", remove)
