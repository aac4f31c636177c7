"""The image store: images added from the content store, unpacked into snapshots and run
from a container root; names resolved, tagged and removed as dockerd does (its error texts
included); listing filters, prune and GC; pull and push through our own registry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.image.digest import Digest
from dockyard.image.manifest import OCI_CONFIG, OCI_MANIFEST, chain_ids
from dockyard.image.store import (ContainerUse, ImageStore, format_go_time, go_json,
                                  parse_go_time, parse_timestamp)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")

SHARED = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox"
VARIANTS = ("glibc", "musl", "uclibc")

GLIBC_ID = "sha256:c6348fa86ba0fb2108c9334f5fe913ddc6d853313e655891f133a0127c30099f"
GLIBC_MANIFEST = "sha256:1cfa4e2b09e127b9c4ed43578d3f3c18e7d44ea47b9ea98475c0cbe9086525f8"
GLIBC_DIFF_ID = "sha256:0958e0fef2d6a31e1325b8bfecd99dead933363682d69850a7606599023751bc"
GLIBC_LAYER_BLOB = "sha256:b05093807bb0294152bb9cf86d64da722732dddaf7f8882fa1f120477dbc4db3"


def layout(variant: str) -> Path:
    path = BUSYBOX / f"1.38.0-{variant}"
    if not path.exists():
        pytest.fail(f"test images not found at {path} (set DOCKYARD_SHARED)")
    return path


def put_layout(store: ImageStore, variant: str) -> Digest:
    """Every blob of a busybox layout into the content store; returns the manifest digest."""
    root = layout(variant)
    for blob in (root / "blobs" / "sha256").iterdir():
        store.content.put(blob.read_bytes(), f"sha256:{blob.name}")
    index = json.loads((root / "index.json").read_text())
    return Digest(index["manifests"][0]["digest"])


def synthetic(store: ImageStore, n: int, labels: dict[str, str] | None = None,
              created: str | None = "2020-01-01T00:00:00Z") -> Digest:
    """A tiny image of no layers (config + manifest only), distinct by N; returns its id."""
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": labels or {},
              "Env": [f"N={n}"]}, "rootfs": {"type": "layers", "diff_ids": []}}
    if created is not None:
        config["created"] = created
    raw = go_json(config)
    cid = store.content.put(raw)
    manifest = go_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": cid, "size": len(raw)},
                        "layers": []})
    store.add(store.content.put(manifest))
    return cid


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def glibc(store: ImageStore) -> ImageStore:
    """STORE with busybox:1.38.0-glibc added, tagged and unpacked."""
    img = store.add(put_layout(store, "glibc"))
    store.tag(img.id, "busybox:1.38.0-glibc")
    store.unpack(img.id)
    return store


def run_in(store: ImageStore, top: str, tmp_path: Path, key: str = "c1") -> subprocess.CompletedProcess:
    """Make a container root on TOP, mount it, run busybox true in it by chroot, clean up."""
    store.snapshots.prepare_container(key, top)
    merged = tmp_path / f"merged-{key}"
    merged.mkdir()
    store.snapshots.mount_container(key, str(merged))
    try:
        assert (merged / "bin" / "busybox").is_file()
        return subprocess.run(["chroot", str(merged), "/bin/busybox", "true"], capture_output=True)
    finally:
        store.snapshots.unmount_container(key)
        store.snapshots.remove(key)


# -- add, unpack, run ------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_add_unpack_and_run(store: ImageStore, tmp_path: Path, variant: str) -> None:
    target = put_layout(store, variant)
    img = store.add(target)
    config = json.loads(store.content.read(img.id))
    assert img.target == target and img.manifest_digest == target
    assert img.platform == "linux/amd64"
    assert not img.unpacked and img.dangling
    compressed = img.size
    top = store.unpack(img.id)
    assert top == chain_ids(config["rootfs"]["diff_ids"])[-1]
    after = store.get(img.id)
    assert after.unpacked and after.size > compressed  # now the unpacked size, as Docker's
    assert run_in(store, top, tmp_path).returncode == 0
    # A second unpack reuses the layer.
    assert store.unpack(img.id) == top
    assert [s for s in store.snapshots.snapshots() if s[0] == "layer"] == [("layer", top, None)]


def test_add_refuses_missing_content(store: ImageStore) -> None:
    target = put_layout(store, "glibc")
    store.content.delete(GLIBC_LAYER_BLOB)
    with pytest.raises(NotFound, match=f"layer 0 {GLIBC_LAYER_BLOB} is not in the content store"):
        store.add(target)
    with pytest.raises(NotFound, match="manifest sha256:0+ is not in the content store"):
        store.add("sha256:" + "0" * 64)
    assert store.images() == []


def test_add_from_an_index_picks_the_platform(store: ImageStore) -> None:
    target = put_layout(store, "musl")
    manifest = store.content.read(target)
    index = go_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                     "manifests": [{"mediaType": OCI_MANIFEST, "digest": target,
                                    "size": len(manifest),
                                    "platform": {"architecture": "amd64", "os": "linux"}}]})
    idx = store.content.put(index)
    img = store.add(idx)
    assert img.target == idx and img.manifest_digest == target
    with pytest.raises(NotFound, match="no matching manifest for linux/arm64/v8"):
        store.add(idx, platform="linux/arm64")


# -- inspect and history -------------------------------------------------------------------

def test_inspect_like_docker(glibc: ImageStore) -> None:
    info = glibc.inspect("busybox:1.38.0-glibc")
    assert info["Id"] == GLIBC_ID
    assert info["RepoTags"] == ["busybox:1.38.0-glibc"]
    assert info["RepoDigests"] == []
    assert info["Parent"] == "" and info["Comment"] == "" and info["Author"] == ""
    assert info["Created"] == "2026-05-13T02:21:49Z"
    assert info["Architecture"] == "amd64" and info["Os"] == "linux" and "Variant" not in info
    assert info["RootFS"] == {"Type": "layers", "Layers": [GLIBC_DIFF_ID]}
    # The values and key order dockerd 20.10 shows for this very image.
    assert info["Size"] == 4445830
    assert list(info["Config"]) == [
        "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "Tty",
        "OpenStdin", "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir", "Entrypoint",
        "OnBuild", "Labels"]
    assert info["Config"]["Cmd"] == ["sh"] and info["Config"]["Volumes"] is None
    graph = info["GraphDriver"]
    assert graph["Name"] == "overlay2" and "LowerDir" not in graph["Data"]
    assert os.path.isfile(os.path.join(graph["Data"]["UpperDir"], "bin", "busybox"))
    assert graph["Data"]["MergedDir"].endswith("/merged") and graph["Data"]["WorkDir"].endswith("/work")
    # `docker tag` (the fixture's) records the time; an image never tagged shows Go's zero time
    assert parse_go_time(info["Metadata"]["LastTagTime"]) is not None
    assert glibc.inspect(synthetic(glibc, 1))["Metadata"] == {"LastTagTime": "0001-01-01T00:00:00Z"}


def test_history_like_docker(glibc: ImageStore) -> None:
    rows = glibc.history(GLIBC_ID[7:19])
    assert rows == [{"Comment": "", "Created": 1778638909,
                     "CreatedBy": "BusyBox 1.38.0 (glibc), Debian 13", "Id": GLIBC_ID,
                     "Size": 4445830, "Tags": ["busybox:1.38.0-glibc"]}]


def test_history_of_several_layers_and_empty_ones(store: ImageStore) -> None:
    cid = synthetic(store, 1)
    raw = json.loads(store.content.read(cid))
    raw["history"] = [{"created": "2020-01-01T00:00:00Z", "created_by": "CMD x", "empty_layer": True},
                      {"created_by": "LABEL y", "comment": "hi", "empty_layer": True}]
    data = go_json(raw)
    new = store.content.put(data)
    manifest = go_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": new, "size": len(data)},
                        "layers": []})
    store.add(store.content.put(manifest))
    rows = store.history(new)
    assert [(r["Id"], r["CreatedBy"], r["Created"], r["Comment"], r["Size"]) for r in rows] == [
        (new, "LABEL y", 0, "hi", 0), ("<missing>", "CMD x", 1577836800, "", 0)]
    assert rows[0]["Tags"] is None


# -- resolution -------------------------------------------------------------------------------

def test_get_resolves_like_docker(glibc: ImageStore) -> None:
    for text in (GLIBC_ID, GLIBC_ID[7:], GLIBC_ID[7:19], GLIBC_ID[7:8], "sha256:" + GLIBC_ID[7:12],
                 "busybox:1.38.0-glibc", "docker.io/library/busybox:1.38.0-glibc",
                 "index.docker.io/busybox:1.38.0-glibc"):
        assert glibc.get(text).id == GLIBC_ID, text
    with pytest.raises(NotFound, match=r"^No such image: busybox:latest$"):
        glibc.get("busybox")
    with pytest.raises(NotFound, match=r"^No such image: nothere:v1$"):
        glibc.get("nothere:v1")
    with pytest.raises(NotFound, match=r"^No such image: sha256:0{64}$"):
        glibc.get("0" * 64)
    with pytest.raises(NotFound, match=r"^No such image: sha256:0{64}$"):
        glibc.get("sha256:" + "0" * 64)
    with pytest.raises(NotFound, match=r"^No such image: busybox@sha256:0{64}$"):
        glibc.get("busybox@sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument, match=r"repository name \(library/BusyBox\) must be lowercase"):
        glibc.get("BusyBox")
    # A name wins over an id prefix, as in Docker: tag something "c6" and ask for c6.
    other = synthetic(glibc, 1)
    glibc.tag(other, GLIBC_ID[7:9])
    assert glibc.get(GLIBC_ID[7:9]).id == other
    assert glibc.get(GLIBC_ID[7:10]).id == GLIBC_ID


def test_ambiguous_id_prefix(store: ImageStore) -> None:
    ids = []
    n = 0
    while True:  # tiny images until two share a first hex digit (at most 17)
        ids.append(synthetic(store, n))
        n += 1
        firsts = [i.hex[0] for i in ids]
        dup = next((c for c in firsts if firsts.count(c) > 1), None)
        if dup:
            break
    with pytest.raises(InvalidArgument, match=f"ambiguous image id prefix '{dup}'"):
        store.get(dup)


# -- tags and removal ------------------------------------------------------------------------------

def test_tag_and_untag(glibc: ImageStore) -> None:
    ref = glibc.tag("busybox:1.38.0-glibc", "localhost:5000/team/box")
    assert str(ref) == "localhost:5000/team/box:latest"
    assert glibc.get("localhost:5000/team/box").id == GLIBC_ID
    assert glibc.get(GLIBC_ID).repo_tags == ("busybox:1.38.0-glibc", "localhost:5000/team/box:latest")
    with pytest.raises(InvalidArgument, match="refusing to create an ambiguous tag using digest"):
        glibc.tag(GLIBC_ID, "busybox@sha256:" + "1" * 64)
    with pytest.raises(NotFound, match="No such image: nothere:latest"):
        glibc.tag("nothere", "x")
    # Moving a tag to another image.
    other = synthetic(glibc, 7)
    glibc.tag(other, "localhost:5000/team/box")
    assert glibc.get("localhost:5000/team/box").id == other
    assert glibc.untag("localhost:5000/team/box") == "localhost:5000/team/box:latest"
    with pytest.raises(NotFound):
        glibc.untag("localhost:5000/team/box")
    # State survives reopening the store (every change was committed).
    again = ImageStore(glibc.root)
    assert again.get(GLIBC_ID).repo_tags == ("busybox:1.38.0-glibc",)


def test_remove_by_tag_then_last_tag_deletes(glibc: ImageStore) -> None:
    top = chain_ids([GLIBC_DIFF_ID])[-1]
    glibc.tag(GLIBC_ID, "mine:1")
    assert glibc.remove("mine:1") == [{"Untagged": "mine:1"}]
    assert glibc.get(GLIBC_ID).repo_tags == ("busybox:1.38.0-glibc",)
    assert glibc.remove("busybox:1.38.0-glibc") == [
        {"Untagged": "busybox:1.38.0-glibc"}, {"Deleted": GLIBC_ID}, {"Deleted": top}]
    assert glibc.images() == [] and glibc.snapshots.snapshots() == []
    with pytest.raises(NotFound, match="No such image: busybox:1.38.0-glibc"):
        glibc.remove("busybox:1.38.0-glibc")


def test_remove_by_id_with_several_repositories(glibc: ImageStore) -> None:
    glibc.tag(GLIBC_ID, "mine:1")
    short = GLIBC_ID[7:19]
    with pytest.raises(Conflict) as err:
        glibc.remove(short)
    assert str(err.value) == (f"conflict: unable to delete {short} (must be forced) - image is "
                              "referenced in multiple repositories")
    records = glibc.remove(short, force=True)
    assert records[:3] == [{"Untagged": "busybox:1.38.0-glibc"}, {"Untagged": "mine:1"},
                           {"Deleted": GLIBC_ID}]


def test_remove_with_containers(glibc: ImageStore, tmp_path: Path) -> None:
    short = GLIBC_ID[7:19]
    running = lambda image_id: ["0123456789abcdef0123"]  # noqa: E731 - plain ids: running
    stopped = lambda image_id: [ContainerUse("fedcba9876543210", running=False)]  # noqa: E731
    with pytest.raises(Conflict) as err:
        glibc.remove("busybox:1.38.0-glibc", in_use=running)
    assert str(err.value) == ('conflict: unable to remove repository reference '
                              '"busybox:1.38.0-glibc" (must force) - container 0123456789ab is '
                              f"using its referenced image {short}")
    with pytest.raises(Conflict) as err:
        glibc.remove(GLIBC_ID, in_use=running, force=True)
    assert str(err.value) == (f"conflict: unable to delete {short} (cannot be forced) - image is "
                              "being used by running container 0123456789ab")
    # Forced removal of the tag: untagged, but the image stays for its container.
    assert glibc.remove("busybox:1.38.0-glibc", force=True, in_use=running) == [
        {"Untagged": "busybox:1.38.0-glibc"}]
    assert glibc.get(GLIBC_ID).dangling
    with pytest.raises(Conflict) as err:
        glibc.remove(short, in_use=stopped)
    assert str(err.value) == (f"conflict: unable to delete {short} (must be forced) - image is "
                              "being used by stopped container fedcba987654")
    # Forced: the image goes, its layer stays while a container snapshot sits on it.
    top = chain_ids([GLIBC_DIFF_ID])[-1]
    glibc.snapshots.prepare_container("ctr", top)
    assert glibc.remove(short, force=True, in_use=stopped) == [{"Deleted": GLIBC_ID}]
    assert glibc.snapshots.layer_path(top) is not None
    glibc.snapshots.remove("ctr")
    assert glibc.gc()["Layers"] == [top]


# -- listing --------------------------------------------------------------------------------------

def test_list_and_filters(glibc: ImageStore) -> None:
    old = synthetic(glibc, 1, {"tier": "db"}, created="2019-01-01T00:00:00Z")
    mid = synthetic(glibc, 2, {"tier": "web", "team": "a"}, created="2021-06-01T12:00:00.5Z")
    dangling = synthetic(glibc, 3, created="2022-01-01T00:00:00Z")
    glibc.tag(old, "db:1")
    glibc.tag(mid, "web:2")
    glibc.tag(mid, "localhost:5000/web:3")

    def ids(**kw) -> list[str]:
        return [s["Id"] for s in glibc.list(**kw)]

    assert ids() == [GLIBC_ID, dangling, mid, old]  # newest first
    summary = glibc.list(filters={"reference": ["web"]})[0]
    assert summary["RepoTags"] == ["web:2"] and summary["Id"] == mid
    assert summary["Labels"] == {"team": "a", "tier": "web"}
    assert summary["Containers"] == -1 and summary["SharedSize"] == -1 and summary["ParentId"] == ""
    assert ids(filters={"dangling": ["true"]}) == [dangling]
    assert ids(filters={"dangling": ["false"]}) == [GLIBC_ID, mid, old]
    assert ids(filters={"reference": ["busy*"]}) == [GLIBC_ID]
    assert ids(filters={"reference": ["busybox:*glibc"]}) == [GLIBC_ID]
    assert ids(filters={"reference": ["*"]}) == [GLIBC_ID, mid, old]  # `*` never crosses '/'
    assert glibc.list(filters={"reference": ["*/*"]})[0]["RepoTags"] == ["localhost:5000/web:3"]
    assert ids(filters={"label": ["tier"]}) == [mid, old]
    assert ids(filters={"label": ["tier=web"]}) == [mid]
    assert ids(filters={"label": ["tier", "team=a"]}) == [mid]
    assert ids(filters={"before": ["web:2"]}) == [old]
    assert ids(filters={"since": ["web:2"]}) == [GLIBC_ID, dangling]
    assert ids(filters={"since": ["db:1"], "before": [dangling.hex[:12]]}) == [mid]
    assert ids(filters={"until": ["2021-01-01T00:00:00Z"]}) == [old]
    assert glibc.list(in_use=lambda i: ["x"] if i == mid else [])[2]["Containers"] == 1
    with pytest.raises(InvalidArgument, match="^invalid filter 'colour'$"):
        glibc.list(filters={"colour": ["red"]})
    with pytest.raises(InvalidArgument, match="^invalid filter 'dangling=maybe'$"):
        glibc.list(filters={"dangling": ["maybe"]})
    with pytest.raises(NotFound, match="No such image: nothere:latest"):
        glibc.list(filters={"before": ["nothere"]})


def test_time_helpers() -> None:
    t = parse_go_time("2021-06-01T12:00:00.500000000+02:00")
    assert t is not None and (t.seconds, t.nanos) == (1622541600, 500000000)
    assert str(t) == "2021-06-01T12:00:00.5+02:00"
    assert format_go_time(0) == "1970-01-01T00:00:00Z"
    assert parse_go_time("yesterday") is None
    assert parse_timestamp("1h", now=10000.0) == 6400.0
    assert parse_timestamp("1600000000.5") == 1600000000.5
    assert parse_timestamp("2020-09-13T12:26:40Z") == 1600000000.0
    with pytest.raises(InvalidArgument, match="failed to parse value as time or duration"):
        parse_timestamp("soon")


# -- prune and GC ----------------------------------------------------------------------------------

def test_prune_dangling_and_unused(glibc: ImageStore) -> None:
    loose = synthetic(glibc, 1)
    busy = synthetic(glibc, 2)
    tagged = synthetic(glibc, 3, {"keep": "yes"})
    glibc.tag(tagged, "kept:1")
    in_use = lambda image_id: ["c0ffee"] if image_id == busy else []  # noqa: E731
    report = glibc.prune(in_use=in_use)
    assert report["ImagesDeleted"] == [{"Deleted": loose}]
    assert report["SpaceReclaimed"] > 0  # the config and manifest blobs
    assert not glibc.content.exists(loose)
    assert {i.id for i in glibc.images()} == {GLIBC_ID, busy, tagged}
    assert glibc.prune(in_use=in_use)["ImagesDeleted"] is None
    # dangling=false: every unused image, except what the label filter keeps
    report = glibc.prune(filters={"dangling": ["false"], "label!": ["keep=yes"]}, in_use=in_use)
    top = chain_ids([GLIBC_DIFF_ID])[-1]
    assert report["ImagesDeleted"] == [{"Untagged": "busybox:1.38.0-glibc"}, {"Deleted": GLIBC_ID},
                                       {"Deleted": top}]
    assert report["SpaceReclaimed"] >= 4445830 + 2226327  # layer files and blob
    assert {i.id for i in glibc.images()} == {busy, tagged}
    with pytest.raises(InvalidArgument, match="invalid filter 'reference'"):
        glibc.prune(filters={"reference": ["x"]})


def test_gc_keeps_images_and_leases(glibc: ImageStore) -> None:
    stray = glibc.content.put(b"nobody refers to me")
    with glibc.content.lease("held") as lease:
        kept = glibc.content.put(b"a pull in progress", lease=lease)
        result = glibc.gc()
        assert result["Content"] == [stray]
        assert result["SpaceReclaimed"] == len(b"nobody refers to me")
        assert glibc.content.exists(kept)
        for d in (GLIBC_ID, GLIBC_MANIFEST, GLIBC_LAYER_BLOB):
            assert glibc.content.exists(d)
    # The lease is gone: its blob is garbage now. An unpacked layer nobody uses goes too.
    orphan = Digest.of(b"orphan layer")
    glibc.snapshots.prepare_layer(orphan, None, lambda d: None)
    result = glibc.gc()
    assert result["Content"] == [kept] and result["Layers"] == [orphan]
    assert glibc.get("busybox:1.38.0-glibc").unpacked
    # Removing the image leaves its blobs to the next GC.
    glibc.remove("busybox:1.38.0-glibc")
    assert set(glibc.gc()["Content"]) == {GLIBC_ID, GLIBC_MANIFEST, GLIBC_LAYER_BLOB}
    assert list(glibc.content.walk()) == []


# -- pull and push through our registry ---------------------------------------------------------------

@pytest.fixture
def registry() -> Iterator[str]:
    server_mod = pytest.importorskip("dockyard.distribution.server")
    with tempfile.TemporaryDirectory(prefix="dockyard-registry-") as root:
        with server_mod.RegistryThread(root) as server:
            yield server.address


def test_push_then_pull(glibc: ImageStore, tmp_path: Path, registry: str) -> None:
    pytest.importorskip("dockyard.distribution.client")
    name = f"{registry}/test/busybox"
    glibc.tag(GLIBC_ID, f"{name}:v1")
    pushed = asyncio.run(glibc.push(f"{name}:v1"))
    assert pushed == GLIBC_MANIFEST  # the manifest goes as it is
    assert f"{name}@{pushed}" in glibc.get(GLIBC_ID).repo_digests
    fresh = ImageStore(tmp_path / "fresh")
    events: list[dict] = []
    img = asyncio.run(fresh.pull(f"{name}:v1", progress=events.append))
    assert img.id == GLIBC_ID and img.unpacked and img.size == 4445830
    assert img.repo_tags == (f"{name}:v1",)
    assert img.repo_digests == (f"{name}@{GLIBC_MANIFEST}",)
    assert fresh.get(f"{name}@{GLIBC_MANIFEST}").id == GLIBC_ID
    assert fresh.content.leases() == []  # the pull's lease was released
    assert events
    assert run_in(fresh, img.top_chain, tmp_path).returncode == 0
    # The last tag takes the repository's digests with it (docker rmi).
    assert fresh.remove(f"{name}:v1")[:3] == [
        {"Untagged": f"{name}:v1"}, {"Untagged": f"{name}@{GLIBC_MANIFEST}"}, {"Deleted": GLIBC_ID}]
