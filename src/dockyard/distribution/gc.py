"""Garbage collection for the registry's storage, offline like distribution's.

Mark: every manifest linked into any repository, tagged or not, is a root (with
DELETE_UNTAGGED, untagged ones are unlinked first, unless a tagged index or a kept
subject needs them); from each root, indexes lead to their manifests and manifests
to their config and layers. Sweep: every other blob in the ContentStore goes, with
the repository links that pointed at it, and upload sessions idle past their age.

Run it while the registry is stopped (or takes no pushes): a push in progress has
blobs that no manifest references yet, and they would be swept, exactly as with
distribution's `registry garbage-collect`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from dockyard.errors import SystemFailure
from dockyard.image.digest import Digest
from dockyard.image.manifest import Index, child_descriptors, parse_manifest

from dockyard.distribution.storage import RegistryStore

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_MAX_AGE = 7 * 24 * 3600


@dataclass
class GcReport:
    blobs_removed: list[Digest] = field(default_factory=list)
    bytes_freed: int = 0
    manifests_removed: list[tuple[str, Digest]] = field(default_factory=list)
    links_removed: int = 0
    uploads_removed: list[str] = field(default_factory=list)


def purge_uploads(store: RegistryStore, max_age: float) -> list[str]:
    """Cancel upload sessions untouched for MAX_AGE seconds; returns their ids.

    An upload whose ingest a writer holds (a live request, in any process) is kept.
    """
    now = time.time()
    aborted = set(store.content.abort_stale(max_age))
    live = {s.ref for s in store.content.ingests()}
    removed = []
    for session in store.sessions():
        if session.ref in aborted or (session.ref not in live and now - session.started >= max_age):
            store.remove_session(session.uuid)
            removed.append(session.uuid)
    if removed:
        log.info("purged %d stale upload sessions", len(removed))
    return removed


def _children_fn(store: RegistryStore, manifests: set[Digest]) -> Callable[[Digest], list[Digest]]:
    """What a blob references; only blobs known to be manifests are read.

    MANIFESTS grows as indexes reveal their children. A manifest that no longer
    parses raises: GC must stop rather than free what it may reference.
    """
    def children(d: Digest) -> list[Digest]:
        if d not in manifests:
            return []
        try:
            obj = parse_manifest(store.content.read(d))
        except Exception as e:
            raise SystemFailure(f"gc: manifest {d} is unreadable ({e}); nothing was deleted") from e
        kids = [c.digest for c in child_descriptors(obj)]
        if isinstance(obj, Index):
            manifests.update(kids)
        return kids

    return children


def _mark(store: RegistryStore, roots: set[Digest]) -> set[Digest]:
    manifests = set(roots)
    children = _children_fn(store, manifests)
    marked: set[Digest] = set()
    pending = list(roots)
    while pending:
        d = pending.pop()
        if d in marked:
            continue
        marked.add(d)
        if store.content.exists(d):
            pending.extend(children(d))
    return marked


def _untagged(store: RegistryStore, repo: str) -> list[Digest]:
    """Manifests of REPO that no tag reaches, through an index or as a referrer."""
    linked = store.linked_manifests(repo)
    keep = {d for t in store.tags(repo) if (d := store.resolve_tag(repo, t)) is not None}
    keep = _mark(store, keep) & set(linked)
    subjects = {d: link.subject for d in linked
                if (link := store.manifest_link(repo, d)) is not None and link.subject}
    # Referrers (signatures, SBOMs) live as long as what they refer to.
    while True:
        more = {d for d, s in subjects.items() if s in keep and d not in keep}
        if not more:
            break
        keep |= _mark(store, more) & set(linked)
    return [d for d in linked if d not in keep]


def gc(root: str | os.PathLike[str], *, delete_untagged: bool = False, dry_run: bool = False,
       upload_max_age: float = DEFAULT_UPLOAD_MAX_AGE) -> GcReport:
    """Delete unreferenced blobs and stale uploads under ROOT; see the module doc."""
    store = RegistryStore(root)
    report = GcReport()
    repos = store.repositories()
    if delete_untagged:
        for repo in repos:
            for d in _untagged(store, repo):
                report.manifests_removed.append((repo, d))
                if not dry_run:
                    store.unlink_manifest(repo, d)
    roots = {d for repo in repos for d in store.linked_manifests(repo)}
    if dry_run:
        removed_set = {(repo, d) for repo, d in report.manifests_removed}
        roots = {d for repo in repos for d in store.linked_manifests(repo)
                 if (repo, d) not in removed_set}
        marked = _mark(store, roots)
        report.blobs_removed = [d for d in store.content.walk() if d not in marked]
        report.bytes_freed = sum(store.content.info(d)[0] for d in report.blobs_removed)
        return report
    sizes = {d: store.content.info(d)[0] for d in store.content.walk()}
    manifests = set(roots)
    report.blobs_removed = store.content.gc(roots, _children_fn(store, manifests))
    report.bytes_freed = sum(sizes.get(d, 0) for d in report.blobs_removed)
    gone = set(report.blobs_removed)
    for repo in repos:
        for d in store.linked_blobs(repo):
            if d in gone or not store.content.exists(d):
                store.unlink_blob(repo, d)
                report.links_removed += 1
    report.uploads_removed = purge_uploads(store, upload_max_age)
    log.info("registry gc: %d blobs (%d bytes) removed, %d links, %d uploads",
             len(report.blobs_removed), report.bytes_freed, report.links_removed,
             len(report.uploads_removed))
    return report
