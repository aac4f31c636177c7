"""Container logs: the json-file driver as dockerd writes it, and reading it back the
way `GET /containers/{id}/logs` does (rotation, tail, since/until, follow, framing)."""

from __future__ import annotations

import asyncio
import calendar
import gzip
import threading
from pathlib import Path

import pytest

from conftest import wait_for
from dockyard.daemon.logs import (
    MAX_LINE,
    LogConfig,
    LogRecord,
    LogWriter,
    ReadNotSupported,
    aread_logs,
    encode_record,
    format_record,
    frame,
    log_path,
    parse_docker_time,
    parse_docker_time_ns,
    parse_log_config,
    parse_size,
    read_logs,
)
from dockyard.errors import InvalidArgument

NS = 1_000_000_000
# 2026-11-29T02:13:56Z
T0 = calendar.timegm((2026, 11, 29, 2, 13, 56, 0, 0, 0))
CID = "4f1c0ffee" * 7 + "0"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return log_path(tmp_path, CID)


def records(path: Path, **kw: object) -> list[LogRecord]:
    return list(read_logs(path, **kw))  # type: ignore[arg-type]


def texts(recs: list[LogRecord]) -> list[bytes]:
    return [r.data for r in recs]


# -- the file format --------------------------------------------------------------------

def test_log_path_is_dockerds(tmp_path: Path) -> None:
    assert log_path(tmp_path, "abc") == tmp_path / "abc-json.log"


def test_record_bytes_are_dockerds(path: Path) -> None:
    with LogWriter(path) as w:
        w.write("stdout", b'hello <b>&\t"x"\\ \x01\n', ts_ns=T0 * NS + 123456789)
        w.write("stderr", b"oops\n", ts_ns=T0 * NS + 120000000)
        w.write("stdout", b"whole\n", ts_ns=(T0 + 1) * NS)
        # An invalid byte becomes the \ufffd escape; a real U+FFFD and U+2028 as Go.
        w.write("stdout", b"bad\xff ok\xef\xbf\xbd \xe2\x80\xa8\n", ts_ns=(T0 + 1) * NS + 5)
    expected = (
        b'{"log":"hello \\u003cb\\u003e\\u0026\\u0009\\"x\\"\\\\ \\u0001\\n","stream":"stdout",'
        b'"time":"2026-11-29T02:13:56.123456789Z"}\n'
        # RFC3339Nano drops trailing zeros of the fraction, and a zero fraction entirely.
        b'{"log":"oops\\n","stream":"stderr","time":"2026-11-29T02:13:56.12Z"}\n'
        b'{"log":"whole\\n","stream":"stdout","time":"2026-11-29T02:13:57Z"}\n'
        b'{"log":"bad\\ufffd ok\xef\xbf\xbd \\u2028\\n","stream":"stdout",'
        b'"time":"2026-11-29T02:13:57.000000005Z"}\n'
    )
    assert path.read_bytes() == expected
    got = records(path)
    assert got[0] == LogRecord("stdout", T0 * NS + 123456789, b'hello <b>&\t"x"\\ \x01\n')
    assert got[1].stream == "stderr" and got[1].time_ns == T0 * NS + 120000000
    assert got[3].data == "bad\ufffd ok\ufffd \u2028\n".encode()
    stream, ts, data = got[2]
    assert (stream, ts, data) == ("stdout", float(T0 + 1), b"whole\n")


def test_round_trip_partial_lines_both_streams(path: Path) -> None:
    with LogWriter(path) as w:
        w.write("stdout", b"ab", ts=T0 + 0.1)
        w.write("stderr", b"err1\nerr", ts=T0 + 0.2)
        w.write("stdout", b"c\nd\n", ts=T0 + 0.3)
        w.write("stderr", b"2\n", ts=T0 + 0.4)
        w.write("stdout", b"no newline at exit", ts=T0 + 0.5)
    got = records(path)
    assert [(r.stream, r.data) for r in got] == [
        ("stderr", b"err1\n"), ("stdout", b"abc\n"), ("stdout", b"d\n"), ("stderr", b"err2\n"),
        # dockerd logs unterminated output at exit as a partial record, without "\n".
        ("stdout", b"no newline at exit"),
    ]
    # A line is stamped when it is complete, as dockerd's copier does.
    assert got[1].time_ns == int(round((T0 + 0.3) * NS))
    assert texts(records(path, stderr=False)) == [b"abc\n", b"d\n", b"no newline at exit"]
    assert texts(records(path, stdout=False)) == [b"err1\n", b"err2\n"]


def test_long_lines_split_in_16k_partial_records(path: Path) -> None:
    long = bytes(range(65, 91)) * 1600  # 41600 bytes
    with LogWriter(path) as w:
        w.write("stdout", long[:10000], ts_ns=T0 * NS)
        w.write("stdout", long[10000:] + b"\n", ts_ns=T0 * NS + 7)
        w.write("stdout", b"x" * MAX_LINE + b"\n", ts_ns=T0 * NS + 9)
    got = records(path)
    assert [len(r.data) for r in got] == [MAX_LINE, MAX_LINE, 41600 - 2 * MAX_LINE + 1, MAX_LINE, 1]
    assert [r.partial for r in got] == [True, True, False, True, False]
    assert b"".join(texts(got[:3])) == long + b"\n"
    # Every piece of a line carries the time of its first piece.
    assert {r.time_ns for r in got[:3]} == {T0 * NS + 7}
    assert got[4].data == b"\n"
    assert path.read_bytes().count(b"\n") == 5  # escaped newlines are not line ends


# -- rotation ------------------------------------------------------------------------

def write_numbered(w: LogWriter, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        w.write("stdout", b"line %04d %s\n" % (i, b"x" * 20), ts_ns=(T0 + i) * NS)


def numbers(recs: list[LogRecord]) -> list[int]:
    return [int(r.data.split()[1]) for r in recs]


def test_rotation_keeps_max_file_files(path: Path) -> None:
    with LogWriter(path, {"max-size": "1k", "max-file": "3"}) as w:
        write_numbered(w, 200)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == [path.name, path.name + ".1", path.name + ".2"]
    for rotated in (path.with_name(path.name + ".1"), path.with_name(path.name + ".2")):
        size = rotated.stat().st_size
        # Rotated once it reached max-size, never cutting a record.
        assert 1000 <= size < 1000 + 100
    got = numbers(records(path))
    assert got == list(range(got[0], 200)) and got[0] > 0


def test_rotation_max_file_1_truncates(path: Path) -> None:
    with LogWriter(path, {"max-size": "1k"}) as w:
        write_numbered(w, 100)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    got = numbers(records(path))
    assert got == list(range(got[0], 100)) and got[0] > 0


def test_rotation_compress(path: Path) -> None:
    with LogWriter(path, {"max-size": "1k", "max-file": "3", "compress": "true"}) as w:
        write_numbered(w, 200)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == [path.name, path.name + ".1.gz", path.name + ".2.gz"]
    one = path.with_name(path.name + ".1.gz")
    plain = gzip.decompress(one.read_bytes())
    assert plain.startswith(b'{"log":"line ') and plain.endswith(b"}\n")
    # dockerd keeps the last time of a rotated file in the gzip header's extra field.
    raw = one.read_bytes()
    assert raw[3] & 0x04
    xlen = int.from_bytes(raw[10:12], "little")
    last = records(path)[-1]
    assert raw[12:12 + xlen].startswith(b'{"lastTime":"2026-11-29T')
    got = numbers(records(path))
    assert got == list(range(got[0], 200)) and got[0] > 0 and last.data.startswith(b"line 0199")
    assert numbers(records(path, tail=20)) == list(range(180, 200))  # spans a .gz


def test_tail_across_files(path: Path) -> None:
    with LogWriter(path, {"max-size": "1k", "max-file": "5"}) as w:
        write_numbered(w, 100)
    everything = numbers(records(path))
    assert numbers(records(path, tail=3)) == [97, 98, 99]
    assert numbers(records(path, tail=40)) == list(range(60, 100))  # spans files
    assert numbers(records(path, tail=10_000)) == everything
    assert numbers(records(path, tail="all")) == everything
    assert numbers(records(path, tail="-1")) == everything
    assert records(path, tail=0) == []
    # The tail counts records before the stream choice, as dockerd does.
    assert records(path, tail=5, stdout=False) == []


def test_since_until(path: Path) -> None:
    with LogWriter(path) as w:
        write_numbered(w, 10)
    assert numbers(records(path, since=T0 + 5)) == [5, 6, 7, 8, 9]
    assert numbers(records(path, until=T0 + 3)) == [0, 1, 2, 3]
    assert numbers(records(path, since=T0 + 2, until=T0 + 4)) == [2, 3, 4]
    # As the API passes them, exact to the nanosecond.
    assert numbers(records(path, since=f"{T0 + 5}.000000001")) == [6, 7, 8, 9]
    assert numbers(records(path, since="0")) == list(range(10))
    assert numbers(records(path, since=T0 + 5, tail=3)) == [7, 8, 9]


def test_missing_file_reads_empty(path: Path) -> None:
    assert records(path) == []


# -- crash safety ------------------------------------------------------------------------

def test_torn_last_line_skipped_and_cut_by_next_writer(path: Path) -> None:
    with LogWriter(path) as w:
        write_numbered(w, 2)
    with open(path, "ab") as f:
        f.write(b'{"log":"torn li')
    assert numbers(records(path)) == [0, 1]
    assert numbers(records(path, tail=1)) == [1]
    with LogWriter(path) as w:
        write_numbered(w, 1, start=2)
    assert numbers(records(path)) == [0, 1, 2]
    assert b"torn" not in path.read_bytes()


# -- follow -------------------------------------------------------------------------------

class Follower:
    def __init__(self, path: Path, **kw: object) -> None:
        self.stop = threading.Event()
        self.got: list[LogRecord] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(path, kw), daemon=True)
        self.thread.start()

    def _run(self, path: Path, kw: dict[str, object]) -> None:
        try:
            for rec in read_logs(path, follow=True, stop=self.stop, poll_interval=0.01, **kw):  # type: ignore[arg-type]
                self.got.append(rec)
        except BaseException as e:
            self.error = e

    def finish(self) -> list[LogRecord]:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "follow did not stop"
        assert self.error is None
        return self.got


def test_follow_sees_new_lines_and_rotations_then_stops(path: Path) -> None:
    # Enough files kept that a follower slowed by a loaded machine loses nothing to
    # deletion; what is tested is following across renames.
    w = LogWriter(path, {"max-size": "1k", "max-file": "50"})
    write_numbered(w, 3)
    fol = Follower(path)
    wait_for(lambda: len(fol.got) == 3, timeout=5, what="existing lines")
    write_numbered(w, 2, start=3)
    wait_for(lambda: len(fol.got) == 5, timeout=5, what="new lines")
    # Enough to rotate several times while the follower polls.
    write_numbered(w, 95, start=5)
    wait_for(lambda: len(fol.got) == 100, timeout=5, what="lines across rotations")
    assert len(list(path.parent.glob(path.name + ".*"))) >= 3
    # A half-written line is held back until it is whole.
    w.write("stdout", b"half ", ts_ns=(T0 + 100) * NS)
    w.write("stdout", b"done\n", ts_ns=(T0 + 100) * NS)
    wait_for(lambda: len(fol.got) == 101, timeout=5, what="completed line")
    w.close()
    got = fol.finish()
    assert numbers(got[:100]) == list(range(100))
    assert got[100].data == b"half done\n"


def test_follow_with_tail_and_stop_delivers_the_rest(path: Path) -> None:
    with LogWriter(path) as w:
        write_numbered(w, 10)
    stop = threading.Event()
    stop.set()  # the container has exited already: what is there, then the end
    assert numbers(list(read_logs(path, follow=True, stop=stop, tail=2))) == [8, 9]


def test_follow_waits_for_the_file(path: Path) -> None:
    fol = Follower(path)  # tail=0 would race with the writer: "only what comes next"
    with LogWriter(path) as w:
        write_numbered(w, 2)
    wait_for(lambda: len(fol.got) == 2, timeout=5, what="lines of a new file")
    assert numbers(fol.finish()) == [0, 1]


def test_aread_logs(path: Path) -> None:
    with LogWriter(path) as w:
        write_numbered(w, 300)

    async def collect() -> list[LogRecord]:
        return [rec async for rec in aread_logs(path, tail=20)]

    assert numbers(asyncio.run(collect())) == list(range(280, 300))


# -- the API's stream ------------------------------------------------------------------

def test_framing_bytes() -> None:
    assert frame("stdout", b"hi\n") == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert frame("stderr", b"x" * 300)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x2c"
    rec = LogRecord("stderr", T0 * NS + 120000000, b"oops\n")
    prefixed = b"2026-11-29T02:13:56.120000000Z oops\n"
    assert format_record(rec, tty=False, timestamps=True) == b"\x02\x00\x00\x00\x00\x00\x00\x24" + prefixed
    assert len(prefixed) == 0x24
    assert format_record(rec, tty=True, timestamps=True) == prefixed
    assert format_record(rec, tty=True) == b"oops\n"


# -- options and drivers ---------------------------------------------------------------

def test_parse_size_as_go_units() -> None:
    assert parse_size("10m") == 10_000_000
    assert parse_size("1k") == 1000
    assert parse_size("1KiB") == 1000
    assert parse_size("1.5kb") == 1500
    assert parse_size("2g") == 2_000_000_000
    assert parse_size("42") == 42
    with pytest.raises(InvalidArgument, match="invalid size: '10x'"):
        parse_size("10x")


def test_log_config_parsed() -> None:
    assert parse_log_config(None, None) == LogConfig()
    cfg = parse_log_config("json-file", {"max-size": "10m", "max-file": "3", "compress": "true",
                                         "tag": "x", "mode": "non-blocking",
                                         "max-buffer-size": "4m"})
    assert (cfg.max_size, cfg.max_file, cfg.compress) == (10_000_000, 3, True)
    assert parse_log_config("none", {"whatever": "1"}).driver == "none"


@pytest.mark.parametrize("driver,opts,message", [
    ("json-file", {"x": "1"}, "unknown log opt 'x' for json-file log driver"),
    ("json-file", {"max-size": "big"}, "invalid size: 'big'"),
    ("json-file", {"max-size": "0"}, "max-size must be a positive number"),
    ("json-file", {"max-file": "two"}, 'strconv.Atoi: parsing "two": invalid syntax'),
    ("json-file", {"max-file": "0"}, "max-file cannot be less than 1"),
    ("json-file", {"compress": "yes"}, 'strconv.ParseBool: parsing "yes": invalid syntax'),
    ("json-file", {"compress": "true", "max-size": "1m"},
     "compress cannot be true when max-file is less than 2 or max-size is not set"),
    ("json-file", {"mode": "fast"}, "logger: logging mode not supported: fast"),
    ("json-file", {"max-buffer-size": "1m"},
     "logger: max-buffer-size option is only supported with 'mode=non-blocking'"),
    ("syslogd", {}, "logger: no log driver named 'syslogd' is registered"),
])
def test_option_errors(driver: str, opts: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_log_config(driver, opts)
    assert str(info.value) == message


def test_none_driver(path: Path) -> None:
    with LogWriter(path, driver="none") as w:
        w.write("stdout", b"dropped\n")
    assert not path.exists()
    with pytest.raises(ReadNotSupported) as info:
        read_logs(path, driver="none")
    assert str(info.value) == "configured logging driver does not support reading"
    assert info.value.http_status == 400


def test_parse_docker_time() -> None:
    assert parse_docker_time_ns("1700000000.123456789") == 1700000000123456789
    assert parse_docker_time_ns("1700000000.5") == 1700000000500000000
    assert parse_docker_time_ns("1700000000") == 1700000000 * NS
    assert parse_docker_time_ns("2023-11-14T22:13:20Z") == 1700000000 * NS
    assert parse_docker_time_ns("2023-11-15T00:13:20.25+02:00") == 1700000000250000000
    assert parse_docker_time("10m", now=1700000600.0) == 1700000000.0
    assert parse_docker_time("1700000000.25") == 1700000000.25
    with pytest.raises(InvalidArgument):
        parse_docker_time("yesterday")


def test_encode_record_omits_empty_log() -> None:
    # marshalMessage writes no "log" key for an empty line (it never logs one, but
    # the encoder matches it byte for byte).
    assert encode_record("stdout", b"", T0 * NS) == b'{"stream":"stdout","time":"2026-11-29T02:13:56Z"}\n'
