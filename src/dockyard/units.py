"""Docker's go-units: human durations and sizes, as the docker CLI and dockerd print them.

Import-light on purpose (the CLI imports it on every command): nothing beyond Python
itself.
"""

from __future__ import annotations

__all__ = ["bytes_size", "human_duration", "human_size"]

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")

_MINUTE_NS = 60_000_000_000
_HOUR_NS = 3_600_000_000_000


def _scale(size: float, base: float, units: tuple[str, ...]) -> tuple[float, str]:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return size, units[i]


def human_size(size: float, precision: int = 3) -> str:
    """HumanSizeWithPrecision: decimal units, PRECISION significant digits ("1.02kB")."""
    value, unit = _scale(float(size), 1000.0, _DECIMAL_UNITS)
    return "%.*g%s" % (precision, value, unit)


def bytes_size(size: float) -> str:
    """BytesSize: binary units, four significant digits ("1.953GiB")."""
    value, unit = _scale(float(size), 1024.0, _BINARY_UNITS)
    return "%.4g%s" % (value, unit)


def human_duration(ns: int) -> str:
    """HumanDuration of a duration in nanoseconds (Go's time.Duration), rule for rule:
    hours rounded half up, minutes and seconds truncated, years truncated."""
    # Go's int(d.Seconds()) truncates toward zero; negative (clock skew) is "< 1".
    seconds = int(ns / 1e9) if ns >= 0 else 0
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = ns // _MINUTE_NS
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    # d.Hours() is computed as whole hours + remainder/3600e9 in float64.
    hours_f = ns // _HOUR_NS + (ns % _HOUR_NS) / 3.6e12
    hours = int(hours_f + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(hours_f) // 24 // 365} years"
