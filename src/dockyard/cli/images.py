"""Image commands: images, pull, push, tag, rmi, save, load, history, and the `image`
management command."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from dockyard.cli.command import (Command, Group, StatusError, confirm, exact_args, min_args,
                                  print_pruned)
from dockyard.cli.connection import client
from dockyard.cli.containers import error_line, parse_filters
from dockyard.cli.format import go_time, print_rows
from dockyard.cli.formatter import ellipsis, human_duration, human_size, truncate_id
from dockyard.errors import DockyardError

_IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                  "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                  "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE",
                  "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
_IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
_IMAGES_DIGESTS = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}"
                   "\t{{.Size}}")


def familiar(name: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _split_tag(ref: str) -> tuple[str, str]:
    name, _, tail = ref.rpartition(":")
    if not name or "/" in tail:
        return ref, ""
    return name, tail


def _image_rows(img: dict[str, Any], trunc: bool, digests: bool,
                now: float) -> list[dict[str, Any]]:
    def row(repo: str, tag: str, digest: str) -> dict[str, Any]:
        def optional(key: str) -> str:
            v = img.get(key, -1)
            return "N/A" if v is None or v < 0 else (str(v) if key == "Containers"
                                                      else human_size(v, 4))

        return {"Containers": optional("Containers"),
                "CreatedAt": go_time(img.get("Created", 0)),
                "CreatedSince": f"{human_duration(now - img.get('Created', 0))} ago",
                "Digest": digest,
                "ID": truncate_id(img["Id"]) if trunc else img["Id"],
                "Repository": repo,
                "SharedSize": optional("SharedSize"),
                "Size": human_size(img.get("Size", 0), 3),
                "Tag": tag,
                "UniqueSize": "N/A" if img.get("SharedSize", -1) in (None, -1)
                else human_size(img.get("Size", 0) - img["SharedSize"], 4),
                "VirtualSize": human_size(img.get("VirtualSize", img.get("Size", 0)), 4)}

    tags: dict[str, list[str]] = {}
    for ref in img.get("RepoTags") or []:
        if ref == "<none>:<none>":
            continue
        repo, tag = _split_tag(ref)
        tags.setdefault(familiar(repo), []).append(tag)
    by_repo: dict[str, list[str]] = {}
    for ref in img.get("RepoDigests") or []:
        if ref == "<none>@<none>":
            continue
        repo, _, dgst = ref.partition("@")
        by_repo.setdefault(familiar(repo), []).append(dgst)
    rows = []
    for repo in sorted(tags):
        dgsts = by_repo.pop(repo, []) if digests else (by_repo.pop(repo, None) and [])
        for tag in sorted(tags[repo]):
            if not dgsts:
                rows.append(row(repo, tag, "<none>"))
            for d in dgsts or []:
                rows.append(row(repo, tag, d))
    for repo in sorted(by_repo):
        if digests:
            rows += [row(repo, "<none>", d) for d in by_repo[repo]]
        else:
            rows.append(row(repo, "<none>", "<none>"))
    if not rows:
        rows.append(row("<none>", "<none>", "<none>"))
    return rows


@click.command(cls=Command, usage="[OPTIONS] [REPOSITORY[:TAG]]")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images (default hides intermediate images)")
@click.option("--digests", is_flag=True, help="Show digests")
@click.option("-f", "--filter", "filters", multiple=True, metavar="filter",
              help="Filter output based on conditions provided")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.argument("repository", nargs=-1)
def images(all_: bool, digests: bool, filters: tuple[str, ...], fmt: str | None,
           no_trunc: bool, quiet: bool, repository: tuple[str, ...]) -> None:
    """List images"""
    if len(repository) > 1:
        raise StatusError(f"dockyard: '{click.get_current_context().command_path}' requires "
                          "at most 1 argument", 1)
    flt = parse_filters(filters)
    if repository:
        flt.setdefault("reference", []).append(repository[0])
    now = time.time()
    rows = []
    for img in client().images.list(all=all_, digests=digests, filters=flt):
        rows += _image_rows(img, not no_trunc, digests, now)
    if quiet and not fmt:
        for r in rows:
            click.echo(r["ID"])
        return
    print_rows(fmt, _IMAGES_DIGESTS if digests else _IMAGES_TABLE, _IMAGE_HEADERS, rows,
               click.echo, "*formatter.ImageContext", labels=False)


def _progress_text(detail: dict[str, Any], width: int, now: float) -> str:
    """jsonmessage's progress for a terminal: a bar (on a wide terminal), the sizes and
    the time left."""
    current = int(detail.get("current") or 0)
    total = int(detail.get("total") or 0)
    units = detail.get("units") or ""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current, 4):>8}" if not units else f"{current} {units}"
    percentage = min(int(current / total * 100) // 2, 50)
    bar = ""
    if width > 110:
        bar = f"[{'=' * percentage}>{' ' * max(50 - percentage, 0)}] "
    numbers = ""
    if detail.get("hidecounts"):
        pass
    elif not units:
        numbers = f"{human_size(current, 4):>8}/{human_size(total, 4)}"
        if current > total:
            numbers = f"{human_size(current, 4):>8}"
    else:
        numbers = f"{current}/{total} {units}"
        if current > total:
            numbers = f"{current} {units}"
    left = ""
    start = int(detail.get("start") or 0)
    if current > 0 and start > 0 and percentage < 50:
        remaining = (total - current) * (now - start) / current
        left = " " + _go_duration(round(remaining))
    return bar + numbers + left


def _go_duration(seconds: int) -> str:
    """Go's time.Duration.String() of whole seconds: 1h2m3s, 4m0s, 5s."""
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _has_progress(m: dict[str, Any]) -> bool:
    """Whether Go's decoding gives the message a progress (any progressDetail object)."""
    return isinstance(m.get("progressDetail"), dict)


def _message_error(m: dict[str, Any]) -> str | None:
    if m.get("error") or m.get("errorDetail"):
        return m.get("error") or (m.get("errorDetail") or {}).get("message", "")
    return None


def _display_terminal(messages: Iterator[dict[str, Any]], out: Any) -> list[str]:
    """docker's jsonmessage display on a terminal: a line per layer id, rewritten in
    place (cursor up to it, erase, write, cursor back down) as its progress changes."""
    import os

    try:
        width = os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError):
        width = 200
    streamed: list[str] = []
    lines: dict[str, int] = {}
    for m in messages:
        err = _message_error(m)
        if err is not None:
            out.flush()
            raise StatusError(f"Error response from daemon: {err}", 1)
        if "aux" in m:
            continue
        ident = m.get("id") or ""
        progress = _has_progress(m)
        up = 0
        if ident and (progress or m.get("progress")):
            if ident not in lines:
                lines[ident] = len(lines)
                out.write("\n")
            up = len(lines) - lines[ident]
            if up:
                out.write(f"\x1b[{up}A")
        else:
            # Anything else ends the block of lines being redrawn.
            lines = {}
        stream = m.get("stream")
        end = ""
        if stream is None and progress:
            out.write("\x1b[2K\r")
            end = "\r"
        if ident:
            out.write(f"{ident}: ")
        if m.get("from"):
            out.write(f"(from {m['from']}) ")
        status = m.get("status", "")
        if progress:
            out.write(f"{status} {_progress_text(m['progressDetail'], width, time.time())}{end}")
        elif m.get("progress"):
            out.write(f"{status} {m['progress']}{end}")
        elif stream is not None:
            streamed.append(stream)
            out.write(f"{stream}{end}")
        else:
            out.write(f"{status}{end}\n")
        if ident and up:
            out.write(f"\x1b[{up}B")
        out.flush()
    return streamed


def show_progress(messages: Iterator[dict[str, Any]], quiet: bool = False) -> list[str]:
    """docker's jsonmessage display: redrawn in place on a terminal; for a pipe one line
    a message, progress bars left out. An error message ends the stream as the daemon's
    error. The `stream` texts (load's "Loaded image: ...") are returned as well as
    printed."""
    if not quiet and sys.stdout.isatty():
        return _display_terminal(messages, sys.stdout)
    streamed = []
    for m in messages:
        err = _message_error(m)
        if err is not None:
            raise StatusError(f"Error response from daemon: {err}", 1)
        if "stream" in m:
            streamed.append(m["stream"])
            if not quiet:
                click.echo(m["stream"], nl=False)
            continue
        detail = m.get("progressDetail") or {}
        if quiet or "aux" in m or (int(detail.get("current") or 0) > 0
                                   or int(detail.get("total") or 0) > 0):
            # A progress bar is for terminals only.
            continue
        status = m.get("status", "")
        line = (f"{m['id']}: " if m.get("id") else "") + (
            f"(from {m['from']}) " if m.get("from") else "")
        if m.get("progress"):
            line += f"{status} {m['progress']}"
        else:
            line += status
        click.echo(line)
    return streamed


def _normalize(ref: str) -> str:
    """docker.io/library/busybox:latest from busybox (the name docker pull prints)."""
    name, sep, digest = ref.partition("@")
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    return name + sep + digest


@click.command(cls=Command, usage="[OPTIONS] NAME[:TAG|@DIGEST]")
@click.option("-a", "--all-tags", is_flag=True, help="Download all tagged images in the repository")
@click.option("--platform", metavar="string", help="Set platform if server is multi-platform capable")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@click.argument("names", nargs=-1, callback=exact_args(1))
def pull(all_tags: bool, platform: str | None, quiet: bool, names: tuple[str, ...]) -> None:
    """Download an image from a registry"""
    ref = names[0]
    name, tag = _split_tag(ref)
    if "@" not in ref and not tag and not all_tags:
        tag = "latest"
        if not quiet:
            click.echo("Using default tag: latest")
    pull_image(name if "@" not in ref else ref, None if "@" in ref else tag, platform, quiet)
    click.echo(_normalize(f"{name}:{tag}" if "@" not in ref else ref))


def pull_image(name: str, tag: str | None, platform: str | None, quiet: bool,
               out: Any = None) -> None:
    """Pull through the daemon, showing its progress (on stderr for `run`)."""
    from dockyard.cli.auth import registry_auth_header

    messages = client().images.pull(name, tag, platform, registry_auth_header(name))
    if out is None:
        show_progress(messages, quiet)
        return
    for m in messages:
        if m.get("error") or m.get("errorDetail"):
            msg = m.get("error") or (m.get("errorDetail") or {}).get("message", "")
            from dockyard.client.http import error_from_response

            raise error_from_response(500, msg)
        if not quiet and m.get("status") and not (m.get("progressDetail") or {}).get("total"):
            out.write((f"{m['id']}: " if m.get("id") else "") + m["status"] + "\n")
            out.flush()


@click.command(cls=Command, usage="[OPTIONS] NAME[:TAG]")
@click.option("-a", "--all-tags", is_flag=True, help="Push all tags of an image to the repository")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@click.argument("names", nargs=-1, callback=exact_args(1))
def push(all_tags: bool, quiet: bool, names: tuple[str, ...]) -> None:
    """Upload an image to a registry"""
    name, tag = _split_tag(names[0])
    if not tag and not all_tags:
        tag = "latest"
        if not quiet:
            click.echo("Using default tag: latest")
    from dockyard.cli.auth import registry_auth_header

    show_progress(client().images.push(name, tag or None, registry_auth_header(name)), quiet)
    if quiet:
        click.echo(_normalize(f"{name}:{tag}" if tag else name))


@click.command(cls=Command, usage="SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]")
@click.argument("names", nargs=-1, callback=exact_args(2))
def tag(names: tuple[str, ...]) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"""
    source, target = names
    repo, t = _split_tag(target)
    if "@" in target:
        raise StatusError("refusing to create a tag with a digest reference", 1)
    client().images.tag(source, repo, t or "latest")


@click.command(cls=Command, usage="[OPTIONS] IMAGE [IMAGE...]")
@click.option("-f", "--force", is_flag=True, help="Force removal of the image")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents")
@click.argument("names", nargs=-1, callback=min_args(1))
def rmi(force: bool, no_prune: bool, names: tuple[str, ...]) -> None:
    """Remove one or more images"""
    cl = client()
    failed = []
    for name in names:
        try:
            items = cl.images.remove(name, force=force, noprune=no_prune)
        except DockyardError as exc:
            failed.append(error_line(exc))
            continue
        for item in items:
            for key in ("Untagged", "Deleted"):
                if key in item:
                    click.echo(f"{key}: {item[key]}")
    if failed:
        raise StatusError("\n".join(failed), 1)


@click.command(cls=Command, usage="[OPTIONS] IMAGE [IMAGE...]")
@click.option("-o", "--output", metavar="string", help="Write to a file, instead of STDOUT")
@click.option("--platform", metavar="string", help="Save only the given platform variant")
@click.argument("names", nargs=-1, callback=min_args(1))
def save(output: str | None, platform: str | None, names: tuple[str, ...]) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)"""
    if output is None and sys.stdout.isatty():
        raise StatusError("cowardly refusing to save to a terminal. Use the -o flag or "
                          "redirect", 1)
    from dockyard.cli.streams import write_stream

    with client().images.save(list(names)) as r:
        write_stream(r, output)


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-i", "--input", "input_", metavar="string",
              help="Read from tar archive file, instead of STDIN")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output")
def load(input_: str | None, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN"""
    if input_ is None and sys.stdin.isatty():
        raise StatusError("requested load from stdin, but stdin is empty", 1)

    try:
        f = open(input_, "rb") if input_ else sys.stdin.buffer
    except OSError as exc:
        raise StatusError(f"open {input_}: {(exc.strerror or str(exc)).lower()}", 1) from None

    show_progress(client().images.load(_chunks(f, close=bool(input_)), quiet), quiet=False)


@click.command(cls=Command, usage="[OPTIONS] file|URL|- [REPOSITORY[:TAG]]")
@click.option("-c", "--change", multiple=True, metavar="list",
              help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", metavar="string", help="Set commit message for imported image")
@click.option("--platform", metavar="string", help="Set platform if server is multi-platform capable")
@click.argument("args", nargs=-1, callback=min_args(1))
def import_(change: tuple[str, ...], message: str | None, platform: str | None,
            args: tuple[str, ...]) -> None:
    """Import the contents from a tarball to create a filesystem image"""
    source = args[0]
    repo = args[1] if len(args) > 1 else None
    if repo:
        from dockyard.image.reference import parse_normalized

        try:
            parse_normalized(repo)
        except DockyardError as exc:
            raise StatusError(str(exc), 1) from None
    data: Iterator[bytes] | None = None
    if source == "-":
        data = _chunks(sys.stdin.buffer, close=False)
    elif not source.startswith(("http://", "https://")):
        try:
            f = open(source, "rb")
        except OSError as exc:
            raise StatusError(f"open {source}: {(exc.strerror or str(exc)).lower()}", 1) from None
        data = _chunks(f, close=True)
        source = "-"
    show_progress(client().images.import_image(source, data, repo, message, list(change),
                                               platform))


import_.name = "import"


def _chunks(f: Any, close: bool) -> Iterator[bytes]:
    """F read in pieces, for a streamed request body."""
    try:
        while True:
            data = f.read(1 << 20)
            if not data:
                return
            yield data
    finally:
        if close:
            f.close()


@click.command(cls=Command, usage="[OPTIONS] IMAGE")
@click.option("--format", "fmt", metavar="string", help="Format output using a custom template")
@click.option("-H", "--human", default=True, type=bool, show_default=True,
              help="Print sizes and dates in human readable format")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.argument("names", nargs=-1, callback=exact_args(1))
def history(fmt: str | None, human: bool, no_trunc: bool, quiet: bool,
            names: tuple[str, ...]) -> None:
    """Show the history of an image"""
    now = time.time()
    rows = []
    for h in client().images.history(names[0]):
        ident = h.get("Id", "")
        if ident != "<missing>" and not no_trunc:
            ident = truncate_id(ident)
        created_by = (h.get("CreatedBy") or "").replace("\t", " ")
        if not no_trunc:
            created_by = ellipsis(created_by, 45)
        created = h.get("Created", 0)
        rows.append({"ID": ident,
                     "CreatedSince": f"{human_duration(now - created)} ago" if human
                     else go_time(created),
                     "CreatedAt": go_time(created),
                     "CreatedBy": created_by,
                     "Size": human_size(h.get("Size", 0), 3) if human else str(h.get("Size", 0)),
                     "Comment": h.get("Comment", "")})
    if quiet and not fmt:
        for r in rows:
            click.echo(r["ID"])
        return
    print_rows(fmt, "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
               {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}, rows,
               click.echo, "*image.historyContext", labels=False)


@click.command(cls=Command, usage="[OPTIONS]")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones")
@click.option("--filter", "filters", multiple=True, metavar="filter",
              help='Provide filter values (e.g. "until=<timestamp>")')
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
def prune(all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove unused images"""
    if not confirm("WARNING! This will remove all images without at least one container "
                   "associated to them." if all_ else
                   "WARNING! This will remove all dangling images.", force):
        return
    flt = parse_filters(filters)
    if all_:
        flt["dangling"] = ["false"]
    report = client().images.prune(flt)
    print_pruned("Deleted Images:", [f"{key.lower()}: {item[key]}"
                                     for item in report.get("ImagesDeleted") or []
                                     for key in ("Untagged", "Deleted") if key in item],
                 report.get("SpaceReclaimed", 0))


@click.group(cls=Group)
def image() -> None:
    """Manage images"""


for _name, _cmd in (("ls", images), ("pull", pull), ("push", push), ("tag", tag), ("rm", rmi),
                    ("save", save), ("load", load), ("history", history), ("prune", prune),
                    ("import", import_)):
    image.add_command(_cmd, _name)


def _late_inspect(group: click.Group) -> None:
    original = group.get_command

    def get_command(ctx: click.Context, name: str) -> click.Command | None:
        if name == "inspect":
            from dockyard.cli.inspect import image_inspect

            return image_inspect
        if name == "list":
            return images
        return original(ctx, name)

    group.get_command = get_command  # type: ignore[method-assign]


_late_inspect(image)
