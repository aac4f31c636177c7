"""Which URLs a registry name stands for, and how to talk TLS to them: the daemon.json
settings `registry-mirrors` and `insecure-registries`, and `/etc/docker/certs.d`.

This follows dockerd's registry package (registry/config.go, registry/service_v2.go):

* `docker.io` is served by `https://registry-1.docker.io`; its pulls go to each
  `registry-mirrors` entry first, then to the Hub. Pushes never use mirrors.
* A registry is *insecure* when `insecure-registries` names it (`host` or `host:port`)
  or one of its addresses lies in a listed CIDR; 127.0.0.0/8 and ::1/128 are always
  insecure, as in Docker. An insecure registry is tried over HTTPS without certificate
  verification first, then over plain HTTP.
* `certs.d/<host[:port]>/` holds `*.crt` CA certificates (trusted in addition to the
  system's) and `*.cert` + `*.key` client certificate pairs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockyard.errors import InvalidArgument, SystemFailure

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
# The Hub's API endpoint; `docker.io` itself serves no registry API.
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
# Names that mean the Hub when a user types them (docker login, daemon.json).
HUB_ALIASES = frozenset((DOCKER_HUB, "index.docker.io", DOCKER_HUB_REGISTRY))
DEFAULT_CERTS_DIR = "/etc/docker/certs.d"
DEFAULT_DAEMON_JSON = "/etc/docker/daemon.json"
# Docker always treats loopback as insecure: a stop-gap for private registries on localhost.
DEFAULT_INSECURE_CIDRS = ("127.0.0.0/8", "::1/128")


def split_host_port(host: str) -> tuple[str, str]:
    """('127.0.0.1', '5000') from '127.0.0.1:5000'; brackets of an IPv6 literal removed."""
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        return inner, rest[1:] if rest.startswith(":") else ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, port
    return host, ""


def normalize_registry(name: str) -> str:
    """The registry host a user-typed name stands for: scheme and path dropped,
    Hub aliases folded to `docker.io`. '' (no registry given) is the Hub too."""
    text = name.strip()
    if not text:
        return DOCKER_HUB
    if "://" in text:
        text = urlsplit(text).netloc or text
    text = text.split("/", 1)[0].lower()
    return DOCKER_HUB if text in HUB_ALIASES else text


@dataclass(frozen=True)
class Endpoint:
    """One base URL to try for a registry: `https://host:port` or `http://host:port`."""

    url: str              # scheme://host[:port], no trailing slash
    host: str             # host[:port] as it appears in the URL
    mirror: bool = False  # a pull-through mirror of the Hub
    verify_tls: bool = True
    # What aiohttp's `ssl=` argument gets: a context, False (no verification), or
    # None for plain HTTP. Not part of equality: contexts do not compare.
    ssl: Any = field(default=None, compare=False, repr=False)

    @property
    def secure(self) -> bool:
        return self.url.startswith("https://")


@dataclass
class RegistryConfig:
    """Mirrors, insecure registries and certificate directories (daemon.json's subset)."""

    mirrors: list[str] = field(default_factory=list)
    insecure_registries: list[str] = field(default_factory=list)
    certs_dir: str | os.PathLike[str] = DEFAULT_CERTS_DIR
    # Docker's default; only a test of certificate verification on 127.0.0.1 turns it off.
    loopback_insecure: bool = True

    def __post_init__(self) -> None:
        self._cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._insecure_names: set[str] = set()
        cidrs = list(DEFAULT_INSECURE_CIDRS) if self.loopback_insecure else []
        for entry in self.insecure_registries:
            entry = entry.strip()
            if "://" in entry:
                # Docker refuses a scheme here: insecurity is about the host, not a URL.
                raise InvalidArgument(f"insecure registry {entry} should not contain '://'")
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise InvalidArgument(f"insecure registry {entry} is not a valid "
                                          "CIDR or host[:port]") from None
                cidrs.append(entry)
            elif entry:
                self._insecure_names.add(normalize_registry(entry))
        self._cidrs = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.mirrors = [self._check_mirror(m) for m in self.mirrors]
        self._tls_cache: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._insecure_cache: dict[str, bool] = {}

    @staticmethod
    def _check_mirror(url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"invalid mirror: unsupported scheme or missing host in {url!r}: "
                                  "use http:// or https:// followed by a host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidArgument(f"invalid mirror: path, query or fragment not allowed in {url!r}")
        return f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def from_daemon_json(cls, path: str | os.PathLike[str] | None = None, *,
                         data: dict[str, Any] | None = None,
                         certs_dir: str | os.PathLike[str] = DEFAULT_CERTS_DIR) -> RegistryConfig:
        """Read `registry-mirrors` and `insecure-registries` from a daemon.json (or DATA).

        A missing file means the defaults, as for dockerd.
        """
        if data is None:
            p = Path(path if path is not None else DEFAULT_DAEMON_JSON)
            try:
                data = json.loads(p.read_text())
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as exc:
                raise InvalidArgument(f"unable to configure the registries from {p}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidArgument("daemon configuration must be a JSON object")

        def str_list(key: str) -> list[str]:
            v = data.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise InvalidArgument(f"daemon configuration: {key} must be an array of strings")
            return list(v)

        return cls(mirrors=str_list("registry-mirrors"),
                   insecure_registries=str_list("insecure-registries"), certs_dir=certs_dir)

    # -- insecurity ----------------------------------------------------------

    def is_insecure(self, host: str) -> bool:
        """Whether HOST (`name[:port]`) may be reached without verified TLS."""
        host = normalize_registry(host)
        if host == DOCKER_HUB or host == DOCKER_HUB_REGISTRY:
            return False  # the Hub is always secure, whatever the CIDRs say
        if host in self._insecure_names:
            return True
        name, _port = split_host_port(host)
        if name in self._insecure_names:
            return True
        if not self._cidrs:
            return False
        cached = self._insecure_cache.get(name)
        if cached is None:
            # Cached: a name lookup per request would be slow, and blocks the caller.
            cached = any(any(addr.version == net.version and addr in net for net in self._cidrs)
                         for addr in self._addresses(name))
            self._insecure_cache[name] = cached
        return cached

    @staticmethod
    def _addresses(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            return [ipaddress.ip_address(name)]
        except ValueError:
            pass
        # Docker resolves names too, so a registry known by name on an insecure
        # network counts as insecure. A name that does not resolve is simply secure.
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return []
        out = []
        for info in infos:
            try:
                out.append(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
            except ValueError:
                continue
        return out

    # -- TLS -----------------------------------------------------------------

    def tls_context(self, host: str, verify: bool = True) -> ssl.SSLContext:
        """A client context for HOST: system CAs plus certs.d's, and its client cert."""
        key = (host, verify)
        ctx = self._tls_cache.get(key)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        directory = Path(self.certs_dir) / host
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            names = []
        except OSError as exc:
            raise SystemFailure(f"cannot read certificates for {host} from {directory}: "
                                f"{exc.strerror or exc}") from None
        for name in names:
            path = directory / name
            try:
                if name.endswith(".crt"):
                    ctx.load_verify_locations(cafile=str(path))
                    log.debug("trusting CA %s for %s", path, host)
                elif name.endswith(".cert"):
                    keyfile = path.with_suffix(".key")
                    if not keyfile.exists():
                        raise SystemFailure(f"missing key {keyfile.name} for client certificate "
                                            f"{name} in {directory}")
                    ctx.load_cert_chain(str(path), str(keyfile))
                    log.debug("client certificate %s for %s", path, host)
                elif name.endswith(".key") and not path.with_suffix(".cert").exists():
                    raise SystemFailure(f"missing client certificate {path.with_suffix('.cert').name} "
                                        f"for key {name} in {directory}")
            except (ssl.SSLError, OSError) as exc:
                raise SystemFailure(f"invalid certificate {path} for {host}: {exc}") from None
        self._tls_cache[key] = ctx
        return ctx

    def ssl_for_url(self, url: str) -> Any:
        """aiohttp's `ssl=` value for URL (token realms live on other hosts)."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            return None
        host = parts.netloc.rpartition("@")[2]
        return self.tls_context(host, verify=not self.is_insecure(host))

    # -- endpoints -----------------------------------------------------------

    def _endpoints_for(self, host: str, mirror: bool = False) -> list[Endpoint]:
        insecure = self.is_insecure(host)
        out = [Endpoint(f"https://{host}", host, mirror, not insecure,
                        self.tls_context(host, verify=not insecure))]
        if insecure:
            out.append(Endpoint(f"http://{host}", host, mirror, False, None))
        return out

    def endpoints(self, registry: str, *, pull: bool = True) -> list[Endpoint]:
        """The URLs to try, in order, for the registry a reference names (its domain).

        Hub pulls try the mirrors first. A mirror's scheme is the one configured;
        an https mirror that is insecure skips verification (Docker has no HTTP
        fallback for mirrors: their scheme is explicit).
        """
        registry = normalize_registry(registry)
        out: list[Endpoint] = []
        if registry == DOCKER_HUB:
            if pull:
                for url in self.mirrors:
                    parts = urlsplit(url)
                    host = parts.netloc
                    if parts.scheme == "http":
                        out.append(Endpoint(url, host, True, False, None))
                    else:
                        verify = not self.is_insecure(host)
                        out.append(Endpoint(url, host, True, verify, self.tls_context(host, verify)))
            out.append(Endpoint(f"https://{DOCKER_HUB_REGISTRY}", DOCKER_HUB_REGISTRY, False, True,
                                self.tls_context(DOCKER_HUB_REGISTRY)))
            return out
        return self._endpoints_for(registry)
