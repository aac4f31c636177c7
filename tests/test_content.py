"""The content store: verified commits, resumable ingests, locking across processes,
crash safety under SIGKILL, leases and garbage collection."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.image import content
from dockyard.image.content import ContentStore
from dockyard.image.digest import Digest
from dockyard.image.manifest import blob_children

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKYARD_SHARED", REPO.parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox" / "1.38.0-glibc"


def sha256(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def blob_files(store: ContentStore) -> list[Path]:
    """Every file under blobs/, whatever its name: what a reader could stumble on."""
    return sorted(p for p in (Path(store.root) / "blobs").rglob("*") if p.is_file())


def ingest_files(store: ContentStore) -> list[Path]:
    return sorted((Path(store.root) / "ingest").rglob("*"))


def run_child(store: ContentStore, body: str) -> subprocess.Popen[str]:
    """A Python child with STORE's root in `root`; it talks over stdin/stdout."""
    code = textwrap.dedent("""
        import sys, time
        from dockyard.image.content import ContentStore
        from dockyard.image.digest import Digest
        store = ContentStore(sys.argv[1])
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code, store.root], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


@pytest.fixture
def children_proc() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


# -- writing and committing ------------------------------------------------------

def test_write_commit_and_read(store: ContentStore) -> None:
    data = os.urandom(300_000)
    expected = sha256(data)
    with store.writer("pull-x", expected=expected, size=len(data)) as w:
        assert w.offset == 0
        for i in range(0, len(data), 65536):
            w.write(data[i:i + 65536])
        assert w.offset == len(data)
        assert w.digest() == expected
        assert w.commit() == expected
    assert store.exists(expected)
    assert store.read(expected, verify=True) == data
    size, mtime = store.info(expected)
    assert size == len(data) and abs(mtime - time.time()) < 60
    with store.open(expected) as f:
        assert f.read(10) == data[:10]
    path = Path(store.path(expected))
    assert path == Path(store.root) / "blobs" / "sha256" / expected.hex
    assert path.stat().st_mode & 0o222 == 0  # read-only, as containerd leaves blobs
    assert list(store.walk()) == [expected]
    assert store.ingests() == []
    assert ingest_files(store) == []


def test_commit_without_expectation_computes_digest(store: ContentStore) -> None:
    w = store.writer("anon")
    w.write(b"hello ")
    w.write(b"world")
    assert w.commit() == sha256(b"hello world")
    assert store.read(sha256(b"hello world")) == b"hello world"


def test_sha512_content(store: ContentStore) -> None:
    data = b"x" * 1000
    d = Digest.of(data, "sha512")
    assert store.put(data, d) == d
    assert store.read(d) == data
    assert (Path(store.root) / "blobs" / "sha512" / d.hex).is_file()


def test_put_is_idempotent_and_checks_expected(store: ContentStore) -> None:
    d = store.put(b"abc")
    assert d == sha256(b"abc")
    assert store.put(b"abc", d) == d
    with pytest.raises(InvalidArgument, match=f"expected {sha256(b'xyz')}"):
        store.put(b"abc", sha256(b"xyz"))
    assert list(store.walk()) == [d]
    assert store.ingests() == []


def test_commit_of_existing_blob_is_a_noop(store: ContentStore) -> None:
    d = store.put(b"same")
    before = store.info(d)
    w = store.writer("again", expected=d, size=4)
    w.write(b"same")
    assert w.commit() == d
    assert store.info(d)[0] == before[0]
    assert store.ingests() == [] and ingest_files(store) == []


def test_digest_mismatch_stores_nothing(store: ContentStore) -> None:
    data = b"the real bytes"
    wrong = sha256(b"other bytes")
    w = store.writer("pull-bad", expected=wrong, size=len(data))
    w.write(data)
    with pytest.raises(InvalidArgument) as exc:
        w.commit()
    msg = str(exc.value)
    assert str(wrong) in msg and str(sha256(data)) in msg
    assert not store.exists(sha256(data)) and not store.exists(wrong)
    assert blob_files(store) == []
    w.abort()  # harmless after the failed commit
    assert store.ingests() == [] and ingest_files(store) == []


def test_short_size_keeps_ingest_until_abort(store: ContentStore) -> None:
    data = b"0123456789"
    w = store.writer("pull-short", expected=sha256(data), size=len(data))
    w.write(data[:5])
    with pytest.raises(InvalidArgument, match="unexpected size 5, expected 10"):
        w.commit()
    assert blob_files(store) == []
    assert [s.offset for s in store.ingests()] == [5]
    w.abort()
    assert store.ingests() == [] and ingest_files(store) == []


def test_size_override_at_commit(store: ContentStore) -> None:
    w = store.writer("pull-size")
    w.write(b"abc")
    with pytest.raises(InvalidArgument, match="unexpected size 3, expected 4"):
        w.commit(size=4)
    with pytest.raises(InvalidArgument, match="unexpected digest"):
        w.commit(size=3, expected=sha256(b"abd"))
    assert blob_files(store) == [] and ingest_files(store) == []


def test_write_past_expected_size_refused(store: ContentStore) -> None:
    w = store.writer("pull-long", size=4)
    w.write(b"abc")
    with pytest.raises(InvalidArgument, match="exceeds the expected size 4"):
        w.write(b"de")
    assert w.offset == 3
    w.write(b"d")
    assert w.commit() == sha256(b"abcd")


def test_invalid_arguments(store: ContentStore) -> None:
    with pytest.raises(InvalidArgument):
        store.writer("")
    with pytest.raises(InvalidArgument):
        store.writer("ref", size=-1)
    with pytest.raises(InvalidArgument):
        store.writer("ref", expected="sha256:nothex")
    with pytest.raises(NotFound):
        store.read(sha256(b"absent"))
    with pytest.raises(NotFound):
        store.info(sha256(b"absent"))
    with pytest.raises(NotFound):
        store.path(sha256(b"absent"))
    with pytest.raises(NotFound):
        store.delete(sha256(b"absent"))
    assert not store.exists(sha256(b"absent"))


def test_delete(store: ContentStore) -> None:
    d = store.put(b"gone soon")
    store.delete(d)
    assert not store.exists(d) and list(store.walk()) == []


def test_read_verify_detects_corruption(store: ContentStore) -> None:
    d = store.put(b"good")
    p = Path(store.path(d))
    p.chmod(0o644)
    p.write_bytes(b"evil")
    assert store.read(d) == b"evil"
    with pytest.raises(InvalidArgument, match="corrupt"):
        store.read(d, verify=True)


# -- resuming and locking -----------------------------------------------------------

def test_resume_after_close(store: ContentStore) -> None:
    data = os.urandom(200_000)
    d = sha256(data)
    w = store.writer(f"pull-{d}", expected=d, size=len(data))
    w.write(data[:123_456])
    w.close()
    [status] = store.ingests()
    assert (status.ref, status.offset, status.total, status.expected) == (f"pull-{d}", 123_456,
                                                                          len(data), d)
    assert not store.exists(d)

    # Reopened without repeating the expectations: they were recorded.
    w2 = store.writer(f"pull-{d}")
    assert w2.offset == 123_456 and w2.expected == d and w2.total == len(data)
    w2.write(data[w2.offset:])
    assert w2.commit() == d
    assert store.read(d) == data
    assert store.ingests() == []


def test_resume_with_different_expectation_restarts(store: ContentStore) -> None:
    w = store.writer("pull-y", expected=sha256(b"first"), size=5)
    w.write(b"fir")
    w.close()
    w = store.writer("pull-y", expected=sha256(b"second"), size=6)
    assert w.offset == 0
    w.write(b"second")
    assert w.commit() == sha256(b"second")


def test_second_writer_on_same_ref_conflicts(store: ContentStore) -> None:
    w = store.writer("pull-lock")
    with pytest.raises(Conflict, match="ref 'pull-lock' is locked"):
        store.writer("pull-lock")
    other = store.writer("pull-other")  # other refs are independent
    other.abort()
    w.write(b"x")
    w.close()
    w2 = store.writer("pull-lock")
    assert w2.offset == 1
    w2.abort()
    w3 = store.writer("pull-lock")
    assert w3.offset == 0
    w3.abort()
    assert ingest_files(store) == []


def test_dropped_writer_releases_lock(store: ContentStore) -> None:
    store.writer("pull-dropped").write(b"abc")  # never closed; garbage collected
    w = store.writer("pull-dropped")
    assert w.offset == 3
    w.abort()


def test_lock_excludes_other_processes(store: ContentStore,
                                       children_proc: list[subprocess.Popen[str]]) -> None:
    child = run_child(store, """
        w = store.writer("pull-shared")
        w.write(b"from child")
        print("locked", flush=True)
        sys.stdin.readline()
        w.close()
        print("released", flush=True)
        sys.stdin.readline()
    """)
    children_proc.append(child)
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(Conflict, match="is locked"):
        store.writer("pull-shared")
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "released"
    w = store.writer("pull-shared")
    assert w.offset == len(b"from child")
    w.write(b"!")
    assert w.commit() == sha256(b"from child!")
    child.stdin.close()
    assert child.wait(timeout=10) == 0


def test_concurrent_commits_of_same_content(store: ContentStore) -> None:
    data = os.urandom(500_000)
    d = sha256(data)
    n = 8
    barrier = threading.Barrier(n)
    results: list[object] = []

    def worker(i: int) -> None:
        try:
            w = store.writer(f"ref-{i}", expected=d, size=len(data))
            w.write(data)
            barrier.wait(timeout=10)
            results.append(w.commit())
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [d] * n
    assert store.read(d, verify=True) == data
    assert blob_files(store) == [Path(store.path(d))]
    assert store.ingests() == [] and ingest_files(store) == []


def test_concurrent_puts_from_processes(store: ContentStore,
                                        children_proc: list[subprocess.Popen[str]]) -> None:
    body = """
        data = bytes(range(256)) * 4000
        sys.stdin.readline()
        for _ in range(20):
            d = store.put(data)
        print(d, flush=True)
    """
    kids = [run_child(store, body) for _ in range(4)]
    children_proc.extend(kids)
    for k in kids:
        k.stdin.write("\n")
        k.stdin.flush()
    expected = sha256(bytes(range(256)) * 4000)
    for k in kids:
        assert k.stdout.readline().strip() == expected
        k.stdin.close()
        assert k.wait(timeout=10) == 0
    assert list(store.walk()) == [expected]
    assert store.ingests() == []


# -- crash safety -------------------------------------------------------------------

def test_sigkill_mid_write_leaves_resumable_ingest(store: ContentStore,
                                                   children_proc: list[subprocess.Popen[str]]) -> None:
    data = os.urandom(1 << 20)
    d = sha256(data)
    src = Path(store.root).parent / "payload"
    src.write_bytes(data)
    child = run_child(store, f"""
        data = open({str(src)!r}, "rb").read()
        w = store.writer("pull-crash", expected=Digest({str(d)!r}), size=len(data))
        w.write(data[:300_000])
        print("half", flush=True)
        i = 300_000
        while i < len(data) - 1000:  # keep writing slowly until killed
            w.write(data[i:i + 1000])
            i += 1000
            time.sleep(0.001)
        time.sleep(60)
    """)
    children_proc.append(child)
    assert child.stdout.readline().strip() == "half"
    time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL

    assert blob_files(store) == [] and not store.exists(d)
    [status] = store.ingests()
    assert status.ref == "pull-crash" and 300_000 <= status.offset < len(data)

    # The kernel dropped the dead writer's lock: the ingest resumes where it stopped.
    w = store.writer("pull-crash", expected=d, size=len(data))
    assert w.offset == status.offset
    w.write(data[w.offset:])
    assert w.commit() == d
    assert store.read(d, verify=True) == data
    assert ingest_files(store) == []


def test_sigkill_leaves_removable_ingest(store: ContentStore,
                                        children_proc: list[subprocess.Popen[str]]) -> None:
    child = run_child(store, """
        w = store.writer("pull-dead", size=10)
        w.write(b"12345")
        print("ready", flush=True)
        time.sleep(60)
    """)
    children_proc.append(child)
    assert child.stdout.readline().strip() == "ready"
    assert store.abort_stale(0) == []  # a live writer holds it
    child.kill()
    child.wait(timeout=10)
    assert store.abort_stale(3600) == []  # not stale yet
    assert store.abort_stale(0) == ["pull-dead"]
    assert store.ingests() == [] and ingest_files(store) == []


def test_sigkill_during_commits_never_exposes_partial_blobs(
        store: ContentStore, children_proc: list[subprocess.Popen[str]]) -> None:
    child = run_child(store, """
        import os
        i = 0
        while True:
            store.put(os.urandom(64 * 1024 + i))
            i += 1
            if i == 5:
                print("going", flush=True)
    """)
    children_proc.append(child)
    assert child.stdout.readline().strip() == "going"
    time.sleep(0.2)
    child.kill()
    child.wait(timeout=10)
    files = blob_files(store)
    assert len(files) >= 5
    for f in files:  # every visible blob is whole and named by its content
        assert f.parent.name == "sha256" and hashlib.sha256(f.read_bytes()).hexdigest() == f.name
    assert set(store.walk()) == {Digest(f"sha256:{f.name}") for f in files}
    # The put interrupted mid-way, if any, left at most one ingest; clean-up removes it.
    assert len(store.ingests()) <= 1
    store.abort_stale(0)
    assert store.ingests() == []


# -- leases and garbage collection -------------------------------------------------

def test_gc_keeps_roots_children_and_leased(store: ContentStore) -> None:
    a, b, c, d, e, f = (store.put(x) for x in (b"a", b"b", b"c", b"d", b"e", b"f"))
    graph = {a: [b], b: [c, sha256(b"missing child")]}
    lease = store.lease("keep-d")
    lease.add(d)
    calls: list[Digest] = []

    def children(x: Digest) -> list[Digest]:
        calls.append(x)
        return graph.get(x, [])

    deleted = store.gc([a], children)
    assert sorted(deleted) == sorted([e, f])
    assert all(store.exists(x) for x in (a, b, c, d))
    assert not store.exists(e) and not store.exists(f)
    assert sha256(b"missing child") not in calls  # only present blobs are expanded

    lease.release()
    assert store.gc([a], children) == [d]
    assert sorted(store.gc([], children)) == sorted([a, b, c])
    assert list(store.walk()) == []


def test_gc_stops_when_children_fails(store: ContentStore) -> None:
    a, b = store.put(b"root"), store.put(b"other")

    def children(x: Digest) -> list[Digest]:
        raise InvalidArgument("cannot parse")

    with pytest.raises(InvalidArgument):
        store.gc([a], children)
    assert store.exists(a) and store.exists(b)


def test_lease_expiry(store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    short = store.lease("short", expire=30)
    short.add(store.put(b"short-lived"))
    long = store.lease("long", expire=datetime.now(timezone.utc) + timedelta(hours=1))
    long.add(store.put(b"long-lived"))
    assert store.gc([], lambda x: []) == []

    class Later:  # the store's clock, a minute on
        @staticmethod
        def time() -> float:
            return time.time() + 60

    monkeypatch.setattr(content, "time", Later)
    assert short.expired() and not long.expired()
    assert store.gc([], lambda x: []) == [sha256(b"short-lived")]
    assert [l.id for l in store.leases()] == ["long"]  # the expired one is gone
    with pytest.raises(NotFound, match="released or expired"):
        short.add(sha256(b"x"))
    assert store.exists(sha256(b"long-lived"))


def test_lease_context_and_writer(store: ContentStore) -> None:
    with store.lease("pull-busybox") as lease:
        w = store.writer("pull-layer", lease=lease)
        assert lease.ingests == {"pull-layer"}
        w.write(b"layer bytes")
        d = w.commit()
        assert lease.digests == {d} and lease.ingests == frozenset()
        dup = store.put(b"already here")
        lease2 = store.lease("second")
        assert store.put(b"already here", lease=lease2) == dup
        assert store.gc([], lambda x: []) == []
        assert store.exists(d)
    lease2.release()
    assert sorted(store.gc([], lambda x: [])) == sorted([d, dup])


def test_lease_persists_across_store_instances(store: ContentStore) -> None:
    d = store.put(b"persist")
    store.lease("durable").add(d)
    again = ContentStore(store.root)
    [lease] = again.leases()
    assert lease.id == "durable" and lease.digests == {d}
    assert again.gc([], lambda x: []) == []
    reopened = again.lease("durable")  # reopening keeps what it held
    assert reopened.digests == {d}
    doc = json.loads((Path(store.root) / "leases" / "durable.json").read_text())
    assert doc["digests"] == [d]


def test_lease_protects_ingest_from_abort_stale(store: ContentStore) -> None:
    lease = store.lease("resumable")
    w = store.writer("pull-kept", lease=lease)
    w.write(b"part")
    w.close()
    w = store.writer("pull-free")
    w.write(b"part")
    w.close()
    assert store.abort_stale(0) == ["pull-free"]
    assert [s.ref for s in store.ingests()] == ["pull-kept"]
    lease.release()
    assert store.abort_stale(0) == ["pull-kept"]


def test_lease_id_validated(store: ContentStore) -> None:
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(InvalidArgument):
            store.lease(bad)


def test_gc_while_writers_commit_under_lease(store: ContentStore) -> None:
    """GC racing with leased commits never removes a committed, leased blob."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def collector() -> None:
        try:
            while not stop.is_set():
                store.gc([], lambda x: [])
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=collector)
    t.start()
    try:
        with store.lease("busy") as lease:
            committed = [store.put(os.urandom(1000), lease=lease) for _ in range(20)]
            assert all(store.exists(d) for d in committed)
    finally:
        stop.set()
        t.join(timeout=30)
    assert errors == []


def test_gc_with_manifest_children(store: ContentStore) -> None:
    """Manifest -> config + layer survive; an unrelated blob goes."""
    if not BUSYBOX.exists():
        pytest.fail(f"test images not found at {BUSYBOX} (set DOCKYARD_SHARED)")
    blobs = BUSYBOX / "blobs" / "sha256"
    for f in blobs.iterdir():
        store.put(f.read_bytes(), Digest(f"sha256:{f.name}"))
    index = json.loads((BUSYBOX / "index.json").read_text())
    manifest = Digest(index["manifests"][0]["digest"])
    stray = store.put(b'{"schemaVersion": 3}')
    assert store.gc([manifest], blob_children(store)) == [stray]
    assert {f"sha256:{f.name}" for f in blobs.iterdir()} == set(store.walk())
    assert len(store.gc([], blob_children(store))) == 3
