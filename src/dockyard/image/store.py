"""The image store: Docker's image side as a library.

An image is what Docker calls one: identified by the digest of its config (the
image ID), reached through a manifest (or an index that names it for a platform),
with layers unpacked once into snapshots. Under ROOT:

* ``content/``: the content store (manifests, indexes, configs, layer blobs);
* ``snapshots/``: the snapshotter (unpacked layers, container upper directories);
* ``images.db``: sqlite metadata (WAL, synchronous=FULL): the images, the
  manifests/indexes each came from, and the references (tags and repo digests);
* ``tmp/``: scratch files (decompressed layers while saving an archive).

Why this shape:

* Every metadata change is one sqlite transaction, so a crash loses nothing that
  was acknowledged and never leaves a tag pointing at half an image. Operations
  that touch the filesystem too (unpack, load) do the slow work first and record
  the result last, in one transaction: a failure leaves no tag behind.
* References are stored in canonical form (``docker.io/library/busybox:latest``)
  in one table, tags and digests side by side, because Docker's reference store
  treats them alike and the removal rules (``docker rmi``) depend on both.
* The API mirrors dockerd's image service (GetImage, ImageDelete, Images,
  ImagesPrune, ImageHistory, ImageInspect) closely, error texts included, since
  clients and scripts match on them; the daemon's /images endpoints are meant to
  be thin layers over this module.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dockyard.errors import Conflict, InvalidArgument, NotFound, Unsupported
from dockyard.image import layer as layers_mod
from dockyard.image.content import ContentStore, Lease
from dockyard.image.database import Database
from dockyard.image.digest import Digest
from dockyard.image.manifest import (
    go_json,
    Descriptor, ImageConfig, Index, Manifest, Platform, blob_children, chain_ids, check_image,
    format_platform, parse_config, parse_manifest, select_platform)
from dockyard.image.reference import Reference, parse_docker_ref, parse_normalized
from dockyard.image.snapshot import Snapshotter

if TYPE_CHECKING:
    from dockyard.distribution.client import RegistryClient

__all__ = ["ContainerUse", "Image", "ImageStore", "Pending", "Resolved", "format_go_time",
           "go_container_config", "go_field", "go_json", "now_go_time", "parse_go_duration",
           "parse_go_time", "parse_timestamp"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id           TEXT PRIMARY KEY,   -- config digest: Docker's image ID
    target       TEXT NOT NULL,      -- manifest or index it was last added from
    target_type  TEXT NOT NULL,      -- media type of target
    manifest     TEXT NOT NULL,      -- the platform's image manifest
    platform     TEXT NOT NULL,      -- os/arch[/variant] of the config
    created      TEXT,               -- the config's created, as written
    created_s    INTEGER,            -- ... as unix seconds and nanoseconds, for ordering
    created_ns   INTEGER,
    layers       TEXT NOT NULL,      -- chain ids bottom first, comma separated
    size         INTEGER NOT NULL,   -- unpacked size once unpacked, blob sizes before
    unpacked     INTEGER NOT NULL DEFAULT 0,
    parent       TEXT NOT NULL DEFAULT '',   -- set by builds/commits (Docker's Parent)
    added        REAL NOT NULL,
    last_tagged  TEXT                -- RFC 3339 time of the last `tag`, NULL if never
);
CREATE INDEX IF NOT EXISTS images_parent ON images (parent);
-- Every manifest/index an image was added from: all are roots for content GC.
CREATE TABLE IF NOT EXISTS targets (
    digest    TEXT NOT NULL,
    image_id  TEXT NOT NULL,
    manifest  TEXT NOT NULL,
    PRIMARY KEY (digest, image_id)
);
CREATE INDEX IF NOT EXISTS targets_image ON targets (image_id);
-- Canonical references: 'tag' (name:tag) or 'digest' (name@digest, a RepoDigest).
CREATE TABLE IF NOT EXISTS refs (
    ref       TEXT PRIMARY KEY,
    image_id  TEXT NOT NULL,
    kind      TEXT NOT NULL,
    created   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_image ON refs (image_id);
"""

_HEX = re.compile(r"[0-9a-f]+")
_ID64 = re.compile(r"[0-9a-f]{64}")
# Go's zero time, which Docker prints for "never".
_ZERO_TIME = "0001-01-01T00:00:00Z"


# -- Go compatibility: JSON, times, container.Config ---------------------------------

_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"([Zz]|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class GoTime:
    """An RFC 3339 instant with nanoseconds, and the UTC offset it was written in."""

    seconds: int
    nanos: int
    offset: int = 0  # seconds east of UTC

    def __str__(self) -> str:
        return format_go_time(self.seconds, self.nanos, self.offset)


def parse_go_time(text: str | None) -> GoTime | None:
    """Parse an RFC 3339 time (as image configs carry them); None when absent or
    unreadable. Nanosecond precision is kept, which datetime cannot do."""
    if not text:
        return None
    m = _TIME_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, sec = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or "")[:9]
    nanos = int(frac.ljust(9, "0")) if frac else 0
    zone = m.group(8)
    offset = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    try:
        _dt.datetime(year, month, day, hour, minute, sec)
    except ValueError:
        return None
    seconds = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) - offset
    return GoTime(seconds, nanos, offset)


def format_go_time(seconds: int, nanos: int = 0, offset: int = 0) -> str:
    """Go's time.RFC3339Nano: trailing zeros of the fraction dropped, "Z" for UTC."""
    t = time.gmtime(seconds + offset)
    out = time.strftime("%Y-%m-%dT%H:%M:%S", t)
    if nanos:
        out += ("." + f"{nanos:09d}").rstrip("0")
    if offset == 0:
        return out + "Z"
    sign = "-" if offset < 0 else "+"
    off = abs(offset)
    return out + f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"


def now_go_time() -> str:
    ns = time.time_ns()
    return format_go_time(ns // 1_000_000_000, ns % 1_000_000_000)


def go_field(d: Mapping[str, Any], key: str) -> Any:
    """Go's json.Unmarshal key matching: exact first, then case-insensitive."""
    if key in d:
        return d[key]
    low = key.lower()
    for k, v in d.items():
        if k.lower() == low:
            return v
    return None


def _strs(v: Any) -> list[str] | None:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    return None


def _strslice(v: Any) -> list[str] | None:
    # strslice.StrSlice accepts a single string as well as an array.
    if isinstance(v, str):
        return [v]
    return _strs(v)


def _set(v: Any) -> dict[str, Any] | None:
    if isinstance(v, dict):
        return {k: {} for k in sorted(v)}
    return None


def _labels(v: Any) -> dict[str, str] | None:
    if isinstance(v, dict):
        return {k: v[k] for k in sorted(v) if isinstance(v[k], str)}
    return None


def _health(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, dict):
        return None
    out: dict[str, Any] = {}
    test = _strs(go_field(v, "Test"))
    if test:
        out["Test"] = test
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        x = go_field(v, key)
        if isinstance(x, int) and not isinstance(x, bool) and x:
            out[key] = x
    return out


def go_container_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """CFG (an image config's "config") as Docker's container.Config marshals it:
    every field in Go's order, zero values included except the omitempty ones.

    This is the shape of ImageInspect's Config (API < 1.50) and of the legacy v1
    JSON that `docker save` writes; unknown keys are dropped as Go drops them.
    """
    cfg = cfg or {}

    def g(key: str) -> Any:
        return go_field(cfg, key)

    def s(key: str) -> str:
        v = g(key)
        return v if isinstance(v, str) else ""

    def b(key: str) -> bool:
        return g(key) is True

    out: dict[str, Any] = {
        "Hostname": s("Hostname"), "Domainname": s("Domainname"), "User": s("User"),
        "AttachStdin": b("AttachStdin"), "AttachStdout": b("AttachStdout"),
        "AttachStderr": b("AttachStderr"),
    }
    ports = _set(g("ExposedPorts"))
    if ports:
        out["ExposedPorts"] = ports
    out.update({"Tty": b("Tty"), "OpenStdin": b("OpenStdin"), "StdinOnce": b("StdinOnce"),
                "Env": _strs(g("Env")), "Cmd": _strslice(g("Cmd"))})
    health = _health(g("Healthcheck"))
    if health is not None:
        out["Healthcheck"] = health
    if b("ArgsEscaped"):
        out["ArgsEscaped"] = True
    out.update({"Image": s("Image"), "Volumes": _set(g("Volumes")),
                "WorkingDir": s("WorkingDir"), "Entrypoint": _strslice(g("Entrypoint"))})
    if b("NetworkDisabled"):
        out["NetworkDisabled"] = True
    if s("MacAddress"):
        out["MacAddress"] = s("MacAddress")
    out.update({"OnBuild": _strs(g("OnBuild")), "Labels": _labels(g("Labels"))})
    if s("StopSignal"):
        out["StopSignal"] = s("StopSignal")
    timeout = g("StopTimeout")
    if isinstance(timeout, int) and not isinstance(timeout, bool):
        out["StopTimeout"] = timeout
    shell = _strslice(g("Shell"))
    if shell:
        out["Shell"] = shell
    return out


# -- Go's path.Match, for the `reference` filter ------------------------------------

def _go_pattern(pattern: str) -> re.Pattern[str]:
    """Translate a Go path.Match pattern: `*` and `?` never match `/`, classes use `^`
    for negation, backslash escapes. InvalidArgument for Go's ErrBadPattern."""
    out, i, n = [], 0, len(pattern)
    bad = InvalidArgument("syntax error in pattern")
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= n:
                raise bad
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            parts, first = [], True
            while True:
                if i >= n:
                    raise bad
                if pattern[i] == "]" and not first:
                    break
                first = False
                lo = pattern[i]
                if lo == "\\":
                    i += 1
                    if i >= n:
                        raise bad
                    lo = pattern[i]
                elif lo in "-]":
                    raise bad
                i += 1
                if i < n and pattern[i] == "-":
                    i += 1
                    if i >= n:
                        raise bad
                    hi = pattern[i]
                    if hi == "\\":
                        i += 1
                        if i >= n:
                            raise bad
                        hi = pattern[i]
                    elif hi in "-]":
                        raise bad
                    i += 1
                    parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
                else:
                    parts.append(re.escape(lo))
            out.append(("[^/" if negate else "[") + "".join(parts) + "]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _familiar_match(pattern: re.Pattern[str], ref: Reference) -> bool:
    # reference.FamiliarMatch: the full familiar string, then the familiar name alone.
    return bool(pattern.fullmatch(ref.familiar()) or pattern.fullmatch(ref.familiar_name))


# -- filters ------------------------------------------------------------------------

FilterArg = Mapping[str, "Iterable[str] | str | Mapping[str, bool]"] | None


class _Filters:
    """Docker's filters.Args: key -> values; unknown keys refused with Docker's words."""

    def __init__(self, raw: FilterArg, accepted: Iterable[str]) -> None:
        self.fields: dict[str, list[str]] = {}
        accepted = set(accepted)
        for key, value in (raw or {}).items():
            if key not in accepted:
                raise InvalidArgument(f"invalid filter '{key}'")
            if isinstance(value, str):
                values = [value]
            elif isinstance(value, Mapping):  # the API's legacy {"value": true} form
                values = [k for k, on in value.items() if on]
            else:
                values = list(value)
            self.fields[key] = values

    def contains(self, key: str) -> bool:
        return key in self.fields

    def get(self, key: str) -> list[str]:
        return self.fields.get(key, [])

    def bool(self, key: str, default: bool) -> bool:
        if key not in self.fields:
            return default
        values = self.fields[key]
        if not values:
            raise InvalidArgument(f"invalid filter '{key}'")
        is_true = any(v.lower() in ("true", "1") for v in values)
        is_false = any(v.lower() in ("false", "0") for v in values)
        if is_true == is_false:
            raise InvalidArgument(f"invalid filter '{key}={values[0]}'")
        return is_true

    def match_kv(self, key: str, labels: Mapping[str, str] | None) -> bool:
        """Every `k` or `k=v` value of KEY holds in LABELS (MatchKVList)."""
        labels = labels or {}
        for value in self.get(key):
            k, eq, v = value.partition("=")
            if k not in labels or (eq and labels[k] != v):
                return False
        return True


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float | None:
    """Go's time.ParseDuration, in seconds; None when TEXT is not one."""
    sign = 1.0
    body = text
    if body[:1] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if not body:
        return None
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION_RE.match(body, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_timestamp(value: str, now: float | None = None) -> float:
    """A filter time (`until`): a Go duration before now, a unix time, or an RFC 3339
    date/time (local time when it has no zone), as Docker's timetypes.GetTimestamp."""
    now = time.time() if now is None else now
    if value != "0":
        d = parse_go_duration(value)
        if d is not None:
            return now - d
    t = parse_go_time(value)
    if t is not None:
        return t.seconds + t.nanos / 1e9
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is not None:
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()  # the daemon's local time, as Docker does
        return parsed.timestamp()
    if "-" not in value:
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidArgument(f"failed to parse value as time or duration: {value!r}")


# -- records ------------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerUse:
    """A container that uses an image, as an `in_use` callback reports it.

    Callbacks may return plain container ids instead; those count as running,
    the safe reading (a running container's image can never be deleted)."""

    id: str
    running: bool = True


InUse = Callable[[str], Iterable["str | ContainerUse"]]


def _nobody(image_id: str) -> list[str]:
    return []


def _users(in_use: InUse, image_id: str) -> list[ContainerUse]:
    return [u if isinstance(u, ContainerUse) else ContainerUse(str(u)) for u in in_use(image_id)]


def _truncate_id(text: str) -> str:
    """stringid.TruncateID: drop an `algorithm:` prefix, keep 12 characters."""
    return text.partition(":")[2][:12] if ":" in text else text[:12]


@dataclass(frozen=True)
class Image:
    """One image: its identity, where it came from, its names and its parsed objects."""

    id: Digest                    # config digest (Docker's image ID)
    target: Digest                # manifest or index it was added from
    target_media_type: str
    manifest_digest: Digest       # the platform's image manifest
    platform: str
    created: str | None           # the config's created, as written
    size: int
    unpacked: bool
    parent: str
    last_tag_time: str | None
    repo_tags: tuple[str, ...]    # familiar, e.g. "busybox:latest"
    repo_digests: tuple[str, ...]  # familiar, e.g. "busybox@sha256:..."
    config: ImageConfig = field(repr=False, compare=False)
    manifest: Manifest = field(repr=False, compare=False)

    @property
    def short_id(self) -> str:
        return self.id.short

    @property
    def chain_ids(self) -> list[Digest]:
        return chain_ids(self.config.diff_ids)

    @property
    def top_chain(self) -> Digest | None:
        chains = self.chain_ids
        return chains[-1] if chains else None

    @property
    def dangling(self) -> bool:
        return not self.repo_tags


@dataclass
class Resolved:
    """A target read from the content store down to its config, checked (describe())."""

    target: Digest
    target_media_type: str
    manifest_digest: Digest
    manifest: Manifest
    config_digest: Digest
    config: ImageConfig

    @property
    def chains(self) -> list[Digest]:
        return chain_ids(self.config.diff_ids)


@dataclass
class Pending:
    """An image to record (ImageStore.record): resolved, with the references to point
    at it; LABEL prefixes errors about it (which archive entry, which import)."""

    resolved: Resolved
    refs: list[Reference] = field(default_factory=list)
    label: str = ""


@dataclass
class _Conflict:
    hard: bool
    used: bool
    image_id: str
    message: str

    def error(self) -> Conflict:
        force = "cannot be forced" if self.hard else "must be forced"
        return Conflict(f"conflict: unable to delete {_truncate_id(self.image_id)} ({force}) "
                        f"- {self.message}")


_CHILD, _RUNNING, _ACTIVE_REF, _STOPPED = 1, 2, 4, 8
_HARD = _CHILD | _RUNNING
_SOFT = _ACTIVE_REF | _STOPPED

MissingFn = Callable[[Digest, str], Exception]


def _not_in_store(d: Digest, role: str) -> Exception:
    return NotFound(f"{role} {d} is not in the content store")


class ImageStore:
    """Images under directory ROOT (created if missing). Safe across threads and
    processes: every metadata change is an sqlite transaction; the content store
    and snapshotter lock on their own."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshots = Snapshotter(os.path.join(self.root, "snapshots"))
        self.tmp = os.path.join(self.root, "tmp")
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        self._db = Database(os.path.join(self.root, "images.db"), _SCHEMA, "FULL")

    # -- plumbing ---------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove what crashed operations left (call once at start-up)."""
        self.snapshots.cleanup()
        for name in os.listdir(self.tmp):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.tmp, name))

    def lease(self, purpose: str, expire: float = 3600.0) -> Lease:
        """A fresh content lease for an operation that writes blobs (load, import)."""
        return self.content.lease(f"{purpose}-{os.getpid()}-{os.urandom(6).hex()}", expire=expire)

    # -- reading targets ----------------------------------------------------------

    def _read_blob(self, d: Digest, role: str, missing: MissingFn) -> bytes:
        try:
            return self.content.read(d)
        except NotFound:
            raise missing(d, role) from None

    def describe(self, target: Digest | str, platform: str | Platform = "linux/amd64", *,
                 manifest: Digest | str | None = None,
                 missing: MissingFn = _not_in_store) -> Resolved:
        """Read TARGET (index -> the platform's manifest, or MANIFEST when given ->
        config) from the content store and check it; MISSING(digest, role) makes the
        error for a blob that is not there."""
        target = Digest(target)
        raw = self._read_blob(target, "manifest", missing)
        obj = parse_manifest(raw)
        if isinstance(obj, Index):
            if manifest is not None:
                desc = next((m for m in obj.manifests if m.digest == manifest), None)
                if desc is None:
                    raise InvalidArgument(f"index {target} does not list manifest {manifest}")
            else:
                desc = select_platform(obj, platform, platform_of=self.platform_of)
            mraw = self._read_blob(desc.digest, "manifest", missing)
            m = parse_manifest(mraw, desc.media_type)
            if not isinstance(m, Manifest):
                raise Unsupported(f"index {target}: nested index {desc.digest} is not supported")
            manifest_digest = desc.digest
        else:
            m, manifest_digest = obj, target
        craw = self._read_blob(m.config.digest, "config", missing)
        config = parse_config(craw)
        check_image(m, config)
        for i, desc in enumerate(m.layers):
            if not self.content.exists(desc.digest):
                raise missing(desc.digest, f"layer {i}")
        return Resolved(target=target, target_media_type=obj.media_type,
                        manifest_digest=manifest_digest, manifest=m,
                        config_digest=m.config.digest, config=config)

    def platform_of(self, desc: Descriptor) -> Platform | None:
        """The platform of an index entry that names none: its config's (as containerd)."""
        try:
            m = parse_manifest(self.content.read(desc.digest), desc.media_type)
            if isinstance(m, Manifest):
                return parse_config(self.content.read(m.config.digest)).platform
        except (NotFound, InvalidArgument):
            pass
        return None

    # -- recording ------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, r: Resolved, size: int | None,
                unpacked: bool) -> None:
        """Record R (inside the caller's transaction); an image seen before keeps its
        names and gets R as its latest target."""
        for d, role in ((r.target, "manifest"), (r.manifest_digest, "manifest"),
                        (r.config_digest, "config"), *((x.digest, "layer") for x in r.manifest.layers)):
            # Checked again inside the transaction: gc() holds the write lock while
            # it sweeps, so what exists now stays until this image is a GC root.
            if not self.content.exists(d):
                raise NotFound(f"{role} {d} is not in the content store")
        created = parse_go_time(r.config.created)
        if size is None:
            size = sum(x.size for x in r.manifest.layers)
        db.execute(
            "INSERT INTO images (id, target, target_type, manifest, platform, created, "
            "created_s, created_ns, layers, size, unpacked, added) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET target=excluded.target, "
            "target_type=excluded.target_type, manifest=excluded.manifest, "
            "size=CASE WHEN excluded.unpacked OR NOT images.unpacked THEN excluded.size "
            "ELSE images.size END, unpacked=MAX(images.unpacked, excluded.unpacked)",
            (r.config_digest, r.target, r.target_media_type, r.manifest_digest,
             format_platform(r.config.platform), r.config.created,
             created.seconds if created else None, created.nanos if created else None,
             ",".join(r.chains), size, int(unpacked), time.time()))
        db.execute("INSERT OR REPLACE INTO targets (digest, image_id, manifest) VALUES (?, ?, ?)",
                   (r.target, r.config_digest, r.manifest_digest))

    def _set_ref(self, db: sqlite3.Connection, ref: Reference, image_id: str) -> str | None:
        """Point REF at IMAGE_ID; returns the image it pointed at before, if another."""
        kind = "digest" if ref.digest is not None else "tag"
        row = db.execute("SELECT image_id FROM refs WHERE ref=?", (str(ref),)).fetchone()
        db.execute("INSERT OR REPLACE INTO refs (ref, image_id, kind, created) VALUES (?, ?, ?, ?)",
                   (str(ref), image_id, kind, time.time()))
        return row[0] if row is not None and row[0] != image_id else None

    def _refs(self, db: sqlite3.Connection, image_id: str) -> list[Reference]:
        """IMAGE_ID's references sorted by familiar string (the refstore's order)."""
        refs = [parse_normalized(r) for (r,) in
                db.execute("SELECT ref FROM refs WHERE image_id=?", (image_id,))]
        return sorted(refs, key=lambda r: r.familiar())

    def add(self, target_digest: Digest | str, platform: str | Platform = "linux/amd64") -> Image:
        """Record the image TARGET_DIGEST (a manifest, or an index resolved for
        PLATFORM) names. Its content must be in the store already, protected by
        the caller's lease until this returns. Not unpacked; see unpack()."""
        r = self.describe(target_digest, platform)
        with self._db.write() as db:
            self._insert(db, r, None, False)
        return self.get(r.config_digest)

    # -- unpacking --------------------------------------------------------------------

    def _unpack_layers(self, m: Manifest, config: ImageConfig,
                       created: list[Digest] | None = None) -> int:
        """Unpack every layer of (M, CONFIG) not unpacked yet, verifying DiffIDs;
        returns the unpacked size. Chains this call created are appended to CREATED
        so a caller can take them back if a later step fails."""
        parent: Digest | None = None
        size = 0
        for i, (desc, diff_id, chain) in enumerate(zip(m.layers, config.diff_ids,
                                                       chain_ids(config.diff_ids))):
            def apply_fn(dest: str, desc: Descriptor = desc, diff_id: Digest = diff_id,
                         parent: Digest | None = parent, i: int = i) -> None:
                lowers = self.snapshots.lowers(parent) if parent is not None else None
                with self.content.open(desc.digest) as f:
                    res = layers_mod.apply(f, dest, lowers=lowers)
                if res.diff_id != diff_id:
                    raise InvalidArgument(
                        f"layer {i} ({desc.digest}) unpacks to diff_id {res.diff_id}, "
                        f"but the image config says {diff_id}")

            existed = self.snapshots.layer_path(chain) is not None
            self.snapshots.prepare_layer(chain, parent, apply_fn)
            if not existed and created is not None:
                created.append(chain)
            size += self.snapshots.usage(chain).size
            parent = chain
        return size

    def _drop_layers(self, chains: Iterable[Digest]) -> None:
        """Take back layers an operation unpacked before it failed, unless an image
        uses them by now."""
        with self._db.read() as db:
            used = self._used_chains(db)
        for chain in reversed(list(chains)):
            if chain in used:
                continue
            try:
                self.snapshots.remove_layer(chain)
            except (NotFound, Conflict) as exc:
                log.debug("layer %s left in place: %s", chain, exc)

    def _verify_layers(self, r: Resolved) -> None:
        """Check each compressed layer decompresses to its DiffID, without unpacking."""
        for i, (desc, diff_id) in enumerate(zip(r.manifest.layers, r.config.diff_ids)):
            if desc.digest == diff_id:
                continue  # uncompressed: the content store verified it by its name
            h = hashlib.sha256()
            with self.content.open(desc.digest) as f:
                reader = layers_mod.open_decompressed(f)
                for chunk in iter(lambda: reader.read(1 << 20), b""):
                    h.update(chunk)
            actual = Digest.from_hasher(h)
            if actual != diff_id:
                raise InvalidArgument(f"layer {i} ({desc.digest}) decompresses to {actual}, "
                                      f"but the image config says {diff_id}")

    def record(self, pending: Iterable[Pending], *, unpack: bool = True,
               tag_time: bool = False) -> list[str]:
        """Unpack each image (or without UNPACK verify its DiffIDs), then record all
        images and their references in one transaction; on any failure the layers
        this call unpacked are taken back and nothing is recorded, so no tag ever
        names half an image. TAG_TIME: the references count as `docker tag`
        (LastTagTime). Returns what `docker load` reports: each image's references
        (familiar), or its id when it has none."""
        items = list(pending)
        created: list[Digest] = []
        sizes: list[int | None] = []
        try:
            for p in items:
                r = p.resolved
                try:
                    if unpack:
                        sizes.append(self._unpack_layers(r.manifest, r.config, created))
                    else:
                        self._verify_layers(r)
                        sizes.append(None)
                except InvalidArgument as exc:
                    if not p.label:
                        raise
                    raise InvalidArgument(f"{p.label}: {exc}") from None
            out: list[str] = []
            with self._db.write() as db:
                for p, size in zip(items, sizes):
                    image_id = p.resolved.config_digest
                    self._insert(db, p.resolved, size, size is not None)
                    for ref in p.refs:
                        before = self._set_ref(db, ref, image_id)
                        if before is not None:
                            log.info("The image %s already exists, renaming the old one with ID %s "
                                     "to empty string", ref.familiar(), before)
                        out.append(ref.familiar())
                    if p.refs and tag_time:
                        db.execute("UPDATE images SET last_tagged=? WHERE id=?",
                                   (now_go_time(), image_id))
                    if not p.refs:
                        out.append(str(image_id))
        except BaseException:
            self._drop_layers(created)
            raise
        return out

    def unpack(self, image: str | Image) -> Digest | None:
        """Unpack IMAGE's layers (each once, shared between images); returns the top
        chain id, None for an image without layers. Records the unpacked size."""
        img = image if isinstance(image, Image) else self.get(image)
        size = self._unpack_layers(img.manifest, img.config)
        with self._db.write() as db:
            db.execute("UPDATE images SET size=?, unpacked=1 WHERE id=?", (size, img.id))
        return img.top_chain

    def set_parent(self, image: str, parent: str) -> None:
        """Record PARENT as the local parent of IMAGE (both ids), as `docker commit`
        does for the image it makes from a container: Docker's Parent, which history
        follows and which keeps the parent from being deleted while the child exists."""
        with self._db.write() as db:
            for image_id in (image, parent):
                if not self._exists(db, image_id):
                    raise NotFound(f"No such image: {image_id}")
            db.execute("UPDATE images SET parent=? WHERE id=?", (parent, image))

    # -- resolving ----------------------------------------------------------------------

    def _resolve(self, db: sqlite3.Connection, name_or_id: str) -> str:
        """The image id NAME_OR_ID means, the way dockerd's GetImage resolves it."""
        text = name_or_id
        if _ID64.fullmatch(text):
            image_id = "sha256:" + text
            if self._exists(db, image_id):
                return image_id
            raise NotFound(f"No such image: {image_id}")
        if text.startswith(("sha256:", "sha512:")):
            try:
                d = Digest(text)
            except InvalidArgument:
                d = None
            if d is not None:
                if self._exists(db, d):
                    return d
                raise NotFound(f"No such image: {d}")
        ref = parse_normalized(text)
        dref = ref.docker_ref()
        row = db.execute("SELECT image_id FROM refs WHERE ref=?", (str(dref),)).fetchone()
        if row is not None:
            return row[0]
        found = self._search(db, text)
        if found is not None:
            return found
        raise NotFound(f"No such image: {dref.familiar()}")

    def _exists(self, db: sqlite3.Connection, image_id: str) -> bool:
        return db.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone() is not None

    def _search(self, db: sqlite3.Connection, term: str) -> str | None:
        """An image id by unique prefix (`4b5`, `sha256:4b5`); None when nothing
        matches. Docker answers an ambiguous prefix with "No such image"; Dockyard
        says what happened instead."""
        algorithm, sep, hexpart = term.partition(":")
        if not sep:
            algorithm, hexpart = "sha256", term
        if algorithm != "sha256" or not hexpart or not _HEX.fullmatch(hexpart):
            return None
        rows = db.execute("SELECT id FROM images WHERE id GLOB ? LIMIT 2",
                          (f"sha256:{hexpart}*",)).fetchall()
        if len(rows) > 1:
            raise InvalidArgument(f"ambiguous image id prefix {term!r}: it matches more than "
                                  "one image; give more characters")
        return rows[0][0] if rows else None

    def resolve(self, name_or_id: str) -> Digest:
        """The image id of NAME_OR_ID (full id, bare hex, unique id prefix, name[:tag],
        name@digest); NotFound "No such image: ..." as Docker words it."""
        with self._db.read() as db:
            return Digest(self._resolve(db, name_or_id))

    def get(self, name_or_id: str) -> Image:
        with self._db.read() as db:
            image_id = self._resolve(db, name_or_id)
            return self._load(db, image_id)

    def _load(self, db: sqlite3.Connection, image_id: str) -> Image:
        row = db.execute("SELECT target, target_type, manifest, platform, created, size, "
                         "unpacked, parent, last_tagged FROM images WHERE id=?",
                         (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        target, target_type, manifest, platform, created, size, unpacked, parent, tagged = row
        refs = self._refs(db, image_id)
        m = parse_manifest(self.content.read(manifest))
        assert isinstance(m, Manifest)
        return Image(id=Digest(image_id), target=Digest(target), target_media_type=target_type,
                     manifest_digest=Digest(manifest), platform=platform, created=created,
                     size=size, unpacked=bool(unpacked), parent=parent, last_tag_time=tagged,
                     repo_tags=tuple(r.familiar() for r in refs if r.digest is None),
                     repo_digests=tuple(r.familiar() for r in refs if r.digest is not None),
                     config=parse_config(self.content.read(image_id)), manifest=m)

    def images(self) -> list[Image]:
        with self._db.read() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM images ORDER BY id")]
            return [self._load(db, i) for i in ids]

    # -- names ------------------------------------------------------------------------------

    def tag(self, image: str | Image, ref: str | Reference) -> Reference:
        """Tag IMAGE as REF (`docker tag`): latest by default; moves an existing tag."""
        target = parse_normalized(ref) if isinstance(ref, str) else ref
        if target.digest is not None:
            raise InvalidArgument("refusing to create an ambiguous tag using digest reference")
        target = target.with_default_tag()
        with self._db.write() as db:
            image_id = image.id if isinstance(image, Image) else self._resolve(db, image)
            if not self._exists(db, image_id):
                raise NotFound(f"No such image: {image_id}")
            self._set_ref(db, target, image_id)
            db.execute("UPDATE images SET last_tagged=? WHERE id=?", (now_go_time(), image_id))
        return target

    def untag(self, ref: str | Reference) -> str:
        """Remove the tag or repo digest REF from its image; returns it, familiar."""
        r = parse_normalized(ref) if isinstance(ref, str) else ref
        r = r.docker_ref()
        with self._db.write() as db:
            if db.execute("DELETE FROM refs WHERE ref=?", (str(r),)).rowcount == 0:
                raise NotFound(f"No such image: {r.familiar()}")
        return r.familiar()

    def repository_tags(self, repository: Reference) -> list[tuple[Reference, Digest]]:
        """Every tag of REPOSITORY's name, with the image it names, sorted."""
        with self._db.read() as db:
            rows = db.execute("SELECT ref, image_id FROM refs WHERE kind='tag'").fetchall()
        out = []
        for text, image_id in rows:
            ref = parse_normalized(text)
            if ref.name == repository.name:
                out.append((ref, Digest(image_id)))
        return sorted(out, key=lambda x: x[0].familiar())

    def references(self, image: str | Image) -> list[Reference]:
        with self._db.read() as db:
            image_id = image.id if isinstance(image, Image) else self._resolve(db, image)
            return self._refs(db, image_id)

    # -- listing ------------------------------------------------------------------------------

    def list(self, all: bool = False, filters: FilterArg = None,  # noqa: A002 - Docker's name
             in_use: InUse | None = None) -> list[dict[str, Any]]:
        """GET /images/json: summaries, newest first. FILTERS as Docker's: dangling,
        label, before, since, until, reference (glob). IN_USE, when given, fills in
        Containers (else -1)."""
        f = _Filters(filters, ("dangling", "label", "before", "since", "until", "reference"))
        dangling_only = f.bool("dangling", False)
        before: tuple[int, int] | None = None
        since: tuple[int, int] | None = None
        for value in f.get("before"):
            t = self._created_of(value)
            if t is not None and (before is None or t < before):
                before = t
        for value in f.get("until"):
            ts = parse_timestamp(value)
            t = (int(ts // 1), int(round(ts % 1 * 1e9)))
            if before is None or t < before:
                before = t
        for value in f.get("since"):
            t = self._created_of(value)
            if t is not None and (since is None or t > since):
                since = t
        patterns = [_go_pattern(p) for p in f.get("reference")]
        out = []
        with self._db.read() as db:
            rows = db.execute("SELECT id, created_s, created_ns, size, parent FROM images").fetchall()
            children = {p for (p,) in db.execute("SELECT parent FROM images WHERE parent != ''")}
            for image_id, cs, cns, size, parent in rows:
                created = (cs, cns or 0) if cs is not None else None
                if dangling_only and image_id in children:
                    continue  # Docker lists "heads" only for dangling=true
                if before is not None and (created is None or not created < before):
                    continue
                if since is not None and (created is None or not created > since):
                    continue
                config = None
                if f.contains("label"):
                    config = parse_config(self.content.read(image_id))
                    if not f.match_kv("label", config.labels):
                        continue
                tags, digests = [], []
                for ref in self._refs(db, image_id):
                    if patterns and not any(_familiar_match(p, ref) for p in patterns):
                        continue
                    (digests if ref.digest is not None else tags).append(ref.familiar())
                if not tags and not digests:
                    if all or image_id not in children:
                        if f.contains("dangling") and not dangling_only:
                            continue
                        if patterns:
                            continue
                    else:
                        continue
                elif dangling_only and tags:
                    continue
                if config is None:
                    config = parse_config(self.content.read(image_id))
                out.append({
                    "Containers": len(list(in_use(image_id))) if in_use is not None else -1,
                    "Created": cs or 0,
                    "Id": image_id,
                    "Labels": config.config.get("Labels"),
                    "ParentId": parent,
                    "RepoDigests": digests,
                    "RepoTags": tags,
                    "SharedSize": -1,
                    "Size": size,
                    "_created": created or (0, 0),
                })
        out.sort(key=lambda s: s.pop("_created"), reverse=True)
        return out

    def _created_of(self, name_or_id: str) -> tuple[int, int] | None:
        with self._db.read() as db:
            image_id = self._resolve(db, name_or_id)
            row = db.execute("SELECT created_s, created_ns FROM images WHERE id=?",
                             (image_id,)).fetchone()
        return (row[0], row[1] or 0) if row and row[0] is not None else None

    # -- inspect and history ----------------------------------------------------------------

    def _layer_size(self, chain: Digest, fallback: int) -> int:
        """A layer's own size as Docker reports it (DiffSize: its files), or the
        blob's size while it is not unpacked."""
        try:
            return self.snapshots.usage(chain).size
        except NotFound:
            return fallback

    def inspect(self, image: str | Image) -> dict[str, Any]:
        """GET /images/{name}/json, shaped like Docker Engine's ImageInspect."""
        img = image if isinstance(image, Image) else self.get(image)
        cfg = img.config
        created = parse_go_time(cfg.created)
        graph: dict[str, Any] = {"Data": None, "Name": "overlay2"}
        top = img.top_chain
        if top is not None:
            try:
                lowers = self.snapshots.lowers(top)
            except NotFound:
                lowers = []
            if lowers:
                upper = lowers[-1]
                base = os.path.dirname(upper)
                data = {}
                if len(lowers) > 1:
                    data["LowerDir"] = ":".join(reversed(lowers[:-1]))
                data.update({"MergedDir": os.path.join(base, "merged"), "UpperDir": upper,
                             "WorkDir": os.path.join(base, "work")})
                graph["Data"] = data
        out: dict[str, Any] = {
            "Id": str(img.id),
            "RepoTags": list(img.repo_tags),
            "RepoDigests": list(img.repo_digests),
            "Parent": img.parent,
            "Comment": _str_or_empty(cfg.extra.get("comment")),
            "Created": str(created) if created else "",
            "DockerVersion": _str_or_empty(cfg.extra.get("docker_version")),
            "Author": cfg.author,
            "Config": go_container_config(cfg.config),
            "Architecture": cfg.architecture,
        }
        if cfg.variant:
            out["Variant"] = cfg.variant
        out["Os"] = cfg.os
        if cfg.os_version:
            out["OsVersion"] = cfg.os_version
        out["Size"] = img.size
        out["GraphDriver"] = graph
        rootfs: dict[str, Any] = {"Type": cfg.rootfs_type}
        if cfg.diff_ids:
            rootfs["Layers"] = [str(d) for d in cfg.diff_ids]
        out["RootFS"] = rootfs
        out["Metadata"] = {"LastTagTime": img.last_tag_time or _ZERO_TIME}
        return out

    def history(self, image: str | Image) -> list[dict[str, Any]]:
        """GET /images/{name}/history: newest first; the top row carries the image's
        id and tags, the rest "<missing>" (no parent chain for pulled images)."""
        img = image if isinstance(image, Image) else self.get(image)
        cfg = img.config
        chains = img.chain_ids
        rows: list[dict[str, Any]] = []
        n = 0
        for h in cfg.history:
            size = 0
            if not h.empty_layer:
                if n >= len(chains):
                    raise InvalidArgument("too many non-empty layers in History section")
                size = self._layer_size(chains[n], img.manifest.layers[n].size)
                n += 1
            t = parse_go_time(h.created)
            rows.insert(0, {"Comment": h.comment, "Created": t.seconds if t else 0,
                            "CreatedBy": h.created_by, "Id": "<missing>", "Size": size,
                            "Tags": None})
        with self._db.read() as db:
            image_id: str = img.id
            for row in rows:
                row["Id"] = image_id
                tags = [r.familiar() for r in self._refs(db, image_id) if r.digest is None]
                row["Tags"] = tags or None
                parent = db.execute("SELECT parent FROM images WHERE id=?",
                                    (image_id,)).fetchone()
                if not parent or not parent[0] or not self._exists(db, parent[0]):
                    break
                image_id = parent[0]
        return rows

    # -- removal ---------------------------------------------------------------------------------

    def remove(self, name_or_id: str, force: bool = False, prune: bool = True,
               in_use: InUse = _nobody) -> list[dict[str, str]]:
        """DELETE /images/{name} (`docker rmi`): Docker's records, Untagged then
        Deleted (image id, then the chain ids of layers no longer used), and its
        Conflict errors. IN_USE(image_id) lists the containers using an image: ids
        (counted as running) or ContainerUse(id, running)."""
        return self._remove(name_or_id, force, prune, in_use)[0]

    def _remove(self, name_or_id: str, force: bool, prune: bool,
                in_use: InUse) -> tuple[list[dict[str, str]], int]:
        records: list[dict[str, str]] = []
        removed: list[tuple[str, list[str]]] = []
        with self._db.write() as db:
            image_id = self._resolve(db, name_or_id)
            refs = self._refs(db, image_id)
            users = _users(in_use, image_id)
            removed_repo_ref = False
            if not _is_id_prefix(image_id, name_or_id):
                if not force and _is_single_reference(refs) and users:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{name_or_id}" '
                        f"(must force) - container {_truncate_id(users[0].id)} is using its "
                        f"referenced image {_truncate_id(image_id)}")
                parsed = parse_normalized(name_or_id).docker_ref()
                if db.execute("DELETE FROM refs WHERE ref=?", (str(parsed),)).rowcount == 0:
                    raise NotFound("reference does not exist")
                records.append({"Untagged": parsed.familiar()})
                refs = self._refs(db, image_id)
                if parsed.digest is None:
                    # The last tag of a repository takes that repository's digests along.
                    if not any(r.digest is None and r.name == parsed.name for r in refs):
                        remaining = []
                        for r in refs:
                            if r.digest is not None and r.name == parsed.name:
                                db.execute("DELETE FROM refs WHERE ref=?", (str(r),))
                                records.append({"Untagged": r.familiar()})
                            else:
                                remaining.append(r)
                        refs = remaining
                if refs:
                    return records, 0
                removed_repo_ref = True
            elif _is_single_reference(refs):
                mask = _HARD if force else _HARD | (_SOFT & ~_ACTIVE_REF)
                conflict = self._conflict(db, image_id, mask, users)
                if conflict is not None:
                    raise conflict.error()
                for r in refs:
                    db.execute("DELETE FROM refs WHERE ref=?", (str(r),))
                    records.append({"Untagged": r.familiar()})
            self._delete_image(db, image_id, records, force, prune, removed_repo_ref, users,
                               in_use, removed)
        reclaimed = 0
        for _image_id, chains in removed:
            for chain, size in self._release_layers(chains):
                records.append({"Deleted": chain})
                reclaimed += size
        return records, reclaimed

    def _conflict(self, db: sqlite3.Connection, image_id: str, mask: int,
                  users: list[ContainerUse]) -> _Conflict | None:
        if mask & _CHILD and db.execute("SELECT 1 FROM images WHERE parent=?",
                                        (image_id,)).fetchone():
            return _Conflict(True, False, image_id, "image has dependent child images")
        if mask & _RUNNING:
            running = [u for u in users if u.running]
            if running:
                return _Conflict(True, True, image_id, "image is being used by running "
                                 f"container {_truncate_id(running[0].id)}")
        if mask & _ACTIVE_REF and db.execute("SELECT 1 FROM refs WHERE image_id=?",
                                             (image_id,)).fetchone():
            return _Conflict(False, False, image_id, "image is referenced in multiple repositories")
        if mask & _STOPPED:
            stopped = [u for u in users if not u.running]
            if stopped:
                return _Conflict(False, True, image_id, "image is being used by stopped "
                                 f"container {_truncate_id(stopped[0].id)}")
        return None

    def _delete_image(self, db: sqlite3.Connection, image_id: str, records: list[dict[str, str]],
                      force: bool, prune: bool, quiet: bool, users: list[ContainerUse],
                      in_use: InUse, removed: list[tuple[str, list[str]]]) -> None:
        """dockerd's imageDeleteHelper, inside the caller's transaction."""
        mask = _HARD if force else _HARD | _SOFT
        conflict = self._conflict(db, image_id, mask, users)
        if conflict is not None:
            dangling = (not db.execute("SELECT 1 FROM refs WHERE image_id=?", (image_id,)).fetchone()
                        and not db.execute("SELECT 1 FROM images WHERE parent=?",
                                           (image_id,)).fetchone())
            if quiet and (not dangling or conflict.used):
                return
            raise conflict.error()
        row = db.execute("SELECT parent, layers FROM images WHERE id=?", (image_id,)).fetchone()
        parent, chains = row[0], [c for c in row[1].split(",") if c]
        for r in self._refs(db, image_id):
            db.execute("DELETE FROM refs WHERE ref=?", (str(r),))
            records.append({"Untagged": r.familiar()})
        db.execute("DELETE FROM images WHERE id=?", (image_id,))
        db.execute("DELETE FROM targets WHERE image_id=?", (image_id,))
        records.append({"Deleted": image_id})
        removed.append((image_id, chains))
        if prune and parent and self._exists(db, parent):
            self._delete_image(db, parent, records, False, True, True,
                               _users(in_use, parent), in_use, removed)

    def _used_chains(self, db: sqlite3.Connection) -> set[str]:
        used: set[str] = set()
        for (chains,) in db.execute("SELECT layers FROM images"):
            used.update(c for c in chains.split(",") if c)
        return used

    def _release_layers(self, chains: list[str]) -> list[tuple[str, int]]:
        """Remove the unpacked layers of a deleted image that no image uses any more,
        top first; stops at a layer something still sits on (a container's snapshot).
        Returns (chain id, size) of each removed layer."""
        with self._db.read() as db:
            used = self._used_chains(db)
        out = []
        for chain in reversed(chains):
            if chain in used:
                break  # every layer below is part of that image too
            try:
                size = self.snapshots.usage(chain).size
                self.snapshots.remove_layer(chain)
            except NotFound:
                continue  # never unpacked
            except Conflict as exc:
                log.debug("layer %s kept: %s", chain, exc)
                break
            out.append((chain, size))
        return out

    def prune(self, dangling_only: bool = True, filters: FilterArg = None,
              in_use: InUse = _nobody) -> dict[str, Any]:
        """POST /images/prune: delete dangling images (all unused ones when not
        DANGLING_ONLY or with filter dangling=false); filters until, label, label!.
        Images in use are skipped. Content no image references is collected too;
        SpaceReclaimed counts unpacked layers and content blobs removed."""
        f = _Filters(filters, ("dangling", "until", "label", "label!"))
        dangling_only = f.bool("dangling", dangling_only)
        until = None
        if f.contains("until"):
            values = f.get("until")
            if len(values) > 1:
                raise InvalidArgument("more than one until filter specified")
            until = parse_timestamp(values[0])
        with self._db.read() as db:
            rows = db.execute("SELECT id, created_s, created_ns FROM images ORDER BY id").fetchall()
            children = {p for (p,) in db.execute("SELECT parent FROM images WHERE parent != ''")}
            candidates = []
            for image_id, cs, cns in rows:
                refs = self._refs(db, image_id)
                if image_id in children and (dangling_only or not refs):
                    continue
                if until is not None and (cs is None or cs + (cns or 0) / 1e9 > until):
                    continue
                if f.contains("label") or f.contains("label!"):
                    labels = parse_config(self.content.read(image_id)).labels
                    if not f.match_kv("label", labels):
                        continue
                    if f.contains("label!") and f.match_kv("label!", labels):
                        continue
                candidates.append((image_id, refs))
        deleted: list[dict[str, str]] = []
        reclaimed = 0
        for image_id, refs in candidates:
            if refs:
                if dangling_only and any(r.digest is None for r in refs):
                    continue
                names = [str(r) for r in refs]
            else:
                names = [Digest(image_id).hex]
            for name in names:
                try:
                    records, space = self._remove(name, False, True, in_use)
                except (Conflict, NotFound) as exc:
                    log.debug("prune: %s kept: %s", name, exc)
                    continue
                deleted.extend(records)
                reclaimed += space
        if deleted:
            reclaimed += self.gc()["SpaceReclaimed"]
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def gc(self) -> dict[str, Any]:
        """Delete content no image (nor a live lease) references, then unpacked layers
        no image uses. Returns the deleted digests, chain ids and bytes."""
        sizes = {}
        for d in self.content.walk():
            with contextlib.suppress(NotFound):
                sizes[d] = self.content.info(d)[0]
        # The write lock keeps add() from recording an image between reading the
        # roots and sweeping: it re-checks its content inside its own transaction.
        with self._db.write() as db:
            roots = [d for (d,) in db.execute("SELECT DISTINCT digest FROM targets")]
            roots += [d for (d,) in db.execute("SELECT DISTINCT manifest FROM targets")]
            deleted = self.content.gc(roots, blob_children(self.content))
            used = self._used_chains(db)
        reclaimed = sum(sizes.get(d, 0) for d in deleted)
        layers: list[str] = []
        pending = [name for kind, name, _parent in self.snapshots.snapshots()
                   if kind == "layer" and name not in used]
        # Children first: a layer goes once nothing sits on it; repeat until stable.
        progress = True
        while pending and progress:
            progress = False
            for chain in list(pending):
                try:
                    size = self.snapshots.usage(chain).size
                    self.snapshots.remove_layer(chain)
                except Conflict:
                    continue
                except NotFound:
                    pass
                else:
                    layers.append(chain)
                    reclaimed += size
                pending.remove(chain)
                progress = True
        if deleted or layers:
            log.info("image gc: %d blobs, %d layers, %d bytes", len(deleted), len(layers), reclaimed)
        return {"Content": [str(d) for d in deleted], "Layers": layers, "SpaceReclaimed": reclaimed}

    # -- registry -------------------------------------------------------------------------------

    async def pull(self, ref: str | Reference, platform: str | Platform = "linux/amd64",
                   progress: Callable[[dict[str, Any]], None] | None = None, *,
                   client: RegistryClient | None = None) -> Image:
        """`docker pull`: fetch REF for PLATFORM, unpack it, then tag it and record its
        repo digest in one transaction. CLIENT carries registry settings and
        credentials; a default one (anonymous, no mirrors) is used without it."""
        import asyncio

        from dockyard.distribution.client import RegistryClient

        r = parse_docker_ref(ref) if isinstance(ref, str) else ref.docker_ref()
        own = client is None
        c = client if client is not None else RegistryClient()
        try:
            result = await c.pull(self.content, r, platform, progress=progress)
        finally:
            if own:
                await c.close()
        try:
            return await asyncio.to_thread(self._adopt, result.digest, result.manifest_digest,
                                           platform, r)
        finally:
            result.lease.release()

    def _adopt(self, target: Digest, manifest: Digest, platform: str | Platform,
               ref: Reference) -> Image:
        resolved = self.describe(target, platform, manifest=manifest)
        refs = [ref] if ref.tag is not None else []
        refs.append(ref.repository.with_digest(target))  # the RepoDigest
        self.record([Pending(resolved, refs)])
        return self.get(resolved.config_digest)

    async def push(self, ref: str | Reference,
                   progress: Callable[[dict[str, Any]], None] | None = None, *,
                   client: RegistryClient | None = None) -> Digest:
        """`docker push`: push the image REF names (its platform manifest) to REF's
        repository; records the pushed digest as a repo digest and returns it."""
        import asyncio

        from dockyard.distribution.client import RegistryClient

        r = parse_docker_ref(ref) if isinstance(ref, str) else ref.docker_ref()
        img = await asyncio.to_thread(self.get, str(r))
        own = client is None
        c = client if client is not None else RegistryClient()
        try:
            digest = await c.push(self.content, r, img.manifest_digest, progress=progress)
        finally:
            if own:
                await c.close()

        def record() -> None:
            with self._db.write() as db:
                if self._exists(db, img.id):
                    self._set_ref(db, r.repository.with_digest(digest), img.id)
        await asyncio.to_thread(record)
        return digest


def _str_or_empty(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _is_id_prefix(image_id: str, candidate: str) -> bool:
    """dockerd's isImageIDPrefix: does the user's text name the image by id?"""
    return image_id.startswith(candidate) or image_id.partition(":")[2].startswith(candidate)


def _is_single_reference(refs: list[Reference]) -> bool:
    """dockerd's isSingleReference: one tag, alone or with digests of its own
    repository (a pulled image: busybox:latest + busybox@sha256:...)."""
    if len(refs) <= 1:
        return len(refs) == 1
    single: Reference | None = None
    canonical: set[str] = set()
    for r in refs:
        if r.digest is not None:
            canonical.add(r.name)
        elif single is None:
            single = r
        else:
            return False
    if single is None:
        single = refs[0]
    return len(canonical) == 1 and single.name in canonical


