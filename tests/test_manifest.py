"""Manifests, indexes and configs: the real busybox OCI layouts, Docker schema 2
samples, schema 1 refusal, malformed input, platform matching and chain IDs."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockyard.errors import InvalidArgument, NotFound, Unsupported
from dockyard.image import manifest as mf
from dockyard.image.digest import Digest
from dockyard.image.manifest import (Descriptor, ImageConfig, Index, Manifest, Platform,
                                     chain_ids, parse_config, parse_manifest, parse_platform,
                                     select_platform)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKYARD_SHARED", REPO.parent / "shared"))
BUSYBOX = SHARED / "images" / "busybox"

# The diff IDs (sha256 of the uncompressed layer) the images' configs record.
BUSYBOX_DIFF_IDS = {
    "glibc": "sha256:0958e0fef2d6a31e1325b8bfecd99dead933363682d69850a7606599023751bc",
    "musl": "sha256:0f8918d0fe4f272ce8acece89916a9ba0b240584d3c1dd1943f343f69b0d0ffb",
    "uclibc": "sha256:53cd0c2915c2f208cd5e51dc3e268522034b42e563c6b8367be4d367a52497ce",
}


def sha(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert sha(data) == digest  # the fixture itself is intact
    return data


# -- the real images ---------------------------------------------------------------

@pytest.mark.parametrize("libc", sorted(BUSYBOX_DIFF_IDS))
def test_busybox_layout(libc: str) -> None:
    layout = BUSYBOX / f"1.38.0-{libc}"
    if not layout.exists():
        pytest.fail(f"test images not found at {layout} (set DOCKYARD_SHARED)")
    index_bytes = (layout / "index.json").read_bytes()
    index = parse_manifest(index_bytes)
    assert isinstance(index, Index) and index.media_type == mf.OCI_INDEX
    assert index.to_json() == index_bytes

    desc = select_platform(index, "linux/amd64")
    assert desc is index.manifests[0]
    assert desc.platform == Platform(os="linux", architecture="amd64")
    assert desc.annotations["org.opencontainers.image.ref.name"] == f"busybox:1.38.0-{libc}"
    with pytest.raises(NotFound, match="no matching manifest for linux/arm64/v8 in the manifest list entries"):
        select_platform(index, "linux/arm64")

    manifest_bytes = blob(layout, desc.digest)
    assert len(manifest_bytes) == desc.size
    m = parse_manifest(manifest_bytes, desc.media_type)
    assert isinstance(m, Manifest) and m.media_type == mf.OCI_MANIFEST
    assert m.digest() == desc.digest and m.to_json() == manifest_bytes
    assert m.config.media_type == mf.OCI_CONFIG
    assert [l.media_type for l in m.layers] == [mf.OCI_LAYER_GZIP]
    assert mf.layer_compression(m.layers[0].media_type) == "gzip"
    assert m.annotations["org.opencontainers.image.version"] == f"1.38.0-{libc}"
    assert mf.child_descriptors(m) == [m.config, *m.layers]

    config_bytes = blob(layout, m.config.digest)
    assert len(config_bytes) == m.config.size
    config = parse_config(config_bytes)
    assert (config.os, config.architecture) == ("linux", "amd64")
    assert config.cmd == ["sh"] and config.entrypoint == []
    assert config.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert config.diff_ids == [BUSYBOX_DIFF_IDS[libc]]
    assert config.history[0].created_by.startswith("BusyBox 1.38.0")
    assert config.created == "2026-05-13T02:21:49Z"
    assert config.digest() == m.config.digest  # the image ID stays the image ID
    mf.check_image(m, config)

    # The diff ID is the digest of the decompressed layer.
    layer = blob(layout, m.layers[0].digest)
    assert len(layer) == m.layers[0].size
    assert sha(gzip.decompress(layer)) == config.diff_ids[0]
    assert chain_ids(config.diff_ids) == config.diff_ids  # one layer: chain ID = diff ID


def test_reserialising_after_change_and_canonical_form() -> None:
    layout = BUSYBOX / "1.38.0-musl"
    index = parse_manifest((layout / "index.json").read_bytes())
    m = parse_manifest(blob(layout, index.manifests[0].digest))
    config = parse_config(blob(layout, m.config.digest))
    original = config.to_json()

    config.config["Env"].append("GREETING=<hello & bye>")
    changed = config.to_json()
    assert changed != original
    # Go's encoding/json: compact, OCI field order, HTML characters escaped.
    assert changed.startswith(b'{"created":"2026-05-13T02:21:49Z","architecture":"amd64","os":"linux",'
                              b'"config":{')
    assert b'"GREETING=\\u003chello \\u0026 bye\\u003e"' in changed
    again = parse_config(changed)
    assert again.env[-1] == "GREETING=<hello & bye>"
    assert again.to_json() == changed and again.canonical_json() == changed

    # Manifests re-serialise the same way, in Go's struct field order.
    m.annotations["z"] = "last"
    m.annotations["a"] = "first"
    out = json.loads(m.to_json())
    assert list(out) == ["schemaVersion", "mediaType", "config", "layers", "annotations"]
    assert list(out["annotations"])[0] == "a"
    assert list(out["config"]) == ["mediaType", "digest", "size"]
    assert m.digest() == sha(m.to_json()) != index.manifests[0].digest
    assert m.descriptor() == Descriptor(mf.OCI_MANIFEST, m.digest(), len(m.to_json()))
    indented = m.canonical_json(indent="   ")
    assert indented.startswith(b'{\n   "schemaVersion": 2,')


def test_built_objects_serialise_canonically() -> None:
    layer = Descriptor(mf.OCI_LAYER_ZSTD, Digest(sha(b"layer")), 5)
    config = ImageConfig(architecture="arm64", os="linux", variant="v8",
                         config={"Cmd": ["/bin/sh"], "Labels": {"b": "2", "a": "1"}},
                         diff_ids=[Digest(sha(b"diff"))])
    cdesc = config.descriptor()
    assert cdesc.media_type == mf.OCI_CONFIG and cdesc.size == len(config.to_json())
    assert config.to_json() == (
        b'{"architecture":"arm64","variant":"v8","os":"linux","config":{"Cmd":["/bin/sh"],'
        b'"Labels":{"a":"1","b":"2"}},"rootfs":{"type":"layers","diff_ids":["' +
        sha(b"diff").encode() + b'"]}}')
    m = Manifest(mf.OCI_MANIFEST, cdesc, [layer])
    assert parse_manifest(m.to_json()) == m
    assert json.loads(m.to_json())["layers"][0] == {"mediaType": mf.OCI_LAYER_ZSTD,
                                                    "digest": sha(b"layer"), "size": 5}


def test_unknown_fields_survive() -> None:
    doc = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "futureField": [1, 2],
           "config": {"mediaType": mf.OCI_CONFIG, "digest": sha("c"), "size": 1, "x-new": True},
           "layers": []}
    m = parse_manifest(json.dumps(doc).encode())
    m.annotations["k"] = "v"
    out = json.loads(m.to_json())
    assert out["futureField"] == [1, 2] and out["config"]["x-new"] is True


# -- Docker schema 2 ---------------------------------------------------------------

DOCKER_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
               "digest": sha("config")},
    "layers": [
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2814446,
         "digest": sha("layer0")},
        {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 100,
         "digest": sha("layer1"), "urls": ["https://example.invalid/layer1"]},
    ],
}

DOCKER_LIST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
         "digest": sha("amd64"), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
         "digest": sha("armv6"), "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
         "digest": sha("arm64"), "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 1161,
         "digest": sha("windows"), "platform": {"architecture": "amd64", "os": "windows",
                                                "os.version": "10.0.17763.6054"}},
    ],
}

DOCKER_CONFIG = {
    "architecture": "amd64",
    "config": {"Hostname": "", "User": "nobody", "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"],
               "WorkingDir": "/srv", "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}},
               "Labels": {"maintainer": "x"}, "StopSignal": "SIGQUIT",
               "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000},
               "OnBuild": None},
    "container": "3bdbd2e5d0b6", "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD"]},
    "created": "2024-01-27T00:30:48.743965523Z", "docker_version": "20.10.23",
    "history": [{"created": "2024-01-27T00:30:48Z", "created_by": "ADD file:x in /"},
                {"created": "2024-01-27T00:30:48Z", "created_by": "CMD [\"/bin/sh\"]",
                 "empty_layer": True}],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [sha("d0"), sha("d1")]},
}


def test_docker_schema2_manifest() -> None:
    raw = json.dumps(DOCKER_MANIFEST, indent=3).encode()
    m = parse_manifest(raw)
    assert isinstance(m, Manifest) and m.media_type == mf.DOCKER_MANIFEST
    assert m.config.media_type == mf.DOCKER_CONFIG and m.config.size == 1469
    assert [l.digest for l in m.layers] == [sha("layer0"), sha("layer1")]
    assert m.layers[1].urls == ["https://example.invalid/layer1"]
    assert m.layers[1].media_type in mf.NONDISTRIBUTABLE_TYPES
    assert m.to_json() == raw and m.digest() == sha(raw)
    # Served with its own media type: accepted; with a contradicting one: refused.
    assert parse_manifest(raw, mf.DOCKER_MANIFEST) == m
    with pytest.raises(InvalidArgument, match="mediaType"):
        parse_manifest(raw, mf.OCI_MANIFEST)
    # A generic Content-Type from a registry: the body decides.
    assert parse_manifest(raw, "application/json").media_type == mf.DOCKER_MANIFEST


def test_docker_manifest_list_and_config() -> None:
    idx = parse_manifest(json.dumps(DOCKER_LIST).encode(), mf.DOCKER_MANIFEST_LIST)
    assert isinstance(idx, Index) and idx.media_type == mf.DOCKER_MANIFEST_LIST
    assert select_platform(idx, "linux/amd64").digest == sha("amd64")
    assert select_platform(idx, "linux/arm64").digest == sha("arm64")
    assert select_platform(idx, "linux/arm/v7").digest == sha("armv6")  # v7 runs v6
    assert select_platform(idx, "windows/amd64").digest == sha("windows")
    win = Platform(os="windows", architecture="amd64", os_version="10.0.17763.5000")
    assert select_platform(idx, win).digest == sha("windows")
    with pytest.raises(NotFound):
        select_platform(idx, Platform(os="windows", architecture="amd64",
                                      os_version="10.0.20348.1"))

    raw = json.dumps(DOCKER_CONFIG).encode()
    c = parse_config(raw)
    assert c.user == "nobody" and c.working_dir == "/srv" and c.labels == {"maintainer": "x"}
    assert c.config["ExposedPorts"] == {"80/tcp": {}} and c.config["StopSignal"] == "SIGQUIT"
    assert c.config["Healthcheck"]["Test"] == ["CMD", "true"]
    assert c.history[1].empty_layer and not c.history[0].empty_layer
    assert c.extra["docker_version"] == "20.10.23"
    assert c.to_json() == raw
    c.config["Cmd"] = ["/bin/bash"]
    out = json.loads(c.to_json())
    assert out["container"] == "3bdbd2e5d0b6" and out["history"][1]["empty_layer"] is True
    assert out["config"]["Cmd"] == ["/bin/bash"]


def test_check_image_counts_layers() -> None:
    m = parse_manifest(json.dumps(DOCKER_MANIFEST).encode())
    c = parse_config(json.dumps(DOCKER_CONFIG).encode())
    mf.check_image(m, c)
    c.diff_ids.pop()
    with pytest.raises(InvalidArgument, match="2 layers"):
        mf.check_image(m, c)


# -- schema 1 --------------------------------------------------------------------

SCHEMA1 = {"schemaVersion": 1, "name": "library/busybox", "tag": "latest",
           "architecture": "amd64",
           "fsLayers": [{"blobSum": sha("x")}], "history": [{"v1Compatibility": "{}"}]}


@pytest.mark.parametrize("doc,media_type", [
    (SCHEMA1, None),
    (SCHEMA1, "application/vnd.docker.distribution.manifest.v1+prettyjws"),
    (SCHEMA1, "application/vnd.docker.distribution.manifest.v1+json"),
    ({**SCHEMA1, "signatures": [{"header": {}, "signature": "x", "protected": "y"}]}, None),
    ({**SCHEMA1, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"}, None),
    ({**DOCKER_MANIFEST, "schemaVersion": 1}, None),
])
def test_schema1_refused(doc: dict[str, Any], media_type: str | None) -> None:
    with pytest.raises(Unsupported, match="application/vnd.docker.distribution.manifest.v1") as exc:
        parse_manifest(json.dumps(doc).encode(), media_type)
    assert "schema 1" in str(exc.value)


# -- malformed input ----------------------------------------------------------------

def _oci_manifest() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": mf.OCI_CONFIG, "digest": sha("c"), "size": 2},
            "layers": [{"mediaType": mf.OCI_LAYER_GZIP, "digest": sha("l0"), "size": 10},
                       {"mediaType": mf.OCI_LAYER_GZIP, "digest": sha("l1"), "size": 20}]}


def _oci_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": mf.OCI_INDEX,
            "manifests": [{"mediaType": mf.OCI_MANIFEST, "digest": sha("m"), "size": 3,
                           "platform": {"os": "linux", "architecture": "amd64"}}]}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


_DELETE = object()

MALFORMED_MANIFESTS = [
    ("missing config", _set("config", _DELETE), "config: required"),
    ("config not an object", _set("config", "sha256:abc"), "config: must be an object"),
    ("config without digest", _set("config.digest", _DELETE), "config.digest: required"),
    ("bad config digest", _set("config.digest", "sha256:xyz"), "config.digest"),
    ("unknown algorithm", _set("config.digest", "md5:" + "0" * 32), "config.digest"),
    ("config without mediaType", _set("config.mediaType", _DELETE), "config.mediaType: required"),
    ("config mediaType not a type", _set("config.mediaType", "json"), "config.mediaType"),
    ("negative size", _set("layers.1.size", -1), "layers[1].size"),
    ("string size", _set("layers.0.size", "10"), "layers[0].size"),
    ("float size", _set("layers.0.size", 10.5), "layers[0].size"),
    ("missing size", _set("layers.0.size", _DELETE), "layers[0].size: required"),
    ("bad layer digest", _set("layers.1.digest", "sha256:" + "A" * 64), "layers[1].digest"),
    ("layer not object", _set("layers.0", 5), "layers[0]: must be an object"),
    ("missing layers", _set("layers", _DELETE), "layers: required"),
    ("layers not a list", _set("layers", {}), "layers: must be an array"),
    ("schemaVersion 3", _set("schemaVersion", 3), "schemaVersion: must be 2"),
    ("schemaVersion string", _set("schemaVersion", "2"), "schemaVersion: must be 2"),
    ("schemaVersion missing", _set("schemaVersion", _DELETE), "schemaVersion: required"),
    ("annotation not a string", _set("annotations", {"a": 1}), "annotations['a']"),
    ("urls not strings", _set("layers.0.urls", [1]), "layers[0].urls"),
    ("manifests in a manifest", _set("manifests", []), "manifests: not allowed"),
    ("mediaType not a string", _set("mediaType", 7), "mediaType: must be a string"),
    ("bad embedded data", _set("config.data", "e30="), "config.data"),  # "{}" is not sha("c")
    ("non-base64 data", _set("config.data", "!!"), "config.data"),
    ("subject bad digest", _set("subject", {"mediaType": mf.OCI_MANIFEST, "digest": "x",
                                            "size": 1}), "subject.digest"),
]


@pytest.mark.parametrize("mutate,field", [(m, f) for _, m, f in MALFORMED_MANIFESTS],
                         ids=[name for name, _, _ in MALFORMED_MANIFESTS])
def test_malformed_manifest(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = _oci_manifest()
    mutate(doc)
    with pytest.raises(InvalidArgument) as exc:
        parse_manifest(json.dumps(doc).encode())
    assert field in str(exc.value)


MALFORMED_INDEXES = [
    ("missing manifests", _set("manifests", _DELETE), "manifests: required"),
    ("manifests not a list", _set("manifests", "x"), "manifests: must be an array"),
    ("entry bad digest", _set("manifests.0.digest", "sha256:1234"), "manifests[0].digest"),
    ("entry negative size", _set("manifests.0.size", -5), "manifests[0].size"),
    ("platform without architecture", _set("manifests.0.platform.architecture", _DELETE),
     "manifests[0].platform.architecture: required"),
    ("platform os not a string", _set("manifests.0.platform.os", 1),
     "manifests[0].platform.os"),
    ("layers in an index", _set("layers", []), "layers: not allowed"),
    ("wrong schemaVersion", _set("schemaVersion", 1), "schema 1"),
]


@pytest.mark.parametrize("mutate,field", [(m, f) for _, m, f in MALFORMED_INDEXES],
                         ids=[name for name, _, _ in MALFORMED_INDEXES])
def test_malformed_index(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = _oci_index()
    mutate(doc)
    with pytest.raises(InvalidArgument) as exc:
        parse_manifest(json.dumps(doc).encode())
    assert field in str(exc.value)


@pytest.mark.parametrize("data,field", [
    (b"not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "must be an object"),
    (b'{"schemaVersion": 2}', "mediaType: missing"),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.config.v1+json"}',
     "unsupported manifest media type"),
])
def test_unparseable_manifest(data: bytes, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        parse_manifest(data)


def test_manifest_without_media_type_field_detected() -> None:
    doc = _oci_manifest()
    del doc["mediaType"]
    assert parse_manifest(json.dumps(doc).encode()).media_type == mf.OCI_MANIFEST
    doc = _oci_index()
    del doc["mediaType"]
    assert parse_manifest(json.dumps(doc).encode()).media_type == mf.OCI_INDEX


def test_embedded_data_verified() -> None:
    doc = _oci_manifest()
    doc["config"] = {"mediaType": mf.OCI_EMPTY, "digest": sha(b"{}"), "size": 2, "data": "e30="}
    m = parse_manifest(json.dumps(doc).encode())
    assert m.config.data == b"{}"
    assert json.loads(m.canonical_json())["config"]["data"] == "e30="


def _config() -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha("d0")]}}


@pytest.mark.parametrize("mutate,field", [
    (_set("rootfs.diff_ids.0", "sha256:short"), "rootfs.diff_ids[0]"),
    (_set("rootfs.diff_ids", "x"), "rootfs.diff_ids: must be an array"),
    (_set("rootfs.type", "tarball"), "rootfs.type"),
    (_set("rootfs", _DELETE), "rootfs: required"),
    (_set("os", _DELETE), "os: required"),
    (_set("architecture", 64), "architecture: must be a string"),
    (_set("config", []), "config: must be an object"),
    (_set("history", [{"empty_layer": "yes"}]), "history[0].empty_layer"),
    (_set("created", 5), "created"),
])
def test_malformed_config(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = _config()
    mutate(doc)
    with pytest.raises(InvalidArgument) as exc:
        parse_config(json.dumps(doc).encode())
    assert field in str(exc.value)
    assert "image config" in str(exc.value)


def test_config_not_json() -> None:
    with pytest.raises(InvalidArgument, match="image config: not valid JSON"):
        parse_config(b"{")


def test_scratch_config_with_null_diff_ids() -> None:
    doc = _config()
    doc["rootfs"]["diff_ids"] = None
    assert parse_config(json.dumps(doc).encode()).diff_ids == []


# -- chain IDs ---------------------------------------------------------------------

def test_chain_ids() -> None:
    diffs = [sha(f"layer{i}") for i in range(4)]
    # Independently: the image-spec's recursive definition, written out.
    c0 = diffs[0]
    c1 = "sha256:" + hashlib.sha256((c0 + " " + diffs[1]).encode()).hexdigest()
    c2 = "sha256:" + hashlib.sha256((c1 + " " + diffs[2]).encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256((c2 + " " + diffs[3]).encode()).hexdigest()
    assert chain_ids(diffs) == [c0, c1, c2, c3]
    assert all(isinstance(c, Digest) for c in chain_ids(diffs))
    assert chain_ids([]) == []
    assert chain_ids(diffs[:2]) == [c0, c1]  # a prefix's chain is the chain's prefix
    with pytest.raises(InvalidArgument):
        chain_ids(["sha256:bad"])


def test_chain_id_known_value() -> None:
    # Two layers of well-known content: the empty tar (1024 zero bytes) twice.
    empty_tar = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    assert sha(b"\0" * 1024) == empty_tar
    expected = "sha256:" + hashlib.sha256(f"{empty_tar} {empty_tar}".encode()).hexdigest()
    assert chain_ids([empty_tar, empty_tar])[1] == expected


# -- platforms ---------------------------------------------------------------------

def _entry(name: str, os_: str | None, arch: str | None, variant: str = "",
           annotations: dict[str, str] | None = None,
           media_type: str = mf.OCI_MANIFEST) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media_type, "digest": sha(name), "size": 100}
    if os_ is not None:
        d["platform"] = {"os": os_, "architecture": arch}
        if variant:
            d["platform"]["variant"] = variant
    if annotations:
        d["annotations"] = annotations
    return d


ATTEST = {"vnd.docker.reference.type": "attestation-manifest",
          "vnd.docker.reference.digest": sha("amd64")}


def _index(*entries: dict[str, Any]) -> Index:
    idx = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX,
                                     "manifests": list(entries)}).encode())
    assert isinstance(idx, Index)
    return idx


MULTI = _index(
    _entry("att-amd64", "unknown", "unknown", annotations=ATTEST),  # first on purpose
    _entry("amd64", "linux", "amd64"),
    _entry("arm32v5", "linux", "arm", "v5"),
    _entry("arm32v6", "linux", "arm", "v6"),
    _entry("arm32v7", "linux", "arm", "v7"),
    _entry("arm64", "linux", "arm64", "v8"),
    _entry("386", "linux", "386"),
    _entry("ppc64le", "linux", "ppc64le"),
    _entry("att-arm64", "unknown", "unknown", annotations=ATTEST),
    _entry("windows", "windows", "amd64"),
)


@pytest.mark.parametrize("want,expected", [
    ("linux/amd64", "amd64"),
    ("linux/x86_64", "amd64"),
    ("linux/x86-64", "amd64"),
    ("LINUX/AMD64", "amd64"),
    ("amd64", "amd64"),
    ("linux/amd64/v1", "amd64"),
    ("linux/amd64/v3", "amd64"),  # v3 runs v2 and v1
    ("linux/arm64", "arm64"),
    ("linux/aarch64", "arm64"),
    ("linux/arm64/v8", "arm64"),
    ("linux/arm64/8", "arm64"),
    ("linux/arm64/v8.2", "arm64"),
    ("linux/arm", "arm32v7"),
    ("linux/armhf", "arm32v7"),
    ("linux/arm/7", "arm32v7"),
    ("linux/arm/v6", "arm32v6"),
    ("linux/armel", "arm32v6"),
    ("linux/arm/v5", "arm32v5"),
    ("linux/i386", "386"),
    ("linux/ppc64le", "ppc64le"),
    ("windows/amd64", "windows"),
    (Platform(os="Linux", architecture="aarch64"), "arm64"),
])
def test_select_platform(want: str | Platform, expected: str) -> None:
    assert select_platform(MULTI, want).digest == sha(expected)


@pytest.mark.parametrize("entries,want,expected", [
    # Fallbacks, as containerd's platforms.Only orders them.
    ([("v5", "linux", "arm", "v5"), ("v6", "linux", "arm", "v6")], "linux/arm/v7", "v6"),
    ([("v5", "linux", "arm", "v5")], "linux/arm64", "v5"),
    ([("x86", "linux", "386", "")], "linux/amd64", "x86"),
    ([("v2", "linux", "amd64", "v2"), ("v1", "linux", "amd64", "")], "linux/amd64/v3", "v2"),
    ([("arm7", "linux", "arm", "v7"), ("arm64", "linux", "arm64", "")], "linux/arm64", "arm64"),
    # An arm64 entry without a variant is v8; the exactly spelled one wins a tie.
    ([("plain", "linux", "arm64", ""), ("v8", "linux", "arm64", "v8")], "linux/arm64/v8", "v8"),
    ([("plain", "linux", "arm64", "")], "linux/arm64/v8", "plain"),
    ([("upper", "Linux", "ARM64", "V8")], "linux/arm64", "upper"),
    ([("v8", "linux", "arm64", "v8"), ("plain", "linux", "arm64", "")],
     Platform(os="linux", architecture="arm64"), "plain"),
    # First of two equal entries.
    ([("one", "linux", "amd64", ""), ("two", "linux", "amd64", "")], "linux/amd64", "one"),
])
def test_select_platform_preferences(entries: list[tuple[str, str, str, str]],
                                     want: str | Platform, expected: str) -> None:
    idx = _index(*(_entry(*e) for e in entries))
    assert select_platform(idx, want).digest == sha(expected)


@pytest.mark.parametrize("entries,want,message", [
    ([("amd64", "linux", "amd64", "")], "linux/arm64",
     "no matching manifest for linux/arm64/v8 in the manifest list entries"),
    ([("amd64", "linux", "amd64", "")], "linux/arm",
     "no matching manifest for linux/arm/v7 in the manifest list entries"),
    ([("amd64", "linux", "amd64", "")], "linux/s390x",
     "no matching manifest for linux/s390x in the manifest list entries"),
    ([("v7", "linux", "arm", "v7")], "linux/arm/v6",
     "no matching manifest for linux/arm/v6 in the manifest list entries"),
    ([("amd64v2", "linux", "amd64", "v2")], "linux/amd64", "linux/amd64 in"),
    ([("win", "windows", "amd64", "")], "linux/amd64", "linux/amd64"),
])
def test_select_platform_not_found(entries: list[tuple[str, str, str, str]], want: str,
                                   message: str) -> None:
    idx = _index(*(_entry(*e) for e in entries))
    with pytest.raises(NotFound) as exc:
        select_platform(idx, want)
    assert message in str(exc.value)


def test_attestations_never_selected() -> None:
    # An attestation with a real-looking platform is still skipped by its annotation.
    idx = _index(_entry("att", "linux", "amd64", annotations=ATTEST),
                 _entry("unknown", "unknown", "unknown"))
    assert all(d.is_attestation for d in idx.manifests)
    with pytest.raises(NotFound, match="linux/amd64"):
        select_platform(idx, "linux/amd64")
    idx = _index(_entry("att", "linux", "amd64", annotations=ATTEST), _entry("real", "linux", "amd64"))
    assert select_platform(idx).digest == sha("real")


def test_entries_without_platform() -> None:
    idx = _index(_entry("noplat", None, None),
                 _entry("nested", "linux", "amd64", media_type=mf.OCI_INDEX))
    with pytest.raises(NotFound):
        select_platform(idx, "linux/amd64")  # unknown platform; nested indexes not followed
    seen: list[Descriptor] = []

    def platform_of(d: Descriptor) -> Platform | None:
        seen.append(d)
        return Platform(os="linux", architecture="amd64")

    assert select_platform(idx, "linux/amd64", platform_of=platform_of).digest == sha("noplat")
    assert [d.digest for d in seen] == [sha("noplat")]


@pytest.mark.parametrize("spec,expected", [
    ("linux/arm64/v8", Platform(os="linux", architecture="arm64", variant="v8")),
    ("linux/arm64", Platform(os="linux", architecture="arm64", variant="v8")),
    ("linux/aarch64", Platform(os="linux", architecture="arm64", variant="v8")),
    ("linux/amd64", Platform(os="linux", architecture="amd64")),
    ("Linux/X86_64", Platform(os="linux", architecture="amd64")),
    ("linux/arm", Platform(os="linux", architecture="arm", variant="v7")),
    ("linux/arm/6", Platform(os="linux", architecture="arm", variant="v6")),
    ("linux/riscv64", Platform(os="linux", architecture="riscv64")),
    ("arm64", Platform(os="linux", architecture="arm64", variant="v8")),
    ("s390x", Platform(os="linux", architecture="s390x")),
    ("windows(10.0.17763)/amd64", Platform(os="windows", architecture="amd64",
                                           os_version="10.0.17763")),
    ("macos/arm64", Platform(os="darwin", architecture="arm64", variant="v8")),
])
def test_parse_platform(spec: str, expected: Platform) -> None:
    assert parse_platform(spec) == expected


def test_parse_lone_os_uses_host_arch() -> None:
    p = parse_platform("linux")
    host = mf.default_platform()
    assert (p.os, p.architecture, p.variant) == ("linux", host.architecture, host.variant)


@pytest.mark.parametrize("spec", ["", "linux/", "/amd64", "linux/amd64/v8/x", "linux/*",
                                  "notanarch", "linux/am d64", "linux/amd64/v8%"])
def test_parse_platform_invalid(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_platform(spec)


@pytest.mark.parametrize("platform,text", [
    (Platform(os="linux", architecture="arm64", variant="v8"), "linux/arm64/v8"),
    (Platform(os="linux", architecture="amd64"), "linux/amd64"),
    (Platform(os="", architecture="amd64"), "unknown"),
])
def test_format_platform(platform: Platform, text: str) -> None:
    assert mf.format_platform(platform) == text == str(platform)
    if platform.os:
        assert parse_platform(text) == platform


def test_platform_serialisation_order() -> None:
    p = Platform(os="windows", architecture="amd64", os_version="10.0.17763.1",
                 os_features=["win32k"], variant="")
    assert list(p.to_dict()) == ["architecture", "os", "os.version", "os.features"]


def test_descriptor_copy_is_independent() -> None:
    idx = copy.deepcopy(MULTI)
    idx.manifests.pop()
    assert idx.to_json() != MULTI.to_json()
    assert MULTI.to_json() == MULTI.raw
