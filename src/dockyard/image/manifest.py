"""Image manifests, indexes and configs, in OCI's and Docker's (schema 2) formats.

Parsing validates what the engine relies on (schemaVersion 2, descriptors with
media type, digest and size, a config and a layer list) and names the offending
field in every error, as a path like ``layers[1].digest``. Unknown fields are
kept, so nothing a newer producer wrote is lost when an object is re-written.

Serialising: a parsed object remembers its original bytes and `to_json()` gives
them back unchanged for as long as the object is not modified, because the
digest of those exact bytes is the object's identity (an image ID is the
config's digest; a manifest's digest is what `image@sha256:` pins). After a
change, or from `canonical_json()`, the bytes are what Go's encoding/json
(used by Docker and containerd) produces: struct fields in the Go types' order,
map keys sorted, ``<``, ``>`` and ``&`` escaped, compact unless an indent is asked.

Platform matching follows containerd's `platforms.Only`: names are normalised
(x86_64 -> amd64, aarch64 -> arm64, arm64 defaults to variant v8, arm to v7),
and a platform also runs older variants of itself (arm/v7 runs v6 and v5,
amd64/v3 runs v2 and v1, amd64 runs 386, arm64 runs arm/v8 and below), the
exact one preferred.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from dockyard.errors import InvalidArgument, NotFound, Unsupported
from dockyard.image.digest import Digest

__all__ = [
    "Descriptor", "History", "ImageConfig", "Index", "Manifest", "Platform",
    "blob_children", "chain_ids", "check_image", "child_descriptors", "default_platform",
    "format_platform", "normalize_platform", "parse_config", "parse_manifest",
    "parse_platform", "select_platform",
]

# -- media types -------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"  # uncompressed, rare but seen
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset((OCI_INDEX, DOCKER_MANIFEST_LIST))
MANIFEST_TYPES = frozenset((OCI_MANIFEST, DOCKER_MANIFEST))
CONFIG_TYPES = frozenset((OCI_CONFIG, DOCKER_CONFIG))
SCHEMA1_TYPES = frozenset((DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED))
# layer media type -> compression of its blob (None: a plain tar)
LAYER_TYPES: dict[str, str | None] = {
    OCI_LAYER: None, OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: None, OCI_LAYER_NONDIST_GZIP: "gzip", OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: None, DOCKER_LAYER_GZIP: "gzip", DOCKER_LAYER_FOREIGN: "gzip",
}
# Layers a registry may not serve (fetched from `urls` instead, or not at all).
NONDISTRIBUTABLE_TYPES = frozenset((OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP,
                                    OCI_LAYER_NONDIST_ZSTD, DOCKER_LAYER_FOREIGN))

# Annotation BuildKit puts on the attestation (SBOM/provenance) entries of an index.
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_MANIFEST = "attestation-manifest"

# Manifests and configs are small; a larger "manifest" is an attack or a mistake.
MAX_MANIFEST_SIZE = 4 << 20


def is_layer_type(media_type: str) -> bool:
    return media_type in LAYER_TYPES


def layer_compression(media_type: str) -> str | None:
    """'gzip', 'zstd' or None for a tar; InvalidArgument for a non-layer type."""
    try:
        return LAYER_TYPES[media_type]
    except KeyError:
        raise InvalidArgument(f"unsupported layer media type {media_type!r}") from None


# -- JSON as Go writes it ------------------------------------------------------

def go_json(obj: Any, indent: str | None = None, *, newline: bool = False) -> bytes:
    """JSON as Go's encoding/json writes it (HTML-safe escaping on); dict order is kept,
    so callers build dicts in Go's struct field order. With NEWLINE, as a json.Encoder
    writes it (a trailing newline)."""
    if indent is None:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=(",", ": "))
    # encoding/json's HTML-safe escaping (on by default in json.Marshal). These
    # characters can only occur inside strings, so replacing them is safe.
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        if ch in text:
            text = text.replace(ch, esc)
    return (text + "\n" if newline else text).encode()


def _sorted_map(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in sorted(m)}  # Go marshals maps in key order


# -- validation helpers ------------------------------------------------------

class _Doc:
    """Field access with errors naming the field, e.g. 'layers[0].size'."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def error(self, path: str, problem: str) -> InvalidArgument:
        return InvalidArgument(f"invalid {self.kind}: {path}: {problem}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be an object, got {_json_type(value)}")
        return value

    def str_(self, d: dict[str, Any], key: str, path: str, required: bool = False,
             default: str = "") -> str:
        if key not in d or d[key] is None:
            if required:
                raise self.error(_join(path, key), "required")
            return default
        v = d[key]
        if not isinstance(v, str):
            raise self.error(_join(path, key), f"must be a string, got {_json_type(v)}")
        if required and not v:
            raise self.error(_join(path, key), "must not be empty")
        return v

    def str_list(self, d: dict[str, Any], key: str, path: str) -> list[str]:
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.error(_join(path, key), "must be an array of strings")
        return list(v)

    def str_map(self, d: dict[str, Any], key: str, path: str) -> dict[str, str]:
        v = d.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.error(_join(path, key), f"must be an object, got {_json_type(v)}")
        for k, x in v.items():
            if not isinstance(x, str):
                raise self.error(f"{_join(path, key)}[{k!r}]", f"must be a string, got {_json_type(x)}")
        return dict(v)

    def digest(self, value: Any, path: str) -> Digest:
        if value is None:
            raise self.error(path, "required")
        if not isinstance(value, str):
            raise self.error(path, f"must be a string, got {_json_type(value)}")
        try:
            return Digest(value)
        except InvalidArgument as exc:
            raise self.error(path, str(exc)) from None

    def schema_version(self, d: dict[str, Any]) -> None:
        v = d.get("schemaVersion")
        if v is None:
            raise self.error("schemaVersion", "required")
        if v == 1 and not isinstance(v, bool):
            raise _schema1()
        if not isinstance(v, int) or isinstance(v, bool) or v != 2:
            raise self.error("schemaVersion", f"must be 2, got {v!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _schema1() -> Unsupported:
    # Docker dropped schema 1 (v1+json / v1+prettyjws) in 28.x; so do we.
    return Unsupported(f"Docker image manifest schema 1 ({DOCKER_SCHEMA1}, {DOCKER_SCHEMA1_SIGNED}) "
                       "is not supported: ask the image's author to push it again as OCI or "
                       "Docker schema 2")


def _load_json(data: bytes | str, kind: str) -> dict[str, Any]:
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"invalid {kind}: {len(data)} bytes is over the "
                              f"{MAX_MANIFEST_SIZE}-byte limit")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"invalid {kind}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"invalid {kind}: the JSON document must be an object, "
                              f"got {_json_type(doc)}")
    return doc


def _extra(d: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    known = set(known)
    return {k: v for k, v in d.items() if k not in known}


# -- records -------------------------------------------------------------------

@dataclass
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "features"; kept verbatim

    _FIELDS = ("architecture", "os", "os.version", "os.features", "variant")

    def __str__(self) -> str:
        return format_platform(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        if self.variant:
            d["variant"] = self.variant
        d.update(self.extra)
        return d

    @classmethod
    def _parse(cls, doc: _Doc, value: Any, path: str) -> Platform:
        d = doc.obj(value, path)
        return cls(os=doc.str_(d, "os", path, required=True),
                   architecture=doc.str_(d, "architecture", path, required=True),
                   variant=doc.str_(d, "variant", path),
                   os_version=doc.str_(d, "os.version", path),
                   os_features=doc.str_list(d, "os.features", path),
                   extra=_extra(d, cls._FIELDS))


@dataclass
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str = ""
    data: bytes | None = None  # embedded content (OCI 1.1), already base64-decoded
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = ("mediaType", "digest", "size", "urls", "annotations", "data", "platform",
               "artifactType")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                             "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = _sorted_map(self.annotations)
        if self.data is not None:
            d["data"] = base64.b64encode(self.data).decode()
        if self.platform is not None:
            d["platform"] = self.platform.to_dict()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        d.update(self.extra)
        return d

    @property
    def is_attestation(self) -> bool:
        """BuildKit's SBOM/provenance entries, which describe an image rather than run."""
        if self.annotations.get(ATTESTATION_ANNOTATION) == ATTESTATION_MANIFEST:
            return True
        p = self.platform
        return p is not None and p.os == "unknown" and p.architecture == "unknown"

    @classmethod
    def _parse(cls, doc: _Doc, value: Any, path: str) -> Descriptor:
        d = doc.obj(value, path)
        media_type = doc.str_(d, "mediaType", path, required=True)
        if "/" not in media_type:
            raise doc.error(_join(path, "mediaType"), f"{media_type!r} is not a media type")
        digest = doc.digest(d.get("digest"), _join(path, "digest"))
        size = d.get("size")
        if size is None:
            raise doc.error(_join(path, "size"), "required")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise doc.error(_join(path, "size"), f"must be a non-negative integer, got {size!r}")
        data = None
        if d.get("data") is not None:
            raw = d["data"]
            if not isinstance(raw, str):
                raise doc.error(_join(path, "data"), "must be a base64 string")
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise doc.error(_join(path, "data"), "is not valid base64") from None
            # The spec makes checking embedded data mandatory: it is content like any blob.
            if len(data) != size or Digest.of(data, digest.algorithm) != digest:
                raise doc.error(_join(path, "data"), "does not match the descriptor's digest and size")
        platform = None
        if d.get("platform") is not None:
            platform = Platform._parse(doc, d["platform"], _join(path, "platform"))
        return cls(media_type=media_type, digest=digest, size=size,
                   urls=doc.str_list(d, "urls", path),
                   annotations=doc.str_map(d, "annotations", path),
                   platform=platform,
                   artifact_type=doc.str_(d, "artifactType", path),
                   data=data,
                   extra=_extra(d, cls._FIELDS))


class _Document:
    """Original-bytes bookkeeping shared by Manifest, Index and ImageConfig."""

    raw: bytes | None
    _snapshot: bytes | None

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _remember(self, raw: bytes) -> None:
        self.raw = raw
        self._snapshot = go_json(self.to_dict())

    def canonical_json(self, indent: str | None = None) -> bytes:
        """The bytes Go's encoding/json writes for this object (ignores the original)."""
        return go_json(self.to_dict(), indent)

    def to_json(self) -> bytes:
        """The original bytes while unchanged (digests stay stable), else canonical ones."""
        current = go_json(self.to_dict())
        if self.raw is not None and current == self._snapshot:
            return self.raw
        return current

    def digest(self) -> Digest:
        return Digest.of(self.to_json())

    def descriptor(self) -> Descriptor:
        data = self.to_json()
        return Descriptor(self.media_type, Digest.of(data), len(data))  # type: ignore[attr-defined]


@dataclass
class Manifest(_Document):
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _snapshot: bytes | None = field(default=None, init=False, repr=False, compare=False)

    _FIELDS = ("schemaVersion", "mediaType", "artifactType", "config", "layers", "subject",
               "annotations")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        d["config"] = self.config.to_dict()
        d["layers"] = [layer.to_dict() for layer in self.layers]
        if self.subject is not None:
            d["subject"] = self.subject.to_dict()
        if self.annotations:
            d["annotations"] = _sorted_map(self.annotations)
        d.update(self.extra)
        return d


@dataclass
class Index(_Document):
    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _snapshot: bytes | None = field(default=None, init=False, repr=False, compare=False)

    _FIELDS = ("schemaVersion", "mediaType", "artifactType", "manifests", "subject",
               "annotations")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        d["manifests"] = [m.to_dict() for m in self.manifests]
        if self.subject is not None:
            d["subject"] = self.subject.to_dict()
        if self.annotations:
            d["annotations"] = _sorted_map(self.annotations)
        d.update(self.extra)
        return d


@dataclass
class History:
    created: str | None = None
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = ("created", "author", "created_by", "comment", "empty_layer")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.created is not None:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        if self.created_by:
            d["created_by"] = self.created_by
        if self.comment:
            d["comment"] = self.comment
        if self.empty_layer:
            d["empty_layer"] = True
        d.update(self.extra)
        return d


# Maps inside the container config that Go holds as maps (marshalled sorted).
_CONFIG_MAPS = ("ExposedPorts", "Volumes", "Labels")


@dataclass
class ImageConfig(_Document):
    """An image config (`application/vnd.oci.image.config.v1+json` or Docker's).

    `config` is the runtime part (Env, Cmd, Entrypoint, WorkingDir, User,
    ExposedPorts, Volumes, Labels, StopSignal, Healthcheck, Shell, OnBuild...) kept
    as the dict it was, so fields Dockyard does not interpret survive.
    """

    architecture: str
    os: str
    config: dict[str, Any] = field(default_factory=dict)
    diff_ids: list[Digest] = field(default_factory=list)
    history: list[History] = field(default_factory=list)
    created: str | None = None
    author: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: list[str] = field(default_factory=list)
    rootfs_type: str = "layers"
    rootfs_extra: dict[str, Any] = field(default_factory=dict)  # e.g. Windows' base_layer
    extra: dict[str, Any] = field(default_factory=dict)  # Docker's container, docker_version...
    raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _snapshot: bytes | None = field(default=None, init=False, repr=False, compare=False)

    _FIELDS = ("created", "author", "architecture", "variant", "os", "os.version",
               "os.features", "config", "rootfs", "history")

    @property
    def platform(self) -> Platform:
        return Platform(os=self.os, architecture=self.architecture, variant=self.variant,
                        os_version=self.os_version, os_features=list(self.os_features))

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    @property
    def cmd(self) -> list[str]:
        return list(self.config.get("Cmd") or [])

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def working_dir(self) -> str:
        return self.config.get("WorkingDir") or ""

    @property
    def user(self) -> str:
        return self.config.get("User") or ""

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.created is not None:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        d["architecture"] = self.architecture
        if self.variant:
            d["variant"] = self.variant
        d["os"] = self.os
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        config = dict(self.config)
        for key in _CONFIG_MAPS:
            if isinstance(config.get(key), dict):
                config[key] = _sorted_map(config[key])
        d["config"] = config
        d["rootfs"] = {"type": self.rootfs_type, "diff_ids": [str(x) for x in self.diff_ids],
                       **self.rootfs_extra}
        if self.history:
            d["history"] = [h.to_dict() for h in self.history]
        d.update(self.extra)
        return d

    def descriptor(self, media_type: str = OCI_CONFIG) -> Descriptor:
        data = self.to_json()
        return Descriptor(media_type, Digest.of(data), len(data))


# -- parsing -------------------------------------------------------------------

def _detect_type(d: dict[str, Any], media_type: str | None) -> str:
    declared = d.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidArgument(f"invalid manifest: mediaType: must be a string, "
                              f"got {_json_type(declared)}")
    if media_type in SCHEMA1_TYPES or declared in SCHEMA1_TYPES:
        raise _schema1()
    known = INDEX_TYPES | MANIFEST_TYPES
    if media_type in known:
        if declared and declared != media_type:
            raise InvalidArgument(f"invalid manifest: mediaType: {declared!r} does not match "
                                  f"the media type it was served as, {media_type!r}")
        return media_type
    # Not given, or a generic type a registry sent (application/json): the body decides.
    if declared:
        if declared not in known:
            raise Unsupported(f"unsupported manifest media type {declared!r}")
        return declared
    if d.get("schemaVersion") == 1 or "fsLayers" in d:
        raise _schema1()
    # An OCI document may omit mediaType (it is only a SHOULD); its shape tells.
    if "manifests" in d:
        return OCI_INDEX
    if "config" in d or "layers" in d:
        return OCI_MANIFEST
    raise InvalidArgument("invalid manifest: mediaType: missing, and the document has neither "
                          "config nor manifests")


def parse_manifest(data: bytes | str, media_type: str | None = None) -> Manifest | Index:
    """Parse an image manifest or index (OCI or Docker schema 2).

    MEDIA_TYPE is what the document was served as (a descriptor's or the
    registry's Content-Type); without it the document's own mediaType field, or
    its shape, decides. Schema 1 raises Unsupported; anything malformed raises
    InvalidArgument naming the field.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if media_type in SCHEMA1_TYPES:
        raise _schema1()
    d = _load_json(raw, "manifest")
    kind = _detect_type(d, media_type)
    doc = _Doc("image index" if kind in INDEX_TYPES else "image manifest")
    doc.schema_version(d)
    obj: Manifest | Index
    if kind in INDEX_TYPES:
        # A document that is both (an index with layers) could be read two ways by
        # two tools; the image-spec asks to refuse it.
        for key in ("config", "layers"):
            if key in d:
                raise doc.error(key, "not allowed in an index")
        entries = d.get("manifests")
        if entries is None:
            raise doc.error("manifests", "required")
        if not isinstance(entries, list):
            raise doc.error("manifests", f"must be an array, got {_json_type(entries)}")
        obj = Index(media_type=kind,
                    manifests=[Descriptor._parse(doc, e, f"manifests[{i}]")
                               for i, e in enumerate(entries)],
                    annotations=doc.str_map(d, "annotations", ""),
                    subject=_optional_descriptor(doc, d, "subject"),
                    artifact_type=doc.str_(d, "artifactType", ""),
                    extra=_extra(d, Index._FIELDS))
    else:
        if "manifests" in d:
            raise doc.error("manifests", "not allowed in a manifest")
        if d.get("config") is None:
            raise doc.error("config", "required")
        layers = d.get("layers")
        if layers is None:
            raise doc.error("layers", "required")
        if not isinstance(layers, list):
            raise doc.error("layers", f"must be an array, got {_json_type(layers)}")
        obj = Manifest(media_type=kind,
                       config=Descriptor._parse(doc, d["config"], "config"),
                       layers=[Descriptor._parse(doc, e, f"layers[{i}]")
                               for i, e in enumerate(layers)],
                       annotations=doc.str_map(d, "annotations", ""),
                       subject=_optional_descriptor(doc, d, "subject"),
                       artifact_type=doc.str_(d, "artifactType", ""),
                       extra=_extra(d, Manifest._FIELDS))
    obj._remember(raw)
    return obj


def _optional_descriptor(doc: _Doc, d: dict[str, Any], key: str) -> Descriptor | None:
    return None if d.get(key) is None else Descriptor._parse(doc, d[key], key)


def parse_config(data: bytes | str) -> ImageConfig:
    """Parse an image config (OCI or Docker); InvalidArgument names a bad field."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    d = _load_json(raw, "image config")
    doc = _Doc("image config")
    rootfs = d.get("rootfs")
    if rootfs is None:
        raise doc.error("rootfs", "required")
    doc.obj(rootfs, "rootfs")
    rootfs_type = doc.str_(rootfs, "type", "rootfs", required=True)
    if rootfs_type != "layers":
        raise doc.error("rootfs.type", f"must be 'layers', got {rootfs_type!r}")
    diff_ids = rootfs.get("diff_ids")
    if diff_ids is None:
        diff_ids = []  # an image of no layers (FROM scratch + CMD) may write null
    if not isinstance(diff_ids, list):
        raise doc.error("rootfs.diff_ids", f"must be an array, got {_json_type(diff_ids)}")
    config = d.get("config")
    if config is None:
        config = {}
    doc.obj(config, "config")
    history = d.get("history")
    if history is None:
        history = []
    if not isinstance(history, list):
        raise doc.error("history", f"must be an array, got {_json_type(history)}")
    hist = []
    for i, h in enumerate(history):
        path = f"history[{i}]"
        doc.obj(h, path)
        empty = h.get("empty_layer", False)
        if not isinstance(empty, bool):
            raise doc.error(f"{path}.empty_layer", "must be a boolean")
        created = h.get("created")
        if created is not None and not isinstance(created, str):
            raise doc.error(f"{path}.created", "must be a string")
        hist.append(History(created=created, created_by=doc.str_(h, "created_by", path),
                            author=doc.str_(h, "author", path),
                            comment=doc.str_(h, "comment", path), empty_layer=empty,
                            extra=_extra(h, History._FIELDS)))
    created = d.get("created")
    if created is not None and not isinstance(created, str):
        raise doc.error("created", "must be a string")
    cfg = ImageConfig(architecture=doc.str_(d, "architecture", "", required=True),
                      os=doc.str_(d, "os", "", required=True),
                      config=config,
                      diff_ids=[doc.digest(x, f"rootfs.diff_ids[{i}]") for i, x in enumerate(diff_ids)],
                      history=hist,
                      created=created,
                      author=doc.str_(d, "author", ""),
                      variant=doc.str_(d, "variant", ""),
                      os_version=doc.str_(d, "os.version", ""),
                      os_features=doc.str_list(d, "os.features", ""),
                      rootfs_type=rootfs_type,
                      rootfs_extra=_extra(rootfs, ("type", "diff_ids")),
                      extra=_extra(d, ImageConfig._FIELDS))
    cfg._remember(raw)
    return cfg


def check_image(manifest: Manifest, config: ImageConfig) -> None:
    """InvalidArgument unless the manifest's layers and the config's diff_ids pair up."""
    if len(manifest.layers) != len(config.diff_ids):
        raise InvalidArgument(f"invalid image: the manifest has {len(manifest.layers)} layers but "
                              f"the config's rootfs.diff_ids has {len(config.diff_ids)}")
    for i, layer in enumerate(manifest.layers):
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"invalid image: layers[{i}].mediaType: unsupported layer "
                                  f"media type {layer.media_type!r}")


def child_descriptors(obj: Manifest | Index) -> list[Descriptor]:
    """What a manifest (config, layers) or index (manifests) references, as containerd's
    images.Children does; a subject is a back-reference, not a child."""
    if isinstance(obj, Index):
        return list(obj.manifests)
    return [obj.config, *obj.layers]


def blob_children(store: Any) -> Callable[[Digest], list[Digest]]:
    """A `children` function for ContentStore.gc: a manifest's or index's references,
    nothing for any other blob.

    Blobs are recognised by content (small, a JSON object carrying schemaVersion 2),
    since the store keeps no media types; a layer is never read beyond its first byte.
    """
    def children(d: Digest) -> list[Digest]:
        size, _mtime = store.info(d)
        if size > MAX_MANIFEST_SIZE:
            return []
        with store.open(d) as f:
            if f.read(1) != b"{":
                return []
            data = b"{" + f.read()
        try:
            doc = json.loads(data)
        except ValueError:
            return []
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            return []  # an image config or other JSON: a leaf
        # A blob that claims to be a manifest but does not parse raises: GC must stop
        # rather than drop what it may reference.
        return [c.digest for c in child_descriptors(parse_manifest(data))]

    return children


# -- chain IDs -------------------------------------------------------------------

def chain_ids(diff_ids: Iterable[Digest | str]) -> list[Digest]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).

    A layer stack's identity depends on everything under it; snapshots are keyed by it.
    """
    out: list[Digest] = []
    for diff_id in diff_ids:
        diff_id = diff_id if isinstance(diff_id, Digest) else Digest(diff_id)
        if not out:
            out.append(diff_id)
        else:
            out.append(Digest("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()))
    return out


# -- platforms ---------------------------------------------------------------------

# From Go's list of GOOS/GOARCH values, as containerd uses it to read "arm64" vs "linux".
_KNOWN_OS = frozenset(("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos",
                       "ios", "js", "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris",
                       "windows", "zos"))
_KNOWN_ARCH = frozenset(("386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be",
                         "ppc64", "ppc64le", "loong64", "mips", "mipsle", "mips64", "mips64le",
                         "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x",
                         "sparc", "sparc64", "wasm"))
_SPEC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# uname machine -> (GOARCH, variant)
_MACHINES = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "i386": ("386", ""),
             "i686": ("386", ""), "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
             "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
             "armv5tel": ("arm", "v5"), "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""),
             "riscv64": ("riscv64", ""), "loongarch64": ("loong64", ""), "mips64": ("mips64", "")}


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        # Unlike containerd (which folds v8 to ""), v8 is spelled out: it is what
        # Docker shows ("linux/arm64/v8") and what BuildKit writes into images.
        if variant in ("", "8", "v8", "v8.0"):
            return "arm64", "v8"
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize_platform(p: Platform) -> Platform:
    """The canonical spelling: lower case, Go's names, default variants filled in."""
    os_name = p.os.lower()
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = _normalize_arch(p.architecture, p.variant)
    return Platform(os=os_name, architecture=arch, variant=variant, os_version=p.os_version,
                    os_features=list(p.os_features), extra=dict(p.extra))


def default_platform() -> Platform:
    """This host's platform, as Docker uses it when no --platform is given."""
    machine = os.uname().machine
    arch, variant = _MACHINES.get(machine, (machine.lower(), ""))
    return normalize_platform(Platform(os="linux", architecture=arch, variant=variant))


def format_platform(p: Platform) -> str:
    """os/arch[/variant], the containerd/Docker specifier form."""
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def parse_platform(spec: str) -> Platform:
    """Parse `os`, `arch`, `os/arch` or `os/arch/variant` (os may carry `(os.version)`),
    returning the normalised platform; a lone os gets this host's architecture and a
    lone architecture gets linux."""
    if not isinstance(spec, str) or not spec:
        raise InvalidArgument(f"invalid platform {spec!r}: empty")
    if "*" in spec:
        raise InvalidArgument(f"invalid platform {spec!r}: wildcards are not supported")
    parts = spec.split("/")
    if len(parts) > 3:
        raise InvalidArgument(f"invalid platform {spec!r}: expected os[/arch[/variant]]")
    os_part, os_version = parts[0], ""
    if os_part.endswith(")") and "(" in os_part:
        os_part, _, os_version = os_part[:-1].partition("(")
    for i, part in enumerate([os_part, *parts[1:]]):
        if not part or not set(part) <= _SPEC_CHARS:
            raise InvalidArgument(f"invalid platform {spec!r}: component {i + 1} ({part!r}) must "
                                  "be letters, digits, '_', '.' or '-'")
    if len(parts) == 1:
        name = os_part.lower()
        if name == "macos":
            name = "darwin"
        if name in _KNOWN_OS:
            host = default_platform()
            return normalize_platform(Platform(os=name, architecture=host.architecture,
                                               variant=host.variant, os_version=os_version))
        arch, variant = _normalize_arch(os_part, "")
        if arch in _KNOWN_ARCH and not os_version:
            return Platform(os="linux", architecture=arch, variant=variant)
        raise InvalidArgument(f"invalid platform {spec!r}: unknown operating system or architecture")
    return normalize_platform(Platform(os=os_part, architecture=parts[1],
                                       variant=parts[2] if len(parts) == 3 else "",
                                       os_version=os_version))


def _variant_number(variant: str) -> int | None:
    v = variant[1:] if variant.startswith("v") else variant
    return int(v) if v.isdigit() else None


def _platform_vector(p: Platform) -> list[tuple[str, str, str]]:
    """(os, arch, variant) triples P can run, best first (containerd's platformVector)."""
    out = [(p.os, p.architecture, p.variant)]
    if p.architecture == "amd64":
        n = _variant_number(p.variant) if p.variant else 1
        if n is not None:
            for k in range(n - 1, 0, -1):
                out.append((p.os, "amd64", f"v{k}" if k > 1 else ""))
        out.append((p.os, "386", ""))
    elif p.architecture == "arm":
        n = _variant_number(p.variant)
        if n is not None:
            for k in range(n - 1, 4, -1):
                out.append((p.os, "arm", f"v{k}"))
    elif p.architecture == "arm64":
        major_s, _, minor_s = p.variant.lstrip("v").partition(".")
        if major_s.isdigit() and int(major_s) >= 8 and (not minor_s or minor_s.isdigit()):
            major, minor = int(major_s), int(minor_s or 0)
            if major == 9:
                for k in range(minor - 1, -1, -1):
                    out.append((p.os, "arm64", f"v9.{k}" if k else "v9"))
                # v9.x forked from v8.(x+5): it runs those too, up to v8.9.
                minor, major = min(minor + 5, 9), 8
                out.append((p.os, "arm64", f"v8.{minor}"))
            if major == 8:
                for k in range(minor - 1, -1, -1):
                    out.append((p.os, "arm64", f"v8.{k}" if k else "v8"))
        # 64-bit ARM cores run 32-bit arm/v8 code and everything older.
        out.extend(_platform_vector(Platform(os=p.os, architecture="arm", variant="v8")))
    return out


def _os_version_ok(want: Platform, have: Platform) -> bool:
    # Windows containers need the host's build (major.minor.build); other OSes ignore it.
    if want.os != "windows" or not want.os_version or not have.os_version:
        return True
    return want.os_version.split(".")[:3] == have.os_version.split(".")[:3]


def select_platform(index: Index, want: Platform | str = "linux/amd64", *,
                    platform_of: Callable[[Descriptor], Platform | None] | None = None
                    ) -> Descriptor:
    """The index entry to run on WANT, chosen as containerd's platforms.Only does.

    Attestation entries are never chosen. An entry without a platform is considered
    only if PLATFORM_OF (typically: read the manifest's config) gives it one.
    NotFound, in Docker's words, when nothing fits.
    """
    target = parse_platform(want) if isinstance(want, str) else normalize_platform(want)
    literal = want.variant if isinstance(want, Platform) else target.variant
    vector = _platform_vector(target)
    best: tuple[tuple[int, int, int], Descriptor] | None = None
    for position, desc in enumerate(index.manifests):
        if desc.media_type not in MANIFEST_TYPES or desc.is_attestation:
            continue
        platform = desc.platform
        if platform is None and platform_of is not None:
            platform = platform_of(desc)
        if platform is None:
            continue
        have = normalize_platform(platform)
        key = (have.os, have.architecture, have.variant)
        if key not in vector or not _os_version_ok(target, have):
            continue
        # Rank: how far down the fallback list, then an exactly spelled variant,
        # then an exact OS version, then the index's own order.
        exact_variant = 0 if platform.variant.lower() == literal.lower() else 1
        exact_version = 0 if have.os_version == target.os_version else 1
        rank = (vector.index(key), exact_variant + exact_version, position)
        if best is None or rank < best[0]:
            best = (rank, desc)
    if best is None:
        raise NotFound(f"no matching manifest for {format_platform(target)} "
                       "in the manifest list entries")
    return best[1]

