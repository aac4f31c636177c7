"""Container logs as dockerd keeps them: the json-file driver, the none driver, and
the reading side behind `GET /containers/{id}/logs` (no HTTP in here).

The file format is dockerd's byte for byte, so tools that read
/var/lib/docker/containers/<id>/<id>-json.log (promtail, fluent-bit, `jq`) read ours:

    {"log":"text\\n","stream":"stdout","time":"2026-11-29T02:13:56.123456789Z"}

one object per line, the time in Go's RFC 3339 with nanoseconds (trailing zeros
dropped, as time.RFC3339Nano formats). A line longer than 16 KiB is cut into
16 KiB records without "\\n" (dockerd's partial messages); a reader concatenates
them back. Rotation follows daemon/logger/loggerutils: when the file has reached
max-size, it becomes <file>.1 (older ones shift up to <file>.<max-file - 1>, gzipped
with `compress=true`) and a new file is started.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import datetime as _dt
import gzip
import io
import json
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

from dockyard.errors import InvalidArgument
from dockyard.image.store import parse_go_duration, parse_go_time

JSON_FILE = "json-file"
NONE = "none"
DRIVERS = (JSON_FILE, NONE)

# dockerd's copier cuts lines at its buffer size; a longer line becomes several
# records, the last one carrying the "\n".
MAX_LINE = 16 * 1024

STREAMS = ("stdout", "stderr")
_STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}

# json-file's accepted options (jsonfilelog.ValidateLogOpt); labels/env/tag only add
# "attrs" that Dockyard does not record yet, but are accepted as dockerd does.
_JSON_FILE_OPTS = ("max-file", "max-size", "compress", "labels", "labels-regex", "env",
                   "env-regex", "tag")
_LOG_MODES = ("", "blocking", "non-blocking")

_POLL_INTERVAL = 0.05
_READ_BLOCK = 64 * 1024

NS = 1_000_000_000

StopSignal = Union[threading.Event, Callable[[], bool], None]


class ReadNotSupported(InvalidArgument):
    """The container's logging driver keeps nothing to read (dockerd: 400)."""

    def __init__(self) -> None:
        super().__init__("configured logging driver does not support reading")


# -- options --------------------------------------------------------------------------

@dataclass(frozen=True)
class LogConfig:
    """A container's HostConfig.LogConfig, validated and parsed."""

    driver: str = JSON_FILE
    max_size: int = -1  # bytes; -1: never rotate
    max_file: int = 1
    compress: bool = False
    opts: tuple[tuple[str, str], ...] = ()

    @property
    def readable(self) -> bool:
        return self.driver == JSON_FILE


_SIZE_RE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?")
_DECIMAL = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}


def parse_size(text: str) -> int:
    """go-units FromHumanSize, which dockerd uses for max-size: decimal units
    ("10m" is 10,000,000 bytes), an optional "i" and "b" ignored."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise InvalidArgument(f"invalid size: '{text}'")
    try:
        size = float(m.group(1))
    except ValueError:
        # Go's ParseFloat refuses "1.2.3", which the pattern lets through.
        raise InvalidArgument(f'strconv.ParseFloat: parsing "{m.group(1)}": invalid syntax') from None
    if m.group(2):
        size *= _DECIMAL[m.group(2).lower()]
    return int(size)


def _go_atoi(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise InvalidArgument(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _go_parse_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidArgument(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_log_config(driver: str | None, opts: Mapping[str, str] | None = None) -> LogConfig:
    """Validate DRIVER and its OPTS with dockerd's checks and texts (logger.ValidateLogOpts,
    then jsonfilelog.New's parsing, which dockerd only reaches at start: Dockyard
    refuses bad values at create already, with the same words)."""
    driver = driver or JSON_FILE
    opts = dict(opts or {})
    if driver == NONE:
        # dockerd skips validation for "none": it reads no option.
        return LogConfig(driver=NONE, opts=tuple(sorted(opts.items())))
    if driver not in DRIVERS:
        raise InvalidArgument(f"logger: no log driver named '{driver}' is registered")
    mode = opts.pop("mode", "")
    if mode not in _LOG_MODES:
        raise InvalidArgument(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in opts:
        value = opts.pop("max-buffer-size")
        if mode != "non-blocking":
            raise InvalidArgument("logger: max-buffer-size option is only supported with 'mode=non-blocking'")
        try:
            parse_size(value)
        except InvalidArgument as e:
            raise InvalidArgument(f"error parsing option max-buffer-size: {e}") from None
    for key in opts:
        if key not in _JSON_FILE_OPTS:
            raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    max_size = -1
    if "max-size" in opts:
        max_size = parse_size(opts["max-size"])
        if max_size <= 0:
            raise InvalidArgument("max-size must be a positive number")
    max_file = 1
    if "max-file" in opts:
        max_file = _go_atoi(opts["max-file"])
        if max_file < 1:
            raise InvalidArgument("max-file cannot be less than 1")
    compress = False
    if "compress" in opts:
        compress = _go_parse_bool(opts["compress"])
        if compress and (max_file == 1 or max_size == -1):
            raise InvalidArgument(
                "compress cannot be true when max-file is less than 2 or max-size is not set")
    return LogConfig(driver=JSON_FILE, max_size=max_size, max_file=max_file, compress=compress,
                     opts=tuple(sorted(opts.items())))


def log_path(container_dir: str | os.PathLike[str], container_id: str) -> Path:
    """Where dockerd keeps a container's json-file log."""
    return Path(container_dir) / f"{container_id}-json.log"


# -- times ----------------------------------------------------------------------------

def format_time_ns(ns: int, *, fixed: bool = False) -> str:
    """NS (unix nanoseconds) in UTC as Go's time.RFC3339Nano (trailing zeros of the
    fraction dropped: the log file) or, FIXED, jsonmessage.RFC3339NanoFixed (always
    nine digits: the `timestamps` prefix of the API)."""
    sec, nanos = divmod(ns, NS)
    out = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if fixed:
        return f"{out}.{nanos:09d}Z"
    if nanos:
        out += ("." + f"{nanos:09d}").rstrip("0")
    return out + "Z"


def parse_time_ns(text: str) -> int | None:
    """An RFC 3339 time to unix nanoseconds, exactly; None when TEXT is not one."""
    t = parse_go_time(text)
    if t is None:
        return None
    return t.seconds * NS + t.nanos


_UNIX_RE = re.compile(r"(-?\d+)(?:\.(\d+))?")


def parse_docker_time_ns(text: str, now: float | None = None) -> int:
    """A since/until value to unix nanoseconds: what the API takes ("1700000000",
    "1700000000.123456789", as timetypes.ParseTimestamps) and what the docker CLI
    accepts before converting (RFC 3339, a date, or a Go duration before now)."""
    text = text.strip()
    m = _UNIX_RE.fullmatch(text)
    if m is not None:
        frac = (m.group(2) or "")[:9].ljust(9, "0")
        sec = int(m.group(1))
        return sec * NS + (-int(frac) if text.startswith("-") else int(frac))
    ns = parse_time_ns(text)
    if ns is not None:
        return ns
    if text and text != "0":
        d = parse_go_duration(text)
        if d is not None:
            base = time.time() if now is None else now
            return int(round((base - d) * NS))
    # Dates and times without a zone are the daemon's local time, as the CLI reads them.
    for layout in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            parsed = _dt.datetime.strptime(text, layout)
        except ValueError:
            continue
        local = parsed.astimezone()
        return int(local.timestamp()) * NS + parsed.microsecond * 1000
    raise InvalidArgument(f"failed to parse value as time or duration: \"{text}\"")


def parse_docker_time(text: str, now: float | None = None) -> float:
    """parse_docker_time_ns in seconds (float: sub-microsecond precision is lost; pass
    the text itself to read_logs to filter to the nanosecond)."""
    return parse_docker_time_ns(text, now) / NS


def _to_ns(value: float | int | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_docker_time_ns(value)
    if isinstance(value, int):
        return value * NS
    return int(round(value * NS))


# -- records --------------------------------------------------------------------------

@dataclass(frozen=True)
class LogRecord:
    """One record of the log: DATA ends with "\\n" unless it is a partial record (a
    piece of a longer line, or the last unterminated output of the container)."""

    stream: str
    time_ns: int
    data: bytes

    @property
    def timestamp(self) -> float:
        return self.time_ns / NS

    @property
    def partial(self) -> bool:
        return not self.data.endswith(b"\n")

    def __iter__(self) -> Iterator[object]:
        # Unpacks as (stream, timestamp, data).
        return iter((self.stream, self.timestamp, self.data))


def _go_replace(err: UnicodeError) -> tuple[str, int]:
    # Go's utf8.DecodeRune reports each byte of an invalid sequence on its own, so
    # one replacement per byte; a lone surrogate marks it so that only these (not
    # a genuine U+FFFD in the output) become the escape "\ufffd".
    assert isinstance(err, UnicodeDecodeError)
    return "\udc80", err.start + 1


codecs.register_error("dockyard-go-json", _go_replace)

# ffjsonWriteJSONBytesAsString, dockerd's encoder for "log": Go's HTML-safe escaping
# (<, >, & as \u00XX), only \n \r \\ \" with short escapes (a tab is \u0009).
_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in range(0x20)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\\"): "\\\\", ord('"'): '\\"',
                 ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                 0x2028: "\\u2028", 0x2029: "\\u2029", 0xDC80: "\\ufffd"})


def _json_string(data: bytes) -> bytes:
    text = data.decode("utf-8", "dockyard-go-json")
    return b'"' + text.translate(_ESCAPES).encode("utf-8") + b'"'


def encode_record(stream: str, data: bytes, time_ns: int) -> bytes:
    """One line of the json-file log, exactly as dockerd's marshalMessage writes it
    (DATA already carries its "\\n" unless partial)."""
    out = b"{"
    if data:
        out += b'"log":' + _json_string(data) + b","
    out += b'"stream":' + _json_string(stream.encode()) + b","
    return out + b'"time":"' + format_time_ns(time_ns).encode() + b'"}\n'


def decode_record(line: bytes) -> LogRecord | None:
    """The record of one log line; None for a line that is not one (torn by a crash,
    or foreign), which readers skip rather than fail the whole read."""
    try:
        doc = json.loads(line)
        text = doc.get("log", "")
        ns = parse_time_ns(doc["time"])
        stream = doc.get("stream", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if ns is None or not isinstance(text, str):
        return None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates from a "\ud800" escape: Go decodes them as U+FFFD.
        data = re.sub("[\ud800-\udfff]", "\ufffd", text).encode("utf-8")
    return LogRecord(stream, ns, data)


# -- writing --------------------------------------------------------------------------

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _gzip_with_extra(src: Path, dst: Path, extra: bytes) -> None:
    """Gzip SRC to DST with EXTRA in the header's extra field, as dockerd stores the
    last timestamp of a rotated file there (Python's gzip cannot write one)."""
    tmp = dst.with_name(dst.name + ".tmp")
    crc, size = 0, 0
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        flags = 0x04 if extra else 0  # FEXTRA
        header = b"\x1f\x8b\x08" + bytes([flags]) + int(time.time()).to_bytes(4, "little") + b"\x00\xff"
        if extra:
            header += len(extra).to_bytes(2, "little") + extra
        fout.write(header)
        while chunk := fin.read(_READ_BLOCK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            fout.write(comp.compress(chunk))
        fout.write(comp.flush())
        fout.write(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)


class LogWriter:
    """The json-file writer of one container (or a sink for the none driver).

    write() takes the container's output as it comes, in arbitrary pieces; whole
    lines become records, the rest waits for its newline (per stream, so stdout and
    stderr never mix within a line). Records of one write() reach the file in one
    write(2) of whole lines, so a crash leaves at most the last line torn, and the
    next writer cuts that off before appending. No fsync per line (a chatty
    container would crawl); close() syncs.
    """

    def __init__(self, path: str | os.PathLike[str], opts: LogConfig | Mapping[str, str] | None = None,
                 *, driver: str | None = None) -> None:
        if isinstance(opts, LogConfig):
            self.config = opts
        else:
            self.config = parse_log_config(driver, opts)
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending: dict[str, bytearray] = {s: bytearray() for s in STREAMS}
        # dockerd stamps every piece of a long line with the time of its first piece.
        self._partial_ts: dict[str, int | None] = {s: None for s in STREAMS}
        self._fd = -1
        self._size = 0
        self._last_ns = 0
        self._closed = False
        if self.config.driver == JSON_FILE:
            self._open(truncate=False)

    # The file ------------------------------------------------------------------------

    def _open(self, *, truncate: bool) -> None:
        # Read access too: a torn last line left by a crash is found and cut off.
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        if truncate:
            flags |= os.O_TRUNC
        fd = os.open(self.path, flags, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size and not truncate:
                size = self._cut_torn_tail(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._size = fd, size

    @staticmethod
    def _cut_torn_tail(fd: int, size: int) -> int:
        """Drop an unterminated last line (a crash mid-write) so the next record does
        not get glued to it; the size of what is kept."""
        if os.pread(fd, 1, size - 1) == b"\n":
            return size
        pos = size
        while pos > 0:
            start = max(0, pos - _READ_BLOCK)
            block = os.pread(fd, pos - start, start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                os.ftruncate(fd, keep)
                return keep
            pos = start
        os.ftruncate(fd, 0)
        return 0

    def _rotate(self) -> None:
        """dockerd's rotation: shift <file>.N up, the file becomes <file>.1 (gzipped
        with compress), a new empty file takes its place; max-file=1 truncates."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        cfg = self.config
        name = str(self.path)
        if cfg.max_file >= 2:
            ext = ".gz" if cfg.compress else ""
            try:
                os.unlink(f"{name}.{cfg.max_file - 1}{ext}")
            except FileNotFoundError:
                pass
            for i in range(cfg.max_file - 1, 1, -1):
                try:
                    os.rename(f"{name}.{i - 1}{ext}", f"{name}.{i}{ext}")
                except FileNotFoundError:
                    pass
            os.rename(name, f"{name}.1")
            if cfg.compress:
                meta = json.dumps({"lastTime": format_time_ns(self._last_ns)},
                                  separators=(",", ":")).encode()
                _gzip_with_extra(Path(f"{name}.1"), Path(f"{name}.1.gz"), meta)
                os.unlink(f"{name}.1")
        self._open(truncate=True)

    # Records -------------------------------------------------------------------------

    def _records(self, stream: str, data: bytes, ts_ns: int, final: bool) -> list[tuple[bytes, int]]:
        """Cut the pending output of STREAM plus DATA into records, as dockerd's copier."""
        buf = self._pending[stream]
        buf += data
        out: list[tuple[bytes, int]] = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            end = len(buf) if nl < 0 else nl
            # Whole 16 KiB pieces of a long line go out first, without their newline.
            while end - pos >= MAX_LINE:
                if self._partial_ts[stream] is None:
                    self._partial_ts[stream] = ts_ns
                out.append((bytes(buf[pos:pos + MAX_LINE]), self._partial_ts[stream]))  # type: ignore[arg-type]
                pos += MAX_LINE
            if nl < 0:
                break
            stamp = self._partial_ts[stream]
            out.append((bytes(buf[pos:nl + 1]), ts_ns if stamp is None else stamp))
            self._partial_ts[stream] = None
            pos = nl + 1
        if final and pos < len(buf):
            # Output that never got its newline: dockerd logs it as a partial record.
            stamp = self._partial_ts[stream]
            out.append((bytes(buf[pos:]), ts_ns if stamp is None else stamp))
            self._partial_ts[stream] = None
            pos = len(buf)
        del buf[:pos]
        return out

    def _emit(self, stream: str, records: list[tuple[bytes, int]]) -> None:
        cfg = self.config
        batch: list[bytes] = []
        batched = 0
        for data, ns in records:
            line = encode_record(stream, data, ns)
            # dockerd checks the size before each record: a file ends at or just past
            # max-size, never cutting a record.
            if cfg.max_size > 0 and self._size + batched >= cfg.max_size:
                if batch:
                    _write_all(self._fd, b"".join(batch))
                    self._size += batched
                    batch, batched = [], 0
                self._rotate()
            batch.append(line)
            batched += len(line)
            self._last_ns = ns
        if batch:
            _write_all(self._fd, b"".join(batch))
            self._size += batched

    def write(self, stream: str, data: bytes, ts: float | None = None, *, ts_ns: int | None = None) -> None:
        """Log DATA, output of STREAM ("stdout" or "stderr") read at TS (unix seconds;
        TS_NS in nanoseconds for exact times; default now)."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        if ts_ns is None:
            ts_ns = time.time_ns() if ts is None else int(round(ts * NS))
        with self._lock:
            if self._closed:
                raise ValueError("log writer is closed")
            if self.config.driver != JSON_FILE:
                return
            records = self._records(stream, data, ts_ns, final=False)
            if records:
                self._emit(stream, records)

    def flush(self, ts: float | None = None) -> None:
        """Log what waits for a newline as partial records (the container is gone)."""
        ts_ns = time.time_ns() if ts is None else int(round(ts * NS))
        with self._lock:
            if self._closed or self.config.driver != JSON_FILE:
                return
            for stream in STREAMS:
                records = self._records(stream, b"", ts_ns, final=True)
                if records:
                    self._emit(stream, records)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        with self._lock:
            self._closed = True
            if self._fd >= 0:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = -1

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading --------------------------------------------------------------------------

@dataclass
class _LogFile:
    """One file of the log, oldest first: rotated ones (index >= 1) then the live one."""

    index: int
    path: Path
    compressed: bool


def _log_files(path: Path) -> list[_LogFile]:
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)(\.gz)?")
    found: dict[int, _LogFile] = {}
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        i = int(m.group(1))
        gz = m.group(2) is not None
        # An uncompressed file wins over its .gz: during rotation both exist briefly,
        # and dockerd's reader also looks for the plain file first.
        if i not in found or (found[i].compressed and not gz):
            found[i] = _LogFile(i, path.parent / name, gz)
    out = [found[i] for i in sorted(found, reverse=True) if i > 0]
    if path.exists():
        out.append(_LogFile(0, path, False))
    return out


def _complete_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole lines of DATA, and the unterminated rest."""
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        return [], data
    return data[:cut].splitlines(keepends=True), data[cut:]


def _iter_lines(f: IO[bytes], start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Whole lines of F from START to END (EOF when None); a torn last line is skipped."""
    f.seek(start)
    remaining = -1 if end is None else end - start
    rest = b""
    while remaining != 0:
        chunk = f.read(_READ_BLOCK if remaining < 0 else min(_READ_BLOCK, remaining))
        if not chunk:
            break
        if remaining > 0:
            remaining -= len(chunk)
        lines, rest = _complete_lines(rest + chunk)
        yield from lines


def _tail_start(f: IO[bytes], size: int, n: int) -> tuple[int, int, int]:
    """Read F backwards: (start, end, count) of its last N whole lines (fewer when it
    has fewer), END excluding a torn last line."""
    end = size
    pos = size
    # Find the end of the last whole line.
    while pos > 0:
        start = max(0, pos - _READ_BLOCK)
        f.seek(start)
        block = f.read(pos - start)
        i = block.rfind(b"\n")
        if i >= 0:
            end = start + i + 1
            break
        pos = start
    else:
        return 0, 0, 0
    count = 0
    pos = end - 1  # the newline ending the last line is not a line start
    while pos > 0:
        start = max(0, pos - _READ_BLOCK)
        f.seek(start)
        block = f.read(pos - start)
        j = len(block)
        while True:
            i = block.rfind(b"\n", 0, j)
            if i < 0:
                break
            count += 1
            if count == n:
                return start + i + 1, end, count
            j = i
        pos = start
    return 0, end, count + 1


def _complete_end(f: IO[bytes], size: int) -> int:
    """The offset just past the last newline of F before SIZE (0 when none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - _READ_BLOCK)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _open_log(lf: _LogFile) -> IO[bytes]:
    if lf.compressed:
        return gzip.open(lf.path, "rb")
    return open(lf.path, "rb")


def _stopped(stop: StopSignal) -> bool:
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def _wait(stop: StopSignal, interval: float) -> None:
    if isinstance(stop, threading.Event):
        stop.wait(interval)
    else:
        time.sleep(interval)


def _parse_tail(tail: int | str | None) -> int:
    """dockerd: "all", anything unparseable or negative means every line."""
    if tail is None:
        return -1
    if isinstance(tail, str):
        try:
            tail = int(tail)
        except ValueError:
            return -1
    return tail if tail >= 0 else -1


class _Filter:
    """since/until and the stream choice as dockerd applies them: records before SINCE
    skipped (until the first one at or after it: the rest is taken as in order), the
    read ends at the first record after UNTIL."""

    def __init__(self, stdout: bool, stderr: bool, since: int | None, until: int | None) -> None:
        self.streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        self.since = since
        self.until = until
        self.done = False

    def __call__(self, line: bytes) -> LogRecord | None:
        rec = decode_record(line)
        if rec is None:
            return None
        if self.since is not None:
            if rec.time_ns < self.since:
                return None
            self.since = None
        if self.until is not None and rec.time_ns > self.until:
            self.done = True
            return None
        if rec.stream not in self.streams:
            return None
        return rec


def read_logs(path: str | os.PathLike[str], *, stdout: bool = True, stderr: bool = True,
              since: float | str | None = None, until: float | str | None = None,
              tail: int | str | None = "all", follow: bool = False, stop: StopSignal = None,
              driver: str = JSON_FILE, poll_interval: float = _POLL_INTERVAL) -> Iterator[LogRecord]:
    """The records of the log at PATH (with its rotated files), oldest first.

    SINCE/UNTIL are unix seconds (float) or text as the API takes it (exact to the
    nanosecond); 0 or None means no bound. TAIL counts records from the end before
    any filtering, as dockerd does. FOLLOW keeps reading as the file grows and
    rotates until STOP (an Event or a callable) says the container is gone: what
    was written by then is still delivered. Errors (the none driver, a bad time)
    raise here, before the first record, so the API can still answer with a status.
    """
    gen = _open_reader(path, stdout=stdout, stderr=stderr, since=since, until=until, tail=tail,
                       follow=follow, stop=stop, driver=driver, poll_interval=poll_interval)
    return (rec for rec in gen if rec is not None)


def _open_reader(path: str | os.PathLike[str], *, stdout: bool = True, stderr: bool = True,
                 since: float | str | None = None, until: float | str | None = None,
                 tail: int | str | None = "all", follow: bool = False, stop: StopSignal = None,
                 driver: str = JSON_FILE,
                 poll_interval: float = _POLL_INTERVAL) -> Iterator[LogRecord | None]:
    if driver != JSON_FILE:
        if driver == NONE:
            raise ReadNotSupported()
        raise InvalidArgument(f"logger: no log driver named '{driver}' is registered")
    filt = _Filter(stdout, stderr, _to_ns(since) or None, _to_ns(until) or None)
    return _read(Path(path), filt, _parse_tail(tail), follow, stop, poll_interval)


def _read(path: Path, filt: _Filter, tail: int, follow: bool, stop: StopSignal,
          interval: float) -> Iterator[LogRecord | None]:
    """read_logs' generator; it yields None when it is about to wait for more (so
    batching consumers know to hand over what they have)."""
    files, live, live_end = _snapshot(path, tail)
    try:
        for f, start, end in files:
            for line in _iter_lines(f, start, end):
                rec = filt(line)
                if filt.done:
                    return
                if rec is not None:
                    yield rec
        if not follow:
            return
        yield from _follow(path, filt, live, live_end, stop, interval)
    finally:
        for f, _, _ in files:
            f.close()


def _snapshot(path: Path, tail: int) -> tuple[list[tuple[IO[bytes], int, int | None]], IO[bytes] | None, int]:
    """Open the files to read: [(file, start, end)], the live file and where its
    read ends. Files are opened before reading so that a rotation during the read
    neither loses nor repeats a file; a rotation between listing and opening is
    seen (the live file's inode moved) and the listing retried."""
    for _ in range(5):
        listing = _log_files(path)
        opened: list[tuple[_LogFile, IO[bytes]]] = []
        try:
            for lf in listing:
                try:
                    opened.append((lf, _open_log(lf)))
                except FileNotFoundError:
                    raise _Retry() from None
            live = opened[-1][1] if opened and opened[-1][0].index == 0 else None
            if live is not None:
                try:
                    if os.stat(path).st_ino != os.fstat(live.fileno()).st_ino:
                        raise _Retry()
                except FileNotFoundError:
                    raise _Retry() from None
        except _Retry:
            for _, f in opened:
                f.close()
            continue
        break
    else:
        opened, live = [], None
    # The live file is read up to its last whole line: the rest is a line being
    # written, which follow picks up from there once it is complete.
    live_end = _complete_end(live, os.fstat(live.fileno()).st_size) if live is not None else 0
    out: list[tuple[IO[bytes], int, int | None]] = []
    if tail == 0:
        for lf, f in opened:
            if f is not live:
                f.close()
        if live is not None:
            out.append((live, live_end, live_end))
        return out, live, live_end
    if tail < 0:
        for lf, f in opened:
            out.append((f, 0, live_end if f is live else None))
        return out, live, live_end
    need = tail
    chosen: list[tuple[IO[bytes], int, int | None]] = []
    for lf, f in reversed(opened):
        if need <= 0:
            f.close()
            continue
        if lf.compressed:
            # No reading a gzip stream backwards: decompress and keep the last lines.
            lines = collections.deque(_iter_lines(f), maxlen=need)
            f.close()
            data = b"".join(lines)
            mem = io.BytesIO(data)
            chosen.append((mem, 0, len(data)))
            need -= len(lines)
            continue
        size = live_end if f is live else os.fstat(f.fileno()).st_size
        start, end, count = _tail_start(f, size, need)
        chosen.append((f, start, end))
        need -= count
    chosen.reverse()
    if live is not None and all(f is not live for f, _, _ in chosen):
        chosen.append((live, live_end, live_end))
    return chosen, live, live_end


class _Retry(Exception):
    pass


def _follow(path: Path, filt: _Filter, live: IO[bytes] | None, offset: int, stop: StopSignal,
            interval: float) -> Iterator[LogRecord | None]:
    """Keep reading the live file from OFFSET; across a rotation, finish the old file
    (and any rotated after it) before the new one."""
    fd = os.dup(live.fileno()) if live is not None else -1
    rest = b""

    def drain() -> Iterator[LogRecord]:
        nonlocal offset, rest
        while True:
            chunk = os.pread(fd, _READ_BLOCK, offset)
            if not chunk:
                return
            offset += len(chunk)
            lines, rest = _complete_lines(rest + chunk)
            for line in lines:
                rec = filt(line)
                if filt.done:
                    return
                if rec is not None:
                    yield rec

    try:
        while True:
            stopping = _stopped(stop)
            if fd >= 0:
                yield from drain()
                if filt.done:
                    return
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None  # mid-rotation: the new file is about to appear
            if st is not None and (fd < 0 or st.st_ino != os.fstat(fd).st_ino):
                old_ino = os.fstat(fd).st_ino if fd >= 0 else None
                if fd >= 0:
                    yield from drain()  # what was written before the rename
                    if filt.done:
                        return
                    os.close(fd)
                    fd = -1
                # Files rotated after the one we were reading, oldest first.
                if old_ino is not None:
                    yield from _catch_up(path, old_ino, filt)
                    if filt.done:
                        return
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    fd = -1
                offset, rest = 0, b""
                continue
            if st is not None and fd >= 0 and st.st_size < offset:
                if st.st_size >= offset - len(rest):
                    # Only a torn line was cut (a new writer after a crash): go on
                    # from the last whole line.
                    offset -= len(rest)
                else:
                    offset = 0  # truncated in place (max-file=1)
                rest = b""
                continue
            if stopping:
                return
            if filt.until is not None and time.time_ns() > filt.until:
                # Nothing logged from now on can be before until; one last look.
                yield from drain() if fd >= 0 else iter(())
                return
            yield None
            _wait(stop, interval)
    finally:
        if fd >= 0:
            os.close(fd)


def _catch_up(path: Path, old_ino: int, filt: _Filter) -> Iterator[LogRecord]:
    """After a rotation, the rotated files newer than the one with inode OLD_INO
    (already read): more than one rotation may have happened between two polls."""
    files = [lf for lf in _log_files(path) if lf.index > 0]
    newer: list[_LogFile] = []
    for lf in files:  # oldest first
        if lf.compressed:
            continue  # a gzipped copy has a new inode; it cannot be matched
        try:
            ino = os.stat(lf.path).st_ino
        except FileNotFoundError:
            continue
        if ino == old_ino:
            newer = [x for x in files if 0 < x.index < lf.index and not x.compressed]
            break
    for lf in sorted(newer, key=lambda x: -x.index):
        try:
            f = _open_log(lf)
        except FileNotFoundError:
            continue
        with f:
            for line in _iter_lines(f):
                rec = filt(line)
                if filt.done:
                    return
                if rec is not None:
                    yield rec


async def aread_logs(path: str | os.PathLike[str], **kwargs: object) -> AsyncIterator[LogRecord]:
    """read_logs for asyncio (the API): the reading runs in a thread and hands records
    over in batches; leaving the loop early (the client went away) ends the thread.
    Errors of the arguments raise before the first record, as read_logs."""
    cancelled = threading.Event()
    user_stop = kwargs.pop("stop", None)

    def stop() -> bool:
        return cancelled.is_set() or _stopped(user_stop)  # type: ignore[arg-type]

    gen = _open_reader(path, stop=stop, **kwargs)  # type: ignore[arg-type]
    handoff: queue.Queue[list[LogRecord] | BaseException | None] = queue.Queue(maxsize=4)

    def put(item: list[LogRecord] | BaseException | None) -> bool:
        while not cancelled.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        batch: list[LogRecord] = []
        try:
            for rec in gen:
                if rec is not None:
                    batch.append(rec)
                if batch and (rec is None or len(batch) >= 256):
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
            put(None)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)
        finally:
            gen.close()

    thread = threading.Thread(target=pump, name="dockyard-logs", daemon=True)
    thread.start()

    def get() -> list[LogRecord] | BaseException | None:
        while True:
            try:
                return handoff.get(timeout=0.2)
            except queue.Empty:
                if cancelled.is_set():
                    return None

    try:
        while True:
            item = await asyncio.to_thread(get)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            for rec in item:
                yield rec
    finally:
        cancelled.set()


# -- the API's byte stream ------------------------------------------------------------

def frame(stream: str, payload: bytes) -> bytes:
    """stdcopy's multiplexed framing (no TTY): stream id, three zero bytes, the
    payload's length as a big-endian uint32, then the payload."""
    return bytes((_STREAM_IDS[stream], 0, 0, 0)) + len(payload).to_bytes(4, "big") + payload


def format_record(rec: LogRecord, *, tty: bool, timestamps: bool = False) -> bytes:
    """REC as dockerd writes it to the logs response: with TIMESTAMPS prefixed by its
    time in RFC3339NanoFixed and a space; framed unless the container has a TTY."""
    payload = rec.data
    if timestamps:
        payload = format_time_ns(rec.time_ns, fixed=True).encode() + b" " + payload
    return payload if tty else frame(rec.stream, payload)


def format_logs(records: Iterable[LogRecord], *, tty: bool, timestamps: bool = False) -> Iterator[bytes]:
    for rec in records:
        yield format_record(rec, tty=tty, timestamps=timestamps)
