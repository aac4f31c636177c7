"""The Engine: what dockyardd serves, without HTTP.

It owns the image store, the registry settings and the events hub, and wraps the
store's operations so that each emits the event dockerd emits for it. Blocking store
calls run in threads (asyncio.to_thread): the API's event loop must keep serving
pings and event streams while a large image unpacks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import platform
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dockyard import __version__
from dockyard.daemon.config import DaemonConfig
from dockyard.distribution.credentials import AuthConfig
from dockyard.distribution.registries import RegistryConfig
from dockyard.errors import DockyardError, InvalidArgument
from dockyard.image.reference import Reference, parse_docker_ref, parse_normalized
from dockyard.image.store import ImageStore

log = logging.getLogger(__name__)

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
# Docker's engine version we present ourselves as compatible with, for clients that
# compare it (the CLI prints it; scripts parse it).
ENGINE_VERSION = __version__
EVENTS_KEPT = 1024  # dockerd keeps the last 1024 events too

ProgressFn = Callable[[dict[str, Any]], None]


# -- events --------------------------------------------------------------------------

@dataclass
class Event:
    type: str
    action: str
    actor_id: str
    attributes: dict[str, str]
    time_nano: int = field(default_factory=time.time_ns)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type in ("image", "container"):
            # The legacy fields, still sent for API < 1.52.
            out.update({"status": self.action, "id": self.actor_id})
        out.update({"Type": self.type, "Action": self.action,
                    "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
                    "scope": "local", "time": self.time_nano // 1_000_000_000,
                    "timeNano": self.time_nano})
        return out


class EventsHub:
    """The recent events and their live subscribers (each an asyncio.Queue)."""

    def __init__(self) -> None:
        self.history: list[Event] = []
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def emit(self, event: Event) -> None:
        """Record EVENT; callable from any thread (store work runs in threads)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._publish, event)
        else:
            self._publish(event)

    def _publish(self, event: Event) -> None:
        self.history.append(event)
        del self.history[:-EVENTS_KEPT]
        for q in list(self._subscribers):
            q.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)


# -- registry auth -------------------------------------------------------------------

def decode_registry_auth(header: str | None) -> AuthConfig | None:
    """X-Registry-Auth: base64url of a JSON AuthConfig. dockerd ignores an
    unreadable one rather than failing (old clients sent junk), and so do we."""
    if not header:
        return None
    try:
        padded = header + "=" * (-len(header) % 4)
        raw = base64.urlsafe_b64decode(padded.encode())
        doc = json.loads(raw)
    except (ValueError, TypeError):
        log.debug("unreadable X-Registry-Auth header ignored")
        return None
    if not isinstance(doc, dict):
        return None

    def s(*keys: str) -> str:
        for k in keys:
            v = doc.get(k)
            if isinstance(v, str) and v:
                return v
        return ""
    auth = AuthConfig(username=s("username", "Username"), password=s("password", "Password"),
                      identity_token=s("identitytoken", "IdentityToken"),
                      server_address=s("serveraddress", "ServerAddress"))
    return None if auth.empty else auth


# -- the engine -----------------------------------------------------------------------

class Engine:
    """Dockyard's daemon state: CONFIG's image store, registries and events."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        os.makedirs(config.data_root, mode=0o711, exist_ok=True)
        os.makedirs(config.exec_root, mode=0o700, exist_ok=True)
        self.images = ImageStore(os.path.join(config.data_root, "image"))
        self.images.cleanup()
        self.registries = RegistryConfig(mirrors=list(config.registry_mirrors),
                                         insecure_registries=list(config.insecure_registries))
        self.events = EventsHub()
        self.id = self._engine_id()
        self.started = time.time()
        from dockyard.daemon.lifecycle import Lifecycle
        from dockyard.daemon.ociruntime import RuntimeTable

        # An unknown default or a reserved name stops the daemon, as dockerd refuses them.
        self.runtimes = RuntimeTable.from_config(config.runtimes, config.default_runtime)
        self.lifecycle = Lifecycle(config.data_root, config.exec_root, self.images,
                                   self._container_event, runtimes=self.runtimes)
        from dockyard.daemon.health import HealthMonitor

        self.health = HealthMonitor.watch(self.lifecycle)  # before restore: checks resume
        # Live restore: containers that kept running under the monitor get their
        # waiters back; those that exited meanwhile get their exit codes.
        self.lifecycle.restore()

    def _engine_id(self) -> str:
        # dockerd keeps a stable engine ID in its data root; a UUID here.
        path = os.path.join(self.config.data_root, "engine-id")
        try:
            with open(path) as f:
                value = f.read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = str(uuid.uuid4())
        with open(path + ".tmp", "w") as f:
            f.write(value + "\n")
        os.replace(path + ".tmp", path)
        return value

    def client(self, auth: AuthConfig | None = None) -> Any:
        from dockyard.distribution.client import RegistryClient

        return RegistryClient(self.registries, auth,
                              user_agent=f"dockyard/{__version__} (linux)")

    # -- events -----------------------------------------------------------------------

    def image_event(self, action: str, actor: str, name: str,
                    labels: dict[str, str] | None = None) -> None:
        attrs = dict(labels or {})
        attrs["name"] = name
        self.events.emit(Event("image", action, actor, attrs))

    def _container_event(self, action: str, c: Any, extra: dict[str, str] | None) -> None:
        attrs = dict(c.labels)
        attrs.update({"image": str(c.Config.get("Image") or c.Image), "name": c.Name.lstrip("/")})
        attrs.update(extra or {})
        self.events.emit(Event("container", action, c.ID, attrs))

    def _labels(self, image_id: str) -> dict[str, str]:
        try:
            return dict(self.images.get(image_id).config.labels or {})
        except Exception:  # an event must never fail the operation it reports
            return {}

    # -- images ---------------------------------------------------------------------

    async def pull(self, ref: Reference, platform: str, progress: ProgressFn,
                   auth: AuthConfig | None = None) -> Any:
        client = self.client(auth)
        try:
            img = await self.images.pull(ref, platform, progress, client=client)
        finally:
            await client.close()
        self.image_event("pull", ref.familiar(), ref.familiar_name, dict(img.config.labels or {}))
        return img

    async def push(self, ref: Reference, progress: ProgressFn,
                   auth: AuthConfig | None = None) -> Any:
        client = self.client(auth)
        try:
            digest = await self.images.push(ref, progress, client=client)
        finally:
            await client.close()
        self.image_event("push", ref.familiar(), ref.familiar_name)
        return digest

    def tag(self, source: str, target: Reference) -> Reference:
        img = self.images.get(source)
        ref = self.images.tag(img, target)
        self.image_event("tag", str(img.id), ref.familiar(), dict(img.config.labels or {}))
        return ref

    def remove(self, name: str, force: bool, prune: bool) -> list[dict[str, str]]:
        image_id = str(self.images.resolve(name))
        labels = self._labels(image_id)
        records = self.images.remove(name, force=force, prune=prune, in_use=self._image_users)
        if any(r.get("Deleted") == image_id for r in records):
            # dockerd keeps no compressed blobs; ours go with the last image using them.
            try:
                self.images.gc()
            except DockyardError as exc:
                log.warning("collecting content after removing %s: %s", image_id, exc)
        for r in records:
            if "Untagged" in r:
                self.image_event("untag", image_id, image_id, labels)
            elif r.get("Deleted", "").startswith("sha256:") and self._is_image_record(r, image_id):
                self.image_event("delete", r["Deleted"], r["Deleted"], labels)
        return records

    @staticmethod
    def _is_image_record(record: dict[str, str], image_id: str) -> bool:
        return record.get("Deleted") == image_id

    def prune(self, filters: dict[str, list[str]] | None) -> dict[str, Any]:
        report = self.images.prune(filters=filters, in_use=self._image_users)
        for r in report.get("ImagesDeleted") or []:
            if "Untagged" in r:
                self.image_event("untag", r["Untagged"], r["Untagged"])
        # dockerd also reports the prune itself.
        self.events.emit(Event("image", "prune", "",
                               {"reclaimed": str(report.get("SpaceReclaimed", 0))}))
        return report

    def save(self, names: list[str], out: BinaryIO) -> None:
        from dockyard.image import archive

        ids = [str(self.images.resolve(n)) for n in names]
        archive.save(self.images, names, out)
        for i in dict.fromkeys(ids):
            self.image_event("save", i, i, self._labels(i))

    def load(self, stream: BinaryIO) -> list[str]:
        from dockyard.image import archive

        loaded = archive.load(self.images, stream)
        for name in loaded:
            try:
                image_id = str(self.images.resolve(name))
            except Exception:
                continue
            self.image_event("load", image_id, image_id, self._labels(image_id))
        return loaded

    def import_image(self, stream: BinaryIO, ref: str | None, changes: Iterable[str],
                     message: str, platform: str | None) -> Any:
        from dockyard.image import archive

        img = archive.import_rootfs(self.images, stream, ref, changes=changes, message=message,
                                    platform=platform or None)
        self.image_event("import", str(img.id), str(img.id), dict(img.config.labels or {}))
        return img

    async def login(self, auth: AuthConfig) -> str:
        from dockyard.distribution.credentials import login

        class _Discard:
            # The daemon checks credentials; storing them is the client's business.
            def store(self, registry: str, auth: AuthConfig) -> None:
                pass

        return await login(auth.server_address, auth.username, auth.password,
                           credentials=_Discard(),  # type: ignore[arg-type]
                           registries=self.registries, user_agent=f"dockyard/{__version__}")

    # -- system -----------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        uname = os.uname()
        details = {"ApiVersion": API_VERSION, "Arch": _go_arch(), "BuildTime": "",
                   "Experimental": "false", "GitCommit": "", "GoVersion": _py_version(),
                   "KernelVersion": uname.release, "MinAPIVersion": MIN_API_VERSION,
                   "Os": "linux"}
        return {
            "Platform": {"Name": f"Dockyard Engine - Community"},
            "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": details}],
            "Version": ENGINE_VERSION, "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION, "GitCommit": "", "GoVersion": _py_version(),
            "Os": "linux", "Arch": _go_arch(), "KernelVersion": uname.release,
            "BuildTime": "",
        }

    def info(self) -> dict[str, Any]:
        uname = os.uname()
        images = len(self.images.images())
        cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        counts = self.lifecycle.store.counts()
        return {
            "ID": self.id,
            "Containers": sum(counts.values()), "ContainersRunning": counts["running"],
            "ContainersPaused": counts["paused"], "ContainersStopped": counts["stopped"],
            "Images": images,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", _fs_type(self.config.data_root)],
                             ["Supports d_type", "true"], ["Using metacopy", "false"],
                             ["Native Overlay Diff", "true"], ["userxattr", "false"]],
            "Plugins": {"Volume": ["local"], "Network": ["host", "null"],
                        "Authorization": None, "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "KernelMemoryTCP": False,
            "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True,
            "PidsLimit": True, "IPv4Forwarding": _ip_forward(), "BridgeNfIptables": False,
            "BridgeNfIp6tables": False, "Debug": self.config.debug,
            "NFd": _count_fds(), "OomKillDisable": not cgroup_v2,
            "NGoroutines": 0, "SystemTime": _rfc3339_now(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs", "CgroupVersion": "2" if cgroup_v2 else "1",
            "NEventsListener": len(self.events._subscribers),
            "KernelVersion": uname.release,
            "OperatingSystem": _os_name(), "OSVersion": _os_version(), "OSType": "linux",
            "Architecture": uname.machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": self.registry_config_json(),
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(),
            "GenericResources": None,
            "DockerRootDir": self.config.data_root,
            "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": ENGINE_VERSION,
            "Runtimes": self.runtimes.info(),
            "DefaultRuntime": self.runtimes.default,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True,  # containers always outlive the daemon here
            "Isolation": "",
            "InitBinary": "docker-init",
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
            "SecurityOptions": _security_options(cgroup_v2),
            "CDISpecDirs": [],
            "Warnings": None,
        }

    def registry_config_json(self) -> dict[str, Any]:
        cidrs = ["127.0.0.0/8", "::1/128"]
        index: dict[str, Any] = {}
        for name in self.registries.insecure_registries:
            if "/" in name:
                cidrs.append(name)
            else:
                index[name] = {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
        index["docker.io"] = {"Name": "docker.io", "Mirrors": list(self.registries.mirrors),
                              "Secure": True, "Official": True}
        return {"AllowNondistributableArtifactsCIDRs": None,
                "AllowNondistributableArtifactsHostnames": None,
                "InsecureRegistryCIDRs": cidrs, "IndexConfigs": index,
                "Mirrors": list(self.registries.mirrors)}

    def disk_usage(self) -> dict[str, Any]:
        images = self.images.list(all=False)
        layers = sum(i.get("Size", 0) for i in images)
        lc = self.lifecycle
        containers = lc.list(all=True, filters=None, limit=0)
        for i in images:
            i["Containers"] = sum(1 for c in containers if c.get("ImageID") == i["Id"])
        for c in containers:
            c["SizeRw"] = lc.size_rw(c["Id"])
            c["SizeRootFs"] = c["SizeRw"] + next(
                (i.get("Size", 0) for i in images if i["Id"] == c.get("ImageID")), 0)
        return {"LayersSize": layers, "Images": images, "Containers": containers,
                "Volumes": [], "BuildCache": []}

    def container_prune(self, filters: dict[str, Any] | None) -> dict[str, Any]:
        report = self.lifecycle.prune(filters)
        self.events.emit(Event("container", "prune", "",
                               {"reclaimed": str(report.get("SpaceReclaimed", 0))}))
        return report

    def _image_users(self, image_id: str) -> list[Any]:
        """The containers using IMAGE_ID, for rmi's conflict checks."""
        from dockyard.image.store import ContainerUse

        return [ContainerUse(c.ID, running=c.State.Running)
                for c in self.lifecycle.store.all() if c.Image == image_id]

    async def close(self) -> None:
        self.lifecycle.close()


# -- host facts ---------------------------------------------------------------------

_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def _go_arch() -> str:
    m = os.uname().machine
    return _GO_ARCH.get(m, m)


def _py_version() -> str:
    return f"python{platform.python_version()}"


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    k, eq, v = line.strip().partition("=")
                    if eq:
                        out[k] = v.strip().strip('"')
            break
        except OSError:
            continue
    return out


def _os_name() -> str:
    return _os_release().get("PRETTY_NAME", "Linux")


def _os_version() -> str:
    return _os_release().get("VERSION_ID", "")


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _count_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _ip_forward() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _fs_type(path: str) -> str:
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")):
                    if len(parts[1]) >= len(best):
                        best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return {"ext4": "extfs", "ext3": "extfs", "ext2": "extfs"}.get(fstype, fstype)


def _security_options(cgroup_v2: bool) -> list[str]:
    opts = ["name=seccomp,profile=builtin"]
    if cgroup_v2:
        opts.append("name=cgroupns")
    return opts


def _rfc3339_now() -> str:
    from dockyard.image.store import now_go_time

    return now_go_time()


def parse_ref_param(text: str) -> Reference:
    """A reference given to the API; InvalidArgument "invalid reference format" as
    dockerd words it when it does not parse."""
    try:
        return parse_normalized(text)
    except InvalidArgument as exc:
        msg = str(exc)
        if msg.startswith("invalid reference format"):
            raise
        raise InvalidArgument(msg) from None


__all__ = ["API_VERSION", "MIN_API_VERSION", "Engine", "Event", "EventsHub",
           "decode_registry_auth", "parse_docker_ref", "parse_ref_param"]
