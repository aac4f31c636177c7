"""Go's text/template, the subset that docker's ``--format`` flag exposes.

A real lexer, parser and tree-walking evaluator that follow Go's ``text/template``
semantics and print errors with Go's wording, so that ``dockyard ... --format`` behaves
as ``docker ... --format`` does. docker's extra functions (json, split, join, title,
lower, upper, pad, truncate) are part of the default function map.

Public API::

    Template.parse(text, funcs=None, name="") -> Template   # raises TemplateError
    Template.option("missingkey=error") -> Template          # Go's Template.Option
    Template.execute(data, funcs=None) -> str                # raises TemplateError
    Template.execute_partial(data, funcs=None) -> str        # output up to an error
    TemplateError                # str(e) is Go's message: 'template: :1: function "foo" not defined'
    GoStruct(type_name, fields)  # a struct-like record for template data (see below)
    NO_VALUE                     # what a missing map key evaluates to ("<no value>")
    TypedMap(mapping)            # a dict that is a map field of a typed Go struct (see below)
    format_value(v) -> str       # Go's fmt %v of a value
    go_json(v) -> str            # docker's {{json}}: Go's encoding/json, no HTML escaping
    go_quote(s) -> str           # strconv.Quote

How Python data maps onto Go's types:

* dict is a Go map: ``.Key`` is the exact key, a missing key is ``<no value>`` (after
  ``option("missingkey=zero")``, "" in a map of strings; after ``option("missingkey=error")``, the error
  'map has no entry for key "Key"'); ``range`` and ``%v`` visit keys sorted, as Go does
  for maps. A ``TypedMap`` is a dict standing for a map field of a typed struct (a
  container's labels): its missing keys are ``<no value>`` whatever the option, because
  docker executes inspect templates on its typed structs first and falls back to the
  raw document with missingkey=error only when that fails.
* list and tuple are slices, str is a string, int an int, float a float64, bool a bool,
  None a nil pointer (prints ``<nil>``).
* ``GoStruct`` and any other object are structs: ``.Name`` is an attribute (a callable is
  called, with the template's arguments, as Go calls methods); a missing field is the
  error "can't evaluate field X in type T". ``GoStruct(type_name, fields)`` takes its
  fields from a dict (values may be callables) and names its Go type in errors;
  other objects name their class, or a ``go_type`` class attribute.

* ``index`` of a missing key gives the zero value of the map's element type: "" when all
  the map's values are strings (docker's labels and options), nil otherwise.
* ``json`` writes dict keys in insertion order (Engine API documents keep dockerd's
  struct order, and its maps arrive sorted) and GoStruct fields sorted, as docker's
  formatter contexts marshal. The function itself does not escape HTML (docker's encoder
  turns that off), but a GoStruct is encoded with <, > and & as \\u003c, \\u003e and
  \\u0026: docker's contexts marshal themselves with json.Marshal, which escapes them.

``funcs`` passed to ``parse`` add functions (name -> callable); ``funcs`` passed to
``execute`` replace functions of the same name for that run only (docker renders table
headers that way). A Python exception raised by a function becomes Go's
``error calling NAME: ...``.

Not supported: complex number literals, and invalid UTF-8 in output: where Go would
split a UTF-8 sequence, ``truncate`` (which counts bytes, as Go) writes U+FFFD and
``slice`` counts characters.
"""

from __future__ import annotations

# typing costs more to import than this whole module; annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    # A function: (callable, parameter kinds, kind of the variadic tail or None).
    _Sig = tuple[Callable[..., Any], tuple[str, ...], str | None]

__all__ = ["Template", "TemplateError", "GoStruct", "NO_VALUE", "TypedMap", "format_value",
           "go_json", "go_quote"]


class TemplateError(Exception):
    """A parse or execution error, worded as Go's text/template words it."""


class _NoValue:
    """The value of a missing map key: Go's invalid reflect.Value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Any = _NoValue()
# Marks "no final argument" in a pipeline stage (Go's missingVal).
_ABSENT: Any = object()


class GoStruct:
    """A struct-like template value: fields from a dict, the Go type name for errors."""

    __slots__ = ("go_type", "fields", "plain")

    def __init__(self, type_name: str, fields: dict[str, Any], plain: bool = False) -> None:
        self.go_type = type_name
        self.fields = fields
        # A plain Go struct (docker's info and version documents): {{json}} writes its
        # fields in their order, without the HTML escaping of a formatter context.
        self.plain = plain

    def __repr__(self) -> str:
        return f"GoStruct({self.go_type!r}, {self.fields!r})"


class TypedMap(dict):  # type: ignore[type-arg]
    """A map field of a typed Go struct: a missing key is <no value> even under
    missingkey=error (see the module's documentation). TypedMap.nil() is the nil map
    (JSON null): empty, as Go reads it."""

    __slots__ = ("is_nil",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_nil = False

    @classmethod
    def nil(cls) -> TypedMap:
        m = cls()
        m.is_nil = True
        return m


# ---------------------------------------------------------------------------
# Lexer

(T_TEXT, T_LEFT, T_RIGHT, T_SPACE, T_IDENT, T_KEYWORD, T_FIELD, T_VAR, T_STRING,
 T_RAWSTRING, T_CHARCONST, T_NUMBER, T_BOOL, T_NIL, T_DOT, T_PIPE, T_LPAREN, T_RPAREN,
 T_ASSIGN, T_DECLARE, T_CHAR, T_EOF) = range(22)

_KEYWORDS = frozenset(("block", "break", "continue", "define", "else", "end", "if",
                       "range", "template", "with"))
_SPACES = " \t\r\n"
_TERMINATORS = frozenset(" \t\r\n.,|:)(")


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _rune_repr(c: str) -> str:
    """Go's %#U: U+0041 'A'."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"


class _Lexer:
    __slots__ = ("name", "text", "toks")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.toks: list[tuple[int, str, int]] = []

    def error(self, pos: int, msg: str) -> TemplateError:
        line = self.text.count("\n", 0, pos) + 1
        return TemplateError(f"template: {self.name}:{line}: {msg}")

    def run(self) -> list[tuple[int, str, int]]:
        text, toks, n = self.text, self.toks, len(self.text)
        pos = 0
        while True:
            i = text.find("{{", pos)
            if i < 0:
                if pos < n:
                    toks.append((T_TEXT, text[pos:], pos))
                break
            trim_left = text.startswith("-", i + 2) and i + 3 < n and text[i + 3] in _SPACES
            segment = text[pos:i]
            if trim_left:
                segment = segment.rstrip(_SPACES)
            if segment:
                toks.append((T_TEXT, segment, pos))
            p = i + (4 if trim_left else 2)
            if text.startswith("/*", p):
                pos = self._comment(i, p)
                continue
            toks.append((T_LEFT, "{{", i))
            pos = self._action(p)
        toks.append((T_EOF, "", n))
        return toks

    def _right_delim(self, p: int) -> int:
        """Length of the closing delimiter at P (4 with a trim marker), or 0."""
        text = self.text
        if text.startswith("}}", p):
            return 2
        if p + 1 < len(text) and text[p] in _SPACES and text.startswith("-}}", p + 1):
            return 4
        return 0

    def _skip_space(self, p: int) -> int:
        while p < len(self.text) and self.text[p] in _SPACES:
            p += 1
        return p

    def _comment(self, start: int, p: int) -> int:
        end = self.text.find("*/", p + 2)
        if end < 0:
            raise self.error(start, "unclosed comment")
        end += 2
        delim = self._right_delim(end)
        if not delim:
            raise self.error(end, "comment ends before closing delimiter")
        return self._skip_space(end + delim) if delim == 4 else end + delim

    def _at_terminator(self, p: int) -> bool:
        return p >= len(self.text) or self.text[p] in _TERMINATORS or self.text.startswith("}}", p)

    def _word(self, p: int) -> int:
        text, n = self.text, len(self.text)
        while p < n and _is_alnum(text[p]):
            p += 1
        if not self._at_terminator(p):
            raise self.error(p, f"bad character {_rune_repr(text[p])}")
        return p

    def _action(self, p: int) -> int:
        text, toks, n = self.text, self.toks, len(self.text)
        depth = 0
        while True:
            delim = self._right_delim(p)
            if delim:
                if depth:
                    raise self.error(p, "unclosed left paren")
                toks.append((T_RIGHT, "}}", p + delim - 2))
                p += delim
                return self._skip_space(p) if delim == 4 else p
            if p >= n:
                raise self.error(p, "unclosed action")
            c = text[p]
            if c in _SPACES:
                q = self._skip_space(p)
                # Leave the last space for a " -}}" closing delimiter.
                if text.startswith("-}}", q):
                    q -= 1
                if q > p:
                    toks.append((T_SPACE, text[p:q], p))
                p = q
            elif c == "=":
                toks.append((T_ASSIGN, "=", p))
                p += 1
            elif c == ":":
                if not text.startswith("=", p + 1):
                    raise self.error(p, "expected :=")
                toks.append((T_DECLARE, ":=", p))
                p += 2
            elif c == "|":
                toks.append((T_PIPE, "|", p))
                p += 1
            elif c == '"':
                q = self._quoted(p, "unterminated quoted string")
                toks.append((T_STRING, text[p:q], p))
                p = q
            elif c == "`":
                q = text.find("`", p + 1)
                if q < 0:
                    raise self.error(p, "unterminated raw quoted string")
                toks.append((T_RAWSTRING, text[p:q + 1], p))
                p = q + 1
            elif c == "'":
                q = self._quoted(p, "unterminated character constant")
                toks.append((T_CHARCONST, text[p:q], p))
                p = q
            elif c == "$":
                q = self._word(p + 1)
                toks.append((T_VAR, text[p:q], p))
                p = q
            elif c == "." and not (p + 1 < n and text[p + 1].isdecimal()):
                if self._at_terminator(p + 1):
                    toks.append((T_DOT, ".", p))
                    p += 1
                else:
                    q = self._word(p + 1)
                    toks.append((T_FIELD, text[p:q], p))
                    p = q
            elif c in "+-." or c.isdecimal():
                q = self._number(p)
                toks.append((T_NUMBER, text[p:q], p))
                p = q
            elif _is_alnum(c):
                q = self._word(p)
                word = text[p:q]
                if word in _KEYWORDS:
                    toks.append((T_KEYWORD, word, p))
                elif word in ("true", "false"):
                    toks.append((T_BOOL, word, p))
                elif word == "nil":
                    toks.append((T_NIL, word, p))
                else:
                    toks.append((T_IDENT, word, p))
                p = q
            elif c == "(":
                depth += 1
                toks.append((T_LPAREN, c, p))
                p += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise self.error(p, "unexpected right paren")
                toks.append((T_RPAREN, c, p))
                p += 1
            elif c.isascii() and c.isprintable():
                toks.append((T_CHAR, c, p))
                p += 1
            else:
                raise self.error(p, f"unrecognized character in action: {_rune_repr(c)}")

    def _quoted(self, p: int, unterminated: str) -> int:
        """The end of the quoted string or character constant whose quote is at P."""
        text, n, quote = self.text, len(self.text), self.text[p]
        q = p + 1
        while True:
            if q >= n or text[q] == "\n":
                raise self.error(q, unterminated)
            if text[q] == "\\":
                # As Go's lexer: an escape may not swallow the newline or the end.
                if q + 1 >= n or text[q + 1] == "\n":
                    raise self.error(q, unterminated)
                q += 2
                continue
            if text[q] == quote:
                return q + 1
            q += 1

    def _number(self, p: int) -> int:
        text, n = self.text, len(self.text)

        def run(q: int, chars: str) -> int:
            while q < n and text[q] in chars:
                q += 1
            return q

        start = p
        if p < n and text[p] in "+-":
            p += 1
        digits = "0123456789_"
        if text.startswith("0", p):
            p += 1
            nxt = text[p:p + 1]
            if nxt and nxt in "xX":
                digits, p = "0123456789abcdefABCDEF_", p + 1
            elif nxt and nxt in "oO":
                digits, p = "01234567_", p + 1
            elif nxt and nxt in "bB":
                digits, p = "01_", p + 1
        p = run(p, digits)
        if text.startswith(".", p):
            p = run(p + 1, digits)
        if len(digits) == 11 and p < n and text[p] in "eE":
            p = run(p + 1 + (p + 1 < n and text[p + 1] in "+-"), "0123456789_")
        if len(digits) == 23 and p < n and text[p] in "pP":
            p = run(p + 1 + (p + 1 < n and text[p + 1] in "+-"), "0123456789_")
        if text.startswith("i", p):
            p += 1
        if p < n and text[p] in "+-":
            # Go would read a complex number here, which templates never need.
            q = p + 1
            while q < n and (_is_alnum(text[q]) or text[q] == "."):
                q += 1
            raise self.error(p, f"bad number syntax: {go_quote(text[start:q])}")
        if p < n and _is_alnum(text[p]):
            raise self.error(p, f"bad number syntax: {go_quote(text[start:p + 1])}")
        return p


# ---------------------------------------------------------------------------
# Parse tree


class _Node:
    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return go_quote(self.text)


class _Pipe(_Node):
    __slots__ = ("decl", "is_assign", "cmds")

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.decl: list[str] = []
        self.is_assign = False
        self.cmds: list[_Command] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class _Command(_Node):
    __slots__ = ("args",)

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.args: list[_Node] = []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _Pipe) else str(a) for a in self.args)


class _Action(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: _Pipe) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class _Branch(_Node):
    """if, with and range: a pipeline, a body and an optional else body."""

    __slots__ = ("kind", "pipe", "body", "else_body")

    def __init__(self, pos: int, kind: str, pipe: _Pipe, body: list[_Node],
                 else_body: list[_Node] | None) -> None:
        super().__init__(pos)
        self.kind = kind
        self.pipe = pipe
        self.body = body
        self.else_body = else_body

    def __str__(self) -> str:
        s = "{{" + self.kind + " " + str(self.pipe) + "}}" + "".join(str(n) for n in self.body)
        if self.else_body is not None:
            s += "{{else}}" + "".join(str(n) for n in self.else_body)
        return s + "{{end}}"


class _Loop(_Node):
    __slots__ = ("word",)

    def __init__(self, pos: int, word: str) -> None:
        super().__init__(pos)
        self.word = word

    def __str__(self) -> str:
        return "{{" + self.word + "}}"


class _TemplateCall(_Node):
    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: _Pipe | None) -> None:
        super().__init__(pos)
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        tail = f" {self.pipe}" if self.pipe is not None else ""
        return "{{template " + go_quote(self.name) + tail + "}}"


class _Path(_Node):
    """A chain of names: a field path from dot, or a variable and its fields."""

    __slots__ = ("idents",)

    def __init__(self, pos: int, idents: list[str]) -> None:
        super().__init__(pos)
        self.idents = idents


class _Field(_Path):
    __slots__ = ()

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


class _Variable(_Path):
    __slots__ = ()

    def __str__(self) -> str:
        return ".".join(self.idents)


class _Chain(_Node):
    __slots__ = ("node", "fields")

    def __init__(self, pos: int, node: _Node, fields: list[str]) -> None:
        super().__init__(pos)
        self.node = node
        self.fields = fields

    def __str__(self) -> str:
        s = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return s + "".join("." + f for f in self.fields)


class _Ident(_Node):
    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.name = name

    def __str__(self) -> str:
        return self.name


class _Literal(_Node):
    """dot, nil, bool, number and string operands: SOURCE is how the template spelt it."""

    __slots__ = ("kind", "source", "value", "int_value")

    def __init__(self, pos: int, kind: str, source: str, value: Any,
                 int_value: int | None = None) -> None:
        super().__init__(pos)
        self.kind = kind
        self.source = source
        self.value = value
        self.int_value = int_value

    def __str__(self) -> str:
        return self.source


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}


def _unquote(lit: str) -> str | None:
    """Go's strconv.Unquote for "..." and '...' literals; None when malformed."""
    quote, body = lit[0], lit[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            return None
        e = body[i + 1]
        if e in _ESCAPES:
            if (e == "'" and quote == '"') or (e == '"' and quote == "'"):
                return None
            out.append(_ESCAPES[e])
            i += 2
        elif e in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + size]
            if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
                return None
            code = int(digits, 16)
            if e != "x" and (code > 0x10FFFF or 0xD800 <= code < 0xE000):
                return None
            out.append(chr(code))
            i += 2 + size
        elif e in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                return None
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            return None
    return "".join(out)


def _parse_number(lit: str) -> tuple[Any, int | None] | str:
    """The value of a number literal as Go's parser sees it, and its integer value if
    it has one; an error message when it is not a number."""
    if lit.startswith("'"):
        s = _unquote(lit)
        if not s:
            return "invalid syntax"
        if len(s) != 1:
            return f"malformed character constant: {lit}"
        return ord(s), ord(s)
    text = lit
    if text.endswith("i"):
        return f"illegal number syntax: {go_quote(lit)}"
    body = text.lstrip("+-")
    neg = text.startswith("-")
    int_value: int | None = None
    try:
        if len(body) > 1 and body[0] == "0" and body[1] in "0123456789_":
            int_value = int(body.replace("_", ""), 8)
        else:
            int_value = int(body, 0)
        if neg:
            int_value = -int_value
    except ValueError:
        int_value = None
    is_hex = len(body) > 2 and body[0] == "0" and body[1] in "xX"
    if int_value is not None:
        if not -(1 << 63) <= int_value < (1 << 64):
            return f"integer overflow: {go_quote(lit)}"
        return int_value, int_value
    try:
        value = float.fromhex(text) if is_hex else float(text)
    except ValueError:
        return f"illegal number syntax: {go_quote(lit)}"
    if value == value and abs(value) != float("inf") and value == int(value):
        int_value = int(value)
    return value, int_value


class _Parser:
    __slots__ = ("name", "text", "toks", "i", "funcs", "vars", "range_depth", "defs")

    def __init__(self, name: str, text: str, funcs: dict[str, Any]) -> None:
        self.name = name
        self.text = text
        self.toks = _Lexer(name, text).run()
        self.i = 0
        self.funcs = funcs
        self.vars = ["$"]
        self.range_depth = 0
        self.defs: dict[str, list[_Node]] = {}

    # token helpers ---------------------------------------------------------
    def error(self, msg: str, tok: tuple[int, str, int] | None = None) -> TemplateError:
        pos = (tok or self.toks[max(self.i - 1, 0)])[2]
        line = self.text.count("\n", 0, pos) + 1
        return TemplateError(f"template: {self.name}:{line}: {msg}")

    def next(self) -> tuple[int, str, int]:
        tok = self.toks[self.i]
        if self.i < len(self.toks) - 1:
            self.i += 1
        return tok

    def peek(self) -> tuple[int, str, int]:
        return self.toks[self.i]

    def next_non_space(self) -> tuple[int, str, int]:
        tok = self.next()
        while tok[0] == T_SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> tuple[int, str, int]:
        j = self.i
        while self.toks[j][0] == T_SPACE:
            j += 1
        self.i = j
        return self.toks[j]

    def unexpected(self, tok: tuple[int, str, int], context: str) -> TemplateError:
        return self.error(f"unexpected {_tok_str(tok)} in {context}", tok)

    def expect_right(self, context: str) -> tuple[int, str, int]:
        tok = self.next_non_space()
        if tok[0] != T_RIGHT:
            raise self.unexpected(tok, context)
        return tok

    # structure -------------------------------------------------------------
    def parse(self) -> list[_Node]:
        nodes: list[_Node] = []
        while self.peek()[0] != T_EOF:
            if self.peek()[0] == T_LEFT:
                j = self.i + 1
                while self.toks[j][0] == T_SPACE:
                    j += 1
                if self.toks[j][0] == T_KEYWORD and self.toks[j][1] == "define":
                    self.i = j + 1
                    self.definition()
                    continue
            node = self.text_or_action()
            if isinstance(node, _Marker):
                raise self.error(f"unexpected {node}", self.toks[self.i - 1])
            nodes.append(node)
        return nodes

    def item_list(self) -> tuple[list[_Node], _Marker]:
        nodes: list[_Node] = []
        while self.peek_non_space()[0] != T_EOF:
            node = self.text_or_action()
            if isinstance(node, _Marker):
                return nodes, node
            nodes.append(node)
        raise self.error("unexpected EOF", self.peek())

    def text_or_action(self) -> _Node:
        tok = self.next_non_space()
        if tok[0] == T_TEXT:
            return _Text(tok[2], tok[1])
        if tok[0] == T_LEFT:
            return self.action()
        raise self.unexpected(tok, "input")

    def action(self) -> _Node:
        tok = self.peek_non_space()
        if tok[0] == T_KEYWORD:
            self.next()
            word = tok[1]
            if word in ("if", "with", "range"):
                return self.control(tok, word)
            if word == "end":
                self.expect_right("end")
                return _Marker(tok[2], "end")
            if word == "else":
                nxt = self.peek_non_space()
                if nxt[0] == T_KEYWORD and nxt[1] in ("if", "with"):
                    return _Marker(tok[2], "else", chained=True)
                self.expect_right("else")
                return _Marker(tok[2], "else")
            if word in ("break", "continue"):
                nxt = self.next_non_space()
                if nxt[0] != T_RIGHT:
                    raise self.unexpected(nxt, "{{" + word + "}}")
                if self.range_depth == 0:
                    raise self.error(f"{{{{{word}}}}} outside {{{{range}}}}", tok)
                return _Loop(tok[2], word)
            if word in ("template", "block"):
                return self.template_call(tok)
            raise self.unexpected(tok, "command")
        pipe = self.pipeline("command", T_RIGHT)
        return _Action(tok[2], pipe)

    def template_name(self, context: str) -> tuple[str, int]:
        tok = self.next_non_space()
        if tok[0] not in (T_STRING, T_RAWSTRING):
            raise self.unexpected(tok, context)
        name = _unquote(tok[1]) if tok[0] == T_STRING else tok[1][1:-1]
        if name is None:
            raise self.error("invalid syntax", tok)
        return name, tok[2]

    def body(self, context: str) -> list[_Node]:
        """A named template's body, up to its {{end}}; it sees no outer variables."""
        saved, self.vars = self.vars, ["$"]
        try:
            nodes, marker = self.item_list()
        finally:
            self.vars = saved
        if marker.word != "end":
            raise self.error(f"unexpected {marker} in {context}")
        return nodes

    def definition(self) -> None:
        context = "define clause"
        name, _ = self.template_name(context)
        self.expect_right(context)
        self.defs[name] = self.body(context)

    def template_call(self, tok: tuple[int, str, int]) -> _Node:
        context = "block clause" if tok[1] == "block" else "template clause"
        name, pos = self.template_name(context)
        pipe = None
        if self.peek_non_space()[0] != T_RIGHT:
            pipe = self.pipeline(context, T_RIGHT)
        else:
            self.next()
        if tok[1] == "block":
            self.defs[name] = self.body(context)
        return _TemplateCall(pos, name, pipe)

    def control(self, tok: tuple[int, str, int], kind: str) -> _Node:
        mark = len(self.vars)
        try:
            pipe = self.pipeline(kind, T_RIGHT)
            if kind == "range":
                self.range_depth += 1
            body, marker = self.item_list()
            if kind == "range":
                self.range_depth -= 1
            else_body: list[_Node] | None = None
            if marker.word == "else":
                if marker.chained and kind != "range":
                    inner = self.next_non_space()
                    if inner[1] == kind:
                        # {{else if x}} is {{else}}{{if x}}...{{end}}{{end}}: the inner
                        # control consumes the one {{end}}.
                        else_body = [self.control(inner, kind)]
                        return _Branch(tok[2], kind, pipe, body, else_body)
                    self.i -= 1
                    raise self.unexpected(inner, "else")
                if marker.chained:
                    raise self.unexpected(self.peek_non_space(), "else")
                else_body, marker = self.item_list()
                if marker.word != "end":
                    raise self.error(f"expected end; found {marker}")
            return _Branch(tok[2], kind, pipe, body, else_body)
        finally:
            del self.vars[mark:]

    def pipeline(self, context: str, end: int) -> _Pipe:
        pipe = _Pipe(self.peek_non_space()[2])
        while True:
            tok = self.peek_non_space()
            if tok[0] != T_VAR:
                break
            start = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt[0] in (T_ASSIGN, T_DECLARE):
                pipe.is_assign = nxt[0] == T_ASSIGN
                self.next()
                pipe.decl.append(tok[1])
                self.vars.append(tok[1])
                break
            if nxt[0] == T_CHAR and nxt[1] == ",":
                self.next()
                pipe.decl.append(tok[1])
                self.vars.append(tok[1])
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space()[0] in (T_VAR, T_RIGHT, T_RPAREN):
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            # Not a declaration: the variable is the first operand.
            self.i = start
            break
        while True:
            tok = self.next_non_space()
            if tok[0] == end:
                if not pipe.cmds:
                    raise self.error(f"missing value for {context}", tok)
                for n, cmd in enumerate(pipe.cmds[1:]):
                    first = cmd.args[0]
                    if isinstance(first, _Literal):
                        raise self.error(f"non executable command in pipeline stage {n + 2}", tok)
                return pipe
            if tok[0] in (T_BOOL, T_CHARCONST, T_DOT, T_FIELD, T_IDENT, T_NUMBER, T_NIL,
                          T_RAWSTRING, T_STRING, T_VAR, T_LPAREN):
                self.i -= 1
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def command(self) -> _Command:
        cmd = _Command(self.peek_non_space()[2])
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok[0] == T_SPACE:
                continue
            if tok[0] in (T_RIGHT, T_RPAREN):
                self.i -= 1
            elif tok[0] != T_PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek()[0] == T_FIELD:
            # Go positions a chained operand at its first trailing field.
            pos = self.peek()[2]
            fields: list[str] = []
            while self.peek()[0] == T_FIELD:
                fields.extend(self.next()[1][1:].split("."))
            if isinstance(node, _Field):
                return _Field(pos, node.idents + fields)
            if isinstance(node, _Variable):
                return _Variable(pos, node.idents + fields)
            if isinstance(node, _Literal):
                raise self.error(f"unexpected . after term {go_quote(str(node))}")
            return _Chain(pos, node, fields)
        return node

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        typ, val, pos = tok
        if typ == T_IDENT:
            if val not in self.funcs:
                raise self.error(f"function {go_quote(val)} not defined", tok)
            return _Ident(pos, val)
        if typ == T_DOT:
            return _Literal(pos, "dot", ".", None)
        if typ == T_NIL:
            return _Literal(pos, "nil", "nil", None)
        if typ == T_VAR:
            if val not in self.vars:
                raise self.error(f"undefined variable {go_quote(val)}", tok)
            return _Variable(pos, [val])
        if typ == T_FIELD:
            return _Field(pos, [val[1:]])
        if typ == T_BOOL:
            return _Literal(pos, "bool", val, val == "true")
        if typ in (T_NUMBER, T_CHARCONST):
            parsed = _parse_number(val)
            if isinstance(parsed, str):
                raise self.error(parsed, tok)
            value, int_value = parsed
            if typ == T_NUMBER and isinstance(value, int) and value >= (1 << 63):
                value = float(value)
            return _Literal(pos, "number", val, value, int_value)
        if typ == T_LPAREN:
            return self.pipeline("parenthesized pipeline", T_RPAREN)
        if typ == T_STRING:
            s = _unquote(val)
            if s is None:
                raise self.error("invalid syntax", tok)
            return _Literal(pos, "string", val, s)
        if typ == T_RAWSTRING:
            return _Literal(pos, "string", val, val[1:-1])
        self.i -= 1
        return None


class _Marker(_Node):
    """{{end}} and {{else}} while parsing: they close a list rather than join it."""

    __slots__ = ("word", "chained")

    def __init__(self, pos: int, word: str, chained: bool = False) -> None:
        super().__init__(pos)
        self.word = word
        self.chained = chained

    def __str__(self) -> str:
        return "{{" + self.word + "}}"


def _tok_str(tok: tuple[int, str, int]) -> str:
    """How Go's parser names a token in "unexpected X in Y"."""
    typ, val, _ = tok
    if typ == T_EOF:
        return "EOF"
    if typ in (T_KEYWORD, T_DOT, T_NIL):
        return f"<{val}>"
    if len(val) > 10:
        return go_quote(val[:10]) + "..."
    return go_quote(val)


# ---------------------------------------------------------------------------
# Values as Go sees them


def go_type(v: Any) -> str:
    """The Go type name a value stands for, as errors print it."""
    if v is None or v is NO_VALUE:
        return "<nil>"
    scalar = _GO_SCALAR_TYPES.get(_kind(v))
    if scalar:
        return scalar
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(e, str) for e in v):
            return "[]string"
        return "[]interface {}"
    if isinstance(v, dict):
        if v and all(isinstance(e, str) for e in v.values()):
            return "map[string]string"
        return "map[string]interface {}"
    if isinstance(v, GoStruct):
        return v.go_type
    return getattr(type(v), "go_type", None) or type(v).__name__


def _truth(v: Any) -> bool:
    if v is None or v is NO_VALUE:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _sorted_items(d: dict) -> list[tuple[Any, Any]]:
    """Map entries in the order Go's fmt and range visit them."""
    try:
        return sorted(d.items())
    except TypeError:
        return sorted(d.items(), key=lambda kv: (type(kv[0]).__name__, str(kv[0])))


def _float_digits(f: float) -> tuple[str, int]:
    """Shortest decimal digits of abs(F) and the position of the decimal point
    (value = 0.DIGITS x 10**dp), as Go's strconv computes them."""
    r = repr(abs(f))
    mant, _, exp = r.partition("e")
    whole, _, frac = mant.partition(".")
    if frac == "0":
        frac = ""
    digits = (whole + frac).lstrip("0")
    dp = len(whole) + (int(exp) if exp else 0)
    lead = len(whole + frac) - len((whole + frac).lstrip("0"))
    dp -= lead
    digits = digits.rstrip("0")
    return digits, dp


def _format_float(f: float, verb: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat(f, verb, prec, 64) for the verbs e, f, g with prec -1
    (the shortest representation), and Python's formatting for explicit precisions."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if prec >= 0:
        return f"%.{prec}{verb}" % f
    sign = "-" if (f < 0 or (f == 0 and str(f).startswith("-"))) else ""
    digits, dp = _float_digits(f)
    if not digits:
        digits, dp = "0", 1
    lower = verb.lower()
    if lower == "g":
        exp = dp - 1
        use_e = exp < -4 or exp >= (21 if verb == "json" else 6)
        lower = "e" if use_e else "f"
    if lower == "e":
        exp = dp - 1
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = "E" if verb in ("E", "G") else "e"
        return f"{sign}{mant}{e}{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def format_value(v: Any) -> str:
    """Go's fmt %v of a value."""
    return _fmt_v(v, False, False)


def _fmt_v(v: Any, plus: bool, sharp: bool) -> str:
    if isinstance(v, str):
        return go_quote(v) if sharp else v
    if v is None:
        return "<nil>"
    if v is NO_VALUE:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _format_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_v(e, plus, sharp) for e in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{_fmt_v(k, plus, sharp)}:{_fmt_v(e, plus, sharp)}"
                                 for k, e in _sorted_items(v)) + "]"
    if isinstance(v, GoStruct):
        parts = [(k, e) for k, e in v.fields.items() if not callable(e)]
        return "{" + " ".join((f"{k}:" if plus else "") + _fmt_v(e, plus, sharp)
                              for k, e in parts) + "}"
    fields = getattr(type(v), "__dataclass_fields__", None)
    if fields is not None and type(v).__str__ is object.__str__:
        return "{" + " ".join((f"{k}:" if plus else "") + _fmt_v(getattr(v, k), plus, sharp)
                              for k in fields) + "}"
    return str(v)


def go_quote(s: str, ascii_only: bool = False) -> str:
    """strconv.Quote."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c.isprintable() and (not ascii_only or o < 0x80) and c != "\x7f":
            out.append(c)
        elif c in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[c])
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def go_json(v: Any) -> str:
    """docker's {{json}}: Go's encoding/json without HTML escaping and without the
    encoder's trailing newline; an unencodable value (NaN) gives "" as docker's does.
    A GoStruct inside is encoded with HTML escaping, as json.Marshal in its MarshalJSON."""
    try:
        return _json(v, False)
    except ValueError:
        return ""


def _json_str(s: str, html: bool) -> str:
    from json.encoder import encode_basestring

    out = encode_basestring(s)
    if "\u2028" in out or "\u2029" in out:
        out = out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if html:
        out = out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return out


def _json(v: Any, html: bool) -> str:
    if v is None or v is NO_VALUE:
        return "null"
    if isinstance(v, str):
        return _json_str(v, html)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("unsupported value")
        a = abs(v)
        if a != 0 and (a < 1e-6 or a >= 1e21):
            s = _format_float(v, "e")
            # Go writes e-7, not e-07.
            if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
                s = s[:-2] + s[-1]
            return s
        return _format_float(v, "f")
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_json(e, html) for e in v) + "]"
    if isinstance(v, TypedMap) and v.is_nil:
        return "null"
    if isinstance(v, dict):
        # Insertion order: documents from the Engine API keep the field order of
        # dockerd's structs, and its maps arrive already sorted.
        return "{" + ",".join(f"{_json_str(str(k), html)}:{_json(e, html)}"
                              for k, e in v.items()) + "}"
    if isinstance(v, GoStruct) and v.plain:
        return _json(v.fields, html)
    if isinstance(v, GoStruct):
        # docker's formatter contexts encode as maps of their argument-less methods,
        # hence sorted keys.
        items = []
        for k, e in sorted(v.fields.items()):
            if callable(e):
                if _arity(e) != (0, False):
                    continue
                e = e()
            items.append(f"{_json_str(k, True)}:{_json(e, True)}")
        return "{" + ",".join(items) + "}"
    fields = getattr(type(v), "__dataclass_fields__", None)
    if fields is not None:
        return "{" + ",".join(f"{_json_str(k, html)}:{_json(getattr(v, k), html)}"
                              for k in fields) + "}"
    return _json_str(str(v), html)


# ---------------------------------------------------------------------------
# printf


def _pad(s: str, width: int | None, minus: bool, zero: bool = False) -> str:
    if width is None or len(s) >= width:
        return s
    if minus:
        return s + " " * (width - len(s))
    return ("0" if zero else " ") * (width - len(s)) + s


class _Spec:
    __slots__ = ("minus", "plus", "sharp", "space", "zero", "width", "prec")

    def __init__(self) -> None:
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.width: int | None = None
        self.prec: int | None = None


def _bad_verb(verb: str, v: Any) -> str:
    if v is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(v)}={_fmt_v(v, False, False)})"


def _fmt_int(v: int, verb: str, sp: _Spec) -> str:
    if verb == "c":
        return _pad(chr(v) if 0 <= v <= 0x10FFFF else "\ufffd", sp.width, sp.minus)
    if verb == "q":
        c = chr(v) if 0 <= v <= 0x10FFFF else "\ufffd"
        return _pad("'" + go_quote(c)[1:-1].replace("\\\"", '"').replace("'", "\\'") + "'",
                    sp.width, sp.minus)
    if verb == "U":
        s = f"U+{v:04X}"
        if sp.sharp and 0 <= v <= 0x10FFFF and chr(v).isprintable():
            s += f" '{chr(v)}'"
        return _pad(s, sp.width, sp.minus)
    base = {"d": "d", "v": "d", "x": "x", "X": "X", "o": "o", "O": "o", "b": "b"}[verb]
    digits = format(abs(v), base)
    if sp.prec is not None:
        if sp.prec == 0 and v == 0:
            digits = ""
        digits = digits.rjust(sp.prec, "0")
    prefix = ""
    if verb == "O" or (sp.sharp and verb == "o" and not digits.startswith("0")):
        prefix = "0o" if verb == "O" else "0"
    elif sp.sharp and verb in ("x", "X"):
        prefix = "0" + verb
    elif sp.sharp and verb == "b":
        prefix = "0b"
    sign = "-" if v < 0 else ("+" if sp.plus else (" " if sp.space else ""))
    body = prefix + digits
    if sp.zero and not sp.minus and sp.prec is None and sp.width is not None:
        return sign + body.rjust(sp.width - len(sign), "0")
    return _pad(sign + body, sp.width, sp.minus)


def _fmt_float(v: float, verb: str, sp: _Spec) -> str:
    if verb == "v":
        verb = "g"
    if verb == "F":
        verb = "f"
    prec = sp.prec if sp.prec is not None else (-1 if verb in "gG" else 6)
    s = _format_float(v, verb, prec)
    if s in ("NaN", "+Inf", "-Inf"):
        if s == "+Inf" and not sp.plus:
            s = "Inf" if not sp.space else " Inf"
        return _pad(s, sp.width, sp.minus)
    if not s.startswith("-"):
        if sp.plus:
            s = "+" + s
        elif sp.space:
            s = " " + s
    if sp.zero and not sp.minus and sp.width is not None and len(s) < sp.width:
        sign = s[0] if s[0] in "+- " else ""
        return sign + s[len(sign):].rjust(sp.width - len(sign), "0")
    return _pad(s, sp.width, sp.minus)


def _hex_float(v: float, upper: bool) -> str:
    """Go's %x of a float: shortest hex mantissa, two-digit binary exponent."""
    if v != v or v in (float("inf"), float("-inf")):
        return _format_float(v)
    mant, _, exp = v.hex().partition("p")
    whole, _, frac = mant.partition(".")
    frac = frac.rstrip("0")
    e = int(exp)
    s = whole + ("." + frac if frac else "") + "p" + ("-" if e < 0 else "+") + f"{abs(e):02d}"
    return s.upper().replace("0X", "0X") if upper else s


def _fmt_str(v: str, verb: str, sp: _Spec) -> str:
    if verb in ("s", "v"):
        s = v if sp.prec is None else v[:sp.prec]
    elif verb == "q":
        s = v if sp.prec is None else v[:sp.prec]
        if sp.sharp and "`" not in s and all(c.isprintable() or c == "\t" for c in s):
            s = "`" + s + "`"
        else:
            s = go_quote(s, ascii_only=sp.plus)
    else:
        data = v.encode()
        if sp.prec is not None:
            data = data[:sp.prec]
        pieces = [format(b, "02x" if verb == "x" else "02X") for b in data]
        if sp.sharp:
            pieces = [("0x" if verb == "x" else "0X") + p for p in pieces]
            if not sp.space:
                pieces = [pieces[0]] + [p[2:] for p in pieces[1:]] if pieces else pieces
        s = (" " if sp.space else "").join(pieces)
    return _pad(s, sp.width, sp.minus, sp.zero)


_INT_VERBS = frozenset("vdbcoOqxXU")
_STR_VERBS = frozenset("vsqxX")


def _fmt_arg(v: Any, verb: str, sp: _Spec) -> str:
    if verb == "T":
        return _pad(go_type(v), sp.width, sp.minus)
    if v is None or v is NO_VALUE:
        return _pad("<nil>", sp.width, sp.minus) if verb == "v" else _bad_verb(verb, None)
    if isinstance(v, bool):
        if verb in ("t", "v"):
            return _pad("true" if v else "false", sp.width, sp.minus)
        return _bad_verb(verb, v)
    if isinstance(v, int):
        return _fmt_int(v, verb, sp) if verb in _INT_VERBS else _bad_verb(verb, v)
    if isinstance(v, float):
        if verb in ("x", "X"):
            return _pad(_hex_float(v, verb == "X"), sp.width, sp.minus)
        return _fmt_float(v, verb, sp) if verb in "veEfFgG" else _bad_verb(verb, v)
    if isinstance(v, str):
        return _fmt_str(v, verb, sp) if verb in _STR_VERBS else _bad_verb(verb, v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(e, verb, sp) for e in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{_fmt_arg(k, verb, sp)}:{_fmt_arg(e, verb, sp)}"
                                 for k, e in _sorted_items(v)) + "]"
    if verb in ("v", "s"):
        return _pad(_fmt_v(v, sp.plus, sp.sharp), sp.width, sp.minus)
    return _bad_verb(verb, v)


def _arg_number(fmt: str, i: int, argi: int, nargs: int) -> tuple[int, int, bool, bool]:
    """An explicit argument index "[n]" at I: (argi, i, found, good)."""
    if i >= len(fmt) or fmt[i] != "[":
        return argi, i, False, True
    close = fmt.find("]", i + 1)
    if close < 0:
        return argi, len(fmt), True, False
    digits = fmt[i + 1:close]
    if not digits.isdigit() or not 1 <= int(digits) <= nargs:
        return argi, close + 1, True, False
    return int(digits) - 1, close + 1, True, True


def _decimal(fmt: str, i: int) -> tuple[int | None, int]:
    """A width or precision written as digits at I: (its value or None when absent, next i)."""
    start = i
    while i < len(fmt) and fmt[i].isdigit():
        i += 1
    return (int(fmt[start:i]) if i > start else None), i


def _sprintf(fmt: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf."""
    out: list[str] = []
    n, i, argi = len(fmt), 0, 0
    nargs = len(args)
    reordered = False

    def int_arg(k: int) -> int | None:
        if k < nargs and isinstance(args[k], int) and not isinstance(args[k], bool):
            return args[k]
        return None

    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        sp = _Spec()
        while i < n and fmt[i] in "-+# 0":
            c = fmt[i]
            if c == "-":
                sp.minus = True
            elif c == "+":
                sp.plus = True
            elif c == "#":
                sp.sharp = True
            elif c == " ":
                sp.space = True
            else:
                sp.zero = True
            i += 1
        argi, i, after_index, good = _arg_number(fmt, i, argi, nargs)
        reordered = reordered or after_index
        if i < n and fmt[i] == "*":
            i += 1
            sp.width = int_arg(argi)
            if sp.width is None:
                out.append("%!(BADWIDTH)")
            elif sp.width < 0:
                sp.minus, sp.width = True, -sp.width
            argi += 1
            after_index = False
        else:
            width, i = _decimal(fmt, i)
            if width is not None:
                sp.width = width
                if after_index:
                    good = False
        if i < n and fmt[i] == ".":
            i += 1
            if after_index:
                good = False
            argi, i, after_index, good2 = _arg_number(fmt, i, argi, nargs)
            good = good and good2
            reordered = reordered or after_index
            if i < n and fmt[i] == "*":
                i += 1
                sp.prec = int_arg(argi)
                if sp.prec is None or sp.prec < 0:
                    sp.prec = None
                    out.append("%!(BADPREC)")
                argi += 1
                after_index = False
            else:
                prec, i = _decimal(fmt, i)
                sp.prec = prec or 0
        if not after_index:
            argi, i, after_index, good2 = _arg_number(fmt, i, argi, nargs)
            good = good and good2
            reordered = reordered or after_index
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if not good:
            out.append(f"%!{verb}(BADINDEX)")
            continue
        if argi >= nargs:
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argi]
        argi += 1
        if verb == "v" and sp.sharp and isinstance(arg, str):
            out.append(_pad(go_quote(arg), sp.width, sp.minus))
        else:
            out.append(_fmt_arg(arg, verb, sp))
    if not reordered and argi < nargs:
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={_fmt_v(a, False, False)}"
                          for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _sprint(args: list[Any]) -> str:
    out: list[str] = []
    prev_string = False
    for k, a in enumerate(args):
        is_string = isinstance(a, str)
        # Go's Sprint: a space between operands when neither is a string.
        if k > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(_fmt_v(a, False, False))
        prev_string = is_string
    return "".join(out)


# ---------------------------------------------------------------------------
# Functions


class _FuncError(Exception):
    """A function's error return: becomes "error calling NAME: MSG"."""


def _f_index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise _FuncError("index of untyped nil")
    for idx in indexes:
        if item is None:
            raise _FuncError("index of nil pointer")
        if isinstance(item, (list, tuple, str)):
            if idx is None:
                raise _FuncError("cannot index slice/array with nil")
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise _FuncError(f"cannot index slice/array with type {go_type(idx)}")
            if isinstance(item, str):
                # Indexing a Go string yields a byte of its UTF-8 encoding.
                item = item.encode()
            if idx < 0 or idx >= len(item):
                raise _FuncError(f"index out of range: {idx}")
            item = item[idx]
        elif isinstance(item, dict):
            if idx in item:
                item = item[idx]
            else:
                # A missing key gives the zero value of the map's element type: ""
                # for docker's string maps (labels, options), nil otherwise.
                item = "" if all(isinstance(e, str) for e in item.values()) else None
        else:
            raise _FuncError(f"can't index item of type {go_type(item)}")
    return item


def _f_slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise _FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise _FuncError(f"too many slice indexes: {len(indexes)}")
    if not isinstance(item, (str, list, tuple)):
        raise _FuncError(f"can't slice item of type {go_type(item)}")
    if isinstance(item, str) and len(indexes) == 3:
        raise _FuncError("cannot 3-index slice a string")
    cap = len(item)
    idx = [0, cap]
    for k, x in enumerate(indexes):
        if not isinstance(x, int) or isinstance(x, bool):
            raise _FuncError(f"cannot index slice/array with type {go_type(x)}")
        if x < 0 or x > cap:
            raise _FuncError(f"index out of range: {x}")
        if k < 2:
            idx[k] = x
    if idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    return item[idx[0]:idx[1]]


def _f_len(item: Any) -> int:
    if item is None:
        raise _FuncError("len of nil pointer")
    if isinstance(item, (str, list, tuple, dict)):
        return len(item.encode()) if isinstance(item, str) else len(item)
    raise _FuncError(f"len of type {go_type(item)}")


_BOOL, _INT, _FLOAT, _STRING, _OTHER = range(5)


def _kind(v: Any) -> int:
    if isinstance(v, bool):
        return _BOOL
    if isinstance(v, int):
        return _INT
    if isinstance(v, float):
        return _FLOAT
    if isinstance(v, str):
        return _STRING
    return _OTHER


_GO_SCALAR_TYPES = {_BOOL: "bool", _INT: "int", _FLOAT: "float64", _STRING: "string"}


def _f_eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _FuncError("missing argument for comparison")
    ka = _kind(a)
    for b in others:
        if a is None or b is None:
            if a is None and b is None:
                return True
            continue
        kb = _kind(b)
        if ka != kb:
            raise _FuncError("incompatible types for comparison")
        if ka == _OTHER and isinstance(b, (list, dict)):
            raise _FuncError(f"non-comparable type {_fmt_v(b, False, False)}: {go_type(b)}")
        if a == b:
            return True
    return False


def _f_ne(a: Any, b: Any) -> bool:
    return not _f_eq(a, b)


def _f_lt(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka == _OTHER or kb == _OTHER:
        raise _FuncError("invalid type for comparison")
    if ka != kb:
        raise _FuncError("incompatible types for comparison")
    if ka == _BOOL:
        raise _FuncError("invalid type for comparison")
    return a < b


def _f_le(a: Any, b: Any) -> bool:
    return _f_lt(a, b) or _f_eq(a, b)


def _f_gt(a: Any, b: Any) -> bool:
    return not _f_le(a, b)


def _f_ge(a: Any, b: Any) -> bool:
    return not _f_lt(a, b)


def _eval_args_str(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return _sprint(list(args))


def _f_html(*args: Any) -> str:
    s = _eval_args_str(args)
    return (s.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&#34;").replace("\x00", "\ufffd"))


def _f_js(*args: Any) -> str:
    out = []
    for c in _eval_args_str(args):
        if c in "\\'\"":
            out.append("\\" + c)
        elif c in "<>&=":
            out.append(f"\\u{ord(c):04X}")
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _f_urlquery(*args: Any) -> str:
    out = []
    for b in _eval_args_str(args).encode():
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_.~"):
            out.append(c)
        elif c == " ":
            out.append("+")
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def _f_title(s: str) -> str:
    # Go's strings.Title: upper-case letters that follow a separator; unlike
    # str.title it leaves the other letters alone.
    out = []
    prev = " "
    for c in s:
        if prev.isspace() or (prev.isascii() and not (prev.isalnum() or prev == "_")):
            t = c.upper()
            out.append(t if len(t) == 1 else c)
        else:
            out.append(c)
        prev = c
    return "".join(out)


def _f_split(s: str, sep: str) -> list[str]:
    if sep == "":
        return list(s)
    return s.split(sep)


def _f_pad(s: str, prefix: int, suffix: int) -> str:
    if s == "":
        return s
    if prefix < 0 or suffix < 0:
        raise _FuncError("strings: negative Repeat count")
    return " " * prefix + s + " " * suffix


def _f_truncate(s: str, length: int) -> str:
    data = s.encode()
    if len(data) < length:
        return s
    if length < 0:
        raise _FuncError(f"runtime error: slice bounds out of range [:{length}]")
    return data[:length].decode(errors="replace")


# name -> (callable, parameter kinds, variadic kind or None). Kinds: "any", "str",
# "int", "[]str"; "lazy" marks and/or, which evaluate their arguments themselves.
BUILTINS: dict[str, _Sig] = {
    "and": (lambda *a: a, ("lazy",), "lazy"),
    "or": (lambda *a: a, ("lazy",), "lazy"),
    "not": (lambda a: not _truth(a), ("any",), None),
    "len": (_f_len, ("any",), None),
    "index": (_f_index, ("any",), "any"),
    "slice": (_f_slice, ("any",), "any"),
    "print": (lambda *a: _sprint(list(a)), (), "any"),
    "printf": (lambda f, *a: _sprintf(f, list(a)), ("str",), "any"),
    "println": (lambda *a: " ".join(_fmt_v(x, False, False) for x in a) + "\n", (), "any"),
    "eq": (_f_eq, ("any",), "any"),
    "ne": (_f_ne, ("any", "any"), None),
    "lt": (_f_lt, ("any", "any"), None),
    "le": (_f_le, ("any", "any"), None),
    "gt": (_f_gt, ("any", "any"), None),
    "ge": (_f_ge, ("any", "any"), None),
    "html": (_f_html, (), "any"),
    "js": (_f_js, (), "any"),
    "urlquery": (_f_urlquery, (), "any"),
    "call": (lambda f, *a: f(*a), ("any",), "any"),
    # docker/cli's templates package adds these.
    "json": (go_json, ("any",), None),
    "split": (_f_split, ("str", "str"), None),
    "join": (lambda items, sep: sep.join(items), ("[]str", "str"), None),
    "title": (_f_title, ("str",), None),
    "lower": (lambda s: s.lower(), ("str",), None),
    "upper": (lambda s: s.upper(), ("str",), None),
    "pad": (_f_pad, ("str", "int", "int"), None),
    "truncate": (_f_truncate, ("str", "int"), None),
}

_GO_KIND = {"str": "string", "int": "int", "[]str": "[]string"}


def _arity(fn: Callable[..., Any]) -> tuple[int, bool] | None:
    """(number of fixed parameters, variadic?) of a Python callable, None if unknown."""
    func = getattr(fn, "__func__", None)
    # A bound method's first parameter is already taken by its object.
    bound = 1 if func is not None else 0
    code = getattr(func if func is not None else fn, "__code__", None)
    if code is None:
        return None
    defaults = getattr(getattr(fn, "__func__", fn), "__defaults__", None) or ()
    return code.co_argcount - bound - len(defaults), bool(code.co_flags & 0x04)


def _signature(fn: Callable[..., Any]) -> _Sig:
    arity = _arity(fn)
    if arity is None:
        return fn, (), "any"
    nfixed, variadic = arity
    return fn, ("any",) * nfixed, "any" if variadic else None


# ---------------------------------------------------------------------------
# Execution


# Deep enough for any real template, shallow enough for Python's recursion limit.
_MAX_DEPTH = 100


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Exec:
    __slots__ = ("tmpl", "funcs", "vars", "node", "out", "current", "depth", "missing")

    def __init__(self, tmpl: Template, funcs: dict[str, _Sig], data: Any) -> None:
        self.tmpl = tmpl
        self.current = tmpl.name
        self.depth = 0
        self.missing = tmpl.missing_key
        self.funcs = funcs
        self.vars: list[list[Any]] = [["$", data]]
        self.node: _Node | None = None
        self.out: list[str] = []

    def error(self, msg: str) -> TemplateError:
        name = self.current
        if self.node is None:
            return TemplateError(f"template: {name}: {msg}")
        text = self.tmpl.text
        pos = self.node.pos
        nl = text.rfind("\n", 0, pos)
        col = pos if nl < 0 else pos - nl - 1
        line = text.count("\n", 0, pos) + 1
        where = f"{self.tmpl.name}:{line}:{col}"
        return TemplateError(f"template: {where}: executing {go_quote(name)} "
                             f"at <{self.node}>: {msg}")

    # walking ---------------------------------------------------------------
    def walk(self, dot: Any, nodes: list[_Node]) -> None:
        out = self.out
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.print(node, value)
            elif isinstance(node, _Branch):
                if node.kind == "range":
                    self.walk_range(dot, node)
                else:
                    self.walk_if_with(dot, node)
            elif isinstance(node, _Loop):
                raise _Break() if node.word == "break" else _Continue()
            elif isinstance(node, _TemplateCall):
                self.walk_template(dot, node)

    def walk_template(self, dot: Any, node: _TemplateCall) -> None:
        self.node = node
        body = self.tmpl.defs.get(node.name)
        if body is None:
            raise self.error(f"template {go_quote(node.name)} not defined")
        if self.depth >= _MAX_DEPTH:
            raise self.error(f"exceeded maximum template depth ({_MAX_DEPTH})")
        value = self.pipeline(dot, node.pipe) if node.pipe is not None else NO_VALUE
        saved = self.vars, self.current
        # No dynamic scoping: the called template sees only $.
        self.vars, self.current = [["$", value]], node.name
        self.depth += 1
        try:
            self.walk(value, body)
        finally:
            self.vars, self.current = saved
            self.depth -= 1

    def print(self, node: _Node, v: Any) -> None:
        if isinstance(v, str):
            self.out.append(v)
            return
        if callable(v) and not isinstance(v, GoStruct) and not hasattr(v, "__dataclass_fields__"):
            self.node = node
            raise self.error(f"can't print {node} of type func")
        self.out.append(_fmt_v(v, False, False))

    def walk_if_with(self, dot: Any, node: _Branch) -> None:
        mark = len(self.vars)
        try:
            value = self.pipeline(dot, node.pipe)
            if _truth(value):
                self.walk(value if node.kind == "with" else dot, node.body)
            elif node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, node: _Branch) -> None:
        self.node = node
        mark = len(self.vars)
        try:
            value = self.pipeline(dot, node.pipe)
            pipe = node.pipe
            if isinstance(value, dict):
                items: Any = _sorted_items(value)
            elif isinstance(value, (list, tuple)):
                items = enumerate(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                if len(pipe.decl) > 1:
                    raise self.error(f"can't use {value} to iterate over more than one variable")
                items = ((i, i) for i in range(value))
            elif value is None or value is NO_VALUE:
                items = ()
            else:
                raise self.error(f"range can't iterate over {_fmt_v(value, False, False)}")
            inner = len(self.vars)
            empty = True
            for key, elem in items:
                empty = False
                if pipe.decl:
                    if pipe.is_assign:
                        names = pipe.decl
                        if len(names) > 1:
                            self.set_var(names[0], key)
                            self.set_var(names[1], elem)
                        else:
                            self.set_var(names[0], elem)
                    else:
                        self.vars[-1][1] = elem
                        if len(pipe.decl) > 1:
                            self.vars[-2][1] = key
                try:
                    self.walk(elem, node.body)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    del self.vars[inner:]
            if empty and node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    # variables -------------------------------------------------------------
    def set_var(self, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.error(f"undefined variable: {name}")

    def var_value(self, name: str) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self.error(f"undefined variable: {name}")

    # evaluation ------------------------------------------------------------
    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        self.node = pipe
        value: Any = _ABSENT
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def not_a_function(self, args: list[_Node], final: Any) -> None:
        if len(args) > 1 or final is not _ABSENT:
            raise self.error(f"can't give argument to non-function {args[0]}")

    def command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Field):
            self.node = first
            return self.field_chain(dot, dot, first, first.idents, cmd.args, final)
        if isinstance(first, _Ident):
            return self.function(dot, first, cmd, cmd.args, final)
        if isinstance(first, _Variable):
            return self.variable(dot, first, cmd.args, final)
        if isinstance(first, _Chain):
            return self.chain(dot, first, cmd.args, final)
        if isinstance(first, _Pipe):
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)
        self.node = first
        self.not_a_function(cmd.args, final)
        assert isinstance(first, _Literal)
        if first.kind == "dot":
            return dot
        if first.kind == "nil":
            raise self.error("nil is not a command")
        return first.value

    def variable(self, dot: Any, node: _Variable, args: list[_Node], final: Any) -> Any:
        self.node = node
        value = self.var_value(node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(args, final)
            return value
        return self.field_chain(dot, value, node, node.idents[1:], args, final)

    def chain(self, dot: Any, node: _Chain, args: list[_Node], final: Any) -> Any:
        self.node = node
        if isinstance(node.node, _Literal) and node.node.kind == "nil":
            raise self.error(f"indirection through explicit nil in {node}")
        receiver = self.arg(dot, node.node)
        return self.field_chain(dot, receiver, node, node.fields, args, final)

    def field_chain(self, dot: Any, receiver: Any, node: _Node, idents: list[str],
                    args: list[_Node], final: Any) -> Any:
        for name in idents[:-1]:
            receiver = self.field(dot, name, node, [], _ABSENT, receiver)
        return self.field(dot, idents[-1], node, args, final, receiver)

    def field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any,
              receiver: Any) -> Any:
        if receiver is NO_VALUE or receiver is _ABSENT:
            return NO_VALUE
        has_args = len(args) > 1 or final is not _ABSENT
        if receiver is None:
            raise self.error(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, dict):
            if has_args:
                raise self.error(f"{name} is not a method but has arguments")
            value = receiver.get(name, _ABSENT)
            if value is not _ABSENT:
                return value
            if self.missing == "error" and not isinstance(receiver, TypedMap):
                raise self.error(f"map has no entry for key {go_quote(name)}")
            if self.missing == "zero" and all(isinstance(e, str) for e in receiver.values()):
                return ""  # a string map's zero value, as index gives
            # An interface map's zero value prints as a missing one (Go issue 24963).
            return NO_VALUE
        if isinstance(receiver, GoStruct):
            value = receiver.fields.get(name, _ABSENT)
        elif isinstance(receiver, (str, int, float, bool, list, tuple)) or name.startswith("_"):
            value = _ABSENT
        else:
            try:
                value = getattr(receiver, name, _ABSENT)
            except Exception as e:  # a property that fails is a method that fails
                raise self.error(f"error calling {name}: {e}") from None
        if value is _ABSENT:
            raise self.error(f"can't evaluate field {name} in type {go_type(receiver)}")
        if callable(value) and not isinstance(value, (GoStruct, type)):
            return self.call(dot, value, _signature(value), node, name, args, final)
        if has_args:
            raise self.error(f"{name} has arguments but cannot be invoked as function")
        return value

    def function(self, dot: Any, node: _Ident, cmd: _Node, args: list[_Node],
                 final: Any) -> Any:
        self.node = node
        sig = self.funcs.get(node.name)
        if sig is None:
            raise self.error(f"{go_quote(node.name)} is not a defined function")
        return self.call(dot, sig[0], sig, cmd, node.name, args, final)

    def call(self, dot: Any, fn: Callable[..., Any], sig: _Sig, node: _Node, name: str,
             args: list[_Node], final: Any) -> Any:
        _, kinds, variadic = sig
        arg_nodes = args[1:]
        num_in = len(arg_nodes) + (final is not _ABSENT)
        if variadic is not None:
            num_fixed = len(kinds)
            if num_in < num_fixed:
                raise self.error(f"wrong number of args for {name}: want at least {num_fixed} "
                                 f"got {len(arg_nodes)}")
        elif num_in != len(kinds):
            raise self.error(f"wrong number of args for {name}: want {len(kinds)} got {num_in}")

        if variadic == "lazy":
            return self.and_or(dot, name, arg_nodes, final)
        values: list[Any] = []
        for k, arg in enumerate(arg_nodes):
            kind = kinds[k] if k < len(kinds) else variadic
            values.append(self.typed_arg(dot, arg, kind or "any"))
        if final is not _ABSENT:
            k = len(arg_nodes)
            kind = kinds[k] if k < len(kinds) else variadic
            values.append(self.check_type(final, kind or "any"))
        try:
            result = fn(*values)
        except (TemplateError, _Break, _Continue):
            raise
        except Exception as e:  # a function's error return, as Go reports it
            self.node = node
            raise self.error(f"error calling {name}: {e}") from None
        return result

    def and_or(self, dot: Any, name: str, arg_nodes: list[_Node], final: Any) -> Any:
        value: Any = None
        for arg in arg_nodes:
            value = self.arg(dot, arg)
            if _truth(value) != (name == "and"):
                return value
        if final is not _ABSENT:
            value = final
        return value

    def typed_arg(self, dot: Any, node: _Node, kind: str) -> Any:
        self.node = node
        if kind == "int" and isinstance(node, _Literal) and node.kind == "number":
            if node.int_value is None:
                raise self.error(f"expected integer; found {node}")
            return node.int_value
        if isinstance(node, _Literal) and node.kind == "nil":
            if kind in ("any", "[]str"):
                return None
            raise self.error(f"cannot assign nil to {_GO_KIND[kind]}")
        if isinstance(node, _Literal) and node.kind != "dot" and kind != "any":
            if kind == "str" and node.kind != "string":
                raise self.error(f"expected string; found {node}")
            if kind == "int":
                raise self.error(f"expected integer; found {node}")
            if kind == "[]str":
                raise self.error(f"can't handle {node} for arg of type []string")
        return self.check_type(self.arg(dot, node), kind)

    def check_type(self, value: Any, kind: str) -> Any:
        if value is NO_VALUE or value is _ABSENT:
            if kind in ("any", "[]str"):
                return None
            raise self.error(f"invalid value; expected {_GO_KIND[kind]}")
        if kind == "any":
            return value
        ok = ((kind == "str" and isinstance(value, str))
              or (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
              or (kind == "[]str" and isinstance(value, (list, tuple))
                  and all(isinstance(e, str) for e in value)))
        if not ok:
            raise self.error(f"wrong type for value; expected {_GO_KIND[kind]}; "
                             f"got {go_type(value)}")
        return value

    def arg(self, dot: Any, node: _Node) -> Any:
        """An argument's value (Go's evalEmptyInterface); a missing key becomes nil."""
        self.node = node
        if isinstance(node, _Literal):
            return dot if node.kind == "dot" else node.value
        if isinstance(node, _Field):
            value = self.field_chain(dot, dot, node, node.idents, [node], _ABSENT)
        elif isinstance(node, _Variable):
            value = self.variable(dot, node, [node], _ABSENT)
        elif isinstance(node, _Pipe):
            value = self.pipeline(dot, node)
        elif isinstance(node, _Ident):
            value = self.function(dot, node, node, [node], _ABSENT)
        elif isinstance(node, _Chain):
            value = self.chain(dot, node, [node], _ABSENT)
        else:
            raise self.error(f"can't handle {node} for arg")
        return value


class Template:
    """A parsed template; parse once, execute for each value."""

    __slots__ = ("name", "text", "nodes", "funcs", "defs", "missing_key")

    def __init__(self, name: str, text: str, nodes: list[_Node], funcs: dict[str, _Sig]) -> None:
        self.name = name
        self.text = text
        self.nodes = nodes
        self.funcs = funcs
        # Templates named by {{define}} and {{block}}.
        self.defs: dict[str, list[_Node]] = {}
        # What a missing map key gives: "default" (<no value>), "zero" or "error".
        self.missing_key = "default"

    def option(self, *options: str) -> Template:
        """Go's Template.Option; only "missingkey=..." exists. Returns the template."""
        for opt in options:
            key, sep, value = opt.partition("=")
            if not sep or key != "missingkey":
                raise ValueError(f"unrecognized option: {opt}")
            if value not in ("default", "invalid", "zero", "error"):
                raise ValueError(f"unrecognized option: {opt}")
            self.missing_key = "default" if value == "invalid" else value
        return self

    @classmethod
    def parse(cls, text: str, funcs: dict[str, Callable[..., Any]] | None = None,
              name: str = "") -> Template:
        table = BUILTINS
        if funcs:
            table = dict(BUILTINS)
            for fname, fn in funcs.items():
                table[fname] = _signature(fn)
        parser = _Parser(name, text, table)
        nodes = parser.parse()
        tmpl = cls(name, text, nodes, table)
        tmpl.defs = parser.defs
        return tmpl

    def execute(self, data: Any, funcs: dict[str, Callable[..., Any]] | None = None) -> str:
        return "".join(self._run(data, funcs, []))

    def execute_partial(self, data: Any,
                        funcs: dict[str, Callable[..., Any]] | None = None) -> str:
        """Like execute, but an error ends the output instead of raising: what was
        written before it is returned (docker prints table headers that way)."""
        out: list[str] = []
        try:
            self._run(data, funcs, out)
        except TemplateError:
            pass
        return "".join(out)

    def _run(self, data: Any, funcs: dict[str, Callable[..., Any]] | None,
             out: list[str]) -> list[str]:
        table = self.funcs
        if funcs:
            table = dict(self.funcs)
            for fname, fn in funcs.items():
                table[fname] = _signature(fn)
        ex = _Exec(self, table, data)
        ex.out = out
        ex.walk(data, self.nodes)
        return out
