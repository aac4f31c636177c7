"""dockyardd's configuration: daemon.json with Docker's keys, overridden by flags.

As dockerd, an unknown key in the file is an error naming it (a typo must not be
silently ignored: the daemon would run with a setting the operator did not mean).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockyard.errors import InvalidArgument

DEFAULT_CONFIG_FILE = "/etc/dockyard/daemon.json"
DEFAULT_HOST = "unix:///run/dockyard.sock"
DEFAULT_DATA_ROOT = "/var/lib/dockyard"
DEFAULT_EXEC_ROOT = "/run/dockyard"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")

# daemon.json key -> DaemonConfig attribute.
_KEYS = {
    "data-root": "data_root",
    "exec-root": "exec_root",
    "hosts": "hosts",
    "registry-mirrors": "registry_mirrors",
    "insecure-registries": "insecure_registries",
    "debug": "debug",
    "log-level": "log_level",
    "pidfile": "pidfile",
    "default-runtime": "default_runtime",
    "runtimes": "runtimes",
}

# The runtime a container gets when neither the request nor daemon.json names one: our
# own, run in the monitor's process. Others are OCI runtime binaries driven by their CLI.
OWN_RUNTIME = "dockyard"


@dataclass
class DaemonConfig:
    data_root: str = DEFAULT_DATA_ROOT
    exec_root: str = DEFAULT_EXEC_ROOT
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    registry_mirrors: list[str] = field(default_factory=list)
    insecure_registries: list[str] = field(default_factory=list)
    debug: bool = False
    log_level: str = "info"
    pidfile: str = ""
    config_file: str = ""
    default_runtime: str = OWN_RUNTIME
    # name -> {"path": binary, "runtimeArgs": [...]}, as daemon.json's "runtimes".
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None, overrides: dict[str, Any] | None = None) -> DaemonConfig:
        """The configuration from daemon.json PATH (None: the default file, which may be
        missing) with OVERRIDES (attribute -> value, from flags; None values ignored)."""
        explicit = path is not None
        file = path if path is not None else DEFAULT_CONFIG_FILE
        data: dict[str, Any] = {}
        try:
            text = Path(file).read_text()
        except FileNotFoundError:
            if explicit:
                raise InvalidArgument(f"unable to configure the Docker daemon with file {file}: "
                                      "open: no such file or directory") from None
            text = ""
        except OSError as exc:
            raise InvalidArgument(f"unable to configure the Docker daemon with file {file}: "
                                  f"{exc.strerror}") from None
        if text.strip():
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise InvalidArgument(f"unable to configure the Docker daemon with file {file}: "
                                      f"{exc}") from None
            if not isinstance(data, dict):
                raise InvalidArgument(f"unable to configure the Docker daemon with file {file}: "
                                      "the configuration must be a JSON object")
        unknown = sorted(k for k in data if k not in _KEYS)
        if unknown:
            raise InvalidArgument(f"unable to configure the Docker daemon with file {file}: the "
                                  "following directives don't match any configuration option: "
                                  + ", ".join(unknown))
        cfg = cls(config_file=file if (explicit or text) else "")
        for key, value in data.items():
            setattr(cfg, _KEYS[key], _check(key, value))
        for attr, value in (overrides or {}).items():
            if value is not None:
                setattr(cfg, attr, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for attr in ("data_root", "exec_root"):
            value = getattr(self, attr)
            if not value or not os.path.isabs(value):
                raise InvalidArgument(f"{attr.replace('_', '-')} must be an absolute path, "
                                      f"not {value!r}")
        if self.log_level not in LOG_LEVELS:
            raise InvalidArgument(f"unable to parse logging level: {self.log_level}")
        if not self.hosts:
            self.hosts = [DEFAULT_HOST]
        for host in self.hosts:
            parse_host(host)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check(key: str, value: Any) -> Any:
    """VALUE of daemon.json KEY, type-checked so the error names the key."""
    if key in ("hosts", "registry-mirrors", "insecure-registries"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"daemon.json: {key} must be an array of strings")
        return list(value)
    if key == "runtimes":
        if not isinstance(value, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("path", ""), str)
                and isinstance(v.get("runtimeArgs", []), list) for v in value.values()):
            raise InvalidArgument('daemon.json: runtimes must map names to {"path": ..., '
                                  '"runtimeArgs": [...]}')
        return {k: dict(v) for k, v in value.items()}
    if key == "debug":
        if not isinstance(value, bool):
            raise InvalidArgument("daemon.json: debug must be true or false")
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"daemon.json: {key} must be a string")
    return value


@dataclass(frozen=True)
class Listener:
    kind: str      # "unix" or "tcp"
    address: str   # a socket path, or a host
    port: int = 0


def parse_host(text: str) -> Listener:
    """A -H value: unix:///path, or tcp://host:port. TCP is allowed only on loopback,
    since without TLS anyone who reaches the port is root on this host."""
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path:
            path = DEFAULT_HOST[len("unix://"):]
        if not os.path.isabs(path):
            raise InvalidArgument(f"invalid unix socket path {path!r}: it must be absolute")
        return Listener("unix", path)
    if text.startswith("fd://"):
        raise InvalidArgument("fd:// hosts (socket activation) are not supported")
    if text.startswith("tcp://"):
        parts = urlsplit(text)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            raise InvalidArgument(f"invalid host {text!r}: bad port") from None
        if port is None:
            raise InvalidArgument(f"invalid host {text!r}: a port is required")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise InvalidArgument(f"refusing to listen on {text} without TLS: anyone reaching "
                                  "it would control this host; use a loopback address or a "
                                  "unix socket")
        return Listener("tcp", host, port)
    raise InvalidArgument(f"invalid host {text!r}: use unix:///path or tcp://127.0.0.1:port")
