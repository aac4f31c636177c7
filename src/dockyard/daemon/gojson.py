"""Request bodies checked as dockerd's Go structs decode them: type errors in Go's words.

dockerd decodes a body with encoding/json into its API structs; a value of the wrong
JSON type fails the request with Go's UnmarshalTypeError text, which clients show as is
("json: cannot unmarshal string into Go struct field HealthConfig.Healthcheck.Retries
of type int"). Endpoints that wrap the error keep their wrapping with PREFIX
(POST /containers/{id}/update says "invalid JSON: ...").
"""

from __future__ import annotations

from dockyard.errors import InvalidArgument

__all__ = ["json_kind", "type_error", "value_type_error"]


def json_kind(value: object, *, number_literal: bool = False) -> str:
    """VALUE's JSON kind as Go's json errors name it: "bool", "number", "string",
    "array", "object" or "null". A number that is not an integer carries its literal
    ("number 1.5"); with NUMBER_LITERAL every number does ("number 70000"), as Go's
    error for a number bound for an integer field it does not fit."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float) or (number_literal and isinstance(value, int)):
        return f"number {value!r}"
    if isinstance(value, int):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def type_error(value: object, field: str, go_type: str, *, prefix: str = "",
               number_literal: bool = False) -> InvalidArgument:
    """VALUE refused for the struct field FIELD ("Struct.Field") of Go type GO_TYPE."""
    return InvalidArgument(f"{prefix}json: cannot unmarshal "
                           f"{json_kind(value, number_literal=number_literal)} into Go struct "
                           f"field {field} of type {go_type}")


def value_type_error(value: object, go_type: str, *, prefix: str = "",
                     number_literal: bool = False) -> InvalidArgument:
    """VALUE refused as a whole body that decodes into GO_TYPE (not an object)."""
    return InvalidArgument(f"{prefix}json: cannot unmarshal "
                           f"{json_kind(value, number_literal=number_literal)} into Go value "
                           f"of type {go_type}")
