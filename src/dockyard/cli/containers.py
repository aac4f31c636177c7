"""Container commands: ps, start, stop, restart, kill, rm, logs, wait, rename, pause,
unpause, exec, and the `container` management command that groups them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from dockyard.cli.command import (ArgumentCountError, Command, GoInt, Group, StatusError,
                                  confirm, exact_args, min_args, print_pruned)
from dockyard.cli.connection import client
from dockyard.cli.format import go_time, print_rows
from dockyard.cli.formatter import ellipsis, human_duration, human_size, truncate_id
from dockyard.cli.gotemplate import go_quote
from dockyard.errors import DockyardError

_PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
               "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
               "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Names": "NAMES",
               "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
               "LocalVolumes": "LOCAL VOLUMES", "Platform": "PLATFORM"}
_PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def error_line(exc: DockyardError) -> str:
    """How docker prints one failed target of a multi-target command."""
    from dockyard.client.http import DaemonUnreachable, is_api_error

    if is_api_error(exc):
        return f"Error response from daemon: {exc}"
    if isinstance(exc, DaemonUnreachable):
        raise exc
    return str(exc)


def for_each(names: tuple[str, ...], action: Callable[[str], None],
             summary: str | None = None) -> None:
    """Act on each target, printing its name on success as docker does; errors are
    printed as they come and the command then exits 1."""
    failed = []
    for name in names:
        try:
            action(name)
        except DockyardError as exc:
            click.echo(error_line(exc), err=True)
            failed.append(name)
            continue
        click.echo(name)
    if failed:
        raise StatusError(f"Error: {summary}: {', '.join(failed)}" if summary else "", 1)


def parse_filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        key, eq, val = v.partition("=")
        if not eq:
            raise StatusError("bad format of filter (expected name=value)", 125)
        out.setdefault(key.strip().lower(), []).append(val)
    return out


def _image_column(c: dict[str, Any], trunc: bool) -> str:
    image = c.get("Image") or ""
    if not image:
        return "<no image>"
    if not trunc:
        return image
    if truncate_id(c.get("ImageID") or "") == truncate_id(image):
        return truncate_id(image)
    # Digests make the column unreadable: drop them, keep the tag.
    name = image.split("@", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _ports(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in sorted(ports or [], key=lambda p: (p.get("PrivatePort", 0), p.get("Type", ""))):
        proto = p.get("Type", "tcp")
        if p.get("PublicPort"):
            ip = p.get("IP", "")
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"{host}:{p['PublicPort']}->{p.get('PrivatePort')}/{proto}")
        else:
            out.append(f"{p.get('PrivatePort')}/{proto}")
    return ", ".join(dict.fromkeys(out))


def _ps_row(c: dict[str, Any], trunc: bool, now: float) -> dict[str, Any]:
    names = [n[1:] if n.startswith("/") else n for n in c.get("Names") or []]
    if trunc:
        names = [n for n in names if "/" not in n][:1] or names[:1]
    command = c.get("Command") or ""
    if trunc:
        command = ellipsis(command, 20)
    size = human_size(c.get("SizeRw") or 0, 3)
    if c.get("SizeRootFs"):
        size += f" (virtual {human_size(c['SizeRootFs'], 3)})"
    created = c.get("Created", 0)
    labels = c.get("Labels") or {}
    mounts = [m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []]
    networks = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}))
    return {"Command": go_quote(command),
            "CreatedAt": go_time(created),
            "ID": c["Id"] if not trunc else truncate_id(c["Id"]),
            "Image": _image_column(c, trunc),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "LocalVolumes": str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
            "Mounts": ",".join(ellipsis(m, 15) if trunc else m for m in mounts),
            "Names": ",".join(names),
            "Networks": ",".join(networks),
            "Platform": None,
            "Ports": _ports(c.get("Ports") or []),
            "RunningFor": f"{human_duration(now - created)} ago",
            "Size": size,
            "State": c.get("State", ""),
            "Status": c.get("Status", "")}


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running)")
@click.option("-f", "--filter", "filters", multiple=True, metavar="filter",
              help="Filter output based on conditions provided")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("-n", "--last", type=GoInt(), default=-1, metavar="int",
              help="Show n last created containers (includes all states)")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container (includes all states)")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes")
def ps(all_: bool, filters: tuple[str, ...], fmt: str | None, last: int, latest: bool,
       no_trunc: bool, quiet: bool, size: bool) -> None:
    """List containers"""
    limit = 1 if latest else last
    containers = client().containers.list(all=all_ or limit > 0, limit=limit, size=size,
                                          filters=parse_filters(filters))
    now = time.time()
    rows = [_ps_row(c, not no_trunc, now) for c in containers]
    if quiet and not fmt:
        for r in rows:
            click.echo(r["ID"])
        return
    default = _PS_TABLE + ("\t{{.Size}}" if size else "")
    print_rows(fmt, default, _PS_HEADERS, rows, click.echo, "*formatter.ContainerContext")


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals")
@click.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN")
@click.option("--detach-keys", metavar="string", help="Override the key sequence for detaching a container")
@click.argument("containers", nargs=-1, callback=min_args(1))
def start(attach: bool, interactive: bool, detach_keys: str | None,
          containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers"""
    cl = client()
    if attach or interactive:
        if len(containers) > 1:
            raise StatusError("you cannot start and attach multiple containers at once", 1)
        from dockyard.cli.streams import attach_and_wait

        status = attach_and_wait(cl, containers[0], start=True)
        if status:
            raise StatusError("", status)
        return
    for_each(containers, lambda n: cl.containers.start(n) and None,
             "failed to start containers")


def _stop_command(fn: Any) -> Any:
    """stop's and restart's command line: a signal, a timeout, containers."""
    for decorate in reversed((
            click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]"),
            click.option("-s", "--signal", "sig", metavar="string",
                         help="Signal to send to the container"),
            click.option("-t", "--timeout", "--time", type=GoInt(), metavar="int",
                         help="Seconds to wait before killing the container"),
            click.argument("containers", nargs=-1, callback=min_args(1)))):
        fn = decorate(fn)
    return fn


@_stop_command
def stop(sig: str | None, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers"""
    cl = client()
    for_each(containers, lambda n: cl.containers.stop(n, timeout, sig))


@_stop_command
def restart(sig: str | None, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers"""
    cl = client()
    for_each(containers, lambda n: cl.containers.restart(n, timeout, sig))


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.option("-s", "--signal", "sig", metavar="string", help="Signal to send to the container")
@click.argument("containers", nargs=-1, callback=min_args(1))
def kill(sig: str | None, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers"""
    cl = client()
    for_each(containers, lambda n: cl.containers.kill(n, sig))


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (uses SIGKILL)")
@click.option("-l", "--link", is_flag=True, help="Remove the specified link")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes associated with the container")
@click.argument("containers", nargs=-1, callback=min_args(1))
def rm(force: bool, link: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers"""
    cl = client()
    for_each(containers, lambda n: cl.containers.remove(n, force=force, volumes=volumes,
                                                        link=link))


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.argument("containers", nargs=-1, callback=min_args(1))
def pause(containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers"""
    cl = client()
    for_each(containers, cl.containers.pause)


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.argument("containers", nargs=-1, callback=min_args(1))
def unpause(containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers"""
    cl = client()
    for_each(containers, cl.containers.unpause)


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.argument("containers", nargs=-1, callback=min_args(1))
def wait(containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes"""
    cl = client()
    failed = False
    for name in containers:
        try:
            result = cl.containers.wait(name)
        except DockyardError as exc:
            click.echo(error_line(exc), err=True)
            failed = True
            continue
        click.echo(str(result.get("StatusCode", "")))
    if failed:
        raise StatusError("", 1)


@click.command(cls=Command, usage="CONTAINER NEW_NAME")
@click.argument("names", nargs=-1, callback=exact_args(2))
def rename(names: tuple[str, ...]) -> None:
    """Rename a container"""
    old, new = names
    if not new.strip():
        raise StatusError("Error: new name cannot be blank", 1)
    try:
        client().containers.rename(old, new)
    except DockyardError as exc:
        click.echo(error_line(exc), err=True)
        raise StatusError(f"Error: failed to rename container named {old}", 1) from None


@click.command(cls=Command, usage="[OPTIONS] CONTAINER")
@click.option("--details", is_flag=True, help="Show extra details provided to logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("--since", metavar="string", help="Show logs since timestamp or relative (e.g. 42m)")
@click.option("-n", "--tail", default="all", metavar="string",
              help='Number of lines to show from the end of the logs (default "all")')
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.option("--until", metavar="string", help="Show logs before a timestamp or relative (e.g. 42m)")
@click.argument("names", nargs=-1, callback=exact_args(1))
def logs(details: bool, follow: bool, since: str | None, tail: str, timestamps: bool,
         until: str | None, names: tuple[str, ...]) -> None:
    """Fetch the logs of a container"""
    from dockyard.cli.streams import copy_frames

    cl = client()
    info = cl.containers.inspect(names[0])
    tty = bool((info.get("Config") or {}).get("Tty"))
    with cl.containers.logs(names[0], follow=follow, since=_timestamp(since),
                            until=_timestamp(until), timestamps=timestamps, tail=tail,
                            details=details) as r:
        copy_frames(r, tty)


def _timestamp(value: str | None) -> str | None:
    """docker's --since/--until: a relative duration (10m, 1h30m) is measured back from
    now; any other form goes to the daemon as given."""
    if not value:
        return None
    import re

    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?", value)
    if m and any(m.groups()):
        h, mi, s = (float(x) if x else 0.0 for x in m.groups())
        return f"{time.time() - (h * 3600 + mi * 60 + s):.9f}"
    return value


def env_list(values: tuple[str, ...], files: tuple[str, ...]) -> list[str]:
    """-e and --env-file as docker reads them: a bare NAME takes the value from the
    client's environment, or is dropped when it is not set there."""
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise StatusError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}", 125) from None
        for line in lines:
            line = line.lstrip()
            if not line or line.startswith("#"):
                continue
            out.extend(_env_item(line))
    for v in values:
        out.extend(_env_item(v))
    return out


def _env_item(v: str) -> list[str]:
    if "=" in v:
        if v.startswith("="):
            raise StatusError(f"invalid environment variable: {v}", 125)
        return [v]
    if v in os.environ:
        return [f"{v}={os.environ[v]}"]
    return []


@click.command(cls=Command, usage="[OPTIONS] CONTAINER COMMAND [ARG...]", interspersed=False)
@click.option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background")
@click.option("--detach-keys", metavar="string", help="Override the key sequence for detaching a container")
@click.option("-e", "--env", multiple=True, metavar="list", help="Set environment variables")
@click.option("--env-file", multiple=True, metavar="list", help="Read in a file of environment variables")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached")
@click.option("--privileged", is_flag=True, help="Give extended privileges to the command")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY")
@click.option("-u", "--user", metavar="string", help="Username or UID (format: \"<name|uid>[:<group|gid>]\")")
@click.option("-w", "--workdir", metavar="string", help="Working directory inside the container")
@click.argument("args", nargs=-1, callback=min_args(2))
def exec_(detach: bool, detach_keys: str | None, env: tuple[str, ...], env_file: tuple[str, ...],
          interactive: bool, privileged: bool, tty: bool, user: str | None,
          workdir: str | None, args: tuple[str, ...]) -> None:
    """Execute a command in a running container"""
    cl = client()
    container, cmd = args[0], list(args[1:])
    config: dict[str, Any] = {"User": user or "", "Privileged": privileged, "Tty": tty,
                              "AttachStdin": interactive and not detach,
                              "AttachStdout": not detach, "AttachStderr": not detach,
                              "Env": env_list(env, env_file), "Cmd": cmd,
                              "WorkingDir": workdir or "", "DetachKeys": detach_keys or ""}
    if tty and interactive and not sys.stdin.isatty():
        raise StatusError("the input device is not a TTY", 1)
    from dockyard.cli.streams import exec_attached, tty_size

    # As docker: the TTY's size goes with the exec's create and its start.
    console_size = tty_size() if tty else None
    if console_size is not None:
        config["ConsoleSize"] = console_size
    exec_id = cl.execs.create(container, config)
    if detach:
        cl.execs.start(exec_id, detach=True, tty=tty, console_size=console_size)
        return
    code = exec_attached(cl, exec_id, container, tty=tty, stdin=interactive,
                         detach_keys=detach_keys, console_size=console_size)
    if code:
        raise StatusError("", code)


exec_.name = "exec"


@click.group(cls=Group)
def container() -> None:
    """Manage containers"""


for _name, _cmd in (("ls", ps), ("start", start), ("stop", stop), ("restart", restart),
                    ("kill", kill), ("rm", rm), ("pause", pause), ("unpause", unpause),
                    ("wait", wait), ("rename", rename), ("logs", logs), ("exec", exec_)):
    container.add_command(_cmd, _name)


def _add_late(group: click.Group) -> None:
    """Commands living in other modules, imported only when `container X` runs."""
    late = {"run": ("dockyard.cli.run", "run"), "create": ("dockyard.cli.run", "create"),
            "cp": ("dockyard.cli.cp", "cp"), "stats": ("dockyard.cli.stats", "stats"),
            "inspect": ("dockyard.cli.inspect", "container_inspect")}
    original = group.get_command

    def get_command(ctx: click.Context, name: str) -> click.Command | None:
        if name in ("ps", "list"):
            return ps
        if name in late:
            import importlib

            module, attr = late[name]
            return getattr(importlib.import_module(module), attr)
        return original(ctx, name)

    group.get_command = get_command  # type: ignore[method-assign]


_add_late(container)


@click.command(cls=Command, usage="CONTAINER [ps OPTIONS]", interspersed=False)
@click.argument("args", nargs=-1, callback=min_args(1))
def top(args: tuple[str, ...]) -> None:
    """Display the running processes of a container"""
    from dockyard.cli.formatter import tabwrite

    result = client().containers.top(args[0], " ".join(args[1:]) or None)
    lines = ["\t".join(result.get("Titles") or [])]
    lines += ["\t".join(p) for p in result.get("Processes") or []]
    # docker's top: a tabwriter of minimum width 20.
    click.echo(tabwrite("\n".join(lines) + "\n", minwidth=20, padding=3), nl=False)


@click.command(cls=Command, usage="[OPTIONS] CONTAINER")
@click.option("-o", "--output", metavar="string", help="Write to a file, instead of STDOUT")
@click.argument("names", nargs=-1, callback=exact_args(1))
def export(output: str | None, names: tuple[str, ...]) -> None:
    """Export a container's filesystem as a tar archive"""
    from dockyard.cli.streams import write_stream

    if output is None and sys.stdout.isatty():
        raise StatusError("cowardly refusing to save to a terminal. Use the -o flag or "
                          "redirect", 1)
    with client().containers.export(names[0]) as r:
        write_stream(r, output)


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [REPOSITORY[:TAG]]")
@click.option("-a", "--author", metavar="string", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@click.option("-c", "--change", multiple=True, metavar="list", help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", metavar="string", help="Commit message")
@click.option("-p", "--pause", type=click.BOOL, default=True, metavar="",
              help="Pause container during commit (default true)")
@click.argument("names", nargs=-1, callback=min_args(1))
def commit(author: str | None, change: tuple[str, ...], message: str | None, pause: bool,
           names: tuple[str, ...]) -> None:
    """Create a new image from a container's changes"""
    if len(names) > 2:
        raise StatusError("dockyard: 'dockyard commit' requires at most 2 arguments", 1)
    repo = tag = None
    if len(names) == 2:
        ref = names[1]
        name, sep, last = ref.rpartition(":")
        repo, tag = (name, last) if sep and "/" not in last else (ref, None)
    result = client().containers.commit(names[0], repo, tag, message, author, pause,
                                        list(change))
    click.echo(result.get("Id", ""))


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("--filter", "filters", multiple=True, metavar="filter",
              help='Provide filter values (e.g. "until=<timestamp>")')
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
def prune(filters: tuple[str, ...], force: bool) -> None:
    """Remove all stopped containers"""
    if not confirm("WARNING! This will remove all stopped containers.", force):
        return
    report = client().containers.prune(parse_filters(filters))
    print_pruned("Deleted Containers:", report.get("ContainersDeleted") or [],
                 report.get("SpaceReclaimed", 0))


for _name, _cmd in (("top", top), ("export", export), ("commit", commit), ("prune", prune)):
    container.add_command(_cmd, _name)


_CHANGE_KINDS = {0: "C", 1: "A", 2: "D"}


@click.command(cls=Command, usage="CONTAINER")
@click.argument("names", nargs=-1, callback=exact_args(1))
def diff(names: tuple[str, ...]) -> None:
    """Inspect changes to files or directories on a container's filesystem"""
    for change in client().containers.changes(names[0]):
        click.echo(f"{_CHANGE_KINDS.get(change.get('Kind'), '?')} {change.get('Path', '')}")


def _port_number(text: str) -> None:
    """Check a port as Go's strconv.ParseUint(text, 10, 16) does, in docker's words."""
    import re

    if not re.fullmatch(r"[0-9]+", text):
        reason = "invalid syntax"
    elif int(text) > 0xFFFF:
        reason = "value out of range"
    else:
        return
    raise StatusError(f'Error: invalid port ({text}): strconv.ParseUint: parsing "{text}": '
                      f"{reason}", 1)


def _host_port(binding: dict[str, Any]) -> str:
    """Go's net.JoinHostPort: an IPv6 address in brackets."""
    ip = binding.get("HostIp", "")
    return f"[{ip}]:{binding.get('HostPort', '')}" if ":" in ip else f"{ip}:{binding.get('HostPort', '')}"


def _natural_key(text: str) -> list[Any]:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", text)]


@click.command(cls=Command, usage="CONTAINER [PRIVATE_PORT[/PROTO]]")
@click.argument("args", nargs=-1)
def port(args: tuple[str, ...]) -> None:
    """List port mappings or a specific mapping for the container"""
    if not 1 <= len(args) <= 2:
        raise ArgumentCountError(click.get_current_context(),
                                 f"'{click.get_current_context().command_path}' requires at "
                                 "least 1 and at most 2 arguments", footer="Run")
    name = args[0]
    ports = (client().containers.inspect(name).get("NetworkSettings") or {}).get("Ports") or {}
    out: list[str] = []
    if len(args) == 2:
        number, sep, proto = args[1].partition("/")
        _port_number(number)
        bindings = ports.get(f"{number}/{proto or 'tcp'}")
        if not bindings:
            raise StatusError(f"Error: No public port '{args[1]}' published for {name}", 1)
        out = [_host_port(b) for b in bindings]
    else:
        out = [f"{private} -> {_host_port(b)}" for private, bindings in ports.items()
               for b in bindings or []]
    for line in sorted(out, key=_natural_key):
        click.echo(line)


for _name, _cmd in (("diff", diff), ("port", port)):
    container.add_command(_cmd, _name)


@click.command(cls=Command, usage="[OPTIONS] CONTAINER")
@click.option("--detach-keys", metavar="string", help="Override the key sequence for detaching a container")
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN")
@click.option("--sig-proxy", is_flag=True, default=True, flag_value=True,
              help="Proxy all received signals to the process (default true)")
@click.argument("names", nargs=-1, callback=exact_args(1))
def attach(detach_keys: str | None, no_stdin: bool, sig_proxy: bool,
           names: tuple[str, ...]) -> None:
    """Attach local standard input, output, and error streams to a running container"""
    from dockyard.cli.streams import attach_and_wait

    cl = client()
    info = cl.containers.inspect(names[0])
    state = info.get("State") or {}
    if not state.get("Running"):
        raise StatusError("You cannot attach to a stopped container, start it first", 1)
    if state.get("Paused"):
        raise StatusError("You cannot attach to a paused container, unpause it first", 1)
    config = info.get("Config") or {}
    tty = bool(config.get("Tty"))
    stdin = bool(config.get("OpenStdin")) and not no_stdin
    if tty and stdin and not sys.stdin.isatty():
        raise StatusError("the input device is not a TTY", 1)
    status = attach_and_wait(cl, info["Id"], start=False, stdin=stdin, tty=tty,
                             detach_keys=detach_keys, sig_proxy=sig_proxy)
    if status:
        raise StatusError("", status)


container.add_command(attach, "attach")


def _update_options(f: Any) -> Any:
    from dockyard.cli.command import Bytes

    opts = [
        click.option("--blkio-weight", type=GoInt(), metavar="uint16", help="Block IO (relative weight), between 10 and 1000, or 0 to disable"),
        click.option("--cpu-period", type=GoInt(), metavar="int", help="Limit CPU CFS (Completely Fair Scheduler) period"),
        click.option("--cpu-quota", type=GoInt(), metavar="int", help="Limit CPU CFS (Completely Fair Scheduler) quota"),
        click.option("--cpu-rt-period", type=GoInt(), metavar="int", help="Limit the CPU real-time period in microseconds"),
        click.option("--cpu-rt-runtime", type=GoInt(), metavar="int", help="Limit the CPU real-time runtime in microseconds"),
        click.option("-c", "--cpu-shares", type=GoInt(), metavar="int", help="CPU shares (relative weight)"),
        click.option("--cpus", metavar="decimal", help="Number of CPUs"),
        click.option("--cpuset-cpus", metavar="string", help="CPUs in which to allow execution (0-3, 0,1)"),
        click.option("--cpuset-mems", metavar="string", help="MEMs in which to allow execution (0-3, 0,1)"),
        click.option("-m", "--memory", type=Bytes(), metavar="bytes", help="Memory limit"),
        click.option("--memory-reservation", type=Bytes(), metavar="bytes", help="Memory soft limit"),
        click.option("--memory-swap", type=Bytes(allow_unlimited=True), metavar="bytes", help="Swap limit equal to memory plus swap: -1 to enable unlimited swap"),
        click.option("--pids-limit", type=GoInt(), metavar="int", help="Tune container pids limit (set -1 for unlimited)"),
        click.option("--restart", metavar="string", help="Restart policy to apply when a container exits"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command(cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@_update_options
@click.argument("containers", nargs=-1, callback=min_args(1))
def update(containers: tuple[str, ...], **o: Any) -> None:
    """Update configuration of one or more containers"""
    keys = {"blkio_weight": "BlkioWeight", "cpu_period": "CpuPeriod", "cpu_quota": "CpuQuota",
            "cpu_rt_period": "CpuRealtimePeriod", "cpu_rt_runtime": "CpuRealtimeRuntime",
            "cpu_shares": "CpuShares", "cpuset_cpus": "CpusetCpus",
            "cpuset_mems": "CpusetMems", "memory": "Memory",
            "memory_reservation": "MemoryReservation", "memory_swap": "MemorySwap",
            "pids_limit": "PidsLimit"}
    body: dict[str, Any] = {keys[k]: v for k, v in o.items() if k in keys and v is not None}
    if o["cpus"] is not None:
        try:
            body["NanoCpus"] = int(round(float(o["cpus"]) * 1e9))
        except ValueError:
            raise StatusError(f'invalid argument "{o["cpus"]}" for "--cpus" flag: failed to '
                              f'parse {o["cpus"]} as a rational number', 125) from None
    if o["restart"] is not None:
        name, _, retries = o["restart"].partition(":")
        body["RestartPolicy"] = {"Name": "" if name == "no" else name,
                                 "MaximumRetryCount": int(retries) if retries.isdigit() else 0}
    if not body:
        raise StatusError("you must provide one or more flags when using this command", 1)
    cl = client()

    def one(name: str) -> None:
        for w in cl.containers.update(name, body).get("Warnings") or []:
            click.echo(w, err=True)

    for_each(containers, one)


container.add_command(update, "update")
