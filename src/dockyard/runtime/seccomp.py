"""Compiling the OCI `linux.seccomp` section into a classic-BPF seccomp program.

The semantics follow runc, because profiles are written for Docker and runc:
`SCMP_ACT_KILL` is KILL_THREAD, ERRNO and TRACE return EPERM unless `errnoRet`
says otherwise, rules whose action equals the default action are dropped
(libseccomp refuses them), syscall names this libseccomp does not know are
skipped, several conditions on the same argument become separate (OR-ed)
rules, and an absent `flags` means SECCOMP_FILTER_FLAG_SPEC_ALLOW when the
kernel has it.

The work is split in two so that a container start stays cheap:

* `validate` checks the section with plain Python and our own tables of
  actions, operators and architectures. It never touches libseccomp, so the
  CLI can reject a bad config before forking anything.
* `compile_filter` builds the program with pyseccomp (imported only here:
  importing it runs ldconfig and costs tens of milliseconds) and exports the
  raw BPF. The container init then only needs `linux.seccomp_set_filter`.
  With a cache directory the result is stored on disk, so later starts with
  the same section never load libseccomp at all.
"""

from __future__ import annotations

import logging
import os
import struct
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time

from dockyard.errors import InvalidArgument, Unsupported

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

# seccomp(2) filter flags (linux/seccomp.h).
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

# Filter return values (linux/seccomp.h); libseccomp's SCMP_ACT_* are the same
# numbers, so validation can resolve actions without loading libseccomp.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
_RET_DATA = 0x0000FFFF

_EPERM = 1
# The kernel refuses programs longer than this (BPF_MAXINSNS).
_BPF_MAXINSNS = 4096
_BPF_INSN_SIZE = 8

# Action name -> (return value, whether errnoRet applies). runc's table: plain
# KILL has meant KILL_THREAD since libseccomp grew KILL_PROCESS.
_ACTIONS: dict[str, tuple[int, bool]] = {
    "SCMP_ACT_KILL": (SECCOMP_RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_THREAD": (SECCOMP_RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (SECCOMP_RET_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (SECCOMP_RET_TRAP, False),
    "SCMP_ACT_ERRNO": (SECCOMP_RET_ERRNO, True),
    "SCMP_ACT_TRACE": (SECCOMP_RET_TRACE, True),
    "SCMP_ACT_ALLOW": (SECCOMP_RET_ALLOW, False),
    "SCMP_ACT_LOG": (SECCOMP_RET_LOG, False),
}
# Needs a supervisor process holding the listener fd; Dockyard has none yet.
_NOTIFY = "SCMP_ACT_NOTIFY"

# Operator name -> libseccomp's enum scmp_compare value.
_OPS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# Architecture name -> libseccomp token (the kernel's AUDIT_ARCH_* value, except
# X32, which libseccomp spells without the 64-bit bit to tell it from x86_64).
_EM_386, _EM_MIPS, _EM_PARISC, _EM_PPC, _EM_PPC64, _EM_S390 = 3, 8, 15, 20, 21, 22
_EM_ARM, _EM_X86_64, _EM_AARCH64, _EM_RISCV, _EM_LOONGARCH = 40, 62, 183, 243, 258
_A64, _ALE, _AN32 = 0x80000000, 0x40000000, 0x20000000
_ARCHES: dict[str, int] = {
    "SCMP_ARCH_X86": _EM_386 | _ALE,
    "SCMP_ARCH_X86_64": _EM_X86_64 | _A64 | _ALE,
    "SCMP_ARCH_X32": _EM_X86_64 | _ALE,
    "SCMP_ARCH_ARM": _EM_ARM | _ALE,
    "SCMP_ARCH_AARCH64": _EM_AARCH64 | _A64 | _ALE,
    "SCMP_ARCH_MIPS": _EM_MIPS,
    "SCMP_ARCH_MIPS64": _EM_MIPS | _A64,
    "SCMP_ARCH_MIPS64N32": _EM_MIPS | _A64 | _AN32,
    "SCMP_ARCH_MIPSEL": _EM_MIPS | _ALE,
    "SCMP_ARCH_MIPSEL64": _EM_MIPS | _A64 | _ALE,
    "SCMP_ARCH_MIPSEL64N32": _EM_MIPS | _A64 | _ALE | _AN32,
    "SCMP_ARCH_PPC": _EM_PPC,
    "SCMP_ARCH_PPC64": _EM_PPC64 | _A64,
    "SCMP_ARCH_PPC64LE": _EM_PPC64 | _A64 | _ALE,
    "SCMP_ARCH_S390": _EM_S390,
    "SCMP_ARCH_S390X": _EM_S390 | _A64,
    "SCMP_ARCH_PARISC": _EM_PARISC,
    "SCMP_ARCH_PARISC64": _EM_PARISC | _A64,
    "SCMP_ARCH_RISCV64": _EM_RISCV | _A64 | _ALE,
    "SCMP_ARCH_LOONGARCH64": _EM_LOONGARCH | _A64 | _ALE,
}

# Flag name -> (bit, minimum libseccomp API level that reports kernel support).
# TSYNC is not in the runtime spec but runc accepts it, so profiles carry it.
_FLAGS: dict[str, tuple[int, int]] = {
    "SECCOMP_FILTER_FLAG_TSYNC": (SECCOMP_FILTER_FLAG_TSYNC, 2),
    "SECCOMP_FILTER_FLAG_LOG": (SECCOMP_FILTER_FLAG_LOG, 3),
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (SECCOMP_FILTER_FLAG_SPEC_ALLOW, 4),
}
# Known to the kernel, but each only makes sense with a notify listener.
_LISTENER_FLAGS = ("SECCOMP_FILTER_FLAG_NEW_LISTENER", "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
                   "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")

_SECTION_FIELDS = frozenset({"defaultAction", "defaultErrnoRet", "architectures", "flags",
                             "listenerPath", "listenerMetadata", "syscalls"})
_SYSCALL_FIELDS = frozenset({"names", "action", "errnoRet", "args"})
_ARG_FIELDS = frozenset({"index", "value", "valueTwo", "op"})

_U64_MAX = (1 << 64) - 1
# libseccomp's __NR_SCMP_ERROR: the name is unknown on every architecture.
_NR_SCMP_ERROR = -1
# runc turns on libseccomp's binary-tree layout past this many syscall rules:
# linear search gets slow, and libseccomp <= 2.5.4 miscompiles the tree with none.
_OPTIMIZE_AFTER = 32

# Cache file: magic, seccomp() flags, program length, then the program.
_CACHE_MAGIC = b"DYSCMP01"
_CACHE_HEADER = struct.Struct("<8sII")
# Bump when the compiler's output for the same section changes.
_CACHE_FORMAT = "dockyard-seccomp-1"


class _Rule:
    """One validated `syscalls[]` entry, with its field path for error messages."""

    __slots__ = ("where", "names", "action", "args")

    def __init__(self, where: str, names: list[str], action: int,
                 args: list[tuple[int, int, int, int]]) -> None:
        self.where = where
        self.names = names
        self.action = action
        # (index, libseccomp operator, datum_a, datum_b)
        self.args = args


class _Plan:
    """The section reduced to numbers: everything libseccomp needs, checked."""

    __slots__ = ("default_action", "arches", "flags", "rules")

    def __init__(self, default_action: int, arches: list[tuple[str, int]],
                 flags: list[tuple[str, int, int]] | None, rules: list[_Rule]) -> None:
        self.default_action = default_action
        self.arches = arches
        # None: the section has no "flags", so runc's default applies.
        self.flags = flags
        self.rules = rules


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _action(section: Mapping, key: str, errno_key: str, where: str) -> int:
    """Resolve an action and its errnoRet to the filter return value."""
    name = section.get(key)
    path = f"{where}.{key}"
    if name is None:
        raise InvalidArgument(f"{path}: missing")
    if not isinstance(name, str):
        raise InvalidArgument(f"{path}: must be a string")
    if name == _NOTIFY:
        raise Unsupported(f'{path}: "{_NOTIFY}" (seccomp user notification) is not supported')
    if name not in _ACTIONS:
        raise InvalidArgument(f'{path}: unknown action "{name}"')
    ret, takes_errno = _ACTIONS[name]
    errno_ret = section.get(errno_key)
    if errno_ret is not None:
        if not _is_int(errno_ret) or not 0 <= errno_ret <= _RET_DATA:
            raise InvalidArgument(f"{where}.{errno_key}: must be an integer from 0 to {_RET_DATA}")
        if not takes_errno:
            # runc ignores it too; a profile that works there must work here.
            log.debug("%s.%s ignored for action %s", where, errno_key, name)
    if takes_errno:
        ret |= (_EPERM if errno_ret is None else errno_ret) & _RET_DATA
    return ret


def _string_list(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{path}: must be an array of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgument(f"{path}[{i}]: must be a string")
    return value


def _check_fields(obj: Mapping, allowed: frozenset[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise Unsupported(f"{where}.{key}: unknown or unsupported field")


def _arg(arg: object, where: str) -> tuple[int, int, int, int]:
    if not isinstance(arg, dict):
        raise InvalidArgument(f"{where}: must be an object")
    _check_fields(arg, _ARG_FIELDS, where)
    index = arg.get("index")
    if index is None:
        raise InvalidArgument(f"{where}.index: missing")
    if not _is_int(index) or not 0 <= index <= 5:
        raise InvalidArgument(f"{where}.index: must be an integer from 0 to 5 (got {index!r})")
    if "value" not in arg:
        raise InvalidArgument(f"{where}.value: missing")
    values = []
    for key in ("value", "valueTwo"):
        value = arg.get(key, 0)
        if not _is_int(value) or not 0 <= value <= _U64_MAX:
            raise InvalidArgument(f"{where}.{key}: must be an unsigned 64-bit integer")
        values.append(value)
    op = arg.get("op")
    if op is None:
        raise InvalidArgument(f"{where}.op: missing")
    if not isinstance(op, str):
        raise InvalidArgument(f"{where}.op: must be a string")
    if op not in _OPS:
        raise InvalidArgument(f'{where}.op: unknown operator "{op}"')
    # For MASKED_EQ the spec's value is the mask and valueTwo the expected
    # result, exactly libseccomp's datum_a and datum_b; other operators
    # ignore datum_b.
    return (index, _OPS[op], values[0], values[1])


def _plan(section: object, where: str = "linux.seccomp") -> _Plan:
    if not isinstance(section, dict):
        raise InvalidArgument(f"{where}: must be an object")
    _check_fields(section, _SECTION_FIELDS, where)

    default_action = _action(section, "defaultAction", "defaultErrnoRet", where)

    listener = section.get("listenerPath")
    if listener is not None and not isinstance(listener, str):
        raise InvalidArgument(f"{where}.listenerPath: must be a string")
    if listener:
        raise Unsupported(f"{where}.listenerPath: seccomp user notification is not supported")
    metadata = section.get("listenerMetadata")
    if metadata is not None and not isinstance(metadata, str):
        raise InvalidArgument(f"{where}.listenerMetadata: must be a string")

    arches: list[tuple[str, int]] = []
    raw_arches = section.get("architectures")
    if raw_arches is not None:
        for i, name in enumerate(_string_list(raw_arches, f"{where}.architectures")):
            if name not in _ARCHES:
                raise InvalidArgument(f'{where}.architectures[{i}]: unknown architecture "{name}"')
            arches.append((f"{where}.architectures[{i}]", _ARCHES[name]))

    flags: list[tuple[str, int, int]] | None = None
    raw_flags = section.get("flags")
    if raw_flags is not None:
        flags = []
        for i, name in enumerate(_string_list(raw_flags, f"{where}.flags")):
            path = f"{where}.flags[{i}]"
            if name in _LISTENER_FLAGS:
                raise Unsupported(f'{path}: "{name}" needs seccomp user notification, '
                                  "which is not supported")
            if name not in _FLAGS:
                raise InvalidArgument(f'{path}: unknown flag "{name}"')
            bit, api = _FLAGS[name]
            flags.append((path, bit, api))

    rules: list[_Rule] = []
    raw_syscalls = section.get("syscalls")
    if raw_syscalls is not None:
        if not isinstance(raw_syscalls, list):
            raise InvalidArgument(f"{where}.syscalls: must be an array")
        for i, call in enumerate(raw_syscalls):
            cwhere = f"{where}.syscalls[{i}]"
            if not isinstance(call, dict):
                raise InvalidArgument(f"{cwhere}: must be an object")
            _check_fields(call, _SYSCALL_FIELDS, cwhere)
            if "names" not in call:
                raise InvalidArgument(f"{cwhere}.names: missing")
            names = _string_list(call["names"], f"{cwhere}.names")
            for j, name in enumerate(names):
                if not name or "\0" in name:
                    raise InvalidArgument(f"{cwhere}.names[{j}]: not a syscall name: {name!r}")
            action = _action(call, "action", "errnoRet", cwhere)
            raw_args = call.get("args")
            args: list[tuple[int, int, int, int]] = []
            if raw_args is not None:
                if not isinstance(raw_args, list):
                    raise InvalidArgument(f"{cwhere}.args: must be an array")
                args = [_arg(a, f"{cwhere}.args[{k}]") for k, a in enumerate(raw_args)]
            rules.append(_Rule(cwhere, names, action, args))
    return _Plan(default_action, arches, flags, rules)


def validate(section: object) -> None:
    """Check a `linux.seccomp` section without loading libseccomp.

    Raises InvalidArgument (or its subclass Unsupported) naming the field.
    Syscall names are not checked: unknown ones are skipped at compile time,
    as runc does, so that one profile serves kernels old and new.
    """
    _plan(section)


def is_enabled(section: object) -> bool:
    """Whether the section asks for a filter at all.

    runc treats a section with neither a default action nor syscalls as
    "no seccomp"; `compile_filter` would reject it for the missing action.
    """
    if section is None:
        return False
    if not isinstance(section, dict):
        return True  # let compile_filter name the problem
    return bool(section.get("defaultAction")) or bool(section.get("syscalls"))


# --- building with libseccomp ----------------------------------------------------------


def _conditions(args: list[tuple[int, int, int, int]]) -> list[list[tuple[int, int, int, int]]]:
    """Group one entry's conditions into the rules to add, as runc does.

    libseccomp ANDs the conditions of one rule but (before 2.5) refused two on
    the same argument; runc, and so every profile in the wild, reads repeated
    indexes as alternatives: one rule per condition, OR-ed.
    """
    if not args:
        return [[]]
    indexes = [a[0] for a in args]
    if len(set(indexes)) != len(indexes):
        return [[a] for a in args]
    return [args]


def _build(plan: _Plan) -> tuple[bytes, int]:
    """Compile a checked plan with libseccomp; returns (program, seccomp() flags)."""
    import pyseccomp as sc  # deferred: costly to import, see the module docstring

    try:
        filt = sc.SyscallFilter(plan.default_action)
    except OSError as e:
        raise Unsupported(f"linux.seccomp.defaultAction: libseccomp or the kernel refuses "
                          f"action {plan.default_action:#x}: {e.strerror}") from None

    for where, arch in plan.arches:
        try:
            # libseccomp reports "present" as 0 and "absent" as -EEXIST; the
            # native arch is always present, and profiles often list it.
            if not filt.exist_arch(arch):
                filt.add_arch(arch)
        except OSError as e:
            raise Unsupported(f"{where}: this libseccomp cannot filter that architecture: "
                              f"{e.strerror}") from None

    # Only affects libseccomp's own seccomp_load(); we load the raw program.
    filt.set_attr(sc.Attr.CTL_NNP, 0)

    added = 0
    for rule in plan.rules:
        if rule.action == plan.default_action:
            # libseccomp rejects a rule that changes nothing; runc skips it.
            log.debug("%s: same action as the default, skipped", rule.where)
            continue
        for j, name in enumerate(rule.names):
            nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if nr == _NR_SCMP_ERROR:
                log.debug("%s.names[%d]: syscall %r unknown to libseccomp, skipped",
                          rule.where, j, name)
                continue
            for conds in _conditions(rule.args):
                try:
                    filt.add_rule(rule.action, nr, *(sc.Arg(*c) for c in conds))
                except OSError as e:
                    raise InvalidArgument(f"{rule.where}.names[{j}]: libseccomp refuses the rule "
                                          f"for {name!r}: {e.strerror}") from None
            added += 1

    if added > _OPTIMIZE_AFTER:
        try:
            filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
        except OSError as e:
            log.debug("seccomp binary-tree optimisation unavailable: %s", e.strerror)

    flags = _flags(plan, sc)
    bpf = _export(filt)
    count = len(bpf) // _BPF_INSN_SIZE
    if not bpf or len(bpf) % _BPF_INSN_SIZE:
        raise InvalidArgument(f"linux.seccomp: libseccomp produced a malformed program "
                              f"({len(bpf)} bytes)")
    if count > _BPF_MAXINSNS:
        raise InvalidArgument(f"linux.seccomp: the filter compiles to {count} instructions, "
                              f"more than the kernel's limit of {_BPF_MAXINSNS}")
    log.debug("seccomp filter compiled: %d rules, %d instructions, flags %#x",
              added, count, flags)
    return bpf, flags


def _api_level(sc: object) -> int:
    """libseccomp's view of what the running kernel supports (0 if it cannot say)."""
    try:
        return int(sc.get_api())  # type: ignore[attr-defined]
    except (NotImplementedError, AttributeError, OSError):
        return 0


def _flags(plan: _Plan, sc: object) -> int:
    if plan.flags is None:
        # runc's default when the spec is silent: let the container opt out of
        # speculative-store-bypass mitigation, as it would without seccomp.
        return SECCOMP_FILTER_FLAG_SPEC_ALLOW if _api_level(sc) >= 4 else 0
    flags = 0
    level = _api_level(sc) if plan.flags else 0
    for where, bit, api in plan.flags:
        if level < api:
            raise Unsupported(f"{where}: this kernel or libseccomp does not support the flag")
        flags |= bit
    return flags


def _export(filt: object) -> bytes:
    """The program as libseccomp writes it for seccomp(): host-endian sock_filter[]."""
    # A memory file, not a pipe: a large program would fill a pipe's buffer
    # and block the writer, which is us.
    fd = os.memfd_create("dockyard-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b", buffering=0) as fh:
        filt.export_bpf(fh)  # type: ignore[attr-defined]
        fh.seek(0)
        return fh.read()


# --- the cache -------------------------------------------------------------------------


def _cache_key(section: dict) -> str:
    # Imported here: together they cost milliseconds the CLI need not pay
    # when no cache is asked for.
    import hashlib
    import json

    canonical = json.dumps(section, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # The kernel release is in the key because runc's default flags depend on
    # what the running kernel supports.
    salt = f"{_CACHE_FORMAT}\0{os.uname().release}\0"
    return hashlib.sha256((salt + canonical).encode()).hexdigest()


def _cache_read(path: str) -> tuple[bytes, int] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("seccomp cache %s unreadable, recompiling: %s", path, e)
        return None
    size = _CACHE_HEADER.size
    if len(data) >= size:
        magic, flags, length = _CACHE_HEADER.unpack_from(data)
        bpf = data[size:]
        if magic == _CACHE_MAGIC and length == len(bpf) and bpf and length % _BPF_INSN_SIZE == 0:
            return bpf, flags
    log.warning("seccomp cache %s is corrupt, recompiling", path)
    return None


def _cache_write(path: str, bpf: bytes, flags: int) -> None:
    directory = os.path.dirname(path)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_CACHE_HEADER.pack(_CACHE_MAGIC, flags, len(bpf)) + bpf)
            # Readers either see the old name absent or the whole new file.
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        # A cache that cannot be written only costs time on the next start.
        log.warning("cannot write seccomp cache %s: %s", path, e)


def compile_filter(section: dict, cache_dir: str | None = None) -> tuple[bytes, int]:
    """Compile an OCI `linux.seccomp` section for `linux.seccomp_set_filter`.

    Returns the classic-BPF program (host-endian `struct sock_filter` array)
    and the flags to pass to seccomp(SECCOMP_SET_MODE_FILTER). Raises
    InvalidArgument naming the field for a malformed section, Unsupported
    for what Dockyard or this host cannot do (user notification, an
    architecture libseccomp lacks).

    With `cache_dir`, results are stored there keyed by a hash of the
    section, and a hit returns without importing pyseccomp.
    """
    plan = _plan(section)
    if cache_dir is None:
        return _build(plan)
    try:
        key = _cache_key(section)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"linux.seccomp: not plain JSON data: {e}") from None
    path = os.path.join(cache_dir, f"{key}.bpf")
    cached = _cache_read(path)
    if cached is not None:
        log.debug("seccomp filter from cache %s", path)
        return cached
    bpf, flags = _build(plan)
    _cache_write(path, bpf, flags)
    return bpf, flags
