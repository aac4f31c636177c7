"""docker's output formatting around Go templates: ``--format`` values, tables, units.

Public API::

    render(fmt, rows, default_table, headers=None) -> str
        What ``docker ps``, ``docker images``, ... print for ROWS (dicts, GoStructs or
        objects, see dockyard.cli.gotemplate). FMT is the --format value: None, "" and
        "table" mean DEFAULT_TABLE (a "table ..." template); "json" means "{{json .}}";
        a value starting with "table" is a table: its template is executed once on
        HEADERS (field name -> column title, e.g. {"ID": "CONTAINER ID"}) with docker's
        header functions to make the title line, and the whole output is aligned by
        Go's tabwriter as docker's (minwidth 10, tabwidth 1, padding 3, spaces).
        Literal "\\t" and "\\n" in FMT stand for a tab and a newline, as in docker.
        Each row's output ends with a newline. Errors raise InvalidArgument with
        docker's text: "template parsing error: template: :1: ...".
    inspect_format(fmt, items) -> str
        ``docker inspect --format``: FMT executed on each item, a newline after each,
        no table handling and no "\\t" replacement, errors as render's.
    tabwrite(text, minwidth=10, padding=3) -> str
        docker's fork of Go's text/tabwriter with docker's settings: tab-terminated
        cells aligned in columns by display width (East Asian wide characters take
        two columns, combining marks none), the text after a line's last tab left alone.
    human_size(size, precision=3) -> str      go-units HumanSizeWithPrecision: "1.5MB"
    bytes_size(size) -> str                   go-units BytesSize: "1.5MiB"
    human_duration(seconds) -> str            go-units HumanDuration: "3 minutes"
        (the three are dockyard.units', shared with the daemon; durations in seconds here)
    truncate_id(id) -> str                    stringid.TruncateID: 12 hex digits, no "sha256:"
    ellipsis(s, width) -> str                 docker's Ellipsis: "abc…" within WIDTH columns
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

from dockyard import units
from dockyard.cli.gotemplate import Template, TemplateError
from dockyard.errors import InvalidArgument
from dockyard.units import bytes_size, human_size

__all__ = ["render", "inspect_format", "tabwrite", "human_size", "bytes_size",
           "human_duration", "truncate_id", "ellipsis"]

TABLE_KEY = "table"
JSON_KEY = "json"
JSON_FORMAT = "{{json .}}"


# docker/cli's HeaderFunctions: when the template runs on the header map, these leave a
# column's title alone instead of transforming it (pad is not among them, on purpose:
# padding keeps headers aligned with their columns).
HEADER_FUNCS = {
    "json": lambda v: v,
    "split": lambda v, _sep: v,
    "join": lambda v, _sep: v,
    "title": lambda v: v,
    "lower": lambda v: v,
    "upper": lambda v: v,
    "truncate": lambda v, _n: v,
}


def _parse(text: str) -> Template:
    try:
        return Template.parse(text)
    except TemplateError as e:
        raise InvalidArgument(f"template parsing error: {e}") from None


def render(fmt: str | None, rows: Iterable[Any], default_table: str,
           headers: dict[str, str] | None = None) -> str:
    if not fmt or fmt == TABLE_KEY:
        fmt = default_table
    table = fmt.startswith(TABLE_KEY)
    if table:
        text = fmt[len(TABLE_KEY):]
    elif fmt == JSON_KEY:
        text = JSON_FORMAT
    else:
        text = fmt
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    tmpl = _parse(text)
    out = _execute_each(tmpl, rows)
    if not table:
        return out
    # docker ignores a header that fails to render and prints what it got.
    header = tmpl.execute_partial(headers or {}, HEADER_FUNCS)
    return tabwrite(header + "\n" + out)


def inspect_format(fmt: str, items: Iterable[Any]) -> str:
    return _execute_each(_parse(fmt), items)


def _execute_each(tmpl: Template, items: Iterable[Any]) -> str:
    out: list[str] = []
    try:
        for item in items:
            out.append(tmpl.execute(item))
            out.append("\n")
    except TemplateError as e:
        raise InvalidArgument(f"template parsing error: {e}") from None
    return "".join(out)


def tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    # Each line is its cells; all but a line's last cell are tab-terminated and
    # belong to columns. (Go's tabwidth matters only when padding with tabs, which
    # docker does not do.)
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(start: int, end: int) -> None:
        for i in range(start, end):
            cells = lines[i]
            for j, cell in enumerate(cells):
                out.append(cell)
                if j < len(widths) and j < len(cells) - 1:
                    out.append(" " * (widths[j] - _display_width(cell)))
            if i + 1 < len(lines):
                out.append("\n")

    def format_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            # This line has a cell in COLUMN: it starts a block of such lines.
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, _display_width(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            format_block(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    format_block(0, len(lines))
    return "".join(out)


def human_duration(seconds: float) -> str:
    """go-units HumanDuration of SECONDS (the CLI counts from Unix times in seconds)."""
    return units.human_duration(int(seconds * 1_000_000_000))


def truncate_id(ident: str) -> str:
    _, sep, rest = ident.partition(":")
    if sep:
        ident = rest
    return ident[:12]


def _display_width(s: str) -> int:
    """Terminal columns of S, as go-runewidth counts them."""
    if s.isascii():
        return len(s)
    import unicodedata

    width = 0
    for c in s:
        if c.isascii():
            width += 1 if c.isprintable() else 0
        elif unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf", "Cc"):
            continue
        else:
            width += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return width


def _char_width(c: str) -> int:
    import unicodedata

    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def ellipsis(s: str, width: int) -> str:
    if width <= 0:
        return ""
    if width == 1:
        return s[:1]
    if s.isascii():
        return s if len(s) <= width else s[:width - 1] + "…"
    total = 0
    ends: list[int] = []
    for c in s:
        total += _char_width(c)
        ends.append(total)
    if total <= width:
        return s
    for i in range(len(ends) - 1):
        if ends[i] <= width - 1 < ends[i + 1]:
            return s[:i + 1] + "…"
    return s
