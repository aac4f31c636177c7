"""`docker commit`: a new image whose top layer is what a container changed.

As dockerd's CreateImageFromContainer: the config is the request's (or the
container's) with the --change instructions applied, then completed from the
container's own config (dockerd's merge); the layer is the container's overlay upper
directory written as a layer tar; the image config extends the parent image's rootfs
and history by one entry (an empty layer when nothing changed), and the parent is
recorded so `docker history` walks through it.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

from dockyard.daemon.containers import Container
from dockyard.daemon.filesystem import container_lock
from dockyard.errors import Conflict, DockyardError
from dockyard.image import layer as layers_mod
from dockyard.image.archive import build_config
from dockyard.image.digest import Digest
from dockyard.image.manifest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Descriptor, Manifest, go_json
from dockyard.image.reference import repo_tag_reference
from dockyard.image.store import Pending, go_container_config, now_go_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dockyard.daemon.lifecycle import Lifecycle

log = logging.getLogger(__name__)

ImageEventFn = Callable[[str, str, str, "dict[str, str] | None"], None]

# The DiffID of a tar with no entries (two zero blocks): dockerd's layer.IsEmpty.
EMPTY_LAYER = Digest("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")


def merge(user: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """dockerd's merge: fill what USER (the new image's config) leaves unset from BASE
    (the container's config). Returns USER, completed."""
    if not user.get("User"):
        user["User"] = base.get("User") or ""
    ports = base.get("ExposedPorts") or {}
    if not user.get("ExposedPorts"):
        user["ExposedPorts"] = dict(ports) or None
    else:
        for p in ports:
            user["ExposedPorts"].setdefault(p, {})
    if not user.get("Env"):
        user["Env"] = list(base.get("Env") or []) or None
    else:
        keys = {e.partition("=")[0] for e in user["Env"]}
        user["Env"] = list(user["Env"]) + [e for e in base.get("Env") or []
                                           if e.partition("=")[0] not in keys]
    labels = dict(user.get("Labels") or {})
    for k, v in (base.get("Labels") or {}).items():
        labels.setdefault(k, v)
    user["Labels"] = labels
    if not user.get("Entrypoint"):
        if not user.get("Cmd"):
            user["Cmd"] = base.get("Cmd")
        if user.get("Entrypoint") is None:
            user["Entrypoint"] = base.get("Entrypoint")
    base_health = base.get("Healthcheck")
    if base_health:
        if not user.get("Healthcheck"):
            user["Healthcheck"] = dict(base_health)
        else:
            for key in ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
                if not user["Healthcheck"].get(key) and base_health.get(key):
                    user["Healthcheck"][key] = base_health[key]
    if not user.get("WorkingDir"):
        user["WorkingDir"] = base.get("WorkingDir") or ""
    if not user.get("Volumes"):
        user["Volumes"] = base.get("Volumes")
    else:
        user["Volumes"] = {**user["Volumes"], **(base.get("Volumes") or {})}
    if not user.get("StopSignal") and base.get("StopSignal"):
        user["StopSignal"] = base["StopSignal"]
    return user


class _Counter:
    """A write-through that counts bytes (the layer blob's size for its descriptor)."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.size = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.size += len(data)
        return len(data)


def _check(c: Container) -> None:
    if c.State.Dead:
        raise Conflict(f"You cannot commit container {c.ID} which is Dead")
    if c.State.RemovalInProgress:
        raise Conflict(f"You cannot commit container {c.ID} which is being removed")


def commit(lc: Lifecycle, image_event: ImageEventFn, ref: str, *, repo: str = "",
           tag: str = "", author: str = "", comment: str = "", pause: bool = True,
           changes: list[str] | None = None, config: dict[str, Any] | None = None) -> str:
    """POST /commit: the id of the image made from container REF."""
    target = repo_tag_reference(repo, tag)  # a bad name is refused before the lookup
    c = lc.store.get(ref)
    _check(c)
    # As dockerd: a running container is frozen while its diff is read, so that the
    # layer is one moment of its filesystem.
    paused_here = False
    if pause and c.State.Running and not c.State.Paused and not c.State.Restarting:
        try:
            lc.pause(c.ID)
            paused_here = True
        except Conflict as exc:  # it stopped meanwhile
            log.debug("not pausing %s for commit: %s", c.ID, exc)
    base = copy.deepcopy(config) if config is not None else copy.deepcopy(c.Config)
    new_config = go_container_config(merge(build_config(changes or [], base), c.Config))
    store = lc.images
    parent = store.get(c.Image)
    parent_doc = json.loads(store.content.read(parent.id))
    with store.lease("commit") as lease:
        w = store.content.writer(f"commit-{lease.id}", lease=lease)
        try:
            counter = _Counter(w)
            try:
                with container_lock(c.ID):
                    lowers, upper, _work = store.snapshots.container_dirs(c.ID)
                    layers_mod.diff(lowers, upper, counter)  # type: ignore[arg-type]
            finally:
                if paused_here:
                    try:
                        lc.unpause(c.ID)
                    except DockyardError as exc:
                        log.warning("unpausing %s after commit: %s", c.ID, exc)
            diff_id = w.commit()
        except BaseException:
            w.abort()
            raise
        empty = diff_id == EMPTY_LAYER
        created = now_go_time()
        entry: dict[str, Any] = {"created": created}
        if author:
            entry["author"] = author
        created_by = " ".join(c.Config.get("Cmd") or [])
        if created_by:
            entry["created_by"] = created_by
        if comment:
            entry["comment"] = comment
        if empty:
            entry["empty_layer"] = True
        rootfs = dict(parent_doc.get("rootfs") or {"type": "layers"})
        diff_ids = list(rootfs.get("diff_ids") or [])
        if not empty:
            diff_ids.append(str(diff_id))
        rootfs = {"type": rootfs.get("type") or "layers", "diff_ids": diff_ids}
        doc: dict[str, Any] = {}
        if comment:
            # dockerd keeps it in the history only; inspect's Comment reads it here.
            doc["comment"] = comment
        doc.update({"created": created, "container": c.ID,
                    "container_config": go_container_config(c.Config)})
        if author:
            doc["author"] = author
        doc["config"] = new_config
        for key in ("architecture", "variant", "os"):
            if parent_doc.get(key):
                doc[key] = parent_doc[key]
        doc["rootfs"] = rootfs
        doc["history"] = list(parent_doc.get("history") or []) + [entry]
        for key in ("os.version", "os.features"):
            if parent_doc.get(key):
                doc[key] = parent_doc[key]
        cfg_raw = go_json(doc)
        cfg_digest = store.content.put(cfg_raw, lease=lease)
        layers = list(parent.manifest.layers)
        if not empty:
            layers.append(Descriptor(OCI_LAYER, diff_id, counter.size))
        m = Manifest(media_type=OCI_MANIFEST,
                     config=Descriptor(OCI_CONFIG, cfg_digest, len(cfg_raw)), layers=layers)
        mdigest = store.content.put(m.canonical_json(), lease=lease)
        resolved = store.describe(mdigest)
        refs = [target] if target is not None else []
        store.record([Pending(resolved, refs, "commit")], tag_time=bool(refs))
    image_id = str(cfg_digest)
    store.set_parent(image_id, str(parent.id))
    labels = {str(k): str(v) for k, v in (new_config.get("Labels") or {}).items()}
    image_event("create", image_id, image_id, labels)
    image_ref = ""
    if target is not None:
        image_ref = target.familiar()
        image_event("tag", image_id, image_ref, labels)
    lc.emit("commit", c, {"comment": comment, "imageID": image_id, "imageRef": image_ref})
    return image_id
