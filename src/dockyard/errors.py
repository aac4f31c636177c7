"""The error hierarchy shared by every layer.

Each class carries the HTTP status and CLI exit code it maps to, so the API and
the CLIs translate errors in one place and domain code never thinks about either.
"""

from __future__ import annotations


class DockyardError(Exception):
    """Base of every error Dockyard reports to a user."""

    http_status = 500
    exit_code = 1


class InvalidArgument(DockyardError):
    """The request or configuration is malformed or out of range."""

    http_status = 400


class NotFound(DockyardError):
    http_status = 404


class Conflict(DockyardError):
    """The object exists already, or is in a state that forbids the operation."""

    http_status = 409


class Unsupported(InvalidArgument):
    """Valid input that this host or this version of Dockyard cannot honour."""


class SystemFailure(DockyardError):
    """The kernel or an external program refused; the message says which and why."""

    http_status = 500
