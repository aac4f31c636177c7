"""--format for the commands, on cli/formatter.py and cli/gotemplate.py: rows of
docker's formatting fields (`.ID`, `.Names`, ...) as tables, JSON lines or templates, and
single documents (version -f, info -f, events -f); plus Go's Time.String()."""

from __future__ import annotations

from typing import Any

from dockyard.cli.command import StatusError
from dockyard.cli.formatter import JSON_FORMAT, JSON_KEY
from dockyard.cli.formatter import render as render_rows
from dockyard.cli.gotemplate import GoStruct, Template, TemplateError
from dockyard.errors import InvalidArgument

__all__ = ["go_time", "parse_template", "print_rows", "render"]


def render(fmt: str, data: Any, name: str = "", echo: Any = None) -> str:
    """One document rendered with a Go template, `json` being `{{json .}}` (docker's
    version -f, info -f and events -f). A template that does not parse ends the command
    with status 64; one that fails while running prints what it wrote (and a newline)
    through ECHO, then ends the command with its error and status 1, as docker's."""
    tmpl = parse_template(JSON_FORMAT if fmt == JSON_KEY else fmt, name)
    try:
        return tmpl.execute(data)
    except TemplateError as exc:
        if echo is None:
            raise StatusError(f"template parsing error: {exc}", 1) from None
        echo(tmpl.execute_partial(data))
        raise StatusError(str(exc), 1) from None


def parse_template(text: str, name: str = "") -> Template:
    """TEXT parsed, or docker's exit for a template that does not parse (status 64)."""
    try:
        return Template.parse(text, name=name)
    except TemplateError as exc:
        raise StatusError(f"template parsing error: {exc}", 64) from None


def print_rows(fmt: str | None, default: str, headers: dict[str, str],
               rows: list[dict[str, Any]], echo: Any, go_type: str = "formatter.Context",
               labels: bool = True) -> None:
    """docker's formatter.Format over rows of fields: the default table, `table TEMPLATE`,
    `json` (one object a line) or a template. Rows answer `.Label "key"` as docker's
    contexts do."""
    def struct(row: dict[str, Any]) -> GoStruct:
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
