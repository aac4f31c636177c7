"""The formats people move images in: `docker save`/`docker load` archives, OCI image
layouts, `docker import` of a root filesystem tarball, `docker export` of a container.

docker-archive, as Docker 25+ writes it (moby's image/tarexport, graphdriver store),
is at the same time an OCI image layout::

    blobs/sha256/<hex>   image configs (as stored), layers as *uncompressed* tars named
                         by their DiffID, one OCI manifest per image (layers typed
                         application/vnd.oci.image.layer.v1.tar), and a legacy v1 JSON
                         per layer that nothing reads any more
    index.json           one manifest descriptor per tag, annotated with
                         io.containerd.image.name and org.opencontainers.image.ref.name
    manifest.json        [{"Config": "blobs/sha256/<hex>", "RepoTags": [...],
                           "Layers": ["blobs/sha256/<hex>", ...], "LayerSources": {...}}]
    oci-layout           {"imageLayoutVersion": "1.0.0"}
    repositories         {"busybox": {"latest": "<top layer DiffID hex>"}}

:func:`save` writes exactly that, deterministically (entries sorted as Go's
filepath.Walk lists them, ustar headers as Go's archive/tar writes them with
Docker's options, times fixed: image created time for config and layers, the
epoch for the rest), so saving twice gives identical bytes. Layers are written
decompressed from the content store and checked against their DiffIDs.

:func:`load` reads docker-archives of every Docker since 1.10 (manifest.json with
`<id>.json` configs and `<id>/layer.tar` layers, or the layout above) and plain OCI
layouts (index.json), compressed or not. Every file goes into the content store
under a lease as it streams by (blobs/ entries verified against their names); the
images are then checked, unpacked and finally tagged in one transaction, so a bad
archive leaves no tag and no snapshot behind.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io
import json
import logging
import lzma
import os
import posixpath
import re
import signal
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dockyard import __version__
from dockyard.errors import DockyardError, InvalidArgument, NotFound, SystemFailure, Unsupported
from dockyard.image import layer as layers_mod
from dockyard.image.content import Lease
from dockyard.image.digest import ALGORITHMS, Digest
from dockyard.image.manifest import (
    INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST_SIZE, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD, OCI_MANIFEST, Descriptor, ImageConfig, Index, Manifest, Platform,
    default_platform, format_platform, parse_config, parse_manifest, parse_platform,
    select_platform)
from dockyard.image.reference import Reference, parse_normalized
from dockyard.image.store import (
    Image, ImageStore, Pending, go_container_config, go_field, go_json, now_go_time,
    parse_go_duration, parse_go_time)

__all__ = ["build_config", "export_dir", "import_rootfs", "load", "load_oci_layout", "save"]

log = logging.getLogger(__name__)

MANIFEST_JSON = "manifest.json"
INDEX_JSON = "index.json"
OCI_LAYOUT = "oci-layout"
REPOSITORIES = "repositories"
# Written byte for byte as Docker does (note the space).
OCI_LAYOUT_CONTENT = b'{"imageLayoutVersion": "1.0.0"}'
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
# Top-level control files are read into memory; anything larger is not one.
_MAX_CONTROL = 16 << 20
_CHUNK = 1 << 20
_DIR_MODE, _FILE_MODE = 0o755, 0o644


# ---------------------------------------------------------------------------------
# Tar writing (Go's archive/tar in Docker's configuration: ustar, PAX when needed)


class _Tar:
    """A thin layer over the layer module's tar writer: whole files from bytes or
    file descriptors."""

    def __init__(self, out: BinaryIO) -> None:
        self.w = layers_mod.TarWriter(out)

    def dir(self, name: str, mtime: int) -> None:
        self.w.header(name.encode() + b"/", b"5", mode=_DIR_MODE, mtime=mtime)

    def file(self, name: str, data: bytes, mtime: int) -> None:
        self.w.header(name.encode(), b"0", mode=_FILE_MODE, size=len(data), mtime=mtime)
        self.w.raw(data)
        self.w.raw(bytes(-len(data) % layers_mod.BLOCK))

    def file_from(self, name: str, path: str, size: int, mtime: int) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.w.header(name.encode(), b"0", mode=_FILE_MODE, size=size, mtime=mtime)
            self.w.data_from(fd, size, name)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.w.close()


# ---------------------------------------------------------------------------------
# save


@dataclass
class _SaveImage:
    image: Image
    config_raw: bytes
    tags: list[Reference] = field(default_factory=list)


@dataclass
class _LayerFile:
    """An uncompressed layer ready to be written: a content blob or a spooled file."""

    path: str
    size: int


def _select(store: ImageStore, names: Iterable[str]) -> list[_SaveImage]:
    """The images NAMES mean, with the tags each is saved under (dockerd's
    parseNames): an id saves untagged, a bare repository name saves every tag of
    it, name:tag that tag, name@digest the image without a tag."""
    chosen: dict[str, _SaveImage] = {}

    def assoc(image_id: str, ref: Reference | None) -> None:
        entry = chosen.get(image_id)
        if entry is None:
            img = store.get(image_id)
            if img.config.os != "linux":
                raise Unsupported(f'os "{img.config.os}" is not supported')
            entry = chosen[image_id] = _SaveImage(img, store.content.read(img.id))
        if ref is not None and ref.digest is None:
            tagged = ref.with_default_tag()
            if all(str(t) != str(tagged) for t in entry.tags):
                entry.tags.append(tagged)

    for name in names:
        if re.fullmatch(r"[0-9a-f]{64}", name) or _is_digest(name):
            assoc(store.resolve(name if ":" in name else "sha256:" + name), None)
            continue
        ref = parse_normalized(name)
        if ref.familiar_name == "sha256":  # a short id written as sha256:<prefix>
            assoc(store.resolve(name), None)
        elif ref.is_name_only:
            tagged = store.repository_tags(ref)
            for tag_ref, image_id in tagged:
                assoc(image_id, tag_ref)
            if not tagged:
                assoc(store.resolve(name), None)
        else:
            assoc(store.resolve(name), ref)
    return list(chosen.values())


def _is_digest(text: str) -> bool:
    try:
        Digest(text)
    except InvalidArgument:
        return False
    return True


def _v1_fields(config_raw: bytes) -> dict[str, Any]:
    """An image config read into Docker's V1Image and written back (Go field order,
    Go's omitempty), before the id and parent are filled in."""
    doc = json.loads(config_raw)

    def s(key: str) -> str:
        v = go_field(doc, key)
        return v if isinstance(v, str) else ""

    out: dict[str, Any] = {}
    if s("comment"):
        out["comment"] = s("comment")
    created = parse_go_time(s("created"))
    out["created"] = str(created) if created else None
    if s("container"):
        out["container"] = s("container")
    out["container_config"] = go_container_config(go_field(doc, "container_config"))
    if s("docker_version"):
        out["docker_version"] = s("docker_version")
    if s("author"):
        out["author"] = s("author")
    if isinstance(go_field(doc, "config"), dict):
        out["config"] = go_container_config(go_field(doc, "config"))
    for key in ("architecture", "variant", "os"):
        if s(key):
            out[key] = s(key)
    size = go_field(doc, "Size")
    if isinstance(size, int) and not isinstance(size, bool) and size:
        out["Size"] = size
    return out


def _v1_json(fields: dict[str, Any], chain: Digest, parent: Digest | None,
             os_name: str) -> tuple[Digest, bytes]:
    """The legacy per-layer JSON Docker still writes. Its id is v1.CreateID over
    FIELDS (for a lower layer only created and an empty container_config, for the top
    one the image's V1Image, os included) turned into a map (so keys sorted) with
    layer_id and parent added; the JSON is FIELDS with id, parent and os set, in
    V1Image's field order. Returns (v1 id, bytes)."""
    keyed = dict(fields)
    keyed["layer_id"] = str(chain)
    if parent is not None:
        keyed["parent"] = str(parent)
    v1_id = Digest.of(go_json({k: keyed[k] for k in sorted(keyed)}))
    out: dict[str, Any] = {"id": v1_id.hex}
    if parent is not None:
        out["parent"] = parent.hex
    out.update((k, v) for k, v in fields.items() if k not in ("os", "Size"))
    if os_name:
        out["os"] = os_name
    if "Size" in fields:
        out["Size"] = fields["Size"]
    return v1_id, go_json(out)


def _image_mtime(config: ImageConfig) -> int:
    t = parse_go_time(config.created)
    return max(t.seconds, 0) if t else 0


def _spool_layer(store: ImageStore, img: Image, i: int, tmpfiles: list[str]) -> tuple[str, int]:
    """Layer I of IMG as an uncompressed tar file: the blob itself when it is one,
    else decompressed into the store's tmp/ and checked against the DiffID."""
    desc = img.manifest.layers[i]
    diff_id = img.config.diff_ids[i]
    if desc.digest == diff_id:
        return store.content.path(desc.digest), store.content.info(desc.digest)[0]
    fd_path = os.path.join(store.tmp, f"save-{os.getpid()}-{os.urandom(6).hex()}")
    tmpfiles.append(fd_path)
    h = hashlib.sha256()
    size = 0
    with store.content.open(desc.digest) as src, open(fd_path, "wb") as dst:
        reader = layers_mod.open_decompressed(src)
        while True:
            chunk = reader.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    actual = Digest.from_hasher(h)
    if actual != diff_id:
        raise InvalidArgument(f"layer {i} ({desc.digest}) of image {img.short_id} decompresses "
                              f"to {actual}, but the image config says {diff_id}")
    return fd_path, size


def save(store: ImageStore, refs: list[str], out: BinaryIO) -> None:
    """`docker save REFS...`: the images as a docker-archive (see the module doc)."""
    images = _select(store, refs)
    if not images:
        raise InvalidArgument("no images to save")
    blobs: dict[str, bytes | _LayerFile] = {}
    blob_mtime: dict[str, int] = {}
    tmpfiles: list[str] = []
    items: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    index_entries: list[dict[str, Any]] = []
    saved_ids = {e.image.id for e in images}
    dir_mtime = 0
    try:
        for entry in images:
            img, cfg = entry.image, entry.image.config
            if not cfg.diff_ids:
                raise Unsupported("empty export - not implemented")
            ts = _image_mtime(cfg)
            dir_mtime = ts
            chains = img.chain_ids
            top_fields = _v1_fields(entry.config_raw)
            parent: Digest | None = None
            layer_descs: list[dict[str, Any]] = []
            sources: dict[str, dict[str, Any]] = {}
            for i, diff_id in enumerate(cfg.diff_ids):
                last = i == len(cfg.diff_ids) - 1
                fields = top_fields if last else {"created": "1970-01-01T00:00:00Z",
                                                  "container_config": go_container_config(None)}
                v1_id, v1_raw = _v1_json(fields, chains[i], parent, cfg.os)
                parent = v1_id
                v1_hex = Digest.of(v1_raw).hex
                if v1_hex not in blobs:
                    blobs[v1_hex] = v1_raw
                    blob_mtime[v1_hex] = ts
                existing = blobs.get(diff_id.hex)
                if not isinstance(existing, _LayerFile):
                    path, size = _spool_layer(store, img, i, tmpfiles)
                    existing = _LayerFile(path, size)
                    blobs[diff_id.hex] = existing
                    blob_mtime[diff_id.hex] = ts
                desc = {"mediaType": OCI_LAYER, "digest": str(diff_id), "size": existing.size}
                layer_descs.append(desc)
                sources[str(diff_id)] = {"mediaType": OCI_LAYER, "size": existing.size,
                                         "digest": str(diff_id)}
            blobs.setdefault(img.id.hex, entry.config_raw)
            blob_mtime.setdefault(img.id.hex, ts)
            manifest = go_json({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": str(img.id),
                           "size": len(entry.config_raw)},
                "layers": layer_descs})
            mdigest = Digest.of(manifest)
            blobs[mdigest.hex] = manifest
            blob_mtime[mdigest.hex] = 0
            untagged = {"mediaType": OCI_MANIFEST, "digest": str(mdigest), "size": len(manifest)}
            top_hex = cfg.diff_ids[-1].hex
            repo_tags = []
            for ref in entry.tags:
                repositories.setdefault(ref.familiar_name, {})[ref.tag or "latest"] = top_hex
                repo_tags.append(ref.familiar())
                index_entries.append({**untagged, "annotations": {
                    ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag or "latest"}})
            if not entry.tags:
                index_entries.append(untagged)
            item: dict[str, Any] = {
                "Config": f"blobs/sha256/{img.id.hex}",
                "RepoTags": repo_tags or None,
                "Layers": [f"blobs/sha256/{d.hex}" for d in cfg.diff_ids],
            }
            if img.parent and img.parent in saved_ids:
                item["Parent"] = img.parent
            item["LayerSources"] = {k: sources[k] for k in sorted(sources)}
            items.append(item)

        tar = _Tar(out)
        tar.dir("blobs", dir_mtime)
        tar.dir("blobs/sha256", dir_mtime)
        for hexname in sorted(blobs):
            data = blobs[hexname]
            name = f"blobs/sha256/{hexname}"
            if isinstance(data, _LayerFile):
                tar.file_from(name, data.path, data.size, blob_mtime[hexname])
            else:
                tar.file(name, data, blob_mtime[hexname])
        tar.file(INDEX_JSON, go_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                      "manifests": index_entries}), 0)
        tar.file(MANIFEST_JSON, go_json(items, newline=True), 0)
        tar.file(OCI_LAYOUT, OCI_LAYOUT_CONTENT, 0)
        if repositories:
            repos = {name: {t: tags[t] for t in sorted(tags)}
                     for name, tags in sorted(repositories.items())}
            tar.file(REPOSITORIES, go_json(repos, newline=True), 0)
        tar.close()
    finally:
        for path in tmpfiles:
            with contextlib.suppress(OSError):
                os.unlink(path)


# ---------------------------------------------------------------------------------
# load


class _ChainReader(io.RawIOBase):
    """HEAD, then the rest of F, as one readable stream."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head = head
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._f.read(len(b))
        b[:len(data)] = data
        return len(data)


def _decompressed(stream: BinaryIO) -> BinaryIO:
    """STREAM decompressed as `docker load` accepts it: gzip, zstd, bzip2, xz or plain."""
    head = stream.read(8)
    chained = io.BufferedReader(_ChainReader(head, stream), buffer_size=_CHUNK)
    kind = layers_mod.detect_compression(head)
    if kind == "bzip2":
        return bz2.BZ2File(chained)  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(chained)  # type: ignore[return-value]
    if kind in ("gzip", "zstd"):
        return layers_mod.open_decompressed(chained, kind)
    return chained


def _clean(name: str) -> str:
    """An archive path as a key: no leading ./ or /, no . or .. games."""
    name = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    return name


@dataclass
class _Archive:
    """What was read from an archive: files (in the content store) and control files."""

    files: dict[str, Digest] = field(default_factory=dict)
    control: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def digest_of(self, path: str, what: str) -> Digest:
        if not isinstance(path, str) or not path:
            raise InvalidArgument(f"invalid archive: {what}: {path!r} is not a file name")
        name = _clean(path)
        for _ in range(16):  # links to links, but not forever
            if name in self.files:
                return self.files[name]
            if name not in self.links:
                break
            name = self.links[name]
        raise InvalidArgument(f"invalid archive: {what} {path} is not in the archive")


class _Loader:
    """One load: the lease that protects its blobs, and the blobs read so far."""

    def __init__(self, store: ImageStore, lease: Lease) -> None:
        self.store = store
        self.lease = lease
        self.n = 0

    def ingest(self, name: str, f: BinaryIO, size: int | None) -> Digest:
        """Copy F (the archive entry NAME) into the content store. An entry named
        blobs/<alg>/<hex> must have that digest; others are named by their content."""
        content = self.store.content
        expected = _blob_name_digest(name)
        if expected is not None:
            self.lease.add(expected)
            if content.exists(expected):
                return expected  # the tar reader skips the unread data
        self.n += 1
        w = content.writer(f"load-{self.lease.id}-{self.n}", expected, size, lease=self.lease)
        try:
            while True:
                chunk = f.read(_CHUNK)  # the archive's errors propagate as they are
                if not chunk:
                    break
                try:
                    w.write(chunk)
                except OSError as exc:
                    # The host's trouble (a full disk), not the archive's.
                    raise SystemFailure(f"cannot write {name} to the content store: "
                                        f"{exc.strerror or exc}") from exc
            actual = w.digest()
            if expected is not None and actual != expected:
                raise InvalidArgument(f"invalid archive: {name}: its content has digest {actual}, "
                                      f"not the one its name says")
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def blob_from(self, layout: str, d: Digest) -> None:
        """Copy blob D of the layout directory LAYOUT into the content store."""
        self.lease.add(d)
        if self.store.content.exists(d):
            return
        rel = f"blobs/{d.algorithm}/{d.hex}"
        try:
            f = open(os.path.join(layout, rel), "rb")
        except FileNotFoundError:
            raise InvalidArgument(f"invalid OCI layout: {rel} is missing") from None
        with f:
            self.ingest(rel, f, os.fstat(f.fileno()).st_size)


def _blob_name_digest(name: str) -> Digest | None:
    m = re.fullmatch(r"blobs/([a-z0-9]+)/([0-9a-f]+)", name)
    if m is None or m.group(1) not in ALGORITHMS:
        return None
    try:
        return Digest(f"{m.group(1)}:{m.group(2)}")
    except InvalidArgument:
        return None


def _read_archive(loader: _Loader, stream: BinaryIO) -> _Archive:
    arch = _Archive()
    name = "(start)"
    try:
        tf = tarfile.open(fileobj=_decompressed(stream), mode="r|")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(f"invalid archive: not a tar archive ({exc})") from None
    except DockyardError as exc:
        raise InvalidArgument(f"invalid archive: {exc}") from None
    try:
        for member in tf:
            name = _clean(member.name)
            if member.issym():
                arch.links[name] = _clean(posixpath.join(posixpath.dirname(name), member.linkname))
            elif member.islnk():
                arch.links[name] = _clean(member.linkname)
            elif member.isreg():
                f = tf.extractfile(member)
                assert f is not None
                if name in (MANIFEST_JSON, INDEX_JSON, OCI_LAYOUT, REPOSITORIES):
                    if member.size > _MAX_CONTROL:
                        raise InvalidArgument(f"invalid archive: {name} is {member.size} bytes")
                    data = f.read()
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    arch.control[name] = data
                else:
                    arch.files[name] = loader.ingest(name, f, member.size)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        # OSError: what bz2/lzma raise for corrupt data, or the input stream's own.
        raise InvalidArgument(f"invalid archive: truncated or corrupt at {name}: {exc}") from None
    except InvalidArgument as exc:
        msg = str(exc)
        if not msg.startswith("invalid archive"):
            msg = f"invalid archive: truncated or corrupt at {name}: {msg}"
        raise InvalidArgument(msg) from None
    return arch


def _layer_media_type(store: ImageStore, d: Digest, what: str) -> str:
    with store.content.open(d) as f:
        kind = layers_mod.detect_compression(f.read(8))
    if kind == "gzip":
        return OCI_LAYER_GZIP
    if kind == "zstd":
        return OCI_LAYER_ZSTD
    if kind == "none":
        return OCI_LAYER
    raise Unsupported(f"{what} is {kind}-compressed; only gzip and zstd layers are supported")


def _index_manifests(store: ImageStore, raw: bytes | None) -> dict[Digest, list[tuple[Digest, Manifest]]]:
    """config digest -> (manifest digest, manifest) for every manifest an archive's
    index.json reaches (through nested indexes), as far as its blobs are present."""
    out: dict[Digest, list[tuple[Digest, Manifest]]] = {}
    if raw is None:
        return out
    try:
        top = parse_manifest(raw)
    except DockyardError as exc:
        log.debug("index.json ignored: %s", exc)
        return out
    pending: list[Manifest | Index] = [top]
    seen: set[Digest] = set()
    while pending:
        obj = pending.pop()
        if isinstance(obj, Index):
            for desc in obj.manifests:
                if desc.digest in seen or not store.content.exists(desc.digest):
                    continue
                seen.add(desc.digest)
                try:
                    child = parse_manifest(store.content.read(desc.digest), desc.media_type)
                except DockyardError:
                    continue
                if isinstance(child, Manifest):
                    out.setdefault(child.config.digest, []).append((desc.digest, child))
                else:
                    pending.append(child)
    return out


def _docker_plans(store: ImageStore, loader: _Loader, arch: _Archive) -> list[Pending]:
    try:
        items = json.loads(arch.control[MANIFEST_JSON])
    except ValueError as exc:
        raise InvalidArgument(f"invalid archive: manifest.json is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidArgument("invalid archive: manifest.json must be a JSON array")
    known = _index_manifests(store, arch.control.get(INDEX_JSON))
    plans = []
    for i, item in enumerate(items):
        where = f"manifest.json[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"invalid archive: {where} must be an object")
        cfg_digest = arch.digest_of(item.get("Config"), f"{where}.Config")
        if store.content.info(cfg_digest)[0] > MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"invalid archive: {item.get('Config')} is too large for an "
                                  "image config")
        cfg_raw = store.content.read(cfg_digest)
        try:
            config = parse_config(cfg_raw)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid archive: {item.get('Config')}: {exc}") from None
        if config.os != "linux":
            raise Unsupported(f"cannot load {config.os} image on linux")
        layer_paths = item.get("Layers")
        if not isinstance(layer_paths, list):
            raise InvalidArgument(f"invalid archive: {where}.Layers must be an array")
        if len(layer_paths) != len(config.diff_ids):
            raise InvalidArgument(f"invalid manifest, layers length mismatch: expected "
                                  f"{len(layer_paths)}, got {len(config.diff_ids)}")
        layer_digests = [arch.digest_of(p, f"{where}.Layers[{j}]") for j, p in enumerate(layer_paths)]
        for j, (d, diff_id) in enumerate(zip(layer_digests, config.diff_ids)):
            media = _layer_media_type(store, d, f"layer {layer_paths[j]}")
            if media == OCI_LAYER and d != diff_id:
                raise InvalidArgument(f"invalid archive: layer {layer_paths[j]} has digest {d}, but "
                                      f"the config {item.get('Config')} expects {diff_id}")
        tags = []
        for t in item.get("RepoTags") or []:
            ref = parse_normalized(t) if isinstance(t, str) else None
            if ref is None or ref.tag is None or ref.digest is not None:
                raise InvalidArgument(f'invalid tag "{t}"')
            tags.append(ref)
        # The archive's own OCI manifest keeps the image's manifest digest (and
        # Docker 25+'s bytes); another tool's archive gets one written for it.
        chosen = None
        for mdigest, m in known.get(cfg_digest, []):
            if [x.digest for x in m.layers] == layer_digests:
                chosen = (mdigest, m)
                break
        if chosen is None:
            m = Manifest(media_type=OCI_MANIFEST,
                         config=Descriptor(OCI_CONFIG, cfg_digest, len(cfg_raw)),
                         layers=[Descriptor(_layer_media_type(store, d, str(p)), d,
                                            store.content.info(d)[0])
                                 for d, p in zip(layer_digests, layer_paths)])
            raw = m.canonical_json()
            chosen = (store.content.put(raw, lease=loader.lease), parse_manifest(raw))
        resolved = store.describe(chosen[0])
        plans.append(Pending(resolved, tags, f"invalid archive: image {item.get('Config')}"))
    return plans


def _missing_in(prefix: str) -> Callable[[Digest, str], Exception]:
    def missing(d: Digest, role: str) -> Exception:
        return InvalidArgument(f"{prefix}: blobs/{d.algorithm}/{d.hex} ({role}) is missing")
    return missing


def _oci_names(desc: Descriptor) -> Reference | None:
    """The name an OCI layout gives an index entry: containerd's full-name annotation,
    else a ref.name annotation that is a full reference."""
    full = desc.annotations.get(ANNOTATION_IMAGE_NAME)
    for candidate in (full, desc.annotations.get(ANNOTATION_REF_NAME)):
        if not candidate:
            continue
        try:
            ref = parse_normalized(candidate)
        except InvalidArgument:
            continue
        if candidate is not full and ref.tag is None and ref.digest is None:
            continue  # a bare tag like "latest": no repository to put it in
        return ref.docker_ref() if ref.digest is None else ref
    return None


def _oci_plans(store: ImageStore, index_raw: bytes, ref: str | None, platform: str | Platform,
               what: str, fetch: Callable[[Digest], None] | None = None) -> list[Pending]:
    """Plans for the entries of an OCI layout's index.json. FETCH(digest), when given,
    brings a blob into the content store first (layout directories)."""
    try:
        index = parse_manifest(index_raw)
    except DockyardError as exc:
        raise InvalidArgument(f"{what}: index.json: {exc}") from None
    if not isinstance(index, Index):
        raise InvalidArgument(f"{what}: index.json is not an image index")
    entries = [d for d in index.manifests if d.media_type in MANIFEST_TYPES | INDEX_TYPES]
    if not entries:
        raise InvalidArgument(f"{what}: index.json lists no images")
    override = None
    if ref is not None:
        override = parse_normalized(ref)
        if override.digest is not None:
            raise InvalidArgument("cannot tag an image with a digest reference")
        override = override.with_default_tag()
        if len(entries) > 1:
            raise InvalidArgument(f"{what}: holds {len(entries)} images; a name can only be given "
                                  "to a layout of one")
    missing = _missing_in(what)
    plans = []
    for desc in entries:
        if fetch is not None:
            _fetch_tree(store, desc, platform, fetch)
        resolved = store.describe(desc.digest, platform, missing=missing)
        name = override if override is not None else _oci_names(desc)
        tags = [name] if name is not None and name.digest is None else []
        plans.append(Pending(resolved, tags,
                             f"{what}: image blobs/{desc.digest.algorithm}/{desc.digest.hex}"))
    return plans


def _fetch_tree(store: ImageStore, desc: Descriptor, platform: str | Platform,
                fetch: Callable[[Digest], None]) -> None:
    """Bring what DESC needs from a layout directory: an index, its manifests and
    their configs (to choose a platform), and the chosen manifest's layers."""
    fetch(desc.digest)
    obj = parse_manifest(store.content.read(desc.digest), desc.media_type)
    manifests: list[Manifest] = []
    if isinstance(obj, Index):
        for child in obj.manifests:
            if child.media_type not in MANIFEST_TYPES:
                continue
            with contextlib.suppress(InvalidArgument):
                fetch(child.digest)
                m = parse_manifest(store.content.read(child.digest), child.media_type)
                if isinstance(m, Manifest):
                    fetch(m.config.digest)
        chosen = select_platform(obj, platform, platform_of=store.platform_of)
        m = parse_manifest(store.content.read(chosen.digest), chosen.media_type)
        if isinstance(m, Manifest):
            manifests.append(m)
    else:
        manifests.append(obj)
    for m in manifests:
        fetch(m.config.digest)
        for layer in m.layers:
            fetch(layer.digest)


def load(store: ImageStore, stream: BinaryIO, *, platform: str | Platform = "linux/amd64",
         unpack: bool = True) -> list[str]:
    """`docker load`: the images of a docker-archive or an OCI layout tar (plain or
    compressed), unpacked and tagged as the archive says. Returns what Docker
    reports: the tags loaded (familiar), and the ids of images without tags.
    PLATFORM chooses among an OCI index's manifests."""
    with store.lease("load") as lease:
        loader = _Loader(store, lease)
        arch = _read_archive(loader, stream)
        if MANIFEST_JSON in arch.control:
            plans = _docker_plans(store, loader, arch)
        elif INDEX_JSON in arch.control:
            plans = _oci_plans(store, arch.control[INDEX_JSON], None, platform, "invalid archive")
        elif REPOSITORIES in arch.control:
            raise Unsupported("this archive is in the format of Docker before 1.10 (no "
                              "manifest.json); load it into an older Docker and save it again")
        else:
            raise InvalidArgument("invalid archive: it has neither manifest.json (docker-archive) "
                                  "nor index.json (OCI image layout)")
        return store.record(plans, unpack=unpack)


def load_oci_layout(store: ImageStore, path: str | os.PathLike[str], ref: str | None = None, *,
                    platform: str | Platform = "linux/amd64", unpack: bool = True) -> list[str]:
    """Load the OCI image layout directory PATH; REF names its (single) image,
    otherwise the index's annotations do. Only the blobs the images need are read."""
    path = os.fspath(path)
    what = f"invalid OCI layout {path}"
    if not os.path.isdir(path):
        raise NotFound(f"OCI layout {path} does not exist")
    try:
        with open(os.path.join(path, INDEX_JSON), "rb") as f:
            index_raw = f.read(_MAX_CONTROL + 1)
    except FileNotFoundError:
        raise InvalidArgument(f"{what}: index.json is missing") from None
    layout_file = os.path.join(path, OCI_LAYOUT)
    if os.path.exists(layout_file):
        try:
            with open(layout_file, "rb") as f:
                version = json.loads(f.read()).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, str) or not version.startswith("1."):
            raise InvalidArgument(f"{what}: unsupported oci-layout {version!r}")
    with store.lease("load") as lease:
        loader = _Loader(store, lease)
        plans = _oci_plans(store, index_raw, ref, platform, what,
                           fetch=lambda d: loader.blob_from(path, d))
        return store.record(plans, unpack=unpack)


# ---------------------------------------------------------------------------------
# import: a root filesystem tarball as a one-layer image, with --change instructions


_VALID_CHANGES = ("cmd", "entrypoint", "healthcheck", "env", "expose", "label", "onbuild",
                  "stopsignal", "user", "volume", "workdir")


class _Changes:
    """The Dockerfile instructions `docker import --change` / `commit --change`
    accept, applied to a container config as dockerd's BuildFromConfig does."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.cmd_set = False

    # -- words and variables (Docker's shell lexer, the parts instructions use)

    @staticmethod
    def split_words(text: str) -> list[str]:
        """Whitespace-separated words; quotes and escapes are kept for later."""
        words, cur, quote, i, in_word = [], [], "", 0, False
        while i < len(text):
            ch = text[i]
            if quote:
                cur.append(ch)
                if ch == "\\" and quote == '"' and i + 1 < len(text):
                    cur.append(text[i + 1])
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch.isspace():
                if in_word:
                    words.append("".join(cur))
                    cur, in_word = [], False
            else:
                in_word = True
                cur.append(ch)
                if ch in "'\"":
                    quote = ch
                elif ch == "\\" and i + 1 < len(text):
                    cur.append(text[i + 1])
                    i += 1
            i += 1
        if in_word:
            words.append("".join(cur))
        return words

    def env_map(self) -> dict[str, str]:
        out = {}
        for item in self.c.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def word(self, text: str) -> str:
        """Quote removal, escapes and $VAR / ${VAR} / ${VAR:-x} / ${VAR:+x} expansion."""
        env = self.env_map()
        out: list[str] = []
        i, n = 0, len(text)
        quote = ""
        while i < n:
            ch = text[i]
            if quote == "'":
                if ch == "'":
                    quote = ""
                else:
                    out.append(ch)
            elif ch == "\\" and i + 1 < n and (not quote or text[i + 1] in '"$\\'):
                out.append(text[i + 1])
                i += 1
            elif ch == "'" and not quote:
                quote = "'"
            elif ch == '"':
                quote = "" if quote else '"'
            elif ch == "$" and i + 1 < n:
                value, i = self._variable(text, i + 1, env)
                out.append(value)
                continue
            else:
                out.append(ch)
            i += 1
        return "".join(out)

    def _variable(self, text: str, i: int, env: dict[str, str]) -> tuple[str, int]:
        if text[i] == "{":
            end = text.find("}", i)
            if end < 0:
                raise InvalidArgument(f"missing '}}' in {text!r}")
            body = text[i + 1:end]
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])(.*))?", body, re.DOTALL)
            if m is None:
                raise InvalidArgument(f"bad substitution in {text!r}")
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            value = env.get(name)
            if op in (":-", "-"):
                if value is None or (op == ":-" and value == ""):
                    value = self.word(arg)
            elif op in (":+", "+"):
                value = self.word(arg) if value is not None and (op == "+" or value) else ""
            return value or "", end + 1
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i)
        if m is None:
            return "$", i
        return env.get(m.group(0), ""), m.end()

    @staticmethod
    def json_list(rest: str) -> list[str] | None:
        """Exec form: a JSON array of strings, or None for the shell form."""
        if not rest.startswith("["):
            return None
        try:
            value = json.loads(rest)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return value
        return None

    def command(self, rest: str) -> list[str]:
        exec_form = self.json_list(rest)
        if exec_form is not None:
            return exec_form
        shell = self.c.get("Shell") or ["/bin/sh", "-c"]
        return [*shell, rest]

    def name_values(self, rest: str, key: str) -> list[tuple[str, str]]:
        words = self.split_words(rest)
        if not words:
            raise InvalidArgument(f"{key} must have two arguments")
        if "=" not in words[0]:
            parts = re.split(r"\s+", rest.strip(), maxsplit=1)
            if len(parts) < 2:
                raise InvalidArgument(f"{key} must have two arguments")
            return [(self.word(parts[0]), self.word(parts[1]))]
        out = []
        for w in words:
            if "=" not in w:
                raise InvalidArgument(f"Syntax error - can't find = in {w!r}. Must be of the "
                                      "form: name=value")
            k, _, v = w.partition("=")
            out.append((self.word(k), self.word(v)))
        return out

    # -- instructions

    def apply(self, keyword: str, rest: str, original: str) -> None:
        getattr(self, "do_" + keyword)(rest, original)

    def do_cmd(self, rest: str, original: str) -> None:
        self.c["Cmd"] = self.command(rest)
        self.cmd_set = True

    def do_entrypoint(self, rest: str, original: str) -> None:
        self.c["Entrypoint"] = self.command(rest)
        if not self.cmd_set:
            self.c["Cmd"] = None  # ENTRYPOINT resets a CMD it did not come with

    def do_env(self, rest: str, original: str) -> None:
        env = list(self.c.get("Env") or [])
        for k, v in self.name_values(rest, "ENV"):
            if not k:
                raise InvalidArgument("ENV names can not be blank")
            item = f"{k}={v}"
            for j, existing in enumerate(env):
                if existing.partition("=")[0] == k:
                    env[j] = item
                    break
            else:
                env.append(item)
            self.c["Env"] = env

    def do_label(self, rest: str, original: str) -> None:
        labels = dict(self.c.get("Labels") or {})
        for k, v in self.name_values(rest, "LABEL"):
            if not k:
                raise InvalidArgument("LABEL names can not be blank")
            labels[k] = v
        self.c["Labels"] = labels

    def do_expose(self, rest: str, original: str) -> None:
        ports = dict(self.c.get("ExposedPorts") or {})
        words = [self.word(w) for w in self.split_words(rest)]
        if not words:
            raise InvalidArgument("EXPOSE requires at least one argument")
        for spec in words:
            port, _, proto = spec.partition("/")
            proto = (proto or "tcp").lower()
            if proto not in ("tcp", "udp", "sctp"):
                raise InvalidArgument(f"Invalid proto: {proto}")
            lo, dash, hi = port.partition("-")
            if not lo.isdigit() or (dash and not hi.isdigit()):
                raise InvalidArgument(f"Invalid containerPort: {port}")
            start, end = int(lo), int(hi) if dash else int(lo)
            if end < start or end > 65535:
                raise InvalidArgument(f"Invalid range specified for port: {port}")
            for p in range(start, end + 1):
                ports[f"{p}/{proto}"] = {}
        self.c["ExposedPorts"] = ports

    def do_user(self, rest: str, original: str) -> None:
        self.c["User"] = self.word(rest.strip())

    def do_volume(self, rest: str, original: str) -> None:
        items = self.json_list(rest)
        if items is None:
            items = [self.word(w) for w in self.split_words(rest)]
        else:
            items = [self.word(w) for w in items]
        if not items:
            raise InvalidArgument("VOLUME specified can not be an empty string")
        volumes = dict(self.c.get("Volumes") or {})
        for v in items:
            if not v.strip():
                raise InvalidArgument("VOLUME specified can not be an empty string")
            volumes[v] = {}
        self.c["Volumes"] = volumes

    def do_workdir(self, rest: str, original: str) -> None:
        path = self.word(rest.strip())
        if not path:
            raise InvalidArgument("WORKDIR requires exactly one argument")
        if not path.startswith("/"):
            path = posixpath.join("/", self.c.get("WorkingDir") or "", path)
        self.c["WorkingDir"] = posixpath.normpath(path) if path != "/" else "/"

    def do_onbuild(self, rest: str, original: str) -> None:
        trigger = (rest.split(None, 1) or [""])[0].upper()
        if not trigger:
            raise InvalidArgument("ONBUILD requires at least one argument")
        if trigger == "ONBUILD":
            raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("FROM", "MAINTAINER"):
            raise InvalidArgument(f"{trigger} isn't allowed as an ONBUILD trigger")
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", original)
        self.c["OnBuild"] = [*(self.c.get("OnBuild") or []), expression]

    def do_stopsignal(self, rest: str, original: str) -> None:
        sig = self.word(rest.strip())
        _check_signal(sig)
        self.c["StopSignal"] = sig

    def do_healthcheck(self, rest: str, original: str) -> None:
        m = re.match(r"((?:--\S+\s+)*)(\S*)\s*(.*)", rest, re.DOTALL)
        assert m is not None
        flags: dict[str, str] = {}
        for flag in m.group(1).split():
            key, _, value = flag[2:].partition("=")
            if key not in ("interval", "timeout", "start-period", "start-interval", "retries"):
                raise InvalidArgument(f"Unknown flag: {key}")
            flags[key] = value
        kind, args = m.group(2).upper(), m.group(3).strip()
        if not kind:
            raise InvalidArgument("Missing command after HEALTHCHECK")
        if kind == "NONE":
            if args or flags:
                raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
            self.c["Healthcheck"] = {"Test": ["NONE"]}
            return
        if kind != "CMD":
            raise InvalidArgument(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
        if not args:
            raise InvalidArgument("Missing command after HEALTHCHECK CMD")
        exec_form = self.json_list(args)
        health: dict[str, Any] = {"Test": ["CMD", *exec_form] if exec_form is not None
                                  else ["CMD-SHELL", args]}
        for key, name in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
            if not flags.get(key):
                continue
            seconds = parse_go_duration(flags[key])
            if seconds is None:
                raise InvalidArgument(f'time: invalid duration "{flags[key]}"')
            ns = int(round(seconds * 1e9))
            if ns < 0:
                raise InvalidArgument(f'Interval "{key}" cannot be negative')
            if 0 < ns < 1_000_000:
                raise InvalidArgument(f'Interval "{key}" cannot be less than 1ms')
            if ns:
                health[name] = ns
        if flags.get("retries"):
            try:
                retries = int(flags["retries"])
            except ValueError:
                raise InvalidArgument(f"invalid retries {flags['retries']!r}") from None
            if retries < 0:
                raise InvalidArgument("--retries cannot be negative")
            if retries:
                health["Retries"] = retries
        self.c["Healthcheck"] = health


def _check_signal(sig: str) -> None:
    """Docker's signal.ParseSignal: a positive number or a known name (SIG optional)."""
    if sig.isdigit() and int(sig) > 0:
        return
    name = sig.upper()
    name = name[3:] if name.startswith("SIG") else name
    if re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name):
        return
    if name not in ("IGN", "DFL") and hasattr(signal.Signals, "SIG" + name):
        return
    raise InvalidArgument(f"Invalid signal: {sig}")


def _logical_lines(changes: Iterable[str]) -> Iterator[str]:
    """The changes joined as one Dockerfile (as Docker joins them), in logical lines:
    backslash continuations joined, blank and comment lines dropped."""
    text = "\n".join(changes)
    pending = ""
    for line in text.split("\n"):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        yield (pending + line).strip()
        pending = ""
    if pending.strip():
        yield pending.strip()


def build_config(changes: Iterable[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply CHANGES (Dockerfile instructions) to a container config (empty by
    default), as `docker import --change` and `docker commit --change` do."""
    lines = list(_logical_lines(changes))
    parsed = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.split("\t", 1)[0]
        rest = line[len(keyword):].strip()
        if keyword.lower() not in _VALID_CHANGES:
            raise InvalidArgument(f"{keyword.lower()} is not a valid change command")
        parsed.append((keyword.lower(), rest, line))
    builder = _Changes(dict(base or {}))
    for keyword, rest, line in parsed:
        builder.apply(keyword, rest, line)
    return builder.c


def import_rootfs(store: ImageStore, stream: BinaryIO, ref: str | None = None,
                  changes: Iterable[str] = (), message: str = "",
                  platform: str | Platform | None = None) -> Image:
    """`docker import`: the root filesystem tarball STREAM (plain, gzip, zstd, bzip2,
    xz) as an image of one layer, configured by CHANGES, tagged REF if given.
    The config is Docker's byte layout; the history says MESSAGE or
    "Imported from -" as dockerd writes it."""
    target = None
    if ref:
        target = parse_normalized(ref)
        if target.digest is not None:
            raise InvalidArgument("cannot import digest reference")
        target = target.with_default_tag()
    plat = (parse_platform(platform) if isinstance(platform, str)
            else platform if platform is not None else default_platform())
    if plat.os != "linux":
        raise Unsupported(f"cannot import an image for {format_platform(plat)} on linux")
    config = go_container_config(build_config(changes))
    comment = message or "Imported from -"
    with store.lease("import") as lease:
        # The layer is stored uncompressed: its digest is then its DiffID, as Docker
        # registers the decompressed stream.
        try:
            src = _decompressed(stream)
        except DockyardError as exc:
            raise InvalidArgument(f"invalid rootfs archive: {exc}") from None
        w = store.content.writer(f"import-{lease.id}", lease=lease)
        try:
            size = 0
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except (OSError, EOFError, lzma.LZMAError, DockyardError) as exc:
                    raise InvalidArgument(f"invalid rootfs archive: {exc}") from None
                if not chunk:
                    break
                w.write(chunk)
                size += len(chunk)
            diff_id = w.commit()
        except BaseException:
            w.abort()
            raise
        if size == 0:
            raise InvalidArgument("invalid rootfs archive: it is empty")
        created = now_go_time()
        doc: dict[str, Any] = {"comment": comment, "created": created,
                               "container_config": go_container_config(None),
                               "docker_version": __version__, "config": config,
                               "architecture": plat.architecture}
        if plat.variant:
            doc["variant"] = plat.variant
        doc["os"] = plat.os
        doc["rootfs"] = {"type": "layers", "diff_ids": [str(diff_id)]}
        doc["history"] = [{"created": created, "comment": comment}]
        cfg_raw = go_json(doc)
        cfg_digest = store.content.put(cfg_raw, lease=lease)
        m = Manifest(media_type=OCI_MANIFEST, config=Descriptor(OCI_CONFIG, cfg_digest, len(cfg_raw)),
                     layers=[Descriptor(OCI_LAYER, diff_id, size)])
        mraw = m.canonical_json()
        mdigest = store.content.put(mraw, lease=lease)
        resolved = store.describe(mdigest)
        refs = [target] if target is not None else []
        store.record([Pending(resolved, refs, "invalid rootfs archive")], tag_time=True)
    return store.get(cfg_digest)


# ---------------------------------------------------------------------------------
# export: a container's filesystem as a tar stream


def export_dir(path: str | os.PathLike[str], out: BinaryIO) -> None:
    """`docker export`: the tree at PATH (a container's mounted root) as a tar stream:
    entries sorted, numeric owners, hard links kept, sockets skipped, the
    security.capability xattr carried (the only one Docker exports)."""
    top = os.fsencode(os.fspath(path))
    if not os.path.isdir(top):
        raise NotFound(f"{os.fsdecode(top)} is not a directory")
    w = layers_mod.TarWriter(out)
    layers_mod.write_tree(w, top)
    w.close()

