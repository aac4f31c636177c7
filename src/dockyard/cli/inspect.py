"""`dockyard inspect`, `container inspect`, `image inspect`: the daemon's JSON, indented
as docker indents it (the raw document, not a re-encoding), or rendered with -f."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from dockyard.cli.command import Command, StatusError, min_args
from dockyard.cli.formatter import JSON_KEY
from dockyard.cli.gotemplate import TemplateError, TypedMap
from dockyard.cli.connection import client
from dockyard.errors import DockyardError, NotFound

_TYPES = ("config", "container", "image", "network", "node", "plugin", "secret", "service",
          "task", "volume")


def go_indent(raw: bytes, indent: str | None = "    ") -> str:
    """Go's json.Indent: whitespace re-laid, every token (strings with their escapes,
    numbers as written) kept byte for byte; empty arrays and objects stay `[]` and `{}`.
    INDENT None is Go's json.Compact: no whitespace at all."""
    src = raw.decode("utf-8")
    out: list[str] = []
    depth = 0
    i, n = 0, len(src)
    need_newline = False  # just opened a container: newline goes before its first item

    def newline() -> None:
        if indent is not None:
            out.append("\n" + indent * depth)

    while i < n:
        ch = src[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if need_newline and ch not in "]}":
            need_newline = False
            depth += 1
            newline()
        if ch == '"':
            j = i + 1
            while src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
            continue
        if ch in "[{":
            out.append(ch)
            need_newline = True
        elif ch in "]}":
            if need_newline:
                need_newline = False  # empty: `[]`
            else:
                depth -= 1
                newline()
            out.append(ch)
        elif ch == ",":
            out.append(",")
            newline()
        elif ch == ":":
            out.append(": " if indent is not None else ":")
        else:
            j = i
            while j < n and src[j] not in ' \t\r\n,]}:"':
                j += 1
            out.append(src[i:j])
            i = j
            continue
        i += 1
    return "".join(out)


def _getters(kind: str | None, size: bool) -> list[tuple[str, Callable[[str], bytes]]]:
    cl = client()
    # docker's order when no type is given: container, image, network, volume.
    found = {
        "container": lambda n: cl.containers.inspect_raw(n, size),
        "image": cl.images.inspect_raw,
        "network": cl.networks.inspect_raw,
        "volume": cl.volumes.inspect_raw,
    }
    if kind is None:
        return list(found.items())
    if kind not in found:
        return []
    return [(kind, found[kind])]


def run_inspect(names: tuple[str, ...], fmt: str | None, kind: str | None,
                size: bool) -> None:
    if kind is not None and kind not in _TYPES:
        raise StatusError(f'unknown type: "{kind}": must be one of '
                          + ", ".join(f'"{t}"' for t in _TYPES), 1)
    getters = _getters(kind, size)
    found: list[bytes | str] = []
    for name in names:
        doc = None
        last: DockyardError | None = None
        for _, get in getters:
            try:
                doc = get(name)
                break
            except NotFound as exc:
                last = exc
        if doc is None:
            if kind is None or last is None:
                found.append(f"Error: No such object: {name}")
            else:
                found.append(f"Error response from daemon: {last}")
            continue
        found.append(doc)
    print_documents(found, fmt)


# Go maps among the fields of docker's typed inspect structs (a container's, an image's,
# a network's, a volume's), by field name; ("LogConfig", "Config") is the one map whose
# name is also a struct's.
_MAP_FIELDS = frozenset(("Labels", "ExposedPorts", "Volumes", "Sysctls", "StorageOpt", "Tmpfs",
                         "PortBindings", "Annotations", "Ports", "Networks", "Data", "DriverOpts",
                         "Options", "Containers", "Status", "Peers"))


def _typed(value: Any, name: str = "", parent: str = "") -> Any:
    """VALUE (a decoded inspect document) with the dicts that docker's typed structs hold
    as maps made TypedMaps: their missing keys print <no value> where a struct's missing
    field fails."""
    if isinstance(value, list):
        return [_typed(v, name, parent) for v in value]
    is_map = name in _MAP_FIELDS or (parent, name) == ("LogConfig", "Config")
    if value is None and is_map:
        return TypedMap.nil()
    if not isinstance(value, dict):
        return value
    items = {k: _typed(v, k if not is_map else "", name) for k, v in value.items()}
    return TypedMap(items) if is_map else items


def print_documents(found: list[bytes | str], fmt: str | None) -> None:
    """docker's inspect output of FOUND, each a raw document or the error of a name that
    was not found: the documents indented as one JSON array; with -f json, compacted onto
    one line; with a template, each rendered on its line (a document the template fails
    on prints nothing and its error takes its place among the errors). When no line comes
    out docker still prints an empty one. Errors end the command, status 1."""
    docs = [d for d in found if isinstance(d, bytes)]
    errors = [e for e in found if isinstance(e, str)]
    if not fmt:
        click.echo(go_indent(b"[" + b",".join(d.strip() for d in docs) + b"]"))
    elif fmt == JSON_KEY:
        click.echo(go_indent(b"[" + b",".join(d.strip() for d in docs) + b"]", None))
    else:
        from dockyard.cli.format import parse_template

        # docker runs inspect templates on its typed structs, falling back to the raw
        # document with missingkey=error (TypedMap stands for the first step).
        tmpl = parse_template(fmt).option("missingkey=error")
        out: list[str] = []
        errors = []
        for item in found:
            if isinstance(item, str):
                errors.append(item)
                continue
            try:
                out.append(tmpl.execute(_typed(json.loads(item))) + "\n")
            except TemplateError as exc:
                errors.append(f"template parsing error: {exc}")
        click.echo("".join(out) or "\n", nl=False)
    if errors:
        raise StatusError("\n".join(errors), 1)


_FORMAT_HELP = ("Format output using a custom template: 'json': Print in JSON format; "
                "'TEMPLATE': Print output using the given Go template")


@click.command(cls=Command, usage="[OPTIONS] NAME|ID [NAME|ID...]")
@click.option("-f", "--format", "fmt", metavar="string", help=_FORMAT_HELP)
@click.option("-s", "--size", is_flag=True, help="Display total file sizes if the type is container")
@click.option("--type", "kind", metavar="string", help="Only inspect objects of the given type")
@click.argument("names", nargs=-1, callback=min_args(1))
def inspect(fmt: str | None, size: bool, kind: str | None, names: tuple[str, ...]) -> None:
    """Return low-level information on Docker objects"""
    run_inspect(names, fmt, kind, size)


@click.command("inspect", cls=Command, usage="[OPTIONS] CONTAINER [CONTAINER...]")
@click.option("-f", "--format", "fmt", metavar="string", help=_FORMAT_HELP)
@click.option("-s", "--size", is_flag=True, help="Display total file sizes")
@click.argument("names", nargs=-1, callback=min_args(1))
def container_inspect(fmt: str | None, size: bool, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more containers"""
    run_inspect(names, fmt, "container", size)


@click.command("inspect", cls=Command, usage="[OPTIONS] IMAGE [IMAGE...]")
@click.option("-f", "--format", "fmt", metavar="string", help=_FORMAT_HELP)
@click.argument("names", nargs=-1, callback=min_args(1))
def image_inspect(fmt: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more images"""
    run_inspect(names, fmt, "image", False)
