"""`dockyard version`, `dockyard info` and `dockyard system ...`."""

from __future__ import annotations

import platform
import sys
from typing import Any

import click

from dockyard.cli.command import Command, FlagValue, Group, StatusError, no_args
from dockyard.cli.connection import Connection, client
from dockyard.cli.gotemplate import GoStruct
from dockyard.errors import DockyardError


def _client_version() -> dict[str, Any]:
    from dockyard import __version__
    from dockyard.client.http import API_VERSION

    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {"Platform": {"Name": ""}, "Version": __version__, "ApiVersion": API_VERSION,
            "DefaultAPIVersion": API_VERSION,
            "GoVersion": f"python{platform.python_version()}", "GitCommit": "",
            "BuildTime": "", "Os": "linux", "Arch": machine, "Context": "default"}


def _render_template(fmt: str, data: Any, name: str = "") -> str:
    from dockyard.cli.format import render

    return render(fmt, data, name, echo=click.echo)


def _print_client(c: dict[str, Any], negotiated: str | None) -> None:
    api = c["ApiVersion"]
    if negotiated and negotiated != c["DefaultAPIVersion"]:
        api = f"{negotiated} (downgraded from {c['DefaultAPIVersion']})"
    out = ["Client:"]
    if c["Platform"]["Name"]:
        out[0] += " " + c["Platform"]["Name"]
    out += [f" Version:           {c['Version']}",
            f" API version:       {api}",
            f" Go version:        {c['GoVersion']}",
            f" Git commit:        {c['GitCommit']}",
            f" Built:             {c['BuildTime']}",
            f" OS/Arch:           {c['Os']}/{c['Arch']}",
            f" Context:           {c['Context']}"]
    click.echo("\n".join(out))


def _print_server(s: dict[str, Any]) -> None:
    name = (s.get("Platform") or {}).get("Name", "")
    out = ["", "Server:" + (f" {name}" if name else "")]
    for comp in s.get("Components") or []:
        d = comp.get("Details") or {}
        out.append(f" {comp.get('Name', '')}:")
        if comp.get("Name") == "Engine":
            out += [f"  Version:          {comp.get('Version', '')}",
                    f"  API version:      {d.get('ApiVersion', '')} (minimum version "
                    f"{d.get('MinAPIVersion', '')})",
                    f"  Go version:       {d.get('GoVersion', '')}",
                    f"  Git commit:       {d.get('GitCommit', '')}",
                    f"  Built:            {d.get('BuildTime', '')}",
                    f"  OS/Arch:          {d.get('Os', '')}/{d.get('Arch', '')}",
                    f"  Experimental:     {d.get('Experimental', '')}"]
        else:
            out.append(f"  Version:          {comp.get('Version', '')}")
            for key in sorted(d):
                out.append(f"  {key}:{' ' * max(1, 17 - len(key))}{d[key]}")
    click.echo("\n".join(out))


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-f", "--format", "fmt", metavar="string",
              help="Format output using a custom template")
def version(fmt: str | None) -> None:
    """Show the Dockyard version information"""
    c = _client_version()
    cl = client()
    server: dict[str, Any] | None = None
    failure: DockyardError | None = None
    try:
        server = cl.system.version()
    except DockyardError as exc:
        failure = exc
    if fmt:
        # Structs in docker: a field it does not have is an error, not <no value>.
        doc = {"Client": GoStruct("system.clientVersion", c, plain=True),
               "Server": None if server is None else GoStruct("*types.Version", server,
                                                              plain=True)}
        text = _render_template(fmt, GoStruct("system.versionInfo", doc, plain=True),
                                "version")
        click.echo(text)
    else:
        _print_client(c, cl.http.version if server is not None else None)
        if server is not None:
            _print_server(server)
    if failure is not None:
        raise failure


def _yesno(v: Any) -> str:
    return "true" if v else "false"


def _print_info(i: dict[str, Any]) -> None:
    from dockyard.cli.formatter import bytes_size

    out = [f" Containers: {i.get('Containers', 0)}",
           f"  Running: {i.get('ContainersRunning', 0)}",
           f"  Paused: {i.get('ContainersPaused', 0)}",
           f"  Stopped: {i.get('ContainersStopped', 0)}",
           f" Images: {i.get('Images', 0)}",
           f" Server Version: {i.get('ServerVersion', '')}",
           f" Storage Driver: {i.get('Driver', '')}"]
    for k, v in i.get("DriverStatus") or []:
        out.append(f"  {k}: {v}")
    out.append(f" Logging Driver: {i.get('LoggingDriver', '')}")
    out.append(f" Cgroup Driver: {i.get('CgroupDriver', '')}")
    out.append(f" Cgroup Version: {i.get('CgroupVersion', '')}")
    plugins = i.get("Plugins") or {}
    out.append(" Plugins:")
    for key in ("Volume", "Network", "Authorization", "Log"):
        if plugins.get(key):
            out.append(f"  {key}: {' '.join(plugins[key])}")
    swarm = (i.get("Swarm") or {}).get("LocalNodeState") or "inactive"
    out.append(f" Swarm: {swarm}")
    runtimes = i.get("Runtimes") or {}
    if runtimes:
        out.append(f" Runtimes: {' '.join(runtimes)}")
    out.append(f" Default Runtime: {i.get('DefaultRuntime', '')}")
    out.append(f" Init Binary: {i.get('InitBinary', '')}")
    for label, key in (("containerd version", "ContainerdCommit"),
                       ("runc version", "RuncCommit"), ("init version", "InitCommit")):
        out.append(f" {label}: {(i.get(key) or {}).get('ID', '')}")
    sec = i.get("SecurityOptions") or []
    if sec:
        out.append(" Security Options:")
        for opt in sec:
            fields = dict(kv.split("=", 1) for kv in opt.split(",") if "=" in kv)
            out.append(f"  {fields.get('name', opt)}")
            for k, v in fields.items():
                if k != "name":
                    out.append(f"   {k.capitalize()}: {v}")
    out += [f" Kernel Version: {i.get('KernelVersion', '')}",
            f" Operating System: {i.get('OperatingSystem', '')}",
            f" OSType: {i.get('OSType', '')}",
            f" Architecture: {i.get('Architecture', '')}",
            f" CPUs: {i.get('NCPU', 0)}",
            f" Total Memory: {bytes_size(i.get('MemTotal', 0))}",
            f" Name: {i.get('Name', '')}",
            f" ID: {i.get('ID', '')}",
            f" Docker Root Dir: {i.get('DockerRootDir', '')}",
            f" Debug Mode: {_yesno(i.get('Debug'))}"]
    if i.get("Labels"):
        out.append(" Labels:")
        out += [f"  {label}" for label in i["Labels"]]
    out.append(f" Experimental: {_yesno(i.get('ExperimentalBuild'))}")
    cidrs = (i.get("RegistryConfig") or {}).get("InsecureRegistryCIDRs") or []
    if cidrs:
        out.append(" Insecure Registries:")
        out += [f"  {c}" for c in cidrs]
    mirrors = (i.get("RegistryConfig") or {}).get("Mirrors") or []
    if mirrors:
        out.append(" Registry Mirrors:")
        out += [f"  {m}" for m in mirrors]
    out.append(f" Live Restore Enabled: {_yesno(i.get('LiveRestoreEnabled'))}")
    click.echo("\n".join(out) + "\n")
    for w in i.get("Warnings") or []:
        click.echo(w, err=True)


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-f", "--format", "fmt", metavar="string",
              help="Format output using a custom template")
@click.pass_context
def info(ctx: click.Context, fmt: str | None) -> None:
    """Display system-wide information"""
    conn = client()
    if fmt:
        data = conn.system.info()
        if isinstance(data.get("RegistryConfig"), dict):
            data["RegistryConfig"] = GoStruct("*registry.ServiceConfig", data["RegistryConfig"],
                                              plain=True)
        click.echo(_render_template(fmt, GoStruct("system.dockerInfo", data, plain=True)))
        return
    conn_opts = ctx.find_object(Connection)
    debug = bool(conn_opts and conn_opts.debug)
    click.echo(f"Client:\n Version:    {_client_version()['Version']}\n Context:    default\n"
               f" Debug Mode: {_yesno(debug)}\n\nServer:")
    try:
        data = conn.system.info()
    except DockyardError:
        sys.stdout.flush()
        raise
    _print_info(data)


@click.group(cls=Group)
def system() -> None:
    """Manage Dockyard"""


system.add_command(info, "info")



def _event_time(time_nano: int) -> str:
    """docker's event time: Go's "2006-01-02T15:04:05.000000000Z07:00" of a Unix time in
    nanoseconds, in local time."""
    import time

    seconds, nanos = divmod(time_nano, 10**9)
    t = time.localtime(seconds)
    frac = f".{nanos:09d}"
    off = t.tm_gmtoff
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + frac + zone


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-f", "--filter", "filters", multiple=True, metavar="filter",
              help="Filter output based on conditions provided")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("--since", metavar="string", help="Show all events created since timestamp")
@click.option("--until", metavar="string", help="Stream events until this timestamp")
def events(filters: tuple[str, ...], fmt: str | None, since: str | None,
           until: str | None) -> None:
    """Get real time events from the server"""
    from dockyard.cli.containers import _timestamp, parse_filters

    stream = client().system.events(_timestamp(since), _timestamp(until), parse_filters(filters))
    for e in stream:
        actor = e.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        if fmt:
            from dockyard.cli.format import render

            # Go marshals the attributes map with its keys sorted.
            actor["Attributes"] = dict(sorted(attrs.items()))
            click.echo(render(fmt, e))
            continue
        line = (f"{_event_time(int(e.get('timeNano', 0)))} {e.get('Type', '')} "
                f"{e.get('Action', '')} {actor.get('ID', '')}")
        if attrs:
            line += " (" + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) + ")"
        click.echo(line)


system.add_command(events, "events")


def _share(part: int, total: int) -> str:
    from dockyard.cli.formatter import human_size

    if total > 0:
        return f"{human_size(part, 4)} ({part * 100 // total}%)"
    return human_size(part, 4)


def _df_rows(du: dict[str, Any]) -> list[dict[str, Any]]:
    """docker's disk usage summary: one row each for images, containers, local volumes
    and the build cache."""
    from dockyard.cli.formatter import human_size

    images = du.get("Images") or []
    layers = int(du.get("LayersSize") or 0)
    used = sum(i["Size"] - i["SharedSize"] for i in images
               if i.get("Containers") and i.get("Size", -1) != -1 and i.get("SharedSize", -1) != -1)
    containers = du.get("Containers") or []

    def active(c: dict[str, Any]) -> bool:
        return any(s in (c.get("State") or "") for s in ("running", "paused", "restarting"))

    c_total = sum(int(c.get("SizeRw") or 0) for c in containers)
    c_free = sum(int(c.get("SizeRw") or 0) for c in containers if not active(c))
    volumes = du.get("Volumes") or []

    def usage(v: dict[str, Any]) -> dict[str, Any]:
        return v.get("UsageData") or {}

    v_total = sum(usage(v).get("Size", 0) for v in volumes if usage(v).get("Size", -1) != -1)
    v_free = sum(usage(v).get("Size", 0) for v in volumes
                 if usage(v).get("RefCount", 0) == 0 and usage(v).get("Size", -1) != -1)
    cache = du.get("BuildCache") or []
    b_total = sum(int(b.get("Size") or 0) for b in cache if not b.get("Shared"))
    b_free = sum(int(b.get("Size") or 0) for b in cache if not b.get("InUse") and not b.get("Shared"))
    return [
        {"Active": str(sum(1 for i in images if i.get("Containers"))),
         "Reclaimable": _share(layers - used, layers), "Size": human_size(layers, 4),
         "TotalCount": str(len(images)), "Type": "Images"},
        {"Active": str(sum(1 for c in containers if active(c))),
         "Reclaimable": _share(c_free, c_total), "Size": human_size(c_total, 4),
         "TotalCount": str(len(containers)), "Type": "Containers"},
        {"Active": str(sum(1 for v in volumes if usage(v).get("RefCount", 0) > 0)),
         "Reclaimable": _share(v_free, v_total), "Size": human_size(v_total, 4),
         "TotalCount": str(len(volumes)), "Type": "Local Volumes"},
        {"Active": str(sum(1 for b in cache if b.get("InUse"))),
         "Reclaimable": _share(b_free, b_total), "Size": human_size(b_total, 4),
         "TotalCount": str(len(cache)), "Type": "Build Cache"},
    ]


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
def df(fmt: str | None) -> None:
    """Show docker disk usage"""
    from dockyard.cli.format import print_rows

    rows = _df_rows(client().system.df())
    print_rows(fmt, "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
               {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
                "Reclaimable": "RECLAIMABLE"}, rows, click.echo,
               "*formatter.diskUsageContext", labels=False)


system.add_command(df, "df")


class _Filter(FlagValue):
    """A --filter value, refused at parse time as docker's filter flag refuses it."""

    name = "filter"

    def parse(self, text: str) -> str:
        if "=" not in text:
            raise ValueError("bad format of filter (expected name=value)")
        return text


def _prune_warning(all_: bool, volumes: bool, filters: tuple[str, ...]) -> str:
    items = ["all stopped containers", "all networks not used by at least one container"]
    if volumes:
        items.append("all anonymous volumes not used by at least one container")
    items.append("all images without at least one container associated to them" if all_
                 else "all dangling images")
    items.append("all build cache" if all_ else "unused build cache")
    text = "WARNING! This will remove:\n" + "".join(f"  - {item}\n" for item in items)
    if filters:
        text += ("\n  Items to be pruned will be filtered with:\n"
                 + "".join(f"  - {f}\n" for f in sorted(filters)))
    return text


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Remove all unused images not just dangling ones")
@click.option("--filter", "filters", multiple=True, type=_Filter(), metavar="filter",
              help='Provide filter values (e.g. "label=<key>=<value>")')
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--volumes", is_flag=True, help="Prune anonymous volumes")
@click.argument("args", nargs=-1, callback=no_args)
def prune(all_: bool, filters: tuple[str, ...], force: bool, volumes: bool,
          args: tuple[str, ...]) -> None:
    """Remove unused data"""
    from dockyard.cli.command import confirm, print_pruned
    from dockyard.cli.containers import parse_filters

    flt = parse_filters(filters)
    if volumes and "until" in flt:
        raise StatusError('ERROR: The "until" filter is not supported with "--volumes"', 1)
    if not confirm(_prune_warning(all_, volumes, filters), force):
        return
    cl = client()
    total = 0
    report = cl.containers.prune(flt)
    total += int(report.get("SpaceReclaimed") or 0)
    print_pruned("Deleted Containers:", report.get("ContainersDeleted") or [], None)
    print_pruned("Deleted Networks:", cl.networks.prune(flt).get("NetworksDeleted") or [], None)
    if volumes:
        report = cl.volumes.prune(flt)
        total += int(report.get("SpaceReclaimed") or 0)
        print_pruned("Deleted Volumes:", report.get("VolumesDeleted") or [], None)
    image_flt = dict(flt, dangling=["false"]) if all_ else flt
    report = cl.images.prune(image_flt)
    total += int(report.get("SpaceReclaimed") or 0)
    print_pruned("Deleted Images:", [f"{key.lower()}: {item[key]}"
                                     for item in report.get("ImagesDeleted") or []
                                     for key in ("Untagged", "Deleted") if key in item], None)
    report = cl.system.build_prune(all_, flt)
    total += int(report.get("SpaceReclaimed") or 0)
    print_pruned("Deleted build cache objects:", report.get("CachesDeleted") or [], None)
    print_pruned("", [], total)


system.add_command(prune, "prune")
