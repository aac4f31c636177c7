"""JSON for the runtime's start path, without importing the json package.

`import json` costs about 12 ms on a slow machine, most of it compiling the
regular expressions of its pure-Python fallbacks; every container start would
pay it. The C accelerator `_json` that json itself uses needs none of that, so
this module drives it directly. Output and errors match json's for what the
runtime reads and writes (objects, arrays, strings, numbers, booleans, null).
"""

from __future__ import annotations

import _json

_WS = " \t\n\r"


class DecodeError(ValueError):
    """Malformed JSON; the message says where, as json.JSONDecodeError's does."""

    def __init__(self, msg: str, doc: str, pos: int) -> None:
        line = doc.count("\n", 0, pos) + 1
        col = pos - doc.rfind("\n", 0, pos)
        super().__init__(f"{msg}: line {line} column {col} (char {pos})")


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def loads(text: str | bytes) -> object:
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8-sig")
    n = len(text)
    i = 0
    while i < n and text[i] in _WS:
        i += 1
    try:
        obj, end = _scan(text, i)
    except (StopIteration, ValueError, SystemError):
        # Malformed input: the scanner reports it through json.decoder's error class,
        # which it can reach only once json is loaded. This path is rare: let json say
        # what is wrong, in its words.
        import json

        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise DecodeError(e.msg, text, e.pos) from None
        raise DecodeError("Expecting value", text, i) from None
    finally:
        _Context.memo.clear()
    while end < n and text[end] in _WS:
        end += 1
    if end != n:
        raise DecodeError("Extra data", text, end)
    return obj


def _float_repr(o: float) -> str:
    if o != o:
        return "NaN"
    if o == float("inf"):
        return "Infinity"
    if o == float("-inf"):
        return "-Infinity"
    return float.__repr__(o)


def _no_default(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_compact = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None, ":", ",",
                              False, False, True)
_compact_sorted = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None,
                                     ":", ",", True, False, True)
_spaced = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)


def dumps(obj: object, *, compact: bool = False, sort_keys: bool = False) -> str:
    """One line, with json.dumps's default separators unless COMPACT."""
    encoder = (_compact_sorted if sort_keys else _compact) if compact else _spaced
    return "".join(encoder(obj, 0))


def dumps_indented(obj: object, indent: str = "  ", _level: int = 0) -> str:
    """Pretty output as json.dumps(obj, indent=...) gives it."""
    pad = "\n" + indent * (_level + 1)
    if isinstance(obj, dict) and obj:
        items = (f"{dumps(str(k))}: "
                 f"{dumps_indented(v, indent, _level + 1)}" for k, v in obj.items())
        return "{" + pad + ("," + pad).join(items) + "\n" + indent * _level + "}"
    if isinstance(obj, list) and obj:
        items = (dumps_indented(v, indent, _level + 1) for v in obj)
        return "[" + pad + ("," + pad).join(items) + "\n" + indent * _level + "]"
    return dumps(obj)
