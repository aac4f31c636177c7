"""dockyardd's configuration: daemon.json with Docker's keys, overridden by flags.

As dockerd, an unknown key in the file is an error naming it (a typo must not be
silently ignored: the daemon would run with a setting the operator did not mean), and so
is a setting given both as a flag and in the file (which one was meant is not ours to
guess).
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
# dockerd's port for TLS, and where it listens when TLS is on and no host is given.
DEFAULT_TLS_HOST = "tcp://localhost:2376"
DEFAULT_TCP_HOST = "localhost"
DEFAULT_TCP_PORT = 2375
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
    "tls": "tls",
    "tlsverify": "tlsverify",
    "tlscacert": "tlscacert",
    "tlscert": "tlscert",
    "tlskey": "tlskey",
}


def default_cert_path() -> str:
    """Where dockerd looks for ca.pem, cert.pem and key.pem when no flag names them:
    $DOCKER_CERT_PATH, else $DOCKER_CONFIG, else ~/.docker."""
    return (os.environ.get("DOCKER_CERT_PATH") or os.environ.get("DOCKER_CONFIG")
            or os.path.join(os.path.expanduser("~"), ".docker"))

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
    # None: not said. tls=False said explicitly is the operator's informed consent to
    # plain TCP off loopback; tlsverify said at all (even false) turns TLS on.
    tls: bool | None = None
    tlsverify: bool | None = None
    tlscacert: str = field(default_factory=lambda: os.path.join(default_cert_path(), "ca.pem"))
    tlscert: str = field(default_factory=lambda: os.path.join(default_cert_path(), "cert.pem"))
    tlskey: str = field(default_factory=lambda: os.path.join(default_cert_path(), "key.pem"))

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
        given = {attr: value for attr, value in (overrides or {}).items() if value is not None}
        conflicts = [f"{key}: (from flag: {_show(given[_KEYS[key]])}, from file: "
                     f"{_show(value)})" for key, value in data.items() if _KEYS[key] in given]
        if conflicts:
            raise InvalidArgument(f"unable to configure the Docker daemon with file {file}: the "
                                  "following directives are specified both as a flag and in "
                                  "the configuration file: " + ", ".join(conflicts))
        cfg = cls(config_file=file if (explicit or text) else "")
        for key, value in data.items():
            setattr(cfg, _KEYS[key], _check(key, value))
        for attr, value in given.items():
            setattr(cfg, attr, value)
        if "hosts" not in data and "hosts" not in given:
            cfg.hosts = []  # the default depends on TLS: _resolve_tls picks it
        cfg._resolve_tls()
        cfg.validate()
        return cfg

    def _resolve_tls(self) -> None:
        # As dockerd: naming tlsverify at all means TLS; TLS without a word on
        # verification means verifying clients.
        if self.tlsverify is not None:
            self.tls = True
        elif self.tls is not None:
            self.tlsverify = self.tls
        if not self.hosts:
            self.hosts = [DEFAULT_TLS_HOST if self.tls else DEFAULT_HOST]

    @property
    def verify_clients(self) -> bool:
        return bool(self.tls and self.tlsverify)

    def listeners(self) -> list[Listener]:
        """The hosts as listeners, refusing plain TCP off loopback unless TLS was turned
        off explicitly (dockerd's own escape hatch)."""
        result = [parse_host(h) for h in self.hosts]
        for ln in result:
            if ln.kind == "tcp" and self.tls is None and not ln.loopback:
                raise InvalidArgument(
                    f"refusing to listen on tcp://{ln.hostport} without TLS: anyone reaching it "
                    "would control this host. Protect it with --tlsverify, --tlscacert, "
                    "--tlscert and --tlskey (see \"Protect the Docker daemon socket\"), use a "
                    "unix socket or a loopback address, or pass --tls=false to accept the risk")
        return result

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
        self.listeners()

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
    if key in ("debug", "tls", "tlsverify"):
        if not isinstance(value, bool):
            raise InvalidArgument(f"daemon.json: {key} must be true or false")
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"daemon.json: {key} must be a string")
    return value


def _show(value: Any) -> str:
    """VALUE as dockerd prints a flag or file value in its conflict error."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_show(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class Listener:
    kind: str      # "unix" or "tcp"
    address: str   # a socket path, or a host
    port: int = 0

    @property
    def hostport(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.kind != "tcp":
            return False
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return self.address == "localhost"


def parse_host(text: str) -> Listener:
    """A -H value as dockerd reads it: unix:///path, tcp://host:port (host defaults to
    localhost, port to 2375), or host:port. Whether plain TCP is acceptable depends on
    TLS, so DaemonConfig.listeners decides that."""
    text = text.strip()
    if "://" not in text and text:
        text = "tcp://" + text
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
        if parts.path or parts.query or parts.fragment:
            raise InvalidArgument(f"invalid bind address ({text}): should not contain a path "
                                  "element")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise InvalidArgument(f"invalid bind address ({text}): invalid port: "
                                  f"{parts.netloc.rpartition(':')[2]}")
        return Listener("tcp", parts.hostname or DEFAULT_TCP_HOST,
                        port if port is not None else DEFAULT_TCP_PORT)
    raise InvalidArgument(f"invalid host {text!r}: use unix:///path or tcp://127.0.0.1:port")
