"""--format for the commands, on cli/formatter.py and cli/gotemplate.py: rows of
docker's formatting fields (`.ID`, `.Names`, ...) as tables, JSON lines or templates, and
single documents (inspect -f, version -f); plus the few Go renderings the rows need."""

from __future__ import annotations

import json
from typing import Any

from dockyard.cli.command import StatusError
from dockyard.cli.formatter import (ellipsis, human_duration, human_size, tabwrite,
                                    truncate_id)
from dockyard.errors import InvalidArgument

__all__ = ["ellipsis", "go_json", "go_quote", "go_time", "human_duration", "human_size",
           "print_rows", "render", "tabwrite", "truncate_id"]


def go_json(data: Any) -> str:
    """Go's json.Marshal as docker's `--format json` prints a row: compact, UTF-8 kept,
    and <, >, & escaped as Go escapes them."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render(fmt: str, data: Any) -> str:
    """One document rendered with a Go template (inspect -f, version -f, info -f)."""
    from dockyard.cli.formatter import inspect_format

    if fmt == "json":
        return go_json(data)
    try:
        return inspect_format(fmt, [data]).removesuffix("\n")
    except InvalidArgument as exc:
        raise StatusError(str(exc), 1) from None


def print_rows(fmt: str | None, default: str, headers: dict[str, str],
               rows: list[dict[str, Any]], echo: Any, go_type: str = "formatter.Context",
               labels: bool = True) -> None:
    """docker's formatter.Format over rows of fields: the default table, `table TEMPLATE`,
    `json` (one object a line) or a template. Rows answer `.Label "key"` as docker's
    contexts do."""
    from dockyard.cli.formatter import render as render_rows
    from dockyard.cli.gotemplate import GoStruct

    if fmt == "json":
        for row in rows:
            echo(go_json(row))
        return

    def struct(row: dict[str, Any]) -> Any:
        fields = dict(row)
        if labels:
            pairs = dict(kv.split("=", 1) if "=" in kv else (kv, "")
                         for kv in (row.get("Labels") or "").split(",") if kv)
            fields["Label"] = lambda name: pairs.get(name, "")
        return GoStruct(go_type, fields)

    try:
        text = render_rows(fmt, [struct(r) for r in rows], default, headers)
    except InvalidArgument as exc:
        # docker's list commands word template errors apart from inspect's.
        message = str(exc).removeprefix("template parsing error: ")
        stage = "execute" if "executing" in message else "parse"
        raise StatusError(f"failed to {stage} template: {message}", 1) from None
    echo(text, nl=False)


def go_time(epoch: float) -> str:
    """Go's time.Time.String() of a Unix time, in local time as docker prints it."""
    import time

    t = time.localtime(epoch)
    offset = t.tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    return (time.strftime("%Y-%m-%d %H:%M:%S", t)
            + f" {sign}{abs(offset) // 3600:02d}{abs(offset) % 3600 // 60:02d} {t.tm_zone}")


def go_quote(s: str) -> str:
    """Go's strconv.Quote: double quotes, backslash escapes, printable runes kept."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x80 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


