"""The daemon's container records: persistence, names, lookups, filters, summaries.

Expected texts are dockerd's and go-units', written out by hand."""

from __future__ import annotations

import json
import os
import random
import threading

import pytest

from dockyard.daemon import names
from dockyard.daemon.containers import (
    ZERO_TIME, Container, ContainerStore, State, human_duration, status_text, summary,
    write_atomic,
)
from dockyard.errors import Conflict, InvalidArgument, NotFound

S = 1_000_000_000
MIN = 60 * S
H = 60 * MIN
DAY = 24 * H
WEEK = 7 * DAY
MONTH = 30 * DAY
YEAR = 365 * DAY
T0 = 1_700_000_000 * S  # a fixed "now" base for created times
IMG_A = "sha256:" + "a" * 64
IMG_B = "sha256:" + "b" * 64


def ts(ns: int) -> str:
    from dockyard.image.store import format_go_time
    return format_go_time(ns // S, ns % S)


def make(store: ContainerStore, name: str = "", *, at: int = 0, image: str = IMG_A,
         image_name: str = "busybox", labels: dict[str, str] | None = None,
         cid: str | None = None, **kw: object) -> Container:
    c = Container.new(image_id=image, config={"Image": image_name, "Labels": labels or {},
                                              "Cmd": ["sh"]},
                      host_config={"NetworkMode": "bridge"}, path="sh", args=["-c", "echo hi"],
                      name=name, created_ns=T0 + at, **kw)  # type: ignore[arg-type]
    if cid is not None:
        c.ID = cid
    return store.add(c)


@pytest.fixture
def store(tmp_path) -> ContainerStore:
    return ContainerStore(str(tmp_path / "containers"), rng=random.Random(7))


# -- persistence ---------------------------------------------------------------------

def test_round_trip_across_restart(tmp_path):
    root = str(tmp_path / "c")
    s1 = ContainerStore(root)
    c = make(s1, "web", labels={"a": "1"})
    s1.update_state(c.ID, Running=True, Pid=42, StartedAt=T0 + 5 * S)
    s1.update_state(c.ID, Running=False, Pid=0, ExitCode=3, FinishedAt=T0 + 9 * S)
    s1.update_state(c.ID, Health={"Status": "healthy", "FailingStreak": 0, "Log": []})
    c2 = make(s1)  # generated name
    before = {x.ID: x.inspect() for x in s1.all()}

    s2 = ContainerStore(root)
    after = {x.ID: x.inspect() for x in s2.all()}
    assert after == before
    got = s2.get("web")
    assert got.State.ExitCode == 3 and got.State.status == "exited"
    assert got.State.StartedAt == ts(T0 + 5 * S)
    assert got.HasBeenStartedBefore
    assert got.HostConfig == {"NetworkMode": "bridge"}
    assert s2.get(c2.ID).Name == c2.Name
    assert set(s2.names()) == {"/web", c2.Name}
    files = sorted(os.listdir(os.path.join(root, c.ID)))
    assert files == ["config.v2.json", "hostconfig.json"]


def test_inspect_shape(store):
    c = make(store, "xx")
    doc = c.inspect()
    assert list(doc) == ["Id", "Created", "Path", "Args", "State", "Image", "ResolvConfPath",
                         "HostnamePath", "HostsPath", "LogPath", "Name", "RestartCount",
                         "Driver", "Platform", "MountLabel", "ProcessLabel",
                         "AppArmorProfile", "ExecIDs", "HostConfig", "GraphDriver", "Mounts",
                         "Config", "NetworkSettings"]
    assert len(doc["Id"]) == 64 and not doc["Id"][:12].isdigit()
    assert doc["Created"] == ts(T0)
    assert doc["Name"] == "/xx" and doc["Driver"] == "overlay2" and doc["Platform"] == "linux"
    assert doc["ExecIDs"] is None
    assert doc["State"] == {"Status": "created", "Running": False, "Paused": False,
                            "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0,
                            "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME,
                            "FinishedAt": ZERO_TIME}
    assert doc["NetworkSettings"]["Networks"] == {}
    assert doc["GraphDriver"] == {"Data": None, "Name": "overlay2"}


def test_crash_leftovers_are_ignored_and_cleaned(tmp_path):
    root = str(tmp_path / "c")
    s1 = ContainerStore(root)
    c = make(s1, "keep")
    d = os.path.join(root, c.ID)
    # A write torn by a crash: its temp file holds half a document; the real file is intact.
    torn = os.path.join(d, ".config.v2.json.tmp-deadbeef")
    with open(torn, "w") as f:
        f.write('{"ID": "' + c.ID[:10])
    # A container whose creation never completed (no config.v2.json).
    half = os.path.join(root, "c" * 64)
    os.makedirs(half)
    with open(os.path.join(half, "hostconfig.json"), "w") as f:
        f.write("{}")
    # A removal interrupted after its rename.
    gone = os.path.join(root, ".removing-" + "d" * 64)
    os.makedirs(os.path.join(gone, "sub"))

    s2 = ContainerStore(root)
    assert [x.ID for x in s2.all()] == [c.ID]
    assert s2.get("keep").Name == "/keep"
    assert not os.path.exists(torn)
    assert not os.path.exists(gone)


def test_write_atomic_replaces_whole_file(tmp_path):
    p = str(tmp_path / "f.json")
    write_atomic(p, b"old")
    write_atomic(p, b"new contents")
    assert open(p, "rb").read() == b"new contents"
    assert os.listdir(tmp_path) == ["f.json"]


def test_remove_deletes_directory(store):
    c = make(store, "gone")
    d = store.dir(c.ID)
    open(os.path.join(d, "hostname"), "w").close()
    removed = store.remove("gone")
    assert removed.ID == c.ID
    assert not os.path.exists(d)
    assert os.listdir(store.root) == []
    with pytest.raises(NotFound, match="^No such container: gone$"):
        store.get("gone")
    make(store, "gone")  # the name is free again


def test_update_state_and_removal_flag(tmp_path):
    root = str(tmp_path / "c")
    s = ContainerStore(root)
    c = make(s, "rr")
    s.update_state("rr", Running=True, StartedAt=T0)
    assert s.get("rr").State.status == "running"
    s.update_state("rr", Paused=True)
    assert s.get("rr").State.status == "paused"
    s.update_state("rr", Paused=False, Restarting=True)
    assert s.get("rr").State.status == "restarting"
    s.update_state("rr", Running=False, Restarting=False, Dead=True)
    assert s.get("rr").State.status == "dead"
    s.update_state("rr", RemovalInProgress=True)
    assert s.get("rr").State.status == "removing"
    # Not persisted, as dockerd: after a restart the container is dead again.
    assert ContainerStore(root).get(c.ID).State.status == "dead"
    with pytest.raises(TypeError):
        s.update_state("rr", Status="running")


def test_returned_records_are_copies(store):
    c = make(store, "copy")
    c.State.Running = True
    got = store.get("copy")
    got.Config["Image"] = "changed"
    assert store.get("copy").State.Running is False
    assert store.get("copy").Config["Image"] == "busybox"


def test_concurrent_adds(store):
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            make(store, f"n{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == 20 and len(ContainerStore(store.root)) == 20


# -- names -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ab", "/ab", "a.b-c_d", "A1", "0x", "web_1.prod"])
def test_valid_names(name):
    assert names.validate_name(name) == "/" + name.lstrip("/")


@pytest.mark.parametrize("name", ["a", "/a", "_ab", "-ab", ".ab", "a b", "a/b", "ab\n",
                                  "héllo", "//ab", ""])
def test_invalid_names(name):
    with pytest.raises(InvalidArgument) as exc:
        names.validate_name(name)
    assert str(exc.value) == (f"Invalid container name ({name}), "
                              "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def test_add_with_invalid_name(store):
    with pytest.raises(InvalidArgument, match=r"^Invalid container name \(bad name\), only"):
        make(store, "bad name")
    assert len(store) == 0


def test_generated_names():
    rng = random.Random(1)
    pattern = __import__("re").compile(r"[a-z]+_[a-z]+")
    seen = set()
    for _ in range(2000):
        n = names.random_name(0, rng)
        assert pattern.fullmatch(n) and names.is_valid_name(n)
        assert n != "boring_wozniak"
        seen.add(n)
    assert len(seen) > 1500
    assert __import__("re").fullmatch(r"[a-z]+_[a-z]+[0-9]", names.random_name(3, rng))
    assert "boring" in names.LEFT and "wozniak" in names.RIGHT
    assert len(names.LEFT) >= 100 and len(names.RIGHT) >= 200


def test_never_boring_wozniak():
    class Rigged(random.Random):
        """Picks boring_wozniak first, then the first words."""
        calls = 0

        def choice(self, seq):  # type: ignore[override]
            self.calls += 1
            if self.calls <= 2:
                return "boring" if seq is names.LEFT else "wozniak"
            return seq[0]

    assert names.random_name(0, Rigged()) == f"{names.LEFT[0]}_{names.RIGHT[0]}"


def test_generate_name_collisions():
    tries: list[str] = []

    def taken(n: str) -> bool:
        tries.append(n)
        return True

    assert names.generate_name(taken, "0123456789abcdef" * 4) == "/0123456789ab"
    assert len(tries) == 6
    assert not tries[0][-1].isdigit() and all(t[-1].isdigit() for t in tries[1:])
    assert all(t.startswith("/") for t in tries)


def test_store_generates_unique_names(store):
    got = {make(store).Name for _ in range(50)}
    assert len(got) == 50
    assert all(names.is_valid_name(n) and n.startswith("/") for n in got)


# -- lookups --------------------------------------------------------------------------

def test_get_resolution(store):
    a = make(store, "alpha", cid="abc1" + "0" * 60)
    b = make(store, "beta", cid="abc2" + "0" * 60)
    assert store.get(a.ID).ID == a.ID
    assert store.get("alpha").ID == a.ID
    assert store.get("/alpha").ID == a.ID
    assert store.get("abc1").ID == a.ID
    assert store.get("abc2").ID == b.ID
    with pytest.raises(InvalidArgument) as exc:
        store.get("abc")
    assert str(exc.value) == "multiple IDs found with provided prefix: abc"
    with pytest.raises(NotFound) as nf:
        store.get("nope")
    assert str(nf.value) == "No such container: nope"
    with pytest.raises(InvalidArgument, match='^invalid name or ID supplied: ""$'):
        store.get("")


def test_name_wins_over_prefix(store):
    target = make(store, "x1", cid="f" * 64)
    other = make(store, "abc1", cid="abc1" + "e" * 60)
    # "abc1" is a name of one container and a prefix of another: the name wins.
    assert store.get("abc1").ID == other.ID
    named = make(store, "ffff")
    assert store.get("ffff").ID == named.ID and store.get("fff").ID == target.ID


def test_add_conflict(store):
    a = make(store, "dup")
    with pytest.raises(Conflict) as exc:
        make(store, "/dup")
    assert str(exc.value) == (
        f'Conflict. The container name "/dup" is already in use by container "{a.ID}". '
        "You have to remove (or rename) that container to be able to reuse that name.")


def test_rename(store, tmp_path):
    a = make(store, "one")
    b = make(store, "two")
    assert store.rename("one", "uno") == ("/one", "/uno")
    assert store.get("uno").ID == a.ID
    with pytest.raises(NotFound):
        store.get("one")
    assert ContainerStore(store.root).get("/uno").ID == a.ID
    with pytest.raises(Conflict) as exc:
        store.rename("uno", "two")
    assert str(exc.value) == (
        f'Error when allocating new name: Conflict. The container name "/two" is already in '
        f'use by container "{b.ID}". You have to remove (or rename) that container to be '
        "able to reuse that name.")
    with pytest.raises(InvalidArgument) as inv:
        store.rename("uno", "no way")
    assert str(inv.value) == ("Error when allocating new name: Invalid container name "
                              "(/no way), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    with pytest.raises(InvalidArgument, match="^Renaming a container with the same name"):
        store.rename("uno", "/uno")
    with pytest.raises(InvalidArgument, match="^Neither old nor new names may be empty$"):
        store.rename("uno", " / ")
    with pytest.raises(NotFound, match="^No such container: zzz$"):
        store.rename("zzz", "new")
    assert store.names() == {"/uno": a.ID, "/two": b.ID}


# -- list and its filters -------------------------------------------------------------

@pytest.fixture
def populated(store):
    """Oldest first: created, exited(0), exited(2), running, paused, dead, healthy."""
    cs = {}
    cs["created"] = make(store, "c-created", at=1 * S, labels={"tier": "db"})
    cs["ex0"] = make(store, "c-ex0", at=2 * S, image=IMG_B, labels={"tier": "web", "x": ""})
    store.update_state("c-ex0", StartedAt=T0 + 3 * S, FinishedAt=T0 + 4 * S, ExitCode=0)
    cs["ex2"] = make(store, "c-ex2", at=3 * S)
    store.update_state("c-ex2", StartedAt=T0 + 3 * S, FinishedAt=T0 + 4 * S, ExitCode=2)
    cs["run"] = make(store, "c-run", at=4 * S, labels={"tier": "web"},
                     Mounts=[{"Type": "volume", "Name": "data", "Source": "/v/data",
                              "Destination": "/data"}])
    store.update_state("c-run", Running=True, StartedAt=T0 + 5 * S)
    cs["paused"] = make(store, "c-paused", at=5 * S)
    store.update_state("c-paused", Running=True, Paused=True, StartedAt=T0 + 5 * S)
    cs["dead"] = make(store, "c-dead", at=6 * S)
    store.update_state("c-dead", Dead=True, StartedAt=T0 + 5 * S, FinishedAt=T0 + 6 * S)
    cs["healthy"] = make(store, "c-healthy", at=7 * S)
    store.update_state("c-healthy", Running=True, StartedAt=T0 + 5 * S,
                       Health={"Status": "healthy", "FailingStreak": 0, "Log": []})
    return cs


def names_of(cs: list[Container]) -> list[str]:
    return [c.Name.removeprefix("/").removeprefix("c-") for c in cs]


def test_list_default_and_all(store, populated):
    assert names_of(store.list()) == ["healthy", "paused", "run"]
    assert names_of(store.list(all=True)) == ["healthy", "dead", "paused", "run", "ex2", "ex0",
                                              "created"]
    # limit shows stopped containers too, newest first.
    assert names_of(store.list(limit=2)) == ["healthy", "dead"]


@pytest.mark.parametrize("filters,expected", [
    ({"status": ["created"]}, ["created"]),
    ({"status": ["exited"]}, ["ex2", "ex0"]),
    ({"status": ["running"]}, ["healthy", "run"]),
    ({"status": ["paused"]}, ["paused"]),
    ({"status": ["dead"]}, ["dead"]),
    ({"status": ["restarting", "removing"]}, []),
    ({"status": ["created", "dead"]}, ["dead", "created"]),
    # exited looks at the exit code of any stopped, once-started container: dead too.
    ({"exited": ["0"]}, ["dead", "ex0"]),
    ({"exited": ["2", "0"]}, ["dead", "ex2", "ex0"]),
    ({"exited": ["1"]}, []),
    ({"label": ["tier"]}, ["run", "ex0", "created"]),
    ({"label": ["tier=web"]}, ["run", "ex0"]),
    ({"label": ["tier=web", "x"]}, ["ex0"]),
    ({"label": ["x="]}, ["ex0"]),
    ({"label": ["nope"]}, []),
    ({"name": ["c-run"]}, ["run"]),
    ({"name": ["/c-run"]}, ["run"]),
    ({"name": ["ex"]}, ["ex2", "ex0"]),               # substring (unanchored regexp)
    ({"name": ["^c-(run|dead)$"]}, ["dead", "run"]),  # regexp
    ({"name": ["^/c-p"]}, ["paused"]),
    ({"name": ["[invalid"]}, []),                      # a bad regexp matches nothing
    ({"health": ["healthy"]}, ["healthy"]),
    ({"health": ["none"]}, ["dead", "paused", "run", "ex2", "ex0", "created"]),
    ({"health": ["starting", "unhealthy"]}, []),
    ({"volume": ["data"]}, ["run"]),
    ({"volume": ["/data"]}, ["run"]),
    ({"volume": ["/other"]}, []),
    ({"network": ["bridge"]}, []),
    ({"isolation": ["default"]}, ["healthy", "dead", "paused", "run", "ex2", "ex0", "created"]),
    ({"is-task": ["false"]}, ["healthy", "dead", "paused", "run", "ex2", "ex0", "created"]),
    ({"is-task": ["true"]}, []),
    ({"publish": ["80"]}, []),
    ({"expose": ["8000-8080/udp"]}, []),
    ({"ancestor": ["busybox"]}, ["healthy", "dead", "paused", "run", "ex2", "created"]),
    ({"ancestor": ["other"]}, ["ex0"]),
    ({"ancestor": ["missing"]}, []),
    ({"ancestor": ["missing", "other"]}, ["ex0"]),
])
def test_list_filters(store, populated, filters, expected):
    def ancestors(ref: str) -> list[str]:
        table = {"busybox": [IMG_A], "other": [IMG_B]}
        if ref not in table:
            raise NotFound(f"No such image: {ref}")
        return table[ref]

    assert names_of(store.list(all=True, filters=filters, ancestors=ancestors)) == expected


def test_status_filter_implies_all(store, populated):
    assert names_of(store.list(filters={"status": "exited"})) == ["ex2", "ex0"]
    assert names_of(store.list(filters={"exited": ["0"]})) == []  # exited does not


def test_id_filter(store):
    a = make(store, "aa", at=1, cid="abc1" + "0" * 60)
    make(store, "bb", at=2, cid="abc2" + "0" * 60)
    assert names_of(store.list(all=True, filters={"id": [a.ID]})) == ["aa"]
    assert names_of(store.list(all=True, filters={"id": ["abc1"]})) == ["aa"]
    # An ambiguous prefix matches nothing (dockerd's GetByPrefix fails).
    assert names_of(store.list(all=True, filters={"id": ["abc"]})) == []
    # With an id filter, a name filter only narrows.
    assert names_of(store.list(all=True, filters={"id": ["abc1"], "name": ["bb"]})) == []
    assert names_of(store.list(all=True, filters={"id": ["abc1"], "name": ["aa"]})) == ["aa"]


def test_before_since(store, populated):
    assert names_of(store.list(all=True, filters={"before": ["c-run"]})) == ["ex2", "ex0",
                                                                             "created"]
    assert names_of(store.list(all=True, filters={"since": ["/c-run"]})) == ["healthy", "dead",
                                                                             "paused"]
    run_id = populated["run"].ID
    assert names_of(store.list(all=True, since=run_id, before="c-healthy")) == ["dead",
                                                                                "paused"]
    with pytest.raises(NotFound, match="^No such container: nope$"):
        store.list(filters={"before": ["nope"]})
    # Prefixes are not accepted here, as in dockerd.
    with pytest.raises(NotFound, match=f"^No such container: {run_id[:12]}$"):
        store.list(filters={"since": [run_id[:12]]})


def test_limit_counts_after_filters(store, populated):
    assert names_of(store.list(limit=1, filters={"label": ["tier=web"]})) == ["run"]
    assert names_of(store.list(limit=5, filters={"label": ["tier"]})) == ["run", "ex0",
                                                                          "created"]


@pytest.mark.parametrize("filters,message", [
    ({"bogus": ["1"]}, "invalid filter 'bogus'"),
    ({"status": ["bogus"]}, "invalid filter 'status=bogus': invalid value for state (bogus): "
                            "must be one of created, running, paused, restarting, removing, "
                            "exited, dead"),
    ({"health": ["ok"]}, "invalid filter 'health=ok': invalid value for health (ok): "
                         "must be one of none, starting, healthy, unhealthy"),
    ({"exited": ["x"]}, "invalid filter 'exited=x': strconv.Atoi: parsing \"x\": "
                        "invalid syntax"),
    ({"exited": ["99999999999999999999"]},
     "invalid filter 'exited=99999999999999999999': strconv.Atoi: parsing "
     "\"99999999999999999999\": value out of range"),
    ({"is-task": ["maybe"]}, "invalid filter 'is-task=[maybe]'"),
    ({"is-task": []}, "invalid filter 'is-task'"),
    ({"publish": ["80:80"]}, "filter for 'publish' should not contain ':': 80:80"),
    ({"publish": ["http"]}, "error while looking up for publish http: invalid start port "
                            "'http': invalid syntax"),
    ({"expose": ["70000"]}, "error while looking up for expose 70000: invalid start port "
                            "'70000': value out of range"),
    ({"expose": ["90-80"]}, "error while looking up for expose 90-80: invalid port range: "
                            "90-80"),
    ({"expose": ["80-x/tcp"]}, "error while looking up for expose 80-x/tcp: invalid end port "
                               "'x': invalid syntax"),
    ({"expose": [""]}, "error while looking up for expose : invalid port range: "
                       "value is empty"),
])
def test_invalid_filters(store, populated, filters, message):
    with pytest.raises(InvalidArgument) as exc:
        store.list(filters=filters)
    assert str(exc.value) == message


def test_publish_expose_with_ports(store):
    c = make(store, "pp", NetworkSettings={"Networks": {}, "Ports": {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": None}})
    make(store, "qq")
    for f in ({"publish": ["8080"]}, {"publish": ["8000-8100/tcp"]}, {"expose": ["80"]},
              {"expose": ["53/UDP"]}):
        assert names_of(store.list(all=True, filters=f)) == ["pp"], f
    assert names_of(store.list(all=True, filters={"publish": ["80"]})) == []
    assert summary(c)["Ports"] == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 53, "Type": "udp"}]


def test_network_filter(store):
    make(store, "nn", NetworkSettings={"Networks": {"bridge": {"NetworkID": "f00d" * 16}}})
    make(store, "mm")
    for value in ("bridge", "f00d"):
        assert names_of(store.list(all=True, filters={"network": [value]})) == ["nn"]
    assert names_of(store.list(all=True, filters={"network": ["host"]})) == []


# -- summaries ------------------------------------------------------------------------

GO_UNITS = [  # go-units duration_test.go, HumanDuration(d) for each d
    (450 * S // 1000, "Less than a second"), (0, "Less than a second"),
    (-5 * S, "Less than a second"), (1 * S, "1 second"), (45 * S, "45 seconds"),
    (46 * S, "46 seconds"), (59 * S, "59 seconds"), (60 * S, "About a minute"),
    (119 * S, "About a minute"), (3 * MIN, "3 minutes"), (35 * MIN, "35 minutes"),
    (35 * MIN + 40 * S, "35 minutes"), (45 * MIN, "45 minutes"),
    (45 * MIN + 40 * S, "45 minutes"), (46 * MIN, "46 minutes"), (59 * MIN, "59 minutes"),
    (1 * H, "About an hour"), (1 * H + 29 * MIN, "About an hour"),
    (1 * H + 31 * MIN, "2 hours"), (1 * H + 59 * MIN, "2 hours"), (3 * H, "3 hours"),
    (3 * H + 29 * MIN, "3 hours"), (3 * H + 31 * MIN, "4 hours"),
    (3 * H + 59 * MIN, "4 hours"), (3 * H + 60 * MIN, "4 hours"), (24 * H, "24 hours"),
    (1 * DAY + 12 * H, "36 hours"), (2 * DAY, "2 days"), (7 * DAY, "7 days"),
    (13 * DAY + 5 * H, "13 days"), (2 * WEEK, "2 weeks"), (2 * WEEK + 4 * DAY, "2 weeks"),
    (3 * WEEK, "3 weeks"), (4 * WEEK, "4 weeks"), (4 * WEEK + 3 * DAY, "4 weeks"),
    (1 * MONTH, "4 weeks"), (1 * MONTH + 2 * WEEK, "6 weeks"), (2 * MONTH, "2 months"),
    (2 * MONTH + 2 * WEEK, "2 months"), (3 * MONTH, "3 months"),
    (3 * MONTH + 1 * WEEK, "3 months"), (5 * MONTH + 2 * WEEK, "5 months"),
    (13 * MONTH, "13 months"), (23 * MONTH, "23 months"), (24 * MONTH, "24 months"),
    (24 * MONTH + 2 * WEEK, "2 years"), (3 * YEAR + 2 * MONTH, "3 years"),
]


@pytest.mark.parametrize("d,text", GO_UNITS)
def test_human_duration(d, text):
    assert human_duration(d) == text


@pytest.mark.parametrize("d,text", GO_UNITS)
def test_status_up_and_exited(d, text):
    now = T0 + 10 * YEAR
    st = State(Running=True, StartedAt=ts(now - d))
    assert status_text(st, now) == f"Up {text}"
    st = State(StartedAt=ts(now - d - S), FinishedAt=ts(now - d), ExitCode=137)
    assert status_text(st, now) == f"Exited (137) {text} ago"


def test_status_texts():
    now = T0 + DAY
    started = ts(now - 3 * MIN)
    assert status_text(State(), now) == "Created"
    assert status_text(State(Running=True, StartedAt=started, Paused=True),
                       now) == "Up 3 minutes (Paused)"
    assert status_text(State(Running=True, Restarting=True, ExitCode=1, StartedAt=started,
                             FinishedAt=ts(now - 3 * S)), now) == "Restarting (1) 3 seconds ago"
    assert status_text(State(Running=True, StartedAt=started,
                             Health={"Status": "starting"}), now) == \
        "Up 3 minutes (health: starting)"
    assert status_text(State(Running=True, StartedAt=started,
                             Health={"Status": "unhealthy"}), now) == "Up 3 minutes (unhealthy)"
    assert status_text(State(Dead=True, StartedAt=started), now) == "Dead"
    assert status_text(State(RemovalInProgress=True, Dead=True), now) == "Removal In Progress"
    assert status_text(State(StartedAt=started), now) == ""  # started, never finished
    assert status_text(State(Running=True, StartedAt=ts(now - 2 * H)), now) == "Up 2 hours"
    assert status_text(State(Running=True, StartedAt=ts(now)), now) == "Up Less than a second"


def test_summary_shape(store):
    c = make(store, "sum", labels={"k": "v"})
    c.Args = ["-c", "echo hi", "x"]
    s = summary(c, now_ns=T0 + 5 * S)
    assert list(s) == ["Id", "Names", "Image", "ImageID", "Command", "Created", "Ports",
                       "Labels", "State", "Status", "HostConfig", "NetworkSettings", "Mounts"]
    assert s["Id"] == c.ID and s["Names"] == ["/sum"]
    assert s["Image"] == "busybox" and s["ImageID"] == IMG_A
    assert s["Command"] == "sh -c 'echo hi' x"
    assert s["Created"] == T0 // S
    assert s["Ports"] == [] and s["Mounts"] == []
    assert s["Labels"] == {"k": "v"}
    assert s["State"] == "created" and s["Status"] == "Created"
    assert s["HostConfig"] == {"NetworkMode": "bridge"}
    assert s["NetworkSettings"] == {"Networks": {}}
    c.Args = []
    assert summary(c)["Command"] == "sh"
    # The user's image reference, until it names another image (refreshImage).
    assert summary(c, resolve_image=lambda r: IMG_A)["Image"] == "busybox"
    assert summary(c, resolve_image=lambda r: IMG_B)["Image"] == IMG_A
    assert summary(c, resolve_image=lambda r: None)["Image"] == IMG_A
    json.dumps(s)


def test_summaries_and_counts(store, populated):
    out = store.summaries(all=True, now_ns=T0 + 65 * S, filters={"status": ["exited"]})
    assert [(s["Names"], s["Status"]) for s in out] == [
        (["/c-ex2"], "Exited (2) About a minute ago"),
        (["/c-ex0"], "Exited (0) About a minute ago")]
    assert store.counts() == {"running": 2, "paused": 1, "stopped": 4}
