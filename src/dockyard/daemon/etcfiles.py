"""A container's /etc/hostname, /etc/hosts and /etc/resolv.conf, written as dockerd writes them.

The files live in the container's directory on the host and are bind-mounted over the
image's (see ocispec.build_spec's `etc_files`). Each is written to a temporary file and
renamed into place, so a reader never sees half a file.

There are no container networks yet: a container has only its loopback, like
`--network none`, so /etc/hosts carries the localhost entries and ExtraHosts, and the
container's own name only once it has an address to map it to.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable

from dockyard.errors import InvalidArgument, Unsupported

# libnetwork etchosts defaultContent.
DEFAULT_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)
# What dockerd falls back to when the host names only local resolvers.
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
HOST_RESOLV_CONF = "/etc/resolv.conf"


def write_atomic(path: str, data: str, mode: int = 0o644) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def parse_extra_hosts(extra_hosts: Iterable[str] | None) -> list[tuple[str, str]]:
    """ExtraHosts entries ("name:ip", or "name=ip" as newer CLIs also write) as (ip, name)."""
    out = []
    for entry in extra_hosts or ():
        sep = "=" if "=" in entry else ":"
        name, found, ip = entry.partition(sep)
        if not found or not name or not ip:
            raise InvalidArgument(f"invalid extra host entry: {entry!r}: bad format for add-host")
        if ip == "host-gateway":
            raise Unsupported(f"HostConfig.ExtraHosts: {entry!r}: host-gateway needs a container "
                              "network, which Dockyard does not have yet")
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidArgument(f"invalid IP address in add-host: {ip!r}") from None
        out.append((ip, name))
    return out


def hosts_content(hostname: str, domainname: str = "", *, extra_hosts: Iterable[str] | None = (),
                  addresses: Iterable[str] = ()) -> str:
    lines = [f"{ip}\t{names}" for ip, names in DEFAULT_HOSTS]
    lines += [f"{ip}\t{name}" for ip, name in parse_extra_hosts(extra_hosts)]
    names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
    lines += [f"{ip}\t{names}" for ip in addresses]
    return "\n".join(lines) + "\n"


def _is_local(ns: str) -> bool:
    try:
        return ipaddress.ip_address(ns.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_content(host_text: str, *, dns: Iterable[str] | None = (),
                   dns_search: Iterable[str] | None = (),
                   dns_options: Iterable[str] | None = ()) -> str:
    """The container's resolv.conf from the host's: local nameservers dropped (they
    cannot be reached from the container's network namespace), Dns/DnsSearch/DnsOptions
    replacing the host's lines, other lines kept."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    other: list[str] = []
    for raw in host_text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        key = fields[0]
        if key == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif key in ("search", "domain"):
            search = fields[1:]  # the last of search/domain wins, as in the resolver
        elif key == "options":
            options += fields[1:]
        else:
            other.append(line)
    dns = list(dns or ())
    for ns in dns:
        try:
            ipaddress.ip_address(ns.split("%")[0])
        except ValueError:
            raise InvalidArgument(f"{ns} is not an ip address") from None
    if dns:
        nameservers = dns
    else:
        nameservers = [ns for ns in nameservers if not _is_local(ns)]
        if not nameservers:
            nameservers = list(DEFAULT_NAMESERVERS)
    dns_search = list(dns_search or ())
    if dns_search:
        # "." alone means "no search domains" to dockerd.
        search = [] if dns_search == ["."] else [d for d in dns_search if d != "."]
    if dns_options:
        options = list(dns_options)
    overrides = []
    if dns:
        overrides.append("nameservers")
    if dns_search:
        overrides.append("search")
    if dns_options:
        overrides.append("options")
    out = ["# Generated by Docker Engine.",
           "# This file can be edited; Docker Engine will not make further changes once it",
           "# has been modified.", ""]
    out += [f"nameserver {ns}" for ns in nameservers]
    if search:
        out.append("search " + " ".join(search))
    if options:
        out.append("options " + " ".join(options))
    out += other
    out += ["", f"# Based on host file: '{HOST_RESOLV_CONF}'",
            "# Overrides: [" + " ".join(overrides) + "]"]
    return "\n".join(out) + "\n"


def write_etc_files(directory: str, *, hostname: str, domainname: str = "",
                    extra_hosts: Iterable[str] | None = (), dns: Iterable[str] | None = (),
                    dns_search: Iterable[str] | None = (),
                    dns_options: Iterable[str] | None = (), network_mode: str = "none",
                    addresses: Iterable[str] = (),
                    host_resolv_conf: str = HOST_RESOLV_CONF,
                    host_hosts: str = "/etc/hosts") -> dict[str, str]:
    """Write hostname, hosts and resolv.conf into DIRECTORY; return the container path ->
    host file map that build_spec takes as `etc_files`.

    With the host's network the container sees the host's files, as with dockerd
    (resolv.conf unfiltered, since the host's local resolvers are reachable; /etc/hosts
    the host's plus ExtraHosts).
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = {"/etc/hostname": os.path.join(directory, "hostname"),
             "/etc/hosts": os.path.join(directory, "hosts"),
             "/etc/resolv.conf": os.path.join(directory, "resolv.conf")}
    try:
        with open(host_resolv_conf) as f:
            host_resolv = f.read()
    except FileNotFoundError:
        host_resolv = ""
    if network_mode == "host":
        try:
            with open(host_hosts) as f:
                hosts = f.read()
        except FileNotFoundError:
            hosts = hosts_content(hostname, domainname)
        if hosts and not hosts.endswith("\n"):
            hosts += "\n"
        hosts += "".join(f"{ip}\t{name}\n" for ip, name in parse_extra_hosts(extra_hosts))
        resolv = host_resolv
        if dns or dns_search or dns_options:
            resolv = resolv_content(host_resolv, dns=dns, dns_search=dns_search,
                                    dns_options=dns_options)
    else:
        hosts = hosts_content(hostname, domainname, extra_hosts=extra_hosts, addresses=addresses)
        resolv = resolv_content(host_resolv, dns=dns, dns_search=dns_search,
                                dns_options=dns_options)
    write_atomic(paths["/etc/hostname"], hostname + "\n")
    write_atomic(paths["/etc/hosts"], hosts)
    write_atomic(paths["/etc/resolv.conf"], resolv)
    return paths
