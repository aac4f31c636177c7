"""The OCI runtime configuration (config.json): loading, checking, the default spec.

The configuration stays the plain JSON document the spec defines (the daemon
builds it as a dict too); this module only checks it. Every field the runtime
does not implement is rejected with its path named, never silently ignored.
Sections with their own experts (linux.resources, linux.seccomp) are checked
by the cgroup and seccomp modules.
"""

from __future__ import annotations

import os

from dockyard.errors import InvalidArgument, NotFound, Unsupported
from dockyard.runtime import fastjson

OCI_VERSION = "1.2.0"

_NUM = (int,)

# Shape of the parts checked here: field -> expected type, or a nested schema
# (dict) for objects, or [schema] for arrays of objects. None accepts any value
# whose checking happens elsewhere.
_ID_MAPPING = {"containerID": int, "hostID": int, "size": int}
_HOOK = {"path": str, "args": [str], "env": [str], "timeout": int}
_SCHEMA: dict = {
    "ociVersion": str,
    "root": {"path": str, "readonly": bool},
    "mounts": [{"destination": str, "type": str, "source": str, "options": [str],
                "uidMappings": [_ID_MAPPING], "gidMappings": [_ID_MAPPING]}],
    "process": {
        "terminal": bool,
        "consoleSize": {"height": int, "width": int},
        "cwd": str,
        "env": [str],
        "args": [str],
        "rlimits": [{"type": str, "hard": int, "soft": int}],
        "apparmorProfile": str,
        "selinuxLabel": str,
        "capabilities": {k: [str] for k in ("bounding", "effective", "inheritable",
                                            "permitted", "ambient")},
        "noNewPrivileges": bool,
        "oomScoreAdj": int,
        "user": {"uid": int, "gid": int, "umask": int, "additionalGids": [int]},
    },
    "hostname": str,
    "domainname": str,
    "hooks": {k: [_HOOK] for k in ("prestart", "createRuntime", "createContainer",
                                  "startContainer", "poststart", "poststop")},
    "annotations": {"*": str},
    "linux": {
        "namespaces": [{"type": str, "path": str}],
        "uidMappings": [_ID_MAPPING],
        "gidMappings": [_ID_MAPPING],
        "devices": [{"type": str, "path": str, "major": int, "minor": int,
                     "fileMode": int, "uid": int, "gid": int}],
        "cgroupsPath": str,
        "resources": None,
        "rootfsPropagation": str,
        "seccomp": None,
        "sysctl": {"*": str},
        "maskedPaths": [str],
        "readonlyPaths": [str],
        "mountLabel": str,
    },
}

# Fields that may be present but must be empty, since they name a facility
# (AppArmor, SELinux) this runtime does not apply.
_MUST_BE_EMPTY = ("process.apparmorProfile", "process.selinuxLabel", "linux.mountLabel")

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}


def _check(value: object, schema: object, path: str) -> None:
    if schema is None:
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise InvalidArgument(f"{path}: must be an object")
        if "*" in schema:
            for key, item in value.items():
                _check(item, schema["*"], f"{path}.{key}")
            return
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key not in schema:
                raise Unsupported(f"{sub}: unknown or unsupported field")
            _check(item, schema[key], sub)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise InvalidArgument(f"{path}: must be an array")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{path}[{i}]")
    else:
        # bool is a subclass of int: keep true/false out of integer fields.
        if not isinstance(value, schema) or (schema is int and isinstance(value, bool)):
            raise InvalidArgument(f"{path}: must be {_TYPE_NAMES[schema]}")  # type: ignore[index]


def validate(config: dict) -> None:
    """Check the parts of config.json this module owns; raise naming the field."""
    if not isinstance(config, dict):
        raise InvalidArgument("config.json: must be a JSON object")
    _check(config, _SCHEMA, "")
    for path in _MUST_BE_EMPTY:
        section, field = path.split(".")
        if config.get(section, {}).get(field):
            raise Unsupported(f"{path}: not supported by this runtime")
    version = config.get("ociVersion")
    if not version:
        raise InvalidArgument("ociVersion: missing")
    if not version.startswith("1."):
        raise Unsupported(f"ociVersion: {version!r} is not a 1.x version of the runtime spec")
    if "root" not in config or not config["root"].get("path"):
        raise InvalidArgument("root.path: missing")
    process = config.get("process")
    if process is None:
        raise InvalidArgument("process: missing")
    validate_process(process)
    for i, mount in enumerate(config.get("mounts", [])):
        dest = mount.get("destination", "")
        if not dest.startswith("/"):
            raise InvalidArgument(f"mounts[{i}].destination: {dest!r} must be an absolute path")
        if mount.get("uidMappings") or mount.get("gidMappings"):
            raise Unsupported(f"mounts[{i}]: idmapped mounts are not supported")
    for kind, hooks in config.get("hooks", {}).items():
        for i, hook in enumerate(hooks):
            if not hook.get("path", "").startswith("/"):
                raise InvalidArgument(f"hooks.{kind}[{i}].path: must be an absolute path")
            if "timeout" in hook and hook["timeout"] <= 0:
                raise InvalidArgument(f"hooks.{kind}[{i}].timeout: must be positive")
            for j, var in enumerate(hook.get("env", [])):
                if "=" not in var:
                    raise InvalidArgument(f"hooks.{kind}[{i}].env[{j}]: {var!r} is not of the form KEY=value")
    _validate_linux(config.get("linux", {}), config)


def validate_process(process: dict, where: str = "process") -> None:
    """Check a process object (config.json's, or one given to exec)."""
    _check(process, _SCHEMA["process"], where)
    if not process.get("args"):
        raise InvalidArgument(f"{where}.args: must name the program to run")
    cwd = process.get("cwd", "")
    if not cwd.startswith("/"):
        raise InvalidArgument(f"{where}.cwd: {cwd!r} must be an absolute path")
    if "user" not in process:
        raise InvalidArgument(f"{where}.user: missing")
    user = process["user"]
    for key in ("uid", "gid"):
        if key not in user:
            raise InvalidArgument(f"{where}.user.{key}: missing")
        if not 0 <= user[key] <= 0xFFFFFFFE:
            raise InvalidArgument(f"{where}.user.{key}: {user[key]} is out of range")
    for i, gid in enumerate(user.get("additionalGids", [])):
        if not 0 <= gid <= 0xFFFFFFFE:
            raise InvalidArgument(f"{where}.user.additionalGids[{i}]: {gid} is out of range")
    if "umask" in user and not 0 <= user["umask"] <= 0o777:
        raise InvalidArgument(f"{where}.user.umask: {user['umask']:#o} is out of range")
    for i, var in enumerate(process.get("env", [])):
        if "=" not in var:
            raise InvalidArgument(f"{where}.env[{i}]: {var!r} is not of the form KEY=value")
    size = process.get("consoleSize")
    if size and not (0 <= size.get("height", 0) <= 0xFFFF and 0 <= size.get("width", 0) <= 0xFFFF):
        raise InvalidArgument(f"{where}.consoleSize: out of range")
    if "oomScoreAdj" in process and not -1000 <= process["oomScoreAdj"] <= 1000:
        raise InvalidArgument(f"{where}.oomScoreAdj: {process['oomScoreAdj']} is outside -1000..1000")


def _validate_linux(linux: dict, config: dict) -> None:
    from dockyard.runtime.linux import NAMESPACES

    seen: set[str] = set()
    for i, ns in enumerate(linux.get("namespaces", [])):
        kind = ns.get("type")
        if kind not in NAMESPACES:
            raise InvalidArgument(f"linux.namespaces[{i}].type: unknown namespace type {kind!r}")
        if kind in seen:
            raise InvalidArgument(f"linux.namespaces[{i}].type: namespace {kind!r} listed twice")
        seen.add(kind)
        if kind == "time" and not ns.get("path"):
            raise Unsupported(f"linux.namespaces[{i}]: a new time namespace is not supported")
        path = ns.get("path")
        if path is not None and not os.path.exists(path):
            raise NotFound(f"linux.namespaces[{i}].path: {path} does not exist")
    has_userns = "user" in seen
    for key in ("uidMappings", "gidMappings"):
        if linux.get(key) and not has_userns:
            raise InvalidArgument(f"linux.{key}: given without a user namespace")
    if has_userns and not any(ns.get("path") for ns in linux["namespaces"] if ns["type"] == "user"):
        for key in ("uidMappings", "gidMappings"):
            if not linux.get(key):
                raise InvalidArgument(f"linux.{key}: a new user namespace needs mappings")
    if config.get("hostname") and "uts" not in seen:
        raise InvalidArgument("hostname: setting it needs a new uts namespace")
    if config.get("domainname") and "uts" not in seen:
        raise InvalidArgument("domainname: setting it needs a new uts namespace")
    prop = linux.get("rootfsPropagation")
    if prop and prop not in _PROPAGATION:
        raise InvalidArgument(f"linux.rootfsPropagation: unknown propagation {prop!r}")
    for i, dev in enumerate(linux.get("devices", [])):
        if dev.get("type") not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"linux.devices[{i}].type: must be c, b, u or p")
        if not dev.get("path", "").startswith("/dev/"):
            raise InvalidArgument(f"linux.devices[{i}].path: must be under /dev/")
        if dev["type"] != "p" and ("major" not in dev or "minor" not in dev):
            raise InvalidArgument(f"linux.devices[{i}]: major and minor are required")
    for key in linux.get("sysctl", {}):
        if not key or "/" in key or ".." in key:
            raise InvalidArgument(f"linux.sysctl.{key}: not a sysctl name")
        needs = _sysctl_namespace(key)
        if needs is None:
            raise Unsupported(f"linux.sysctl.{key}: not in a namespace of the container's own; "
                              "setting it would change the host")
        if needs not in seen:
            raise InvalidArgument(f"linux.sysctl.{key}: needs the container's own {needs} namespace")
    prop = linux.get("rootfsPropagation", "")
    if prop in ("shared", "rshared"):
        raise Unsupported(f"linux.rootfsPropagation: {prop!r} is not supported yet")


# Sysctls that belong to a namespace, as runc allows them (others are host-wide).
_IPC_SYSCTLS = frozenset(("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"))


def _sysctl_namespace(key: str) -> str | None:
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return "ipc"
    if key.startswith("net."):
        return "network"
    if key in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


_PROPAGATION = ("private", "rprivate", "slave", "rslave", "shared", "rshared",
                "unbindable", "runbindable")


def load(bundle: str) -> dict:
    """Read and check BUNDLE/config.json."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = fastjson.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file (is {bundle} an OCI bundle?)") from None
    except ValueError as e:
        raise InvalidArgument(f"{path}: malformed JSON: {e}") from None
    validate(config)
    return config


def rootfs_path(bundle: str, config: dict) -> str:
    root = config["root"]["path"]
    return os.path.normpath(os.path.join(bundle, root))


def default_spec() -> dict:
    """The configuration `spec` writes: the same defaults as runc's."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                             "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "dockyard",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                 "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
