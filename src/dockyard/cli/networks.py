"""`dockyard network ...` and `dockyard volume ...`: listing, inspecting, creating,
removing and pruning through the Engine API."""

from __future__ import annotations

import re
from typing import Any

import click

from dockyard.cli.command import Command, Group, StatusError, confirm, min_args, print_pruned
from dockyard.cli.connection import client
from dockyard.cli.containers import for_each, parse_filters
from dockyard.errors import DockyardError


def go_time_text(text: str) -> str:
    """An RFC 3339 time from the API as Go's Time.String() prints it."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text or "")
    if not m:
        return text
    frac = (m.group(3) or "").rstrip("0").rstrip(".")
    zone = m.group(4)
    if zone == "Z":
        return f"{m.group(1)} {m.group(2)}{frac} +0000 UTC"
    offset = zone.replace(":", "")
    return f"{m.group(1)} {m.group(2)}{frac} {offset} {offset}"


def _labels(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _inspect(kind: str, names: tuple[str, ...], fmt: str | None) -> None:
    from dockyard.cli.containers import error_line
    from dockyard.cli.inspect import print_documents

    cl = client()
    get = cl.networks.inspect_raw if kind == "network" else cl.volumes.inspect_raw
    found: list[bytes | str] = []
    for name in names:
        try:
            found.append(get(name))
        except DockyardError as exc:
            found.append(error_line(exc))
    print_documents(found, fmt)


def _add_inspect(group: click.Group, kind: str) -> None:
    """GROUP's `inspect` command: network and volume inspect differ only in KIND."""
    upper = kind.upper()

    @group.command("inspect", cls=Command, usage=f"[OPTIONS] {upper} [{upper}...]",
                   help=f"Display detailed information on one or more {kind}s")
    @click.option("-f", "--format", "fmt", metavar="string",
                  help="Format output using a custom template")
    @click.argument("names", nargs=-1, callback=min_args(1))
    def inspect(fmt: str | None, names: tuple[str, ...]) -> None:
        _inspect(kind, names, fmt)


# -- networks -------------------------------------------------------------------------

_NET_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                "CreatedAt": "CREATED"}


def _net_row(n: dict[str, Any], trunc: bool) -> dict[str, Any]:
    from dockyard.cli.formatter import truncate_id

    def flag(v: Any) -> str:
        return "true" if v else "false"

    return {"CreatedAt": go_time_text(n.get("Created", "")), "Driver": n.get("Driver", ""),
            "ID": truncate_id(n.get("Id", "")) if trunc else n.get("Id", ""),
            "IPv4": flag(n.get("EnableIPv4")), "IPv6": flag(n.get("EnableIPv6")),
            "Internal": flag(n.get("Internal")), "Labels": _labels(n.get("Labels")),
            "Name": n.get("Name", ""), "Scope": n.get("Scope", "")}


@click.group(cls=Group)
def network() -> None:
    """Manage networks"""


@network.command("ls", cls=Command, usage="[OPTIONS]")
@click.option("-f", "--filter", "filters", multiple=True, metavar="filter",
              help="Provide filter values (e.g. \"driver=bridge\")")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs")
def network_ls(filters: tuple[str, ...], fmt: str | None, no_trunc: bool, quiet: bool) -> None:
    """List networks"""
    from dockyard.cli.format import print_rows

    nets = sorted(client().networks.list(parse_filters(filters)), key=lambda n: n.get("Name", ""))
    rows = [_net_row(n, not no_trunc) for n in nets]
    if quiet and not fmt:
        for r in rows:
            click.echo(r["ID"])
        return
    print_rows(fmt, "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", _NET_HEADERS, rows,
               click.echo, "*formatter.networkContext")


_add_inspect(network, "network")


@network.command("create", cls=Command, usage="[OPTIONS] NETWORK")
@click.option("-d", "--driver", default="bridge", metavar="string", help="Driver to manage the Network")
@click.option("--internal", is_flag=True, help="Restrict external access to the network")
@click.option("-l", "--label", multiple=True, metavar="list", help="Set metadata on a network")
@click.option("-o", "--opt", multiple=True, metavar="map", help="Set driver specific options")
@click.argument("names", nargs=-1, callback=min_args(1))
def network_create(driver: str, internal: bool, label: tuple[str, ...], opt: tuple[str, ...],
                   names: tuple[str, ...]) -> None:
    """Create a network"""
    config = {"Name": names[0], "Driver": driver, "Internal": internal,
              "Labels": dict(lb.partition("=")[::2] for lb in label),
              "Options": dict(o.partition("=")[::2] for o in opt)}
    click.echo(client().networks.create(config).get("Id", ""))


@network.command("rm", cls=Command, usage="NETWORK [NETWORK...]")
@click.argument("names", nargs=-1, callback=min_args(1))
def network_rm(names: tuple[str, ...]) -> None:
    """Remove one or more networks"""
    try:
        for_each(names, client().networks.remove)
    except StatusError as exc:
        # docker's network rm ends its error list with this line.
        raise StatusError("exit status 1", exc.status) from None


@network.command("prune", cls=Command, usage="[OPTIONS]")
@click.option("--filter", "filters", multiple=True, metavar="filter", help='Provide filter values (e.g. "until=<timestamp>")')
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
def network_prune(filters: tuple[str, ...], force: bool) -> None:
    """Remove all unused networks"""
    if not confirm("WARNING! This will remove all custom networks not used by at least one "
                   "container.", force):
        return
    print_pruned("Deleted Networks:",
                 client().networks.prune(parse_filters(filters)).get("NetworksDeleted") or [],
                 None)


# -- volumes --------------------------------------------------------------------------

_VOL_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE",
                "Availability": "AVAILABILITY", "Group": "GROUP", "Status": "STATUS"}


def _vol_row(v: dict[str, Any]) -> dict[str, Any]:
    from dockyard.cli.formatter import human_size

    usage = v.get("UsageData") or {}
    return {"Availability": "N/A", "Driver": v.get("Driver", ""), "Group": "N/A",
            "Labels": _labels(v.get("Labels")),
            "Links": str(usage["RefCount"]) if "RefCount" in usage and usage["RefCount"] >= 0 else "N/A",
            "Mountpoint": v.get("Mountpoint", ""), "Name": v.get("Name", ""),
            "Scope": v.get("Scope", ""),
            "Size": human_size(usage["Size"], 4) if usage.get("Size", -1) >= 0 else "N/A",
            "Status": "N/A"}


@click.group(cls=Group, usage="COMMAND")
def volume() -> None:
    """Manage volumes"""


@volume.command("ls", cls=Command, usage="[OPTIONS]")
@click.option("-f", "--filter", "filters", multiple=True, metavar="filter",
              help="Provide filter values (e.g. \"dangling=true\")")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names")
def volume_ls(filters: tuple[str, ...], fmt: str | None, quiet: bool) -> None:
    """List volumes"""
    from dockyard.cli.format import print_rows

    answer = client().volumes.list(parse_filters(filters)) or {}
    vols = sorted(answer.get("Volumes") or [], key=lambda v: v.get("Name", ""))
    rows = [_vol_row(v) for v in vols]
    if quiet and not fmt:
        for r in rows:
            click.echo(r["Name"])
        return
    print_rows(fmt, "table {{.Driver}}\t{{.Name}}", _VOL_HEADERS, rows, click.echo,
               "*formatter.volumeContext")
    for w in answer.get("Warnings") or []:
        click.echo(w, err=True)


_add_inspect(volume, "volume")


@volume.command("create", cls=Command, usage="[OPTIONS] [VOLUME]")
@click.option("-d", "--driver", default="local", metavar="string", help="Specify volume driver name")
@click.option("--label", multiple=True, metavar="list", help="Set metadata for a volume")
@click.option("--name", "name_opt", metavar="string", help="Specify volume name")
@click.option("-o", "--opt", multiple=True, metavar="map", help="Set driver specific options")
@click.argument("names", nargs=-1)
def volume_create(driver: str, label: tuple[str, ...], name_opt: str | None,
                  opt: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Create a volume"""
    if len(names) > 1:
        raise StatusError("dockyard: 'dockyard volume create' requires at most 1 argument", 1)
    if names and name_opt and names[0] != name_opt:
        raise StatusError("conflicting options: either specify --name or provide positional "
                          "arg, not both", 1)
    config = {"Name": names[0] if names else (name_opt or ""), "Driver": driver,
              "DriverOpts": dict(o.partition("=")[::2] for o in opt),
              "Labels": dict(lb.partition("=")[::2] for lb in label)}
    click.echo(client().volumes.create(config).get("Name", ""))


@volume.command("rm", cls=Command, usage="[OPTIONS] VOLUME [VOLUME...]")
@click.option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes")
@click.argument("names", nargs=-1, callback=min_args(1))
def volume_rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more volumes"""
    cl = client()
    for_each(names, lambda n: cl.volumes.remove(n, force))


@volume.command("prune", cls=Command, usage="[OPTIONS]")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just anonymous ones")
@click.option("--filter", "filters", multiple=True, metavar="filter", help='Provide filter values (e.g. "label=<label>")')
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
def volume_prune(all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove unused local volumes"""
    if not confirm("WARNING! This will remove anonymous local volumes not used by at least "
                   "one container.", force):
        return
    flt = parse_filters(filters)
    if all_:
        flt["all"] = ["true"]
    report = client().volumes.prune(flt)
    print_pruned("Deleted Volumes:", report.get("VolumesDeleted") or [],
                 report.get("SpaceReclaimed", 0))
