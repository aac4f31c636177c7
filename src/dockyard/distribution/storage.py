"""The registry's state on disk: a ContentStore for bytes, small link files for the rest.

Layout under ROOT::

    blobs/ ingest/ leases/ gc.lock       the ContentStore (shared code with the engine)
    repositories/<name>/                 one directory per repository (a/b/c nests)
        _layers/<alg>/<hex>              blob linked into the repository (pushed or mounted)
        _manifests/<alg>/<hex>           manifest linked into the repository; JSON record
                                         with its media type and subject
        _tags/<tag>                      the manifest digest the tag points to
        _referrers/<alg>/<hex>/<alg>-<hex>.json
                                         descriptor of a manifest whose subject is
                                         <alg>:<hex>, ready for the referrers API
    uploads/<uuid>/session.json          an upload session: repository, algorithm, start;
                                         its bytes (and so its offset) are the ContentStore
                                         ingest "upload:<uuid>"

Like distribution, a blob is visible in a repository only through a link: pushing a
layer to `a` does not make it readable as `b/blobs/<digest>`. Repository name
components cannot start with '_', so the `_`-prefixed directories never collide with
a nested repository. Every small file is written to a temporary name and renamed, so
a reader sees the old or the new content, never half.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from dockyard.atomicfile import write_atomic
from dockyard.errors import InvalidArgument
from dockyard.image.content import ContentStore
from dockyard.image.digest import Digest

log = logging.getLogger(__name__)

# The distribution spec's grammar for <name> and for tags.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Clients limit host + "/" + name to 255 characters; we cannot know the host, so the
# name alone gets the whole budget, as distribution does.
NAME_MAX = 255

UPLOAD_REF_PREFIX = "upload:"


def valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX and NAME_RE.fullmatch(name) is not None


def valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


def _write_atomic_mkdir(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _digest_path(base: Path, d: Digest) -> Path:
    return base / d.algorithm / d.hex


def _digests_under(base: Path) -> list[Digest]:
    out = []
    try:
        algorithms = sorted(os.listdir(base))
    except FileNotFoundError:
        return out
    for alg in algorithms:
        try:
            names = sorted(os.listdir(base / alg))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name.startswith("."):
                continue  # a temporary file of an atomic write
            try:
                out.append(Digest(f"{alg}:{name}"))
            except InvalidArgument:
                log.warning("ignoring stray file %s", base / alg / name)
    return out


@dataclass(frozen=True)
class ManifestLink:
    """What a repository knows about one of its manifests besides the bytes."""

    digest: Digest
    media_type: str
    subject: Digest | None = None


@dataclass
class UploadSession:
    uuid: str
    repository: str
    algorithm: str
    started: float

    @property
    def ref(self) -> str:
        return UPLOAD_REF_PREFIX + self.uuid


class RegistryStore:
    """Repositories, tags, links and upload sessions over one ContentStore."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.content = ContentStore(self.root)
        self.repos_dir = self.root / "repositories"
        self.uploads_dir = self.root / "uploads"
        self.repos_dir.mkdir(exist_ok=True)
        self.uploads_dir.mkdir(exist_ok=True)

    # -- repositories ------------------------------------------------------

    def _repo(self, name: str) -> Path:
        # Callers validate names; this guards the filesystem against anything that slips by.
        if not valid_name(name):
            raise InvalidArgument(f"invalid repository name {name!r}")
        return self.repos_dir / name

    def repo_exists(self, name: str) -> bool:
        repo = self._repo(name)
        return any((repo / sub).is_dir() for sub in ("_manifests", "_layers", "_tags"))

    def repositories(self) -> list[str]:
        """Every repository with something linked into it, sorted."""
        found: list[str] = []

        def walk(path: Path, prefix: str) -> None:
            try:
                entries = sorted(os.scandir(path), key=lambda e: e.name)
            except FileNotFoundError:
                return
            names = {e.name for e in entries}
            if prefix and names & {"_manifests", "_layers", "_tags"}:
                found.append(prefix)
            for e in entries:
                if e.is_dir(follow_symlinks=False) and not e.name.startswith(("_", ".")):
                    walk(Path(e.path), f"{prefix}/{e.name}" if prefix else e.name)

        walk(self.repos_dir, "")
        return sorted(found)

    # -- blob links --------------------------------------------------------

    def link_blob(self, name: str, d: Digest) -> None:
        path = _digest_path(self._repo(name) / "_layers", d)
        if not path.exists():
            _write_atomic_mkdir(path, str(d).encode())

    def blob_linked(self, name: str, d: Digest) -> bool:
        """The blob is linked into NAME and its bytes are still in the store."""
        return (_digest_path(self._repo(name) / "_layers", d).exists()
                and self.content.exists(d))

    def unlink_blob(self, name: str, d: Digest) -> bool:
        return _unlink(_digest_path(self._repo(name) / "_layers", d))

    def linked_blobs(self, name: str) -> list[Digest]:
        return _digests_under(self._repo(name) / "_layers")

    # -- manifests ---------------------------------------------------------

    def link_manifest(self, name: str, link: ManifestLink) -> None:
        record: dict[str, Any] = {"mediaType": link.media_type}
        if link.subject is not None:
            record["subject"] = str(link.subject)
        _write_atomic_mkdir(_digest_path(self._repo(name) / "_manifests", link.digest),
                      json.dumps(record).encode())

    def manifest_link(self, name: str, d: Digest) -> ManifestLink | None:
        try:
            record = json.loads(_digest_path(self._repo(name) / "_manifests", d).read_bytes())
        except FileNotFoundError:
            return None
        if not self.content.exists(d):
            return None
        subject = record.get("subject")
        return ManifestLink(d, record["mediaType"], Digest(subject) if subject else None)

    def linked_manifests(self, name: str) -> list[Digest]:
        return _digests_under(self._repo(name) / "_manifests")

    def unlink_manifest(self, name: str, d: Digest) -> bool:
        """Forget manifest D in NAME, with the tags pointing at it and its referrer entry."""
        link = self.manifest_link(name, d)
        if not _unlink(_digest_path(self._repo(name) / "_manifests", d)):
            return False
        for tag in self.tags(name):
            if self.resolve_tag(name, tag) == d:
                self.delete_tag(name, tag)
        if link is not None and link.subject is not None:
            _unlink(self._referrer_path(name, link.subject, d))
        return True

    # -- tags --------------------------------------------------------------

    def tags(self, name: str) -> list[str]:
        try:
            names = os.listdir(self._repo(name) / "_tags")
        except FileNotFoundError:
            return []
        # Go's sort.Strings order (bytewise), which the spec allows and clients expect.
        return sorted((n for n in names if valid_tag(n)), key=lambda s: s.encode())

    def resolve_tag(self, name: str, tag: str) -> Digest | None:
        try:
            return Digest((self._repo(name) / "_tags" / tag).read_text().strip())
        except (FileNotFoundError, InvalidArgument):
            return None

    def set_tag(self, name: str, tag: str, d: Digest) -> None:
        if not valid_tag(tag):
            raise InvalidArgument(f"invalid tag {tag!r}")
        _write_atomic_mkdir(self._repo(name) / "_tags" / tag, str(d).encode())

    def delete_tag(self, name: str, tag: str) -> bool:
        if not valid_tag(tag):
            return False
        return _unlink(self._repo(name) / "_tags" / tag)

    # -- referrers ---------------------------------------------------------

    def _referrer_path(self, name: str, subject: Digest, d: Digest) -> Path:
        return (_digest_path(self._repo(name) / "_referrers", subject)
                / f"{d.algorithm}-{d.hex}.json")

    def add_referrer(self, name: str, subject: Digest, descriptor: dict[str, Any]) -> None:
        path = self._referrer_path(name, subject, Digest(descriptor["digest"]))
        _write_atomic_mkdir(path, json.dumps(descriptor, sort_keys=True).encode())

    def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        base = _digest_path(self._repo(name) / "_referrers", subject)
        try:
            files = sorted(os.listdir(base))
        except FileNotFoundError:
            return []
        out = []
        for f in files:
            if f.startswith(".") or not f.endswith(".json"):
                continue
            try:
                desc = json.loads((base / f).read_bytes())
            except FileNotFoundError:
                continue
            # Only manifests still linked: a stale entry must not outlive its manifest.
            if self.manifest_link(name, Digest(desc["digest"])) is not None:
                out.append(desc)
        return out

    # -- upload sessions ---------------------------------------------------

    def new_session(self, name: str, algorithm: str) -> UploadSession:
        self._repo(name)  # validates
        session = UploadSession(str(uuidlib.uuid4()), name, algorithm, time.time())
        _write_atomic_mkdir(self.uploads_dir / session.uuid / "session.json", json.dumps(
            {"repository": name, "algorithm": algorithm, "started": session.started}).encode())
        return session

    def session(self, upload_id: str) -> UploadSession | None:
        if not UUID_RE.fullmatch(upload_id):
            return None  # never a path component we did not make
        try:
            doc = json.loads((self.uploads_dir / upload_id / "session.json").read_bytes())
        except FileNotFoundError:
            return None
        return UploadSession(upload_id, doc["repository"], doc.get("algorithm", "sha256"),
                             float(doc.get("started", 0)))

    def sessions(self) -> Iterator[UploadSession]:
        for entry in sorted(os.listdir(self.uploads_dir)):
            s = self.session(entry)
            if s is not None:
                yield s
            elif not entry.startswith("."):
                # A session directory whose record never got written (crash at POST).
                path = self.uploads_dir / entry
                if time.time() - path.stat().st_mtime > 3600:
                    shutil.rmtree(path, ignore_errors=True)

    def remove_session(self, upload_id: str) -> None:
        if UUID_RE.fullmatch(upload_id):
            shutil.rmtree(self.uploads_dir / upload_id, ignore_errors=True)
