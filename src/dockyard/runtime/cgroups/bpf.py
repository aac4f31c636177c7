"""Device access control on cgroup v2: an eBPF BPF_PROG_TYPE_CGROUP_DEVICE program.

Imported only when a v2 cgroup gets device rules, because it loads ctypes.
The program is generated from the devices.emulate() state, so v1 and v2
enforce identical policies. Programs are attached with BPF_F_ALLOW_MULTI:
every program on the cgroup and its ancestors must allow an access, so ours
can only ever narrow what a parent (systemd, say) permits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from .devices import Exceptions

# bpf() syscall numbers; the ABI has no generic number, so an unknown
# architecture cannot use device rules on cgroup v2.
_NR_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = (access << 16) | type
_DEV_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK / _CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD / _READ / _WRITE

# Opcodes used by the generator (linux/bpf_common.h, linux/bpf.h).
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_MOV64_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_AND64_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
_RSH64_K = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_EXIT = 0x95  # BPF_JMP | BPF_EXIT

_INSN = struct.Struct("<BBhi")
_SKIP = object()  # placeholder offset: jump past the end of the current rule block


def available() -> bool:
    return os.uname().machine in _NR_BPF


def _access_bits(access: str) -> int:
    bits = 0
    for c in access:
        bits |= _ACCESS[c]
    return bits


def program(default_allow: bool, exceptions: Exceptions) -> list[tuple[int, int, int, object, int]]:
    """The program as (opcode, dst, src, offset, imm) tuples.

    Registers: r2 = device type, r3 = requested access bits, r4 = major,
    r5 = minor; r1 is scratch once the context is read. Each exception is one
    block that falls through to the next block when it does not apply.
    """
    insns: list[tuple[int, int, int, object, int]] = [
        (_LDX_W, 2, 1, 0, 0),
        (_MOV64_X, 3, 2, 0, 0),
        (_AND64_K, 2, 0, 0, 0xFFFF),
        (_RSH64_K, 3, 0, 0, 16),
        (_LDX_W, 4, 1, 4, 0),
        (_LDX_W, 5, 1, 8, 0),
    ]
    for (kind, major, minor), access in exceptions.items():
        bits = _access_bits(access)
        block: list[tuple[int, int, int, object, int]] = [(_JNE_K, 2, 0, _SKIP, _DEV_TYPE[kind])]
        if major != -1:
            block.append((_JNE_K, 4, 0, _SKIP, major))
        if minor != -1:
            block.append((_JNE_K, 5, 0, _SKIP, minor))
        block.append((_MOV64_X, 1, 3, 0, 0))
        if default_allow:
            # A deny exception applies if it shares any requested access bit.
            block.append((_AND64_K, 1, 0, 0, bits))
            block.append((_JEQ_K, 1, 0, _SKIP, 0))
            block.append((_MOV64_K, 0, 0, 0, 0))
        else:
            # An allow exception applies only if it covers every requested bit.
            block.append((_AND64_K, 1, 0, 0, ~bits))
            block.append((_JNE_K, 1, 0, _SKIP, 0))
            block.append((_MOV64_K, 0, 0, 0, 1))
        block.append((_EXIT, 0, 0, 0, 0))
        for i, (code, dst, src, off, imm) in enumerate(block):
            if off is _SKIP:
                block[i] = (code, dst, src, len(block) - i - 1, imm)
        insns += block
    insns.append((_MOV64_K, 0, 0, 0, 1 if default_allow else 0))
    insns.append((_EXIT, 0, 0, 0, 0))
    return insns


def encode(insns: list[tuple[int, int, int, object, int]]) -> bytes:
    return b"".join(_INSN.pack(code, (src << 4) | dst, off, imm) for code, dst, src, off, imm in insns)


_libc = None


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf() number unknown for {os.uname().machine}")
    ret = _libc.syscall(nr, cmd, attr, len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _attr() -> ctypes.Array:
    # Zero-filled: the kernel requires every byte past a command's fields to be 0.
    return ctypes.create_string_buffer(128)


def load(insns: list[tuple[int, int, int, object, int]]) -> int:
    """BPF_PROG_LOAD; returns the program fd. Verifier output goes into the error."""
    code = encode(insns)
    code_buf = ctypes.create_string_buffer(code, len(code))
    license_buf = ctypes.create_string_buffer(b"Apache")
    for log_level in (0, 1):
        log_buf = ctypes.create_string_buffer(65536 if log_level else 1)
        attr = _attr()
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            BPF_PROG_TYPE_CGROUP_DEVICE,
            len(insns),
            ctypes.addressof(code_buf),
            ctypes.addressof(license_buf),
            log_level,
            len(log_buf) if log_level else 0,
            ctypes.addressof(log_buf) if log_level else 0,
        )
        attr[48:60] = b"dockyard_dev"  # prog_name, shown by bpftool
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            if e.errno == errno.EPERM and log_level == 0 and _raise_memlock():
                continue
            if log_level == 1 or e.errno not in (errno.EINVAL, errno.EACCES):
                log = log_buf.value.decode(errors="replace").strip()
                raise OSError(e.errno, f"{e.strerror}{': ' + log if log else ''}") from None
    raise AssertionError("unreachable")


def _raise_memlock() -> bool:
    """Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK; lift it if allowed."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        return False
    return True


def _query(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = _attr()
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids))
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[: min(count, len(ids))])


def attached(cgroup_dir: str) -> list[int]:
    """Ids of the device programs attached directly to a cgroup."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _query(fd)
    finally:
        os.close(fd)


def install(cgroup_dir: str, default_allow: bool, exceptions: Exceptions) -> None:
    """Attach a program enforcing the state, replacing the ones attached before.

    The new program goes in before the old ones come out: while both are
    attached the intersection applies, which is never looser than either.
    """
    prog_fd = load(program(default_allow, exceptions))
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            old = _query(cg_fd)
            attr = _attr()
            struct.pack_into("<IIII", attr, 0, cg_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
            _bpf(BPF_PROG_ATTACH, attr)
            for prog_id in old:
                _detach(cg_fd, prog_id)
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)


def _detach(cg_fd: int, prog_id: int) -> None:
    attr = _attr()
    struct.pack_into("<I", attr, 0, prog_id)
    try:
        old_fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as e:
        if e.errno == errno.ENOENT:  # detached meanwhile
            return
        raise
    try:
        attr = _attr()
        struct.pack_into("<III", attr, 0, cg_fd, old_fd, BPF_CGROUP_DEVICE)
        try:
            _bpf(BPF_PROG_DETACH, attr)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
    finally:
        os.close(old_fd)
