"""Device access rules: one model of the v1 devices controller for both drivers.

v1 writes OCI rules to devices.allow/devices.deny and the kernel keeps a
default behaviour plus a list of exceptions. cgroup v2 has no such controller,
so emulate() replays the same writes on a model of that kernel state and the
v2 driver compiles the result into an eBPF program (bpf.py). Both drivers
therefore enforce exactly the same policy for the same rules.
"""

from __future__ import annotations

# (allow, type "a"/"b"/"c", major or -1 for any, minor or -1, access subset of "rwm")
Rule = tuple[bool, str, int, int, str]
# (type "b"/"c", major or -1, minor or -1) -> access subset of "rwm"
Exceptions = dict[tuple[str, int, int], str]


def expand(rules: list[Rule]) -> list[Rule]:
    """Rewrite rules so the v1 kernel reads each one as the OCI spec means it.

    The kernel treats any line starting with "a" as "every device, all access"
    and resets its exception list, whatever numbers follow. Only a true
    wildcard rule keeps that meaning; a narrower type-"a" rule becomes a block
    and a char rule.
    """
    out: list[Rule] = []
    for allow, kind, major, minor, access in rules:
        if kind == "a" and (major != -1 or minor != -1 or access != "rwm"):
            out.append((allow, "b", major, minor, access))
            out.append((allow, "c", major, minor, access))
        elif kind == "a":
            out.append((allow, "a", -1, -1, "rwm"))
        else:
            out.append((allow, kind, major, minor, access))
    return out


def _num(n: int) -> str:
    return "*" if n == -1 else str(n)


def v1_line(rule: Rule) -> tuple[str, str]:
    """The file and line that applies one expanded rule on cgroup v1."""
    allow, kind, major, minor, access = rule
    name = "devices.allow" if allow else "devices.deny"
    if kind == "a":
        return name, "a"
    return name, f"{kind} {_num(major)}:{_num(minor)} {access}"


def _merge(a: str, b: str) -> str:
    return "".join(c for c in "rwm" if c in a or c in b)


def _minus(a: str, b: str) -> str:
    return "".join(c for c in "rwm" if c in a and c not in b)


def emulate(expanded: list[Rule], default_allow: bool = False,
            exceptions: Exceptions | None = None) -> tuple[bool, Exceptions]:
    """Apply expanded rules to a devices-controller state, as the v1 kernel does.

    A rule that agrees with the default behaviour removes access from an
    exception with exactly the same type and numbers; one that disagrees adds
    an exception or widens the existing one. A type-"a" rule resets both.
    """
    exc: Exceptions = dict(exceptions or {})
    for allow, kind, major, minor, access in expanded:
        if kind == "a":
            default_allow, exc = allow, {}
            continue
        key = (kind, major, minor)
        if allow == default_allow:
            left = _minus(exc.get(key, ""), access)
            if left:
                exc[key] = left
            else:
                exc.pop(key, None)
        else:
            exc[key] = _merge(exc.get(key, ""), access)
    return default_allow, exc


def allows(default_allow: bool, exc: Exceptions, kind: str, major: int, minor: int, access: str) -> bool:
    """Whether the kernel would permit one access under this state.

    Deny-by-default needs a single exception that covers every requested
    access bit; allow-by-default refuses if any exception overlaps them.
    """
    for (ekind, emajor, eminor), eaccess in exc.items():
        if ekind != kind or emajor not in (-1, major) or eminor not in (-1, minor):
            continue
        if default_allow and set(access) & set(eaccess):
            return False
        if not default_allow and not set(access) - set(eaccess):
            return True
    return default_allow


def parse_v1_list(text: str) -> tuple[bool, Exceptions] | None:
    """Read devices.list into a state; None when it cannot tell the exceptions.

    In allow-by-default mode the kernel prints only "a *:* rwm" and hides the
    deny exceptions, so that state is unknown to us.
    """
    exc: Exceptions = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        kind, numbers, access = parts
        if kind == "a":
            return None
        major, _, minor = numbers.partition(":")
        key = (kind, -1 if major == "*" else int(major), -1 if minor == "*" else int(minor))
        exc[key] = _merge(exc.get(key, ""), access)
    return False, exc


def v1_transition(current: tuple[bool, Exceptions] | None, target: tuple[bool, Exceptions]) -> list[tuple[str, str]]:
    """Writes that take a live v1 cgroup to the target state.

    Resetting with "a" would briefly cut a running container off its devices,
    so between two deny-by-default states only the differences are written,
    new grants first.
    """
    default_allow, exc = target
    lines: list[tuple[str, str]] = []
    if current is None or current[0] != default_allow or default_allow:
        lines.append(("devices.allow" if default_allow else "devices.deny", "a"))
        verb = "devices.deny" if default_allow else "devices.allow"
        for (kind, major, minor), access in exc.items():
            lines.append((verb, f"{kind} {_num(major)}:{_num(minor)} {access}"))
        return lines
    for (kind, major, minor), access in exc.items():
        lines.append(("devices.allow", f"{kind} {_num(major)}:{_num(minor)} {access}"))
    for key, access in current[1].items():
        extra = _minus(access, exc.get(key, ""))
        if extra:
            kind, major, minor = key
            lines.append(("devices.deny", f"{kind} {_num(major)}:{_num(minor)} {extra}"))
    return lines
