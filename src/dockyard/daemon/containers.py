"""The daemon's container records, as dockerd keeps them (no HTTP, no processes).

Under ROOT there is one directory per container, named by its id, holding
``config.v2.json`` (the record) and ``hostconfig.json`` (its HostConfig), the same
split dockerd makes. The daemon may put more in that directory (hostname, hosts,
resolv.conf, logs); removing the container removes the directory.

Why JSON files in per-container directories rather than sqlite (which the image
store uses):

* the directory is the container's home anyway (its /etc files and logs live
  there), so its removal is one rename plus a recursive delete, with nothing to
  keep in step in a second place;
* records are small, written one at a time and read all at once at start-up;
  nothing here needs a query planner or multi-record transactions (a record
  never references another one);
* each write is atomic on its own: temp file, fsync, rename over the old file,
  fsync of the directory. A crash leaves either the old or the new file, never
  half of one; a leftover temp file is ignored and cleaned at the next start;
* a person debugging a host can read and fix the files, as with dockerd.

All records are also kept in memory (as dockerd's container store and memdb view
are): lookups, listing and filtering never touch the disk. One lock guards the
maps and the files; callers get copies, so a record can only change through the
store, which persists the change before answering.

The lookups, list filters, summaries and their error texts follow dockerd
(daemon/container.go GetContainer, daemon/list.go, container/view.go,
container/state.go) since clients and scripts match on them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dockyard.daemon import names as names_mod
from dockyard.atomicfile import TMP_MARK, fsync_dir, write_atomic
from dockyard.errors import Conflict, InvalidArgument, NotFound, SystemFailure
from dockyard.image.store import format_go_time, parse_go_time
from dockyard.units import human_duration

log = logging.getLogger(__name__)

__all__ = ["ACCEPTED_FILTERS", "Container", "ContainerStore", "State", "ZERO_TIME",
           "generate_id", "human_duration", "status_text", "summary"]

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: Docker's "never"
CONFIG_FILE = "config.v2.json"
HOSTCONFIG_FILE = "hostconfig.json"
_REMOVING = ".removing-"     # a container directory being deleted
_ID64 = re.compile(r"[0-9a-f]{64}")

STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
HEALTHS = ("none", "starting", "healthy", "unhealthy")

# daemon/list.go acceptedPsFilterTags
ACCEPTED_FILTERS = frozenset({"ancestor", "before", "exited", "id", "isolation", "label",
                              "name", "status", "health", "since", "volume", "network",
                              "is-task", "publish", "expose"})


# -- ids and times -------------------------------------------------------------------

def generate_id() -> str:
    """stringid.GenerateRandomID: 64 hex digits whose short form is not all digits
    (the short id is the default hostname, and an all-numeric hostname breaks tools)."""
    while True:
        value = secrets.token_hex(32)
        if not value[:12].isdigit():
            return value


def _now_ns() -> int:
    return time.time_ns()


def _go_time_ns(ns: int) -> str:
    return format_go_time(ns // 1_000_000_000, ns % 1_000_000_000)


def _time_ns(text: str | None) -> int | None:
    """Unix nanoseconds of an RFC 3339 time; None for Go's zero time ("never")."""
    if not text or text == ZERO_TIME:
        return None
    t = parse_go_time(text)
    if t is None or t.seconds <= -62135596800:  # year 1 or before: zero time
        return None
    return t.seconds * 1_000_000_000 + t.nanos


# -- records ---------------------------------------------------------------------------

@dataclass
class State:
    """container.State: the flags dockerd persists; Status is derived from them."""

    Running: bool = False
    Paused: bool = False
    Restarting: bool = False
    OOMKilled: bool = False
    Dead: bool = False
    Pid: int = 0
    ExitCode: int = 0
    Error: str = ""
    StartedAt: str = ZERO_TIME
    FinishedAt: str = ZERO_TIME
    Health: dict[str, Any] | None = None  # {Status, FailingStreak, Log}
    # Not persisted (dockerd's json:"-"): a removal interrupted by a restart is
    # simply not in progress any more.
    RemovalInProgress: bool = False

    @property
    def status(self) -> str:
        """State.State(): the precedence dockerd applies to the flags."""
        if self.Running:
            if self.Paused:
                return "paused"
            if self.Restarting:
                return "restarting"
            return "running"
        if self.RemovalInProgress:
            return "removing"
        if self.Dead:
            return "dead"
        if _time_ns(self.StartedAt) is None:
            return "created"
        return "exited"

    @property
    def health_status(self) -> str:
        if not self.Health:
            return "none"
        return str(self.Health.get("Status") or "none")

    def to_disk(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        del out["RemovalInProgress"]
        return out

    def to_json(self) -> dict[str, Any]:
        """The State object of GET /containers/{id}/json."""
        out: dict[str, Any] = {"Status": self.status}
        out.update(self.to_disk())
        if out["Health"] is None:
            del out["Health"]  # omitempty
        return out

    @classmethod
    def from_disk(cls, doc: Mapping[str, Any]) -> State:
        known = {f.name for f in fields(cls)} - {"RemovalInProgress"}
        return cls(**{k: v for k, v in doc.items() if k in known})


def _default_network_settings() -> dict[str, Any]:
    # What API 1.45 shows for a container with no network attached yet.
    return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
            "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
            "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
            "Networks": {}}


def _default_graph_driver() -> dict[str, Any]:
    return {"Data": None, "Name": "overlay2"}


@dataclass
class Container:
    """One container's record: what GET /containers/{id}/json shows, plus the few
    flags dockerd keeps for restart policies."""

    ID: str
    Created: str                      # RFC 3339 with nanoseconds
    Path: str = ""
    Args: list[str] = field(default_factory=list)
    Config: dict[str, Any] = field(default_factory=dict)       # as the client sent it
    HostConfig: dict[str, Any] = field(default_factory=dict)   # persisted apart
    State: State = field(default_factory=lambda: State())
    Image: str = ""                   # the image id (config digest), "sha256:..."
    Name: str = ""                    # canonical, "/name"; "" until the store names it
    RestartCount: int = 0
    Driver: str = "overlay2"
    Platform: str = "linux"
    MountLabel: str = ""
    ProcessLabel: str = ""
    AppArmorProfile: str = ""
    # Not persisted, as in dockerd: exec processes do not survive a daemon restart.
    ExecIDs: list[str] = field(default_factory=list)
    LogPath: str = ""
    ResolvConfPath: str = ""
    HostnamePath: str = ""
    HostsPath: str = ""
    Mounts: list[dict[str, Any]] = field(default_factory=list)  # MountPoint objects
    NetworkSettings: dict[str, Any] = field(default_factory=_default_network_settings)
    GraphDriver: dict[str, Any] = field(default_factory=_default_graph_driver)
    HasBeenStartedBefore: bool = False
    HasBeenManuallyStopped: bool = False

    @classmethod
    def new(cls, *, image_id: str, config: Mapping[str, Any] | None = None,
            host_config: Mapping[str, Any] | None = None, path: str = "",
            args: Iterable[str] = (), name: str = "", created_ns: int | None = None,
            **extra: Any) -> Container:
        """A fresh record: random id, created now. NAME may be "" (the store then
        generates one) and is validated by ContainerStore.add."""
        ns = _now_ns() if created_ns is None else created_ns
        return cls(ID=generate_id(), Created=_go_time_ns(ns), Path=path, Args=list(args),
                   Config=dict(config or {}), HostConfig=dict(host_config or {}),
                   Image=image_id, Name=name, **extra)

    @property
    def created_ns(self) -> int:
        return _time_ns(self.Created) or 0

    @property
    def short_id(self) -> str:
        return self.ID[:12]

    @property
    def labels(self) -> dict[str, str]:
        value = self.Config.get("Labels")
        return dict(value) if isinstance(value, dict) else {}

    def inspect(self) -> dict[str, Any]:
        """GET /containers/{id}/json, keys in dockerd's order."""
        return {
            "Id": self.ID, "Created": self.Created, "Path": self.Path,
            "Args": list(self.Args), "State": self.State.to_json(), "Image": self.Image,
            "ResolvConfPath": self.ResolvConfPath, "HostnamePath": self.HostnamePath,
            "HostsPath": self.HostsPath, "LogPath": self.LogPath, "Name": self.Name,
            "RestartCount": self.RestartCount, "Driver": self.Driver,
            "Platform": self.Platform, "MountLabel": self.MountLabel,
            "ProcessLabel": self.ProcessLabel, "AppArmorProfile": self.AppArmorProfile,
            # dockerd sends null rather than [] when there is no exec.
            "ExecIDs": list(self.ExecIDs) or None,
            "HostConfig": copy.deepcopy(self.HostConfig),
            "GraphDriver": copy.deepcopy(self.GraphDriver),
            "Mounts": copy.deepcopy(self.Mounts),
            "Config": copy.deepcopy(self.Config),
            "NetworkSettings": copy.deepcopy(self.NetworkSettings),
        }

    # -- disk form: dockerd's config.v2.json keys where they exist ---------------------

    def to_disk(self) -> dict[str, Any]:
        return {
            "State": self.State.to_disk(), "ID": self.ID, "Created": self.Created,
            "Managed": False, "Path": self.Path, "Args": self.Args, "Config": self.Config,
            "Image": self.Image, "NetworkSettings": self.NetworkSettings,
            "LogPath": self.LogPath, "Name": self.Name, "Driver": self.Driver,
            "OS": self.Platform, "RestartCount": self.RestartCount,
            "HasBeenStartedBefore": self.HasBeenStartedBefore,
            "HasBeenManuallyStopped": self.HasBeenManuallyStopped,
            "Mounts": self.Mounts, "GraphDriver": self.GraphDriver,
            "MountLabel": self.MountLabel, "ProcessLabel": self.ProcessLabel,
            "AppArmorProfile": self.AppArmorProfile, "HostnamePath": self.HostnamePath,
            "HostsPath": self.HostsPath, "ResolvConfPath": self.ResolvConfPath,
        }

    @classmethod
    def from_disk(cls, doc: Mapping[str, Any], host_config: Mapping[str, Any]) -> Container:
        def get(key: str, default: Any) -> Any:
            value = doc.get(key)
            return default if value is None else value

        return cls(
            ID=doc["ID"], Created=get("Created", ZERO_TIME), Path=get("Path", ""),
            Args=list(get("Args", [])), Config=dict(get("Config", {})),
            HostConfig=dict(host_config), State=State.from_disk(get("State", {})),
            Image=get("Image", ""), Name=get("Name", ""),
            RestartCount=get("RestartCount", 0), Driver=get("Driver", "overlay2"),
            Platform=get("OS", "linux"), MountLabel=get("MountLabel", ""),
            ProcessLabel=get("ProcessLabel", ""),
            AppArmorProfile=get("AppArmorProfile", ""), LogPath=get("LogPath", ""),
            ResolvConfPath=get("ResolvConfPath", ""), HostnamePath=get("HostnamePath", ""),
            HostsPath=get("HostsPath", ""), Mounts=list(get("Mounts", [])),
            NetworkSettings=dict(get("NetworkSettings", _default_network_settings())),
            GraphDriver=dict(get("GraphDriver", _default_graph_driver())),
            HasBeenStartedBefore=bool(get("HasBeenStartedBefore", False)),
            HasBeenManuallyStopped=bool(get("HasBeenManuallyStopped", False)),
        )


# -- the summary (GET /containers/json) -------------------------------------------------

def status_text(state: State, now_ns: int | None = None) -> str:
    """State.String(): the STATUS column of `docker ps`."""
    now = _now_ns() if now_ns is None else now_ns
    if state.Running:
        out = "Up " + human_duration(now - (_time_ns(state.StartedAt) or 0))
        if state.Paused:
            return out + " (Paused)"
        if state.Restarting:
            ago = human_duration(now - (_time_ns(state.FinishedAt) or 0))
            return f"Restarting ({state.ExitCode}) {ago} ago"
        if state.Health is not None:
            h = state.health_status
            return out + (" (health: starting)" if h == "starting" else f" ({h})")
        return out
    if state.RemovalInProgress:
        return "Removal In Progress"
    if state.Dead:
        return "Dead"
    if _time_ns(state.StartedAt) is None:
        return "Created"
    finished = _time_ns(state.FinishedAt)
    if finished is None:
        return ""
    return f"Exited ({state.ExitCode}) {human_duration(now - finished)} ago"


def _command(c: Container) -> str:
    # view.go: arguments containing a space are wrapped in single quotes (no escaping).
    if not c.Args:
        return c.Path
    args = [f"'{a}'" if " " in a else a for a in c.Args]
    return f"{c.Path} {' '.join(args)}"


def _port_summaries(c: Container) -> list[dict[str, Any]]:
    """The summary's Ports, from NetworkSettings.Ports ({"80/tcp": [{"HostIp",
    "HostPort"}] or null}) as view.go builds them: one entry per binding, one without
    PublicPort for an exposed port that is not published."""
    out: list[dict[str, Any]] = []
    for port, bindings in (c.NetworkSettings.get("Ports") or {}).items():
        number, _, proto = str(port).partition("/")
        if not number.isdigit():
            continue
        proto = proto or "tcp"
        if not bindings:
            out.append({"PrivatePort": int(number), "Type": proto})
            continue
        for b in bindings:
            host = str((b or {}).get("HostPort") or "").split("-")[0]
            if not host.isdigit():
                continue  # dockerd logs "invalid host port map" and skips it
            entry: dict[str, Any] = {}
            if (b or {}).get("HostIp"):
                entry["IP"] = b["HostIp"]
            entry.update({"PrivatePort": int(number), "PublicPort": int(host), "Type": proto})
            out.append(entry)
    return out


_SUMMARY_NETWORK_KEYS = ("IPAMConfig", "Links", "Aliases", "MacAddress", "DriverOpts",
                         "GwPriority", "NetworkID", "EndpointID", "Gateway", "IPAddress",
                         "IPPrefixLen", "IPv6Gateway", "GlobalIPv6Address",
                         "GlobalIPv6PrefixLen", "DNSNames")


def summary(c: Container, now_ns: int | None = None,
            resolve_image: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """An entry of GET /containers/json for C.

    RESOLVE_IMAGE maps the image reference the user gave to the id it names today
    (None or an exception when it names nothing): as dockerd's refreshImage, Image
    shows the image id instead once the reference no longer names the container's
    image (re-tagged, pulled anew or removed)."""
    image = c.Config.get("Image") or ""
    if not isinstance(image, str):
        image = ""
    if resolve_image is not None and image != c.Image:
        try:
            current = resolve_image(image)
        except Exception:  # noqa: BLE001 - any failure means "no longer resolves"
            current = None
        if current != c.Image:
            image = c.Image
    labels = c.Config.get("Labels")
    networks: dict[str, Any] = {}
    for net_name, endpoint in (c.NetworkSettings.get("Networks") or {}).items():
        if isinstance(endpoint, dict):
            networks[net_name] = {k: copy.deepcopy(endpoint[k])
                                  for k in _SUMMARY_NETWORK_KEYS if k in endpoint}
    host_config: dict[str, Any] = {}
    mode = c.HostConfig.get("NetworkMode")
    if mode:
        host_config["NetworkMode"] = mode
    return {
        "Id": c.ID,
        "Names": [c.Name] if c.Name else [],
        "Image": image,
        "ImageID": c.Image,
        "Command": _command(c),
        "Created": c.created_ns // 1_000_000_000,
        "Ports": _port_summaries(c),
        "Labels": dict(labels) if isinstance(labels, dict) else None,
        "State": c.State.status,
        "Status": status_text(c.State, now_ns),
        "HostConfig": host_config,
        "NetworkSettings": {"Networks": networks},
        "Mounts": copy.deepcopy(c.Mounts),
    }


# -- filters ---------------------------------------------------------------------------

FilterArg = Mapping[str, "Iterable[str] | str | Mapping[str, bool]"] | None


class _Args:
    """Docker's filters.Args: each key a set of values (duplicates collapse)."""

    def __init__(self, raw: FilterArg) -> None:
        self.fields: dict[str, dict[str, None]] = {}
        for key, value in (raw or {}).items():
            if isinstance(value, str):
                values = [value]
            elif isinstance(value, Mapping):  # the API's legacy {"value": true} form
                values = [k for k, on in value.items() if on]
            else:
                values = list(value)
            self.fields.setdefault(key, {}).update(dict.fromkeys(values))

    def add(self, key: str, value: str) -> None:
        self.fields.setdefault(key, {})[value] = None

    def validate(self, accepted: Iterable[str]) -> None:
        accepted = set(accepted)
        for key in self.fields:
            if key not in accepted:
                raise InvalidArgument(f"invalid filter '{key}'")

    def contains(self, key: str) -> bool:
        return key in self.fields

    def get(self, key: str) -> list[str]:
        return list(self.fields.get(key, ()))

    def bool_or_default(self, key: str, default: bool) -> bool:
        if key not in self.fields:
            return default
        values = self.fields[key]
        if not values:
            raise InvalidArgument(f"invalid filter '{key}'")
        is_false = "0" in values or "false" in values
        is_true = "1" in values or "true" in values
        if is_false == is_true:
            # Go prints the value slice: invalid filter 'is-task=[yes]'
            raise InvalidArgument(f"invalid filter '{key}=[{' '.join(values)}]'")
        return is_true

    def exact_match(self, key: str, source: str) -> bool:
        values = self.fields.get(key)
        if not values:
            return True
        return source in values

    def match(self, key: str, source: str) -> bool:
        """Exact, else any value as an (unanchored) regular expression; a value that
        does not compile is skipped, as Go's regexp.MatchString error is."""
        if self.exact_match(key, source):
            return True
        for pattern in self.fields.get(key, ()):
            try:
                if re.search(pattern, source):
                    return True
            except re.error:
                continue
        return False

    def match_kv_list(self, key: str, sources: Mapping[str, str]) -> bool:
        values = self.fields.get(key)
        if not values:
            return True
        if not sources:
            return False
        for value in values:
            k, eq, v = value.partition("=")
            if k not in sources or (eq and sources[k] != v):
                return False
        return True


def prune_filter(raw: FilterArg) -> Callable[[Container], bool]:
    """Which stopped containers POST /containers/prune removes: filters until (a time or
    a duration before now), label and label! (dockerd's ContainersPrune)."""
    from dockyard.image.store import parse_timestamp

    f = _Args(raw)
    f.validate(("until", "label", "label!"))
    until_values = f.get("until")
    if len(until_values) > 1:
        raise InvalidArgument("more than one until filter specified")
    until = parse_timestamp(until_values[0]) if until_values else None

    def match(c: Container) -> bool:
        if until is not None and c.created_ns / 1e9 > until:
            return False
        if not f.match_kv_list("label", c.labels):
            return False
        if f.contains("label!") and c.labels and \
                any(_label_matches(v, c.labels) for v in f.get("label!")):
            return False
        return True

    return match


def _label_matches(value: str, labels: Mapping[str, str]) -> bool:
    k, eq, v = value.partition("=")
    return k in labels and (not eq or labels[k] == v)


_ATOI = re.compile(r"[+-]?[0-9]+")


def _atoi(key: str, value: str) -> int:
    """strconv.Atoi with Go's error text, inside dockerd's filter message."""
    if _ATOI.fullmatch(value) is None:
        reason = "invalid syntax"
    else:
        n = int(value)
        if -(1 << 63) <= n < (1 << 63):
            return n
        reason = "value out of range"
    raise InvalidArgument(f"invalid filter '{key}={value}': "
                          f"strconv.Atoi: parsing {json.dumps(value)}: {reason}")


def _port_number(text: str) -> str | None:
    """network.parsePortNumber's failure reason, or None when TEXT is a port."""
    if text == "":
        return "value is empty"
    if not text.isascii() or not text.isdigit():
        return "invalid syntax"
    if int(text) > 65535:
        return "value out of range"
    return None


def _port_filter(key: str, value: str) -> set[str]:
    """dockerd's portOp: VALUE is PORT[-PORT][/PROTO]; the "port/proto" strings it
    covers. Errors in dockerd's words."""
    if ":" in value:
        raise InvalidArgument(f"filter for '{key}' should not contain ':': {value}")

    def fail(reason: str) -> InvalidArgument:
        return InvalidArgument(f"error while looking up for {key} {value}: {reason}")

    if value == "":
        raise fail("invalid port range: value is empty")
    ports, _, proto = value.partition("/")
    proto = proto.lower() or "tcp"
    start, dash, end = ports.partition("-")
    if (err := _port_number(start)) is not None:
        raise fail(f"invalid start port '{start}': {err}")
    lo = int(start)
    if not dash or start == end:
        return {f"{lo}/{proto}"}
    if (err := _port_number(end)) is not None:
        raise fail(f"invalid end port '{end}': {err}")
    hi = int(end)
    if hi < lo:
        raise fail(f"invalid port range: {value}")
    return {f"{p}/{proto}" for p in range(lo, hi + 1)}


# AncestorResolver(reference) -> the image id it names and the ids of all its
# descendants (images built on it); NotFound (or None) when it names no image.
AncestorResolver = Callable[[str], "Iterable[str] | None"]


# -- atomic files ------------------------------------------------------------------------

def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _mounts_under(path: str) -> list[str]:
    """Mount points at or below PATH (from /proc/self/mountinfo): a recursive delete
    must never descend into a still-mounted rootfs or volume."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(" ")
                if len(parts) > 4:
                    # mountinfo escapes space, tab, newline and backslash as octal.
                    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                                   parts[4])
                    if (point + "/").startswith(prefix):
                        found.append(point)
    except OSError:
        pass
    return found


# -- the store -------------------------------------------------------------------------

class ContainerStore:
    """Every container's record, in memory and under ROOT, as dockerd keeps them."""

    def __init__(self, root: str, rng: Any = None) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._by_id: dict[str, Container] = {}
        self._names: dict[str, str] = {}   # canonical name -> id
        self._rng = rng                    # tests pass a seeded random.Random
        os.makedirs(root, mode=0o710, exist_ok=True)
        self._load()

    # -- start-up ------------------------------------------------------------------------

    def _load(self) -> None:
        for entry in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, entry)
            if entry.startswith(_REMOVING):
                # A removal interrupted by a crash: the record was already gone.
                self._delete_tree(path)
                continue
            if _ID64.fullmatch(entry) is None or not os.path.isdir(path):
                continue
            self._clean_temp_files(path)
            try:
                c = self._read(entry)
            except FileNotFoundError:
                # Created up to the directory but never acknowledged (crash during add).
                log.warning("container directory %s has no %s; ignored", entry, CONFIG_FILE)
                continue
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("cannot load container %s: %s", entry, exc)
                continue
            if c.ID != entry:
                log.error("container %s is stored at %s; ignored", c.ID, entry)
                continue
            name = names_mod.canonical_name(c.Name) if c.Name else ""
            if not name or name in self._names:
                # Unnamed or a name clash (only possible by hand-editing): give it a
                # fresh name rather than lose the container.
                new = self._generate_name(c.ID)
                log.warning("container %s: name %r unusable, renamed %s", c.ID, c.Name, new)
                c.Name = new
                self._persist(c, host_config=False)
            else:
                c.Name = name
            self._by_id[c.ID] = c
            self._names[c.Name] = c.ID

    def _clean_temp_files(self, directory: str) -> None:
        for name in os.listdir(directory):
            if name.startswith(".") and TMP_MARK in name:
                _unlink_quiet(os.path.join(directory, name))

    def _read(self, cid: str) -> Container:
        directory = os.path.join(self.root, cid)
        with open(os.path.join(directory, CONFIG_FILE), "rb") as f:
            doc = json.loads(f.read())
        try:
            with open(os.path.join(directory, HOSTCONFIG_FILE), "rb") as f:
                host_config = json.loads(f.read())
        except FileNotFoundError:
            host_config = {}
        if not isinstance(doc, dict) or not isinstance(host_config, dict):
            raise ValueError("not a JSON object")
        return Container.from_disk(doc, host_config)

    # -- persistence ---------------------------------------------------------------------

    def dir(self, cid: str) -> str:
        """The container's directory (where the daemon keeps its /etc files and logs)."""
        return os.path.join(self.root, cid)

    def _persist(self, c: Container, host_config: bool = True) -> None:
        directory = self.dir(c.ID)
        try:
            # hostconfig.json first: config.v2.json landing is what makes a new
            # container exist, so it must find its hostconfig already there.
            if host_config:
                write_atomic(os.path.join(directory, HOSTCONFIG_FILE),
                             json.dumps(c.HostConfig).encode(), 0o600)
            write_atomic(os.path.join(directory, CONFIG_FILE), json.dumps(c.to_disk()).encode(), 0o600)
        except OSError as exc:
            raise SystemFailure(f"saving container {c.ID}: {exc.strerror or exc}") from exc

    def _delete_tree(self, path: str) -> None:
        mounted = _mounts_under(path)
        if mounted:
            raise Conflict(f"cannot remove {path}: still mounted: {', '.join(mounted)}")
        shutil.rmtree(path, ignore_errors=True)

    # -- names ---------------------------------------------------------------------------

    def _generate_name(self, cid: str) -> str:
        return names_mod.generate_name(lambda n: n in self._names, cid, self._rng)

    def _reserve_check(self, cid: str, name: str) -> str:
        """dockerd's reserveName, minus the reservation: NAME validated and made
        canonical; Conflict in dockerd's words when another container holds it."""
        canonical = names_mod.validate_name(name)
        holder = self._names.get(canonical)
        if holder is not None and holder != cid:
            raise Conflict(f"Conflict. The container name {json.dumps(canonical)} is already "
                           f"in use by container {json.dumps(holder)}. You have to remove "
                           f"(or rename) that container to be able to reuse that name.")
        return canonical

    def names(self) -> dict[str, str]:
        """Every canonical name in use, with the id holding it."""
        with self._lock:
            return dict(self._names)

    # -- records -------------------------------------------------------------------------

    def add(self, container: Container) -> Container:
        """Record a new CONTAINER durably; its name is validated (Docker's rule) and
        reserved, or generated when empty. Returns the stored record (a copy)."""
        c = copy.deepcopy(container)
        if _ID64.fullmatch(c.ID) is None:
            raise InvalidArgument(f"invalid container id: {c.ID!r}")
        with self._lock:
            if c.ID in self._by_id:
                raise Conflict(f"container {c.ID} already exists")
            c.Name = (self._reserve_check(c.ID, c.Name) if c.Name
                      else self._generate_name(c.ID))
            directory = self.dir(c.ID)
            try:
                os.makedirs(directory, mode=0o710, exist_ok=True)
            except OSError as exc:
                raise SystemFailure(f"creating {directory}: {exc.strerror or exc}") from exc
            self._persist(c)
            self._by_id[c.ID] = c
            self._names[c.Name] = c.ID
            return copy.deepcopy(c)

    def _resolve(self, ref: str) -> Container:
        """daemon.GetContainer: exact id, exact name (slash optional), unique id prefix."""
        if ref == "":
            raise InvalidArgument('invalid name or ID supplied: ""')
        c = self._by_id.get(ref)
        if c is not None:
            return c
        cid = self._names.get(names_mod.canonical_name(ref))
        if cid is not None:
            return self._by_id[cid]
        found = [i for i in self._by_id if i.startswith(ref)]
        if len(found) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        if not found:
            raise NotFound(f"No such container: {ref}")
        return self._by_id[found[0]]

    def get(self, ref: str) -> Container:
        """The container REF names (a copy); NotFound/InvalidArgument as dockerd."""
        with self._lock:
            return copy.deepcopy(self._resolve(ref))

    def resolve_id(self, ref: str) -> str:
        with self._lock:
            return self._resolve(ref).ID

    def __contains__(self, cid: object) -> bool:
        with self._lock:
            return cid in self._by_id

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def all(self) -> list[Container]:
        """Every container, newest first."""
        with self._lock:
            return [copy.deepcopy(c) for c in self._ordered()]

    def _ordered(self) -> list[Container]:
        return sorted(self._by_id.values(), key=lambda c: (c.created_ns, c.ID), reverse=True)

    def save(self, container: Container) -> Container:
        """Replace the stored record of CONTAINER (same id) with it, durably; for the
        fields other than State and Name (HostConfig on update, NetworkSettings,
        RestartCount, paths...). The name changes only through rename()."""
        with self._lock:
            old = self._by_id.get(container.ID)
            if old is None:
                raise NotFound(f"No such container: {container.ID}")
            c = copy.deepcopy(container)
            c.Name = old.Name
            c.State.RemovalInProgress = container.State.RemovalInProgress
            self._persist(c)
            self._by_id[c.ID] = c
            return copy.deepcopy(c)

    _STATE_FIELDS = frozenset(f.name for f in fields(State))

    def update_state(self, ref: str, **changes: Any) -> Container:
        """Change State fields of the container REF names and persist them, e.g.
        ``update_state(id, Running=True, Pid=42, StartedAt=now)``. Times may be given
        as RFC 3339 strings or as unix nanoseconds (ints). Status is derived from the
        flags (as in dockerd) and cannot be set."""
        unknown = set(changes) - self._STATE_FIELDS
        if unknown:
            raise TypeError(f"unknown State field(s): {', '.join(sorted(unknown))}")
        with self._lock:
            c = self._resolve(ref)
            new_state = copy.deepcopy(c.State)
            for key, value in changes.items():
                if key in ("StartedAt", "FinishedAt") and isinstance(value, int):
                    value = _go_time_ns(value)
                setattr(new_state, key, value)
            if new_state.Running and not c.State.Running:
                c_started = True
            else:
                c_started = False
            updated = copy.deepcopy(c)
            updated.State = new_state
            if c_started:
                updated.HasBeenStartedBefore = True
            if set(changes) != {"RemovalInProgress"}:
                self._persist(updated, host_config=False)
            self._by_id[c.ID] = updated
            return copy.deepcopy(updated)

    def rename(self, ref: str, new_name: str) -> tuple[str, str]:
        """ContainerRename: give the container REF names NEW_NAME, durably. Returns
        (old canonical name, new canonical name), for the "rename" event."""
        ref = ref.strip()
        new_name = new_name.strip()
        if ref.removeprefix("/") == "" or new_name.removeprefix("/") == "":
            raise InvalidArgument("Neither old nor new names may be empty")
        with self._lock:
            c = self._resolve(ref)
            new_name = names_mod.canonical_name(new_name)
            if c.Name == new_name:
                raise InvalidArgument(
                    "Renaming a container with the same name as its current name")
            try:
                new_name = self._reserve_check(c.ID, new_name)
            except (InvalidArgument, Conflict) as exc:
                raise type(exc)(f"Error when allocating new name: {exc}") from None
            updated = copy.deepcopy(c)
            old_name, updated.Name = c.Name, new_name
            self._persist(updated, host_config=False)
            self._by_id[c.ID] = updated
            del self._names[old_name]
            self._names[new_name] = c.ID
            return old_name, new_name

    def remove(self, ref: str) -> Container:
        """Forget the container REF names and delete its directory. The directory is
        first renamed aside (atomic: after a crash the record is either fully there or
        gone, and a half-deleted directory is finished at the next start)."""
        with self._lock:
            c = self._resolve(ref)
            directory = self.dir(c.ID)
            mounted = _mounts_under(directory)
            if mounted:
                raise Conflict(f"cannot remove container {c.ID}: still mounted: "
                               f"{', '.join(mounted)}")
            aside = os.path.join(self.root, _REMOVING + c.ID)
            try:
                os.rename(directory, aside)
                fsync_dir(self.root)
            except FileNotFoundError:
                aside = ""
            except OSError as exc:
                raise SystemFailure(f"removing container {c.ID}: {exc.strerror or exc}") from exc
            del self._by_id[c.ID]
            self._names.pop(c.Name, None)
        if aside:
            shutil.rmtree(aside, ignore_errors=True)
        return c

    def counts(self) -> dict[str, int]:
        """/info's ContainersRunning/Paused/Stopped."""
        with self._lock:
            states = [c.State.status for c in self._by_id.values()]
        return {"running": states.count("running"), "paused": states.count("paused"),
                "stopped": len(states) - states.count("running") - states.count("paused")}

    # -- GET /containers/json ------------------------------------------------------------

    def list(self, all: bool = False, filters: FilterArg = None, limit: int = 0,
             since: str | None = None, before: str | None = None,
             ancestors: AncestorResolver | None = None, copies: bool = True) -> list[Container]:
        """The containers `docker ps` shows, newest first, filtered as dockerd's
        Containers() does (daemon/list.go), quirks included:

        * `limit` > 0 shows stopped containers too, like `all`;
        * `status` filters also imply `all`;
        * `before`/`since` take an exact id or a name (not a prefix);
        * an `id` filter keeps the containers its value is a *unique* prefix of
          (candidates), then matches it as a regular expression;
        * an `ancestor` that names no image is ignored, and if none names one,
          nothing matches.

        ANCESTORS resolves an image reference to the id of the image and of its
        descendants (the image store's business, not ours)."""
        args = _Args(filters)
        if since:
            args.add("since", since)
        if before:
            args.add("before", before)
        args.validate(ACCEPTED_FILTERS)

        exited = [_atoi("exited", v) for v in args.get("exited")]
        for value in args.get("status"):
            if value not in STATES:
                raise InvalidArgument(
                    f"invalid filter 'status={value}': invalid value for state ({value}): "
                    f"must be one of {', '.join(STATES)}")
            all = True
        task_filter = args.contains("is-task")
        is_task = args.bool_or_default("is-task", False)
        for value in args.get("health"):
            if value not in HEALTHS:
                raise InvalidArgument(
                    f"invalid filter 'health={value}': invalid value for health ({value}): "
                    f"must be one of {', '.join(HEALTHS)}")

        with self._lock:
            before_id = since_id = None
            for value in args.get("before"):
                before_id = self._id_or_name(value)
            for value in args.get("since"):
                since_id = self._id_or_name(value)

            ancestor_filter = args.contains("ancestor")
            images: set[str] = set()
            for value in args.get("ancestor"):
                images.update(self._ancestor_ids(ancestors, value))

            publish: set[str] = set()
            for value in args.get("publish"):
                publish |= _port_filter("publish", value)
            expose: set[str] = set()
            for value in args.get("expose"):
                expose |= _port_filter("expose", value)

            out: list[Container] = []
            for c in self._candidates(args):
                state = c.State
                if before_id is not None:
                    if c.ID == before_id:
                        before_id = None
                    continue
                if since_id is not None and c.ID == since_id:
                    break
                if not state.Running and not all and limit <= 0:
                    continue
                if not (args.match("name", c.Name)
                        or args.match("name", c.Name.removeprefix("/"))):
                    continue
                if not args.match("id", c.ID):
                    continue
                if task_filter and is_task:  # no swarm: no container is a task
                    continue
                if not args.match_kv_list("label", c.labels):
                    continue
                # isolation: a Windows concept; accepted and ignored on Linux as dockerd.
                if limit > 0 and len(out) == limit:
                    break
                if exited and not (state.ExitCode in exited and not state.Running
                                   and _time_ns(state.StartedAt) is not None):
                    continue
                if not args.match("status", state.status):
                    continue
                if not args.exact_match("health", state.health_status):
                    continue
                if args.contains("volume") and not self._has_volume(c, args.get("volume")):
                    continue
                if ancestor_filter and c.Image not in images:
                    continue
                if args.contains("network") and not self._on_network(c, args.get("network")):
                    continue
                if (publish or expose) and not self._has_port(c, publish, expose):
                    continue
                # Stored records are replaced, never changed in place, so a caller that
                # only reads (the summaries) may take them as they are.
                out.append(copy.deepcopy(c) if copies else c)
            return out

    def summaries(self, now_ns: int | None = None,
                  resolve_image: Callable[[str], str | None] | None = None,
                  **list_args: Any) -> list[dict[str, Any]]:
        """list(**LIST_ARGS) as GET /containers/json entries."""
        return [summary(c, now_ns, resolve_image) for c in self.list(copies=False, **list_args)]

    def summary(self, c: Container, now_ns: int | None = None,
                resolve_image: Callable[[str], str | None] | None = None) -> dict[str, Any]:
        return summary(c, now_ns, resolve_image)

    def _candidates(self, args: _Args) -> list[Container]:
        """filterByNameIDMatches: with id or name filters, only the containers they
        can match, found as dockerd finds them; otherwise all, newest first."""
        ordered = self._ordered()
        ids, wanted_names = args.get("id"), args.get("name")
        if not ids and not wanted_names:
            return ordered
        matches: set[str] = set()
        for value in ids:
            found = [i for i in self._by_id if i.startswith(value)] if value else []
            if len(found) == 1:  # GetByPrefix: an ambiguous prefix matches nothing
                matches.add(found[0])
        if wanted_names:
            for c in ordered:
                if ids and c.ID not in matches:
                    continue
                if args.match("name", c.Name) or args.match("name", c.Name.removeprefix("/")):
                    matches.add(c.ID)
        return [c for c in ordered if c.ID in matches]

    def _id_or_name(self, value: str) -> str:
        """idOrNameFilter: an exact id, else a name (slash optional)."""
        if value in self._by_id:
            return value
        cid = self._names.get(names_mod.canonical_name(value))
        if cid is None:
            raise NotFound(f"No such container: {value}")
        return cid

    @staticmethod
    def _ancestor_ids(resolver: AncestorResolver | None, value: str) -> set[str]:
        if resolver is None:
            return set()
        try:
            ids = resolver(value)
        except (NotFound, InvalidArgument):
            # dockerd only logs "Error while looking up for image" and goes on.
            log.warning("Error while looking up for image %s", value)
            return set()
        return set(ids or ())

    @staticmethod
    def _has_volume(c: Container, wanted: list[str]) -> bool:
        keys: set[str] = set()
        for m in c.Mounts:
            keys.add(m.get("Name") or m.get("Source") or "")
            if m.get("Destination"):
                keys.add(m["Destination"])
        keys.discard("")
        return any(v in keys for v in wanted)

    @staticmethod
    def _on_network(c: Container, wanted: list[str]) -> bool:
        networks = c.NetworkSettings.get("Networks") or {}
        for value in wanted:
            if value in networks:
                return True
            for endpoint in networks.values():
                if isinstance(endpoint, dict) and str(endpoint.get("NetworkID") or "").startswith(value):
                    return True
        return False

    @staticmethod
    def _has_port(c: Container, publish: set[str], expose: set[str]) -> bool:
        for p in _port_summaries(c):
            if (f"{p.get('PublicPort', 0)}/{p['Type']}" in publish
                    or f"{p['PrivatePort']}/{p['Type']}" in expose):
                return True
        return False
