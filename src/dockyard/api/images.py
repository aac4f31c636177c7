"""Image endpoints: list, inspect, history, pull/import, push, tag, remove, prune,
save, load, and /auth (a login check, which dockerd files with the images)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import tempfile
import threading
from typing import Any

from aiohttp import web

from dockyard.api.server import (Routes, bool_param, engine, filters_param, json_response,
                                 version_less, api_version)
from dockyard.api.streams import JSONStream, with_progress
from dockyard.daemon.engine import decode_registry_auth, parse_ref_param
from dockyard.distribution.credentials import AuthConfig
from dockyard.errors import DockyardError, InvalidArgument, NotFound
from dockyard.image.digest import Digest
from dockyard.image.manifest import default_platform, format_platform, parse_platform
from dockyard.image.reference import Reference, repo_tag_reference

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _name(request: web.Request) -> str:
    return request.match_info["name"]


# -- reading -----------------------------------------------------------------------

async def list_images(request: web.Request) -> web.Response:
    eng = engine(request)
    filters = filters_param(request)
    legacy = request.query.get("filter", "")
    if legacy and version_less(api_version(request), "1.41"):
        # API < 1.41 had a `filter` parameter: a reference pattern.
        filters = dict(filters or {})
        filters["reference"] = [legacy]
    summaries = await asyncio.to_thread(eng.images.list, bool_param(request, "all"), filters)
    return json_response(summaries)


async def inspect(request: web.Request) -> web.Response:
    eng = engine(request)
    return json_response(await asyncio.to_thread(eng.images.inspect, _name(request)))


async def history(request: web.Request) -> web.Response:
    eng = engine(request)
    return json_response(await asyncio.to_thread(eng.images.history, _name(request)))


# -- pull and import -------------------------------------------------------------------

def _pull_ref(image: str, tag: str) -> Reference:
    """dockerd's reading of fromImage + tag: a tag that parses as a digest is one."""
    ref = parse_ref_param(image)
    if tag:
        try:
            d = Digest(tag)
        except (InvalidArgument, ValueError):
            d = None
        if d is not None:
            return ref.repository.with_digest(d)
        return ref.with_tag(tag)
    return ref


def _platform(request: web.Request) -> str:
    text = request.query.get("platform", "")
    if not text:
        return format_platform(default_platform())
    try:
        return format_platform(parse_platform(text))
    except DockyardError as exc:
        raise InvalidArgument(f"\"{text}\": {exc}") from None


async def create(request: web.Request) -> web.StreamResponse:
    if request.query.get("fromSrc"):
        return await _import(request)
    image = request.query.get("fromImage", "")
    if not image:
        raise InvalidArgument("fromImage or fromSrc is required")
    ref = _pull_ref(image, request.query.get("tag", ""))
    if ref.is_name_only:
        # docker pull -a: pulling every tag is not implemented; dockerd would.
        ref = ref.with_default_tag()
    platform = _platform(request)
    auth = decode_registry_auth(request.headers.get("X-Registry-Auth"))
    eng = engine(request)
    stream = JSONStream(request)
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def progress(event: dict[str, Any]) -> None:
        events.put_nowait(event)

    async def run() -> None:
        try:
            await eng.pull(ref, platform, progress, auth)
        finally:
            events.put_nowait(None)

    task = asyncio.ensure_future(run())
    try:
        while True:
            event = await events.get()
            if event is None:
                break
            # "Pulling from" alone is held back: a manifest that does not exist
            # must still be an HTTP error, as dockerd reports it.
            held = str(event.get("status", "")).startswith("Pulling from")
            await stream.send(with_progress(event), hold=held)
        await task
    except DockyardError as exc:
        if not stream.committed:
            raise
        log.info("pull %s failed: %s", ref.familiar(), exc)
        await stream.fail(str(exc))
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    return await stream.finish()


class _BodyFile:
    """The request body spooled to a file in the store's tmp (cleared at start-up),
    so that blocking readers (archive.load, import_rootfs) run in a thread."""

    def __init__(self, directory: str) -> None:
        self.file = tempfile.TemporaryFile(dir=directory)

    async def fill(self, request: web.Request) -> Any:
        async for chunk in request.content.iter_chunked(_CHUNK):
            await asyncio.to_thread(self.file.write, chunk)
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


async def _import(request: web.Request) -> web.StreamResponse:
    src = request.query["fromSrc"]
    if src != "-":
        raise InvalidArgument("importing from a URL is not supported; send the archive in "
                              "the request body (fromSrc=-)")
    eng = engine(request)
    ref = repo_tag_reference(request.query.get("repo", ""), request.query.get("tag", ""))
    changes = request.query.getall("changes", [])
    message = request.query.get("message", "")
    platform = request.query.get("platform", "")
    body = _BodyFile(eng.images.tmp)
    try:
        f = await body.fill(request)
        img = await asyncio.to_thread(eng.import_image, f, str(ref) if ref else None, changes,
                                      message, platform)
    finally:
        body.close()
    stream = JSONStream(request)
    await stream.send({"status": str(img.id)})
    return await stream.finish()


# -- push ------------------------------------------------------------------------------

async def push(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    ref = parse_ref_param(_name(request))
    tag = request.query.get("tag", "")
    if tag:
        ref = ref.repository.with_tag(tag)
    auth = decode_registry_auth(request.headers.get("X-Registry-Auth"))
    if ref.is_name_only:
        # No tag: every tag of the repository, as `docker push --all-tags`.
        pairs = await asyncio.to_thread(eng.images.repository_tags, ref)
        refs = [r for r, _ in pairs]
        if not refs:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    else:
        refs = [ref]
    stream = JSONStream(request)
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> None:
        try:
            for r in refs:
                digest = await eng.push(r, events.put_nowait, auth)
                size = await asyncio.to_thread(lambda: eng.images.content.info(digest)[0])
                events.put_nowait({"progressDetail": {},
                                   "aux": {"Tag": r.tag or "", "Digest": str(digest),
                                           "Size": size}})
        finally:
            events.put_nowait(None)

    # dockerd names the repository first and reports a missing image in the stream.
    for r in refs:
        try:
            await asyncio.to_thread(eng.images.resolve, str(r))
        except NotFound:
            await stream.send({"status": f"The push refers to repository [{r.name}]"})
            await stream.fail(f"An image does not exist locally with the tag: {r.familiar_name}")
            return await stream.finish()
    task = asyncio.ensure_future(run())
    try:
        while True:
            event = await events.get()
            if event is None:
                break
            if "aux" in event:
                await stream.send(event)
            else:
                await stream.send(with_progress(event))
        await task
    except DockyardError as exc:
        log.info("push %s failed: %s", ref.familiar(), exc)
        await stream.fail(str(exc))
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    return await stream.finish()


# -- names and removal --------------------------------------------------------------------

async def tag(request: web.Request) -> web.Response:
    eng = engine(request)
    repo = request.query.get("repo", "")
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    target = repo_tag_reference(repo, request.query.get("tag", ""))
    assert target is not None
    await asyncio.to_thread(eng.tag, _name(request), target)
    return web.Response(status=201)


async def remove(request: web.Request) -> web.Response:
    eng = engine(request)
    records = await asyncio.to_thread(eng.remove, _name(request), bool_param(request, "force"),
                                      not bool_param(request, "noprune"))
    return json_response(records)


async def prune(request: web.Request) -> web.Response:
    eng = engine(request)
    return json_response(await asyncio.to_thread(eng.prune, filters_param(request)))


# -- save and load -------------------------------------------------------------------------

class _QueueWriter:
    """A file-like object for archive.save in a thread: chunks go through a bounded
    queue to the event loop, so a slow client slows the writer instead of memory
    filling up."""

    def __init__(self) -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.buf = bytearray()
        self.cancelled = threading.Event()

    def write(self, data: bytes) -> int:
        if self.cancelled.is_set():
            raise BrokenPipeError("the client went away")
        self.buf += data
        if len(self.buf) >= _CHUNK:
            self._put(bytes(self.buf))
            self.buf.clear()
        return len(data)

    def _put(self, item: bytes | None) -> None:
        while not self.cancelled.is_set():
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.buf:
            self._put(bytes(self.buf))
            self.buf.clear()
        self._put(None)


async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    eng = engine(request)
    if not names:
        raise InvalidArgument("no images to save")
    # Every name must resolve before the 200 goes out: a typo is a 404, not a cut tar.
    for n in names:
        await asyncio.to_thread(eng.images.resolve, n)
    writer = _QueueWriter()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            eng.save(names, writer)  # type: ignore[arg-type]
        except BaseException as exc:  # reported by the loop below
            errors.append(exc)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    thread = threading.Thread(target=work, name="image-save", daemon=True)
    thread.start()
    first = await asyncio.to_thread(writer.q.get)
    if errors and (first is None):
        raise errors[0]
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/x-tar"
    try:
        await resp.prepare(request)
        chunk = first
        while chunk is not None:
            await resp.write(chunk)
            chunk = await asyncio.to_thread(writer.q.get)
        if errors:
            # Too late for an HTTP error: cut the stream so the client sees a bad tar.
            log.error("save %s failed after the response started: %s", names, errors[0])
            raise ConnectionResetError(str(errors[0]))
        await resp.write_eof()
    finally:
        writer.cancelled.set()
        # Unblock a writer waiting on a full queue.
        with contextlib.suppress(queue.Empty):
            while True:
                writer.q.get_nowait()
        await asyncio.to_thread(thread.join)
    return resp


async def save_one(request: web.Request) -> web.StreamResponse:
    return await _save(request, [_name(request)])


async def save_many(request: web.Request) -> web.StreamResponse:
    return await _save(request, request.query.getall("names", []))


async def load(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    body = _BodyFile(eng.images.tmp)
    try:
        f = await body.fill(request)
        loaded = await asyncio.to_thread(eng.load, f)
    finally:
        body.close()
    stream = JSONStream(request)
    for name in loaded:
        if name.startswith("sha256:"):
            await stream.send({"stream": f"Loaded image ID: {name}\n"})
        else:
            await stream.send({"stream": f"Loaded image: {name}\n"})
    return await stream.finish()


# -- auth ----------------------------------------------------------------------------------

async def auth(request: web.Request) -> web.Response:
    eng = engine(request)
    try:
        doc = await request.json()
    except ValueError as exc:
        raise InvalidArgument(f"invalid authentication configuration: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid authentication configuration: expected a JSON object")

    def s(key: str) -> str:
        v = doc.get(key)
        if v is None:
            for k in doc:
                if k.lower() == key:
                    v = doc[k]
        return v if isinstance(v, str) else ""

    cfg = AuthConfig(username=s("username"), password=s("password"),
                     server_address=s("serveraddress"))
    status = await eng.login(cfg)
    return json_response({"IdentityToken": "", "Status": status})


def register(routes: Routes) -> None:
    # Fixed paths before the ones whose {name} would swallow them.
    routes.add("GET", "/images/json", list_images)
    routes.add("POST", "/images/create", create)
    routes.add("POST", "/images/load", load)
    routes.add("POST", "/images/prune", prune)
    routes.add("GET", "/images/get", save_many)
    routes.add("POST", "/auth", auth)
    routes.add("GET", "/images/{name:.+}/json", inspect)
    routes.add("GET", "/images/{name:.+}/history", history)
    routes.add("GET", "/images/{name:.+}/get", save_one)
    routes.add("POST", "/images/{name:.+}/push", push)
    routes.add("POST", "/images/{name:.+}/tag", tag)
    routes.add("DELETE", "/images/{name:.+}", remove)
