"""Syntax and range checks of an OCI linux.resources object, common to v1 and v2.

parse() returns the same shape with only the fields that are set, values
normalised (wildcard device numbers become -1, defaults filled in). Whether
the host can honour a field is the driver's business; this module only
guarantees that every key was recognised, so no field is dropped unnoticed.
"""

from __future__ import annotations

from dockyard.errors import InvalidArgument

from ._common import FIELD, parse_cpu_list

MIN_MEMORY = 6 << 20  # Docker's floor: below this a container cannot even start.
UINT32_MAX = (1 << 32) - 1
INT64_MAX = (1 << 63) - 1


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class _Obj:
    """Reads one JSON object so that every key is either consumed or reported."""

    __slots__ = ("d", "path", "seen")

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise InvalidArgument(f"{path}: must be an object, got {_kind(value)}")
        self.d = value
        self.path = path
        self.seen: set[str] = set()
        for key in value:
            if not isinstance(key, str):
                raise InvalidArgument(f"{path}: keys must be strings, got {key!r}")

    def take(self, key: str) -> object:
        self.seen.add(key)
        return self.d.get(key)

    def field(self, key: str) -> str:
        return f"{self.path}.{key}"

    def finish(self) -> None:
        for key in self.d:
            if key not in self.seen:
                raise InvalidArgument(f"{self.path}.{key}: unknown field")


def _int(value: object, field: str, lo: int | None = None, hi: int | None = None,
         unlimited: bool = False, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}: must be an integer, got {_kind(value)} {value!r}")
    if unlimited and value == -1:
        return value
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None and hi != INT64_MAX:
            bounds = f"between {lo} and {hi}"
        elif lo is not None and value > hi:
            bounds = f"at most {hi}"
        elif lo is not None:
            bounds = f"at least {lo}"
        else:
            bounds = f"at most {hi}"
        prefix = "-1 (unlimited) or " if unlimited else ""
        raise InvalidArgument(f"{field}: must be {prefix}{bounds}{what}, got {value}")
    return value


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{field}: must be true or false, got {_kind(value)} {value!r}")
    return value


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: must be a string, got {_kind(value)} {value!r}")
    return value


def _list(value: object, field: str) -> list:
    if not isinstance(value, list):
        raise InvalidArgument(f"{field}: must be a list, got {_kind(value)}")
    return value


def _memory(value: object, path: str) -> dict:
    o = _Obj(value, path)
    out: dict = {}
    spec = (
        # key, lo, hi, unlimited, unit note
        ("limit", MIN_MEMORY, INT64_MAX, True, " bytes (6 MiB)"),
        ("reservation", 0, INT64_MAX, True, " bytes"),
        ("swap", 0, INT64_MAX, True, " bytes"),
        ("kernel", 0, INT64_MAX, True, " bytes"),
        ("kernelTCP", 0, INT64_MAX, True, " bytes"),
        ("swappiness", 0, 100, False, ""),
    )
    for key, lo, hi, unlimited, what in spec:
        v = o.take(key)
        if v is not None:
            out[key] = _int(v, o.field(key), lo, hi, unlimited, what)
    for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        v = o.take(key)
        if v is not None:
            out[key] = _bool(v, o.field(key))
    o.finish()
    limit, reservation = out.get("limit"), out.get("reservation")
    if limit not in (None, -1) and reservation not in (None, -1) and reservation > limit:
        raise InvalidArgument(
            f"{path}.reservation: {reservation} is above memory.limit {limit}; "
            "the reservation must not exceed the limit"
        )
    swap = out.get("swap")
    if limit not in (None, -1) and swap not in (None, -1) and swap < limit:
        raise InvalidArgument(
            f"{path}.swap: {swap} is below memory.limit {limit}; swap is the total of "
            "memory plus swap, so it must be at least the limit (or -1 for unlimited)"
        )
    return out


def _cpu(value: object, path: str) -> dict:
    o = _Obj(value, path)
    out: dict = {}
    spec = (
        ("shares", 2, 262144, False),
        ("quota", 1000, INT64_MAX, True),  # the kernel's floor is 1 ms
        ("period", 1000, 1000000, False),
        ("burst", 0, INT64_MAX, False),
        ("realtimeRuntime", 0, INT64_MAX, True),
        ("realtimePeriod", 1, 1000000, False),
        ("idle", 0, 1, False),
    )
    for key, lo, hi, unlimited in spec:
        v = o.take(key)
        if v is not None:
            out[key] = _int(v, o.field(key), lo, hi, unlimited)
    for key in ("cpus", "mems"):
        v = o.take(key)
        if v is not None:
            text = _str(v, o.field(key))
            # runc treats "" as unset; an empty cpuset would make the cgroup unusable.
            if text.strip():
                parse_cpu_list(text, o.field(key))
                out[key] = text.strip()
    o.finish()
    return out


def _pids(value: object, path: str) -> dict:
    o = _Obj(value, path)
    out: dict = {}
    v = o.take("limit")
    if v is not None:
        # 0 means "unset" to runc but "no tasks at all" to the kernel; refuse the ambiguity.
        out["limit"] = _int(v, o.field("limit"), 1, INT64_MAX, True)
    o.finish()
    return out


def _device_number(o: _Obj, key: str, required: bool) -> int:
    v = o.take(key)
    if v is None or v == -1:
        if required:
            raise InvalidArgument(f"{o.field(key)}: is required")
        return -1
    return _int(v, o.field(key), 0, (1 << 31) - 1)


def _block_io(value: object, path: str) -> dict:
    o = _Obj(value, path)
    out: dict = {}
    for key in ("weight", "leafWeight"):
        v = o.take(key)
        if v is not None:
            out[key] = _int(v, o.field(key), 10, 1000)
    v = o.take("weightDevice")
    if v is not None:
        entries = []
        for i, item in enumerate(_list(v, o.field("weightDevice"))):
            d = _Obj(item, f"{o.field('weightDevice')}[{i}]")
            entry = {
                "major": _device_number(d, "major", True),
                "minor": _device_number(d, "minor", True),
            }
            for key in ("weight", "leafWeight"):
                w = d.take(key)
                if w is not None:
                    entry[key] = _int(w, d.field(key), 10, 1000)
            d.finish()
            entries.append(entry)
        out["weightDevice"] = entries
    for key in (
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    ):
        v = o.take(key)
        if v is None:
            continue
        entries = []
        for i, item in enumerate(_list(v, o.field(key))):
            d = _Obj(item, f"{o.field(key)}[{i}]")
            rate = d.take("rate")
            if rate is None:
                raise InvalidArgument(f"{d.field('rate')}: is required")
            entries.append(
                {
                    "major": _device_number(d, "major", True),
                    "minor": _device_number(d, "minor", True),
                    "rate": _int(rate, d.field("rate"), 0, INT64_MAX),
                }
            )
            d.finish()
        out[key] = entries
    o.finish()
    return out


def _devices(value: object, path: str) -> list[tuple[bool, str, int, int, str]]:
    rules = []
    for i, item in enumerate(_list(value, path)):
        d = _Obj(item, f"{path}[{i}]")
        allow = d.take("allow")
        if allow is None:
            raise InvalidArgument(f"{d.field('allow')}: is required")
        allow = _bool(allow, d.field("allow"))
        kind = d.take("type")
        kind = "a" if kind is None else _str(kind, d.field("type"))
        if kind not in ("a", "b", "c"):
            raise InvalidArgument(f"{d.field('type')}: must be 'a', 'b' or 'c', got {kind!r}")
        major = _device_number(d, "major", False)
        minor = _device_number(d, "minor", False)
        access = d.take("access")
        access = "rwm" if access is None else _str(access, d.field("access"))
        if not access or set(access) - set("rwm") or len(set(access)) != len(access):
            raise InvalidArgument(
                f"{d.field('access')}: must be a combination of 'r', 'w' and 'm', got {access!r}"
            )
        d.finish()
        # Canonical order makes equal rules compare equal.
        rules.append((allow, kind, major, minor, "".join(c for c in "rwm" if c in access)))
    return rules


def _hugepages(value: object, path: str) -> list[tuple[str, int]]:
    out = []
    for i, item in enumerate(_list(value, path)):
        d = _Obj(item, f"{path}[{i}]")
        size = d.take("pageSize")
        if size is None:
            raise InvalidArgument(f"{d.field('pageSize')}: is required")
        size = _str(size, d.field("pageSize"))
        if len(size) < 3 or size[-2:] not in ("KB", "MB", "GB") or not size[:-2].isdigit():
            raise InvalidArgument(f"{d.field('pageSize')}: must look like '2MB' or '1GB', got {size!r}")
        limit = d.take("limit")
        if limit is None:
            raise InvalidArgument(f"{d.field('limit')}: is required")
        out.append((size, _int(limit, d.field("limit"), 0, INT64_MAX, True)))
        d.finish()
    return out


def _network(value: object, path: str) -> dict:
    o = _Obj(value, path)
    out: dict = {}
    v = o.take("classID")
    if v is not None:
        out["classID"] = _int(v, o.field("classID"), 0, UINT32_MAX)
    v = o.take("priorities")
    if v is not None:
        prios = []
        for i, item in enumerate(_list(v, o.field("priorities"))):
            d = _Obj(item, f"{o.field('priorities')}[{i}]")
            name = _str(d.take("name"), d.field("name"))
            if not name or "/" in name or " " in name or "\n" in name:
                raise InvalidArgument(f"{d.field('name')}: {name!r} is not an interface name")
            prios.append((name, _int(d.take("priority"), d.field("priority"), 0, UINT32_MAX)))
            d.finish()
        out["priorities"] = prios
    o.finish()
    return out


def _rdma(value: object, path: str) -> dict:
    o = _Obj(value, path)
    out: dict = {}
    for name in list(o.d):
        d = _Obj(o.take(name), o.field(name))
        if not name or any(c in name for c in " \n="):
            raise InvalidArgument(f"{o.field(name)}: {name!r} is not an RDMA device name")
        entry = {}
        for key in ("hcaHandles", "hcaObjects"):
            v = d.take(key)
            if v is not None:
                entry[key] = _int(v, d.field(key), 0, UINT32_MAX)
        d.finish()
        out[name] = entry
    o.finish()
    return out


def _unified(value: object, path: str) -> dict[str, str]:
    o = _Obj(value, path)
    out: dict[str, str] = {}
    for key in list(o.d):
        field = o.field(key)
        v = _str(o.take(key), field)
        if not key or "/" in key or key.startswith(".") or "." not in key:
            raise InvalidArgument(f"{field}: {key!r} is not a cgroup interface file name")
        out[key] = v
    o.finish()
    return out


_SECTIONS = (
    ("memory", _memory),
    ("cpu", _cpu),
    ("pids", _pids),
    ("blockIO", _block_io),
    ("devices", _devices),
    ("hugepageLimits", _hugepages),
    ("network", _network),
    ("rdma", _rdma),
    ("unified", _unified),
)


def parse(resources: object) -> dict:
    if resources is None:
        return {}
    o = _Obj(resources, FIELD)
    out: dict = {}
    for key, parse_section in _SECTIONS:
        v = o.take(key)
        if v is not None:
            out[key] = parse_section(v, o.field(key))
    o.finish()
    return out
