"""The OCI runtime configuration of a container, built as dockerd builds it.

`build_spec` turns a container's Config and HostConfig (the Engine API's create body,
after the daemon filled its defaults) and its image's Config into the config.json the
runtime runs: the same defaults as moby's oci/defaults.go, the same merging of
entrypoint, command and environment, the same mount, capability, seccomp and resource
rules as daemon/oci_linux.go, with Docker's error messages where users see them.

Anything the API can ask for that Dockyard cannot honour yet is refused with the field
named (Unsupported), never dropped: a container that silently runs with less isolation,
or without the limit it was given, is worse than one that does not start. Fields that
Docker itself fills with defaults (empty strings, zeros, empty lists, null) are not
"asked for" and pass.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from dockyard.errors import InvalidArgument, Unsupported
from dockyard.runtime import capabilities as caps_mod
from dockyard.runtime.capabilities import DOCKER_DEFAULT
from dockyard.runtime.rootfs import secure_join
from dockyard.runtime.seccomp_default import docker_default_profile, resolve_docker_profile
from dockyard.runtime.spec import OCI_VERSION

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
CPU_PERIOD = 100000  # microseconds: what Docker uses to turn NanoCpus into a quota
MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory since 20.10

# moby oci/defaults.go (Docker 28).
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

ULIMIT_NAMES = frozenset(("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
                          "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending",
                          "stack"))

# Config fields this module maps, and ones whose meaning lives elsewhere in the daemon
# (attaching, labels, health checks, stop handling) and so are not the spec's business.
_CONFIG_MAPPED = frozenset(("Hostname", "Domainname", "User", "Env", "Cmd", "Entrypoint",
                            "WorkingDir", "Tty", "NetworkDisabled"))
_CONFIG_ELSEWHERE = frozenset(("AttachStdin", "AttachStdout", "AttachStderr", "OpenStdin",
                               "StdinOnce", "Labels", "StopSignal", "StopTimeout",
                               "Healthcheck", "Image", "ArgsEscaped", "OnBuild", "Shell",
                               "ExposedPorts"))
_HOST_MAPPED = frozenset((
    "Binds", "NetworkMode", "CapAdd", "CapDrop", "CgroupnsMode", "Dns", "DnsOptions",
    "DnsSearch", "ExtraHosts", "GroupAdd", "IpcMode", "OomScoreAdj", "PidMode", "Privileged",
    "ReadonlyRootfs", "SecurityOpt", "Tmpfs", "UTSMode", "UsernsMode", "ShmSize", "Sysctls",
    "Runtime", "Isolation", "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight",
    "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "Devices", "MemoryReservation",
    "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits", "Mounts",
    "MaskedPaths", "ReadonlyPaths", "Init", "ConsoleSize", "Annotations",
))
_HOST_ELSEWHERE = frozenset(("ContainerIDFile", "LogConfig", "RestartPolicy", "AutoRemove"))


# A minimal init for HostConfig.Init: tini, as Docker ships it (docker-init), statically
# linked so that it runs in any image.
INIT_DESTINATION = "/sbin/docker-init"
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/libexec/docker/docker-init")


def find_init() -> str | None:
    for path in INIT_BINARIES:
        if os.access(path, os.X_OK):
            return path
    return None


def _is_default(value: object) -> bool:
    """Whether VALUE is what Docker sends for a field nobody set."""
    if value is None or value is False or value == "" or value == 0:
        return True
    if isinstance(value, (list, tuple)):
        return len(value) == 0
    if isinstance(value, dict):
        # A Go struct (LogConfig, RestartPolicy) is unset when all its fields are; a map
        # (Volumes, PortBindings) is set as soon as it has a key.
        return all(k[:1].isupper() and _is_default(v) for k, v in value.items())
    return False


def _refuse_unsupported(config: Mapping[str, Any], host: Mapping[str, Any],
                        elsewhere: Iterable[str]) -> None:
    extra = set(elsewhere)
    for key, value in config.items():
        if key in _CONFIG_MAPPED or key in _CONFIG_ELSEWHERE or key in extra:
            continue
        if not _is_default(value):
            raise Unsupported(f"Config.{key}: not supported by Dockyard yet")
    for key, value in host.items():
        if key in _HOST_MAPPED or key in _HOST_ELSEWHERE or key in extra:
            continue
        if key == "MemorySwappiness" and value == -1:
            continue
        if not _is_default(value):
            raise Unsupported(f"HostConfig.{key}: not supported by Dockyard yet")
    # HostConfig.Runtime was checked against the daemon's runtimes when the container was
    # created (daemon.lifecycle); the spec is the same whichever runtime runs it.
    if host.get("Isolation") not in (None, "", "default"):
        raise Unsupported(f"HostConfig.Isolation: {host['Isolation']!r} is not supported on Linux")


# --------------------------------------------------------------------------- process

def _strslice(value: object, field: str) -> list[str] | None:
    """Docker's StrSlice: null, a string, or a list of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidArgument(f"{field}: must be a string or an array of strings")


def command(config: Mapping[str, Any], image_config: Mapping[str, Any]) -> list[str]:
    """The process arguments, with Docker's rules for merging the image's defaults.

    An Entrypoint given in the request replaces the image's and discards the image's
    Cmd too (`--entrypoint` clears the default command); `--entrypoint ""` arrives as
    [""] and means "no entrypoint".
    """
    entrypoint = _strslice(config.get("Entrypoint"), "Config.Entrypoint")
    cmd = _strslice(config.get("Cmd"), "Config.Cmd") or []
    if not entrypoint:  # None or []: Go's len() == 0
        if not cmd:
            cmd = _strslice(image_config.get("Cmd"), "image Cmd") or []
        if entrypoint is None:
            entrypoint = _strslice(image_config.get("Entrypoint"), "image Entrypoint")
    ep = [] if entrypoint == [""] else (entrypoint or [])
    args = ep + cmd
    if not args:
        raise InvalidArgument("No command specified")
    return args


def merge_env(defaults: list[str], overrides: Iterable[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: later keys win in place, "KEY" alone unsets."""
    out = list(defaults)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(out)}
    removed: set[int] = set()
    for value in overrides:
        key, sep, _ = value.partition("=")
        if not sep:
            if key in index:
                removed.add(index[key])
            continue
        if key in index:
            out[index[key]] = value
            removed.discard(index[key])
        else:
            index[key] = len(out)
            out.append(value)
    return [e for i, e in enumerate(out) if i not in removed]


def environment(config: Mapping[str, Any], image_config: Mapping[str, Any], hostname: str,
                tty: bool) -> list[str]:
    """The process environment in dockerd's order: PATH, HOSTNAME, TERM, then the rest."""
    merged = merge_env(list(image_config.get("Env") or []), config.get("Env") or [])
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if tty:
        base.append("TERM=xterm")
    return merge_env(base, merged)


def _read_db(rootfs: str, path: str) -> list[list[str]]:
    """Lines of ROOTFS/etc/passwd or /etc/group split on ':', resolved inside the rootfs
    (a hostile image may make them symlinks pointing at the host's)."""
    try:
        with open(secure_join(rootfs, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _num(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve_user(rootfs: str, spec: str, group_add: Iterable[str] = ()) -> dict:
    """process.user from Docker's user spec ("name", "uid", "name:group", "uid:gid"),
    looked up in the container's /etc/passwd and /etc/group as runc's GetExecUser does.
    Also returns "home" for the caller (HOME is set from it, as runc's init does)."""
    user_part, _, group_part = (spec or "").partition(":")
    passwd = _read_db(rootfs, "/etc/passwd")
    groups = _read_db(rootfs, "/etc/group")
    uid, gid, home, name = 0, 0, "/", ""
    # A numeric user is always a uid (matched by number, never by name), as in runc.
    wanted = _num(user_part) if user_part else 0
    entry = next((p for p in passwd if len(p) >= 7 and
                  (_num(p[2]) == wanted if wanted is not None else p[0] == user_part)), None)
    if entry is not None and _num(entry[2]) is not None and _num(entry[3]) is not None:
        uid, gid, home, name = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    elif wanted is not None:
        uid = wanted
    else:
        raise InvalidArgument(f"unable to find user {user_part}: no matching entries in passwd file")
    if not 0 <= uid <= 0xFFFFFFFE:
        raise InvalidArgument("uids and gids must be in range 0-4294967294")
    additional: list[int] = []
    if group_part:
        wanted = _num(group_part)
        match = next((g for g in groups if len(g) >= 3 and
                      (g[0] == group_part or (wanted is not None and _num(g[2]) == wanted))), None)
        if match is not None:
            gid = int(match[2])
        elif wanted is not None:
            gid = wanted
        else:
            raise InvalidArgument(f"unable to find group {group_part}: no matching entries in group file")
    elif name:
        # Supplementary groups come only with the implicit form, as in runc.
        for g in groups:
            if len(g) >= 4 and name in g[3].split(",") and _num(g[2]) is not None:
                additional.append(int(g[2]))
    for extra in group_add:
        wanted = _num(extra)
        match = next((g for g in groups if len(g) >= 3 and g[0] == extra), None)
        if match is not None and _num(match[2]) is not None:
            additional.append(int(match[2]))
        elif wanted is not None:
            additional.append(wanted)
        else:
            raise InvalidArgument(f"Unable to find group {extra}: no matching entries in group file")
    if not 0 <= gid <= 0xFFFFFFFE:
        raise InvalidArgument("uids and gids must be in range 0-4294967294")
    # The primary group leads the supplementary ones, as in dockerd's specs: otherwise
    # the process loses its membership of it once a setgid program changes its gid.
    user: dict = {"uid": uid, "gid": gid, "additionalGids": list(dict.fromkeys([gid, *additional]))}
    return {"user": user, "home": home}


def _normalize_cap(name: str, field: str) -> str:
    up = name.upper()
    if up == "ALL":
        return up
    if not up.startswith("CAP_"):
        up = "CAP_" + up
    if up not in caps_mod.NUMBERS:
        raise InvalidArgument(f"{field}: unknown capability: {up!r}")
    return up


def _bounding_mask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return (1 << (caps_mod.last_cap() + 1)) - 1


def all_capabilities() -> list[str]:
    """What Privileged (or CapAdd ALL) grants: every capability this kernel knows that the
    daemon itself may pass on. dockerd filters by its own bounding set the same way, so
    that privileged containers start inside a container host that withholds some."""
    mask = _bounding_mask()
    return [c for i, c in enumerate(caps_mod.NAMES[: caps_mod.last_cap() + 1]) if mask >> i & 1]


def capability_set(default: Iterable[str], add: Iterable[str] | None,
                   drop: Iterable[str] | None, privileged: bool) -> list[str]:
    """Docker's TweakCapabilities: ALL in CapAdd grants everything not dropped; ALL in
    CapDrop starts from nothing but CapAdd; otherwise the default minus drops plus adds."""
    if privileged:
        return all_capabilities()
    adds = [_normalize_cap(c, "HostConfig.CapAdd") for c in add or ()]
    drops = [_normalize_cap(c, "HostConfig.CapDrop") for c in drop or ()]
    if not adds and not drops:
        return list(default)
    if "ALL" in adds:
        out = [c for c in all_capabilities() if c not in drops]
    elif "ALL" in drops:
        out = [c for c in adds if c != "ALL"]
    else:
        out = [c for c in default if c not in drops] + adds
    return list(dict.fromkeys(out))


def rlimits(ulimits: Iterable[Mapping[str, Any]] | None) -> list[dict]:
    out = []
    for i, ul in enumerate(ulimits or ()):
        name = str(ul.get("Name", ""))
        if name not in ULIMIT_NAMES:
            raise InvalidArgument(f"HostConfig.Ulimits[{i}]: invalid ulimit type: {name}")
        soft, hard = int(ul.get("Soft", 0)), int(ul.get("Hard", 0))
        if soft > hard and hard != -1:
            raise InvalidArgument(f"HostConfig.Ulimits[{i}]: ulimit soft limit must be less than "
                                  f"or equal to hard limit: {soft} > {hard}")
        # -1 in Docker is "unlimited", which the kernel spells as all ones.
        to_u64 = lambda v: v & 0xFFFFFFFFFFFFFFFF  # noqa: E731
        out.append({"type": "RLIMIT_" + name.upper(), "hard": to_u64(hard), "soft": to_u64(soft)})
    return out


# ---------------------------------------------------------------------- security opts

def parse_security_opts(opts: Iterable[str] | None) -> dict[str, Any]:
    """SecurityOpt as {"no_new_privileges": bool, "seccomp": str|None,
    "systempaths_unconfined": bool}; what Dockyard cannot apply is refused."""
    out: dict[str, Any] = {"no_new_privileges": False, "seccomp": None,
                           "systempaths_unconfined": False}
    for opt in opts or ():
        if opt == "no-new-privileges":
            out["no_new_privileges"] = True
            continue
        if "=" in opt:
            key, value = opt.split("=", 1)
        elif ":" in opt:  # the legacy spelling, still accepted by dockerd
            key, value = opt.split(":", 1)
        else:
            raise InvalidArgument(f"invalid --security-opt 1: {opt!r}")
        if key == "no-new-privileges":
            lowered = value.lower()
            if lowered in ("1", "t", "true"):
                out["no_new_privileges"] = True
            elif lowered in ("0", "f", "false"):
                out["no_new_privileges"] = False
            else:
                raise InvalidArgument(f"invalid --security-opt 2: {opt!r}")
        elif key == "seccomp":
            out["seccomp"] = value
        elif key == "apparmor":
            if value != "unconfined":
                raise Unsupported(f"HostConfig.SecurityOpt: AppArmor profile {value!r}: "
                                  "AppArmor is not supported by Dockyard")
        elif key == "label":
            if value != "disable":
                raise Unsupported(f"HostConfig.SecurityOpt: SELinux label {value!r}: "
                                  "SELinux is not supported by Dockyard")
        elif key == "systempaths":
            if value != "unconfined":
                raise InvalidArgument(f"invalid --security-opt 2: {opt!r}")
            out["systempaths_unconfined"] = True
        else:
            raise InvalidArgument(f"invalid --security-opt 2: {opt!r}")
    return out


def seccomp_section(profile_opt: str | None, caps: list[str], privileged: bool,
                    enabled: bool) -> dict | None:
    if privileged or profile_opt == "unconfined":
        return None
    if profile_opt in (None, "", "builtin"):
        return docker_default_profile(caps) if enabled else None
    try:
        profile = json.loads(profile_opt)
    except ValueError as e:
        raise InvalidArgument(f"Decoding seccomp profile failed: {e}") from None
    return resolve_docker_profile(profile, caps, where="seccomp profile")


# --------------------------------------------------------------------------- mounts

def _default_mounts(shm_size: int) -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"]},
    ]


_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_RW_MODES = ("rw", "ro")
_LABEL_MODES = ("z", "Z")

# Tmpfs flags that cancel each other share an identity: the later one wins.
_TMPFS_FLAGS = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev",
    "nodev": "nodev", "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync",
    "dirsync": "dirsync", "remount": "remount", "mand": "mand", "nomand": "mand",
    "atime": "noatime", "noatime": "noatime", "diratime": "nodiratime",
    "nodiratime": "nodiratime", "bind": "bind", "rbind": "rbind", "unbindable": "unbindable",
    "runbindable": "runbindable", "private": "private", "rprivate": "rprivate",
    "shared": "shared", "rshared": "rshared", "slave": "slave", "rslave": "rslave",
    "relatime": "relatime", "norelatime": "relatime", "strictatime": "strictatime",
    "nostrictatime": "strictatime",
}
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """moby's MergeTmpfsOptions: the last of conflicting flags and of each key=value wins."""
    out: list[str] = []
    flags: set[str] = set()
    keys: set[str] = set()
    for opt in reversed(options):
        if opt == "defaults":
            continue
        if opt in _TMPFS_FLAGS:
            ident = _TMPFS_FLAGS[opt]
            if ident not in flags:
                flags.add(ident)
                out.insert(0, opt)
            continue
        key, sep, _ = opt.partition("=")
        if not sep or key not in _TMPFS_DATA:
            raise InvalidArgument(f"invalid tmpfs option {opt!r}")
        if key not in keys:
            keys.add(key)
            out.insert(0, opt)
    return out


def _tmpfs_mount(dest: str, data: str, field: str) -> dict:
    _check_destination(dest, field, "tmpfs")
    opts = ["noexec", "nosuid", "nodev", "rprivate"]
    if data:
        opts += data.split(",")
    return {"destination": os.path.normpath(dest), "type": "tmpfs", "source": "tmpfs",
            "options": merge_tmpfs_options(opts)}


def _check_destination(dest: str, field: str, kind: str) -> None:
    if not dest:
        raise InvalidArgument(f"{field}: invalid mount config for type {kind!r}: "
                              "field Target must not be empty")
    if not dest.startswith("/"):
        raise InvalidArgument(f"{field}: invalid mount config for type \"{kind}\": "
                              f"invalid mount path: '{dest}' mount path must be absolute")
    if os.path.normpath(dest) == "/":
        raise InvalidArgument(f"{field}: invalid mount config for type \"{kind}\": "
                              "invalid specification: destination can't be '/'")


def _bind_mount(source: str, dest: str, writable: bool, propagation: str) -> dict:
    opts = ["rbind"]
    if not writable:
        opts.append("ro")
    opts.append(propagation or "rprivate")
    return {"destination": os.path.normpath(dest), "type": "bind",
            "source": os.path.normpath(source), "options": opts}


def parse_bind(spec: str, field: str = "HostConfig.Binds") -> dict:
    """One -v "/host:/ctr[:mode]" entry as a bind mount. A missing host directory is
    created, as dockerd does for -v (never for --mount)."""
    parts = spec.split(":")
    if any(p == "" for p in parts):
        raise InvalidArgument(f"invalid spec: {spec}: empty section between colons")
    if len(parts) == 1:
        raise Unsupported(f"{field}: {spec}: anonymous volumes are not supported yet")
    if len(parts) > 3:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    source, dest = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    if len(parts) == 2 and _valid_mode(dest):
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    if not source.startswith("/"):
        raise Unsupported(f"{field}: {spec}: named volumes are not supported yet")
    if mode and not _valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    modes = mode.split(",") if mode else []
    if "nocopy" in modes:
        raise InvalidArgument(f"invalid volume specification: '{spec}': "
                              "invalid mount config for type \"bind\": "
                              "field VolumeOptions must not be specified")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config "
                              f"for type \"bind\": invalid mount path: '{dest}' mount path "
                              "must be absolute")
    if os.path.normpath(dest) == "/":
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config "
                              "for type \"bind\": invalid specification: destination can't be '/'")
    # z/Z (SELinux relabelling) pass unapplied: dockerd ignores them on hosts without
    # SELinux, and Dockyard applies no SELinux labels.
    propagation = next((m for m in modes if m in _PROPAGATIONS), "")
    if not os.path.exists(source):
        os.makedirs(source, mode=0o755, exist_ok=True)
    return _bind_mount(source, dest, "ro" not in modes, propagation)


def _valid_mode(mode: str) -> bool:
    """Docker's ValidMountMode: at most one of rw/ro, one propagation, one label, one nocopy."""
    counts = {"rw": 0, "prop": 0, "label": 0, "copy": 0}
    for m in mode.split(","):
        if m in _RW_MODES:
            counts["rw"] += 1
        elif m in _PROPAGATIONS:
            counts["prop"] += 1
        elif m in _LABEL_MODES:
            counts["label"] += 1
        elif m == "nocopy":
            counts["copy"] += 1
        else:
            return False
    return all(v <= 1 for v in counts.values())


def _size_suffix(size: int) -> str:
    for suffix, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % divisor == 0:
            return f"{size // divisor}{suffix}"
    return str(size)


def parse_mount(m: Mapping[str, Any], i: int) -> dict:
    """One HostConfig.Mounts entry (--mount)."""
    field = f"HostConfig.Mounts[{i}]"
    kind = m.get("Type", "")
    dest = m.get("Target", "")
    read_only = bool(m.get("ReadOnly"))
    if kind == "bind":
        _check_destination(dest, field, "bind")
        source = m.get("Source", "")
        if not source:
            raise InvalidArgument('invalid mount config for type "bind": field Source must not be empty')
        if not source.startswith("/"):
            raise InvalidArgument(f'invalid mount config for type "bind": invalid mount path: '
                                  f"'{source}' mount path must be absolute")
        for key in ("VolumeOptions", "TmpfsOptions"):
            if m.get(key):
                raise InvalidArgument(f'invalid mount config for type "bind": field {key} '
                                      "must not be specified")
        opts = m.get("BindOptions") or {}
        for key, value in opts.items():
            if key != "Propagation" and not _is_default(value):
                raise Unsupported(f"{field}.BindOptions.{key}: not supported by Dockyard yet")
        propagation = opts.get("Propagation") or ""
        if propagation and propagation not in _PROPAGATIONS:
            raise InvalidArgument(f"{field}: invalid propagation mode: {propagation}")
        if not os.path.exists(source):
            raise InvalidArgument(f'invalid mount config for type "bind": bind source path '
                                  f"does not exist: {source}")
        return _bind_mount(source, dest, not read_only, propagation)
    if kind == "tmpfs":
        _check_destination(dest, field, "tmpfs")
        if m.get("Source"):
            raise InvalidArgument('invalid mount config for type "tmpfs": field Source must not be specified')
        for key in ("BindOptions", "VolumeOptions"):
            if m.get(key):
                raise InvalidArgument(f'invalid mount config for type "tmpfs": field {key} '
                                      "must not be specified")
        opts = m.get("TmpfsOptions") or {}
        raw = ["ro"] if read_only else []
        for key, value in opts.items():
            if key not in ("SizeBytes", "Mode") and not _is_default(value):
                raise Unsupported(f"{field}.TmpfsOptions.{key}: not supported by Dockyard yet")
        if opts.get("Mode"):
            raw.append(f"mode={int(opts['Mode']):o}")
        size = int(opts.get("SizeBytes") or 0)
        if size < 0:
            raise InvalidArgument(f"{field}: invalid tmpfs size {size}")
        if size:
            raw.append(f"size={_size_suffix(size)}")
        return _tmpfs_mount(dest, ",".join(raw), field)
    if kind in ("volume", "npipe", "cluster", "image"):
        raise Unsupported(f"{field}: mounts of type {kind!r} are not supported yet")
    raise InvalidArgument(f"{field}: mount type unknown: {kind!r}")


def _depth(dest: str) -> int:
    return len(os.path.normpath(dest).split("/"))


def user_mounts(host: Mapping[str, Any], etc_files: Mapping[str, str],
                readonly_rootfs: bool) -> list[dict]:
    """Binds, --mount, --tmpfs and the etc files, parents before children as dockerd
    sorts them; a destination given twice is an error."""
    mounts: list[dict] = []
    seen: set[str] = set()

    def add(m: dict) -> None:
        if m["destination"] in seen:
            raise InvalidArgument(f"Duplicate mount point: {m['destination']}")
        seen.add(m["destination"])
        mounts.append(m)

    for spec in host.get("Binds") or ():
        add(parse_bind(spec))
    for i, m in enumerate(host.get("Mounts") or ()):
        add(parse_mount(m, i))
    for dest, data in sorted((host.get("Tmpfs") or {}).items()):
        add(_tmpfs_mount(dest, data or "", f"HostConfig.Tmpfs[{dest!r}]"))
    # A user's mount at /etc/hosts (or a parent such as /etc? no: only the exact file)
    # replaces Docker's own, as dockerd's HasMountFor does.
    for dest in ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts"):
        if dest in etc_files and dest not in seen:
            add(_bind_mount(etc_files[dest], dest, not readonly_rootfs, "rprivate"))
    for dest in sorted(set(etc_files) - {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}):
        if dest not in seen:
            add(_bind_mount(etc_files[dest], dest, not readonly_rootfs, "rprivate"))
    mounts.sort(key=lambda m: _depth(m["destination"]))  # stable: same depth keeps order
    return mounts


# -------------------------------------------------------------------------- devices

def _device_of(path: str, dest: str) -> dict | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {"type": kind, "path": dest, "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


def _parse_device(dev: object, i: int) -> tuple[str, str, str]:
    field = f"HostConfig.Devices[{i}]"
    if isinstance(dev, str):
        parts = dev.split(":")
        if len(parts) > 3 or not parts[0]:
            raise InvalidArgument(f"{field}: invalid device specification: {dev}")
        host = parts[0]
        ctr, perms = host, "rwm"
        if len(parts) == 2:
            if parts[1] and set(parts[1]) <= set("rwm") and not parts[1].startswith("/"):
                perms = parts[1]
            else:
                ctr = parts[1]
        elif len(parts) == 3:
            ctr, perms = parts[1] or host, parts[2]
    elif isinstance(dev, Mapping):
        host = dev.get("PathOnHost", "")
        ctr = dev.get("PathInContainer") or host
        perms = dev.get("CgroupPermissions") or "rwm"
    else:
        raise InvalidArgument(f"{field}: must be a string or an object")
    if not perms or set(perms) - set("rwm"):
        raise InvalidArgument(f"{field}: invalid device cgroup permissions: {perms}")
    if not ctr.startswith("/"):
        raise InvalidArgument(f"{field}: {ctr} is not an absolute path")
    return host, ctr, perms


def devices_from_path(host: str, ctr: str, perms: str, field: str) -> list[dict]:
    """moby's DevicesFromPath: a device node, or every node under a directory."""
    real = os.path.realpath(host)
    if os.path.isdir(real):
        out = []
        for dirpath, dirnames, filenames in os.walk(real):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                dev = _device_of(full, os.path.join(ctr, os.path.relpath(full, real)))
                if dev is not None:
                    out.append(dev)
        if not out:
            raise InvalidArgument(f"{field}: error gathering device information while adding "
                                  f"custom device {host!r}: no devices found")
        return out
    dev = _device_of(real, ctr)
    if dev is None:
        why = "not a device node" if os.path.exists(real) else "no such file or directory"
        raise InvalidArgument(f"{field}: error gathering device information while adding "
                              f"custom device {host!r}: {why}")
    return [dev]


def host_devices(root: str = "/dev") -> list[dict]:
    """All device nodes of the host, skipping what runc's HostDevices skips."""
    out: list[dict] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in
                             ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"))
        for fn in sorted(filenames):
            # /dev/console is the terminal's to set up; /dev/ptmx is the devpts
            # instance's link (runc skips both; our runtime would mknod through the link).
            if fn == "console" or (dirpath == root and fn == "ptmx"):
                continue
            full = os.path.join(dirpath, fn)
            if os.path.islink(full):
                continue
            dev = _device_of(full, full)
            if dev is not None:
                out.append(dev)
    return out


# ------------------------------------------------------------------------ resources

def _int_field(host: Mapping[str, Any], key: str) -> int:
    value = host.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"HostConfig.{key}: must be an integer")
    return value


def resources(host: Mapping[str, Any], swap_limit: bool, ncpu: int | None = None) -> dict:
    """linux.resources from HostConfig, with dockerd's defaults and checks."""
    out: dict = {}
    memory = _int_field(host, "Memory")
    reservation = _int_field(host, "MemoryReservation")
    swap = _int_field(host, "MemorySwap")
    if memory < 0 or (memory and memory < MIN_MEMORY):
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap > 0 and memory == 0:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage")
    if memory > 0 and swap > 0 and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if reservation and reservation < MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > memory:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    if memory > 0 and swap == 0:
        swap = memory * 2  # dockerd's default: as much swap as memory
    if not swap_limit:
        swap = 0  # dockerd warns and drops the swap limit where the host cannot apply it
    mem: dict = {}
    if memory > 0:
        mem["limit"] = memory
    if reservation > 0:
        mem["reservation"] = reservation
    if swap > 0 or (swap == -1 and memory > 0):
        mem["swap"] = swap
    swappiness = host.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1:
        if not 0 <= swappiness <= 100:
            raise InvalidArgument(f"Invalid value: {swappiness}, valid memory swappiness range "
                                  "is 0-100")
        mem["swappiness"] = swappiness
    if host.get("OomKillDisable"):
        mem["disableOOMKiller"] = True
    if mem:
        out["memory"] = mem

    nano = _int_field(host, "NanoCpus")
    period = _int_field(host, "CpuPeriod")
    quota = _int_field(host, "CpuQuota")
    shares = _int_field(host, "CpuShares")
    if nano and period:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano and quota:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    ncpu = ncpu or os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 10**9:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                              f"{ncpu} CPUs available")
    if period and not 1000 <= period <= 1000000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if quota > 0 and quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    cpu: dict = {}
    if shares:
        cpu["shares"] = min(max(shares, 2), 262144)  # dockerd clamps, with a warning
    if nano > 0:
        cpu["period"] = CPU_PERIOD
        cpu["quota"] = nano * CPU_PERIOD // 10**9
    if period:
        cpu["period"] = period
    if quota:
        cpu["quota"] = quota
    for key, name in (("CpusetCpus", "cpus"), ("CpusetMems", "mems")):
        if host.get(key):
            cpu[name] = host[key]
    if cpu:
        out["cpu"] = cpu

    pids = host.get("PidsLimit")
    if pids is not None:
        # 0 and negative values mean "unlimited" in the API; the runtime spells it -1.
        out["pids"] = {"limit": pids if pids > 0 else -1}

    weight = _int_field(host, "BlkioWeight")
    if weight:
        if not 10 <= weight <= 1000:
            raise InvalidArgument("Range of blkio weight is from 10 to 1000")
        out["blockIO"] = {"weight": weight}
    return out


# ------------------------------------------------------------------------ host info

def check_create(config: Mapping[str, Any], host_config: Mapping[str, Any],
                 image_config: Mapping[str, Any], handled_elsewhere: Iterable[str] = ()) -> None:
    """What dockerd refuses at create (verifyContainerSettings): everything build_spec
    would refuse except what needs the container's own files (its user, resolved from
    its /etc/passwd at start), so that a bad request leaves no container behind."""
    import tempfile

    config = dict(config)
    config["User"] = ""
    image_config = dict(image_config)
    image_config["User"] = ""
    with tempfile.TemporaryDirectory(prefix="dockyard-check-") as root:
        build_spec(container_id="0" * 64, name="", config=config, host_config=host_config,
                   image_config=image_config, rootfs=root, handled_elsewhere=handled_elsewhere,
                   init_path=find_init())


def cgroup_v2(root: str = "/sys/fs/cgroup") -> bool:
    """Whether the host runs the unified hierarchy only (a hybrid host counts as v1,
    as for the runtime's cgroup drivers)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def swap_accounting(root: str = "/sys/fs/cgroup") -> bool:
    if cgroup_v2(root):
        return os.path.exists(os.path.join(root, "init.scope", "memory.swap.max")) or \
            os.path.exists(os.path.join(root, "system.slice", "memory.swap.max"))
    return os.path.exists(os.path.join(root, "memory", "memory.memsw.limit_in_bytes"))


def _sysctl_exists(name: str) -> bool:
    return os.path.exists("/proc/sys/" + name.replace(".", "/"))


# ------------------------------------------------------------------------ the spec

def build_spec(*, container_id: str, name: str, config: Mapping[str, Any],
               host_config: Mapping[str, Any], image_config: Mapping[str, Any], rootfs: str,
               cgroup_parent: str = "/dockyard", etc_files: Mapping[str, str] | None = None,
               default_caps: Iterable[str] = DOCKER_DEFAULT, seccomp_default: bool = True,
               handled_elsewhere: Iterable[str] = (), cgroupns_v2: bool | None = None,
               swap_limit: bool | None = None, init_path: str | None = None) -> dict:
    """The OCI config.json for a container, as dockerd would generate it.

    `rootfs` is the container's mounted root (its /etc/passwd and /etc/group resolve
    the user); `etc_files` maps /etc/hosts, /etc/hostname, /etc/resolv.conf to the host
    files bind-mounted there. `handled_elsewhere` names further Config/HostConfig fields
    the caller takes care of (so they are not refused here). `cgroupns_v2` and
    `swap_limit` default to what this host has. `init_path` is the host's static init
    binary, mounted at /sbin/docker-init to run as pid 1 when HostConfig.Init asks.
    """
    del name  # the name appears nowhere in the spec, as with dockerd
    config = config or {}
    host = host_config or {}
    image_config = image_config or {}
    etc_files = dict(etc_files or {})
    _refuse_unsupported(config, host, handled_elsewhere)
    if cgroupns_v2 is None:
        cgroupns_v2 = cgroup_v2()
    if swap_limit is None:
        swap_limit = swap_accounting()

    if image_config.get("Volumes") and "Volumes" not in set(handled_elsewhere):
        raise Unsupported("image Volumes: the image declares volumes "
                          f"({', '.join(sorted(image_config['Volumes']))}), which Dockyard "
                          "does not support yet")
    network = host.get("NetworkMode") or "default"
    if config.get("NetworkDisabled"):
        network = "none"
    if network.startswith("container:"):
        raise Unsupported("HostConfig.NetworkMode: joining another container's network is "
                          "not supported yet")
    if network not in ("default", "bridge", "none", "host"):
        raise Unsupported(f"HostConfig.NetworkMode: network {network!r}: user-defined networks "
                          "are not supported yet")
    ipc = host.get("IpcMode") or "private"
    if ipc not in ("private", "shareable", "none", "host"):
        raise Unsupported(f"HostConfig.IpcMode: {ipc!r} is not supported yet")
    pid = host.get("PidMode") or ""
    if pid not in ("", "host"):
        raise Unsupported(f"HostConfig.PidMode: {pid!r} is not supported yet")
    uts = host.get("UTSMode") or ""
    if uts not in ("", "host"):
        raise Unsupported(f"HostConfig.UTSMode: {uts!r} is not supported yet")
    userns = host.get("UsernsMode") or ""
    if userns not in ("", "host"):
        raise Unsupported(f"HostConfig.UsernsMode: {userns!r} is not supported yet")
    cgroupns = host.get("CgroupnsMode") or ("private" if cgroupns_v2 else "host")
    if cgroupns not in ("private", "host"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {cgroupns}")

    privileged = bool(host.get("Privileged"))
    readonly_rootfs = bool(host.get("ReadonlyRootfs"))
    tty = bool(config.get("Tty"))
    security = parse_security_opts(host.get("SecurityOpt"))

    hostname = config.get("Hostname") or ""
    if not hostname:
        hostname = os.uname().nodename if network == "host" else container_id[:12]
    domainname = config.get("Domainname") or ""

    # process
    args = command(config, image_config)
    user_spec = config.get("User") or image_config.get("User") or ""
    resolved = resolve_user(rootfs, user_spec, host.get("GroupAdd") or ())
    env = environment(config, image_config, hostname, tty)
    if not any(e.startswith("HOME=") for e in env):
        # runc's init sets HOME from the passwd entry when the image does not; the
        # Dockyard runtime leaves the environment as given, so the spec carries it.
        env.append(f"HOME={resolved['home']}")
    cwd = config.get("WorkingDir") or image_config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"the working directory '{cwd}' is invalid, it needs to be an "
                              "absolute path")
    cap_list = capability_set(default_caps, host.get("CapAdd"), host.get("CapDrop"), privileged)
    process: dict = {
        "terminal": tty,
        "user": resolved["user"],
        "args": args,
        "env": env,
        "cwd": os.path.normpath(cwd),
        "capabilities": {"bounding": list(cap_list), "effective": list(cap_list),
                         "permitted": list(cap_list)},
        "noNewPrivileges": security["no_new_privileges"],
    }
    console = host.get("ConsoleSize")
    if tty and console and any(console):
        process["consoleSize"] = {"height": int(console[0]), "width": int(console[1])}
    limits = rlimits(host.get("Ulimits"))
    if limits:
        process["rlimits"] = limits
    oom = host.get("OomScoreAdj") or 0
    if not -1000 <= oom <= 1000:
        raise InvalidArgument(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    process["oomScoreAdj"] = oom

    # mounts
    shm_size = host.get("ShmSize") or DEFAULT_SHM_SIZE
    if shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    users = user_mounts(host, etc_files, readonly_rootfs)
    user_dests = {m["destination"] for m in users}
    mount_dev = "/dev" in user_dests
    defaults = []
    for m in _default_mounts(shm_size):
        dest = m["destination"]
        if dest in user_dests or (mount_dev and dest.startswith("/dev/")):
            continue
        if dest == "/dev/shm" and ipc in ("none", "host"):
            continue
        if privileged and m["type"] in ("sysfs", "cgroup"):
            # Privileged containers get /sys and the cgroup tree writable, as with dockerd.
            m["options"] = [o for o in m["options"] if o != "ro"]
        if readonly_rootfs and dest not in ("/proc", "/dev", "/dev/pts", "/dev/shm",
                                             "/dev/mqueue") and "ro" not in m["options"]:
            m["options"].append("ro")
        defaults.append(m)
    if ipc == "host" and "/dev/shm" not in user_dests:
        defaults.append(_bind_mount("/dev/shm", "/dev/shm", True, "rprivate"))
    mounts = defaults + users
    if host.get("Init"):
        if not init_path:
            raise Unsupported("HostConfig.Init: no init binary found: install tini "
                              f"({' or '.join(INIT_BINARIES)})")
        # As dockerd: the init reaps zombies and forwards signals to the command.
        mounts.append(_bind_mount(init_path, INIT_DESTINATION, False, "rprivate"))
        process["args"] = [INIT_DESTINATION, "--", *process["args"]]

    # linux
    namespaces = [{"type": "mount"}]
    if network != "host":
        namespaces.append({"type": "network"})
    if uts != "host":
        namespaces.append({"type": "uts"})
    if pid != "host":
        namespaces.append({"type": "pid"})
    if ipc != "host":
        namespaces.append({"type": "ipc"})
    if cgroupns == "private":
        namespaces.append({"type": "cgroup"})

    res = resources(host, swap_limit)
    device_rules: list[dict] = [{"allow": False, "access": "rwm"}]
    devices: list[dict] = []
    if privileged:
        devices = host_devices()
        device_rules = [{"allow": True, "access": "rwm"}]
    else:
        for i, dev in enumerate(host.get("Devices") or ()):
            host_path, ctr_path, perms = _parse_device(dev, i)
            for d in devices_from_path(host_path, ctr_path, perms, f"HostConfig.Devices[{i}]"):
                devices.append(d)
                device_rules.append({"allow": True, "type": d["type"], "major": d["major"],
                                     "minor": d["minor"], "access": perms})
    res["devices"] = device_rules

    sysctl: dict[str, str] = {}
    if network != "host":
        # dockerd's defaults inside a private network namespace: unprivileged ping and
        # low ports, which the default capabilities grant anyway.
        if _sysctl_exists("net.ipv4.ping_group_range"):
            sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
        if _sysctl_exists("net.ipv4.ip_unprivileged_port_start"):
            sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"
    for key, value in (host.get("Sysctls") or {}).items():
        if network == "host" and key.startswith("net."):
            raise InvalidArgument(f"sysctl {key!r} is not allowed in host network namespace")
        if uts == "host" and key in ("kernel.domainname", "kernel.hostname"):
            raise InvalidArgument(f"sysctl {key!r} is not allowed in host UTS namespace")
        if ipc == "host" and (key.startswith("kernel.") and key not in
                              ("kernel.domainname", "kernel.hostname")
                              or key.startswith("fs.mqueue.")):
            raise InvalidArgument(f"sysctl {key!r} is not allowed in host IPC namespace")
        sysctl[key] = str(value)

    parent = host.get("CgroupParent") or cgroup_parent
    linux: dict = {
        "namespaces": namespaces,
        "resources": res,
        "cgroupsPath": "/" + f"{parent.strip('/')}/{container_id}".lstrip("/"),
    }
    if devices:
        linux["devices"] = devices
    if sysctl:
        linux["sysctl"] = sysctl
    if not privileged and not security["systempaths_unconfined"]:
        masked = host.get("MaskedPaths")
        readonly = host.get("ReadonlyPaths")
        linux["maskedPaths"] = list(MASKED_PATHS if masked is None else masked)
        linux["readonlyPaths"] = list(READONLY_PATHS if readonly is None else readonly)
    seccomp = seccomp_section(security["seccomp"], cap_list, privileged, seccomp_default)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    shared = [m["destination"] for m in users
              if m["type"] == "bind" and m["options"][-1] in ("shared", "rshared")]
    if shared:
        # dockerd makes the root rshared for these; the runtime cannot do that yet, and
        # a private mount would silently not propagate what the user asked for.
        raise Unsupported(f"mount {shared[0]}: shared mount propagation is not supported yet")
    if any(m["type"] == "bind" and m["options"][-1] in ("slave", "rslave") for m in users):
        linux["rootfsPropagation"] = "rslave"

    spec: dict = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    }
    if uts != "host":
        spec["hostname"] = hostname
        if domainname:
            spec["domainname"] = domainname
    annotations = host.get("Annotations")
    if annotations:
        spec["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return spec
