"""Container cgroups: one object per container, on cgroup v1 or v2.

    cg = open_cgroup(spec["linux"]["cgroupsPath"])
    cg.validate(spec["linux"].get("resources") or {})   # no side effects
    cg.create(resources)            # mkdir + limits; removes what it made on failure
    # in the forked child, before unsharing the cgroup namespace:
    #   for f in cg.procs_files(): write "0" to f
    cg.freeze(); cg.thaw(); cg.kill_all(signal.SIGTERM); cg.destroy()

Device rules apply only when linux.resources.devices is given: an absent list
leaves device access as the parent cgroup has it, an empty list denies all.
The runtime must therefore always pass the spec's list (plus its default
devices), as Docker's specs always carry one.

Imported on every container start: only os, errno and time load with it.
"""

from __future__ import annotations

import os

from dockyard.errors import Unsupported

from ._common import Cgroup, cgroup_mounts, normalize_path, parse_cpu_list
from .v1 import V1Cgroup
from .v2 import V2Cgroup, blkio_to_io_weight, shares_to_weight

__all__ = [
    "Cgroup",
    "V1Cgroup",
    "V2Cgroup",
    "blkio_to_io_weight",
    "open_cgroup",
    "parse_cpu_list",
    "shares_to_weight",
]


def open_cgroup(path: str, root: str = "/sys/fs/cgroup") -> Cgroup:
    """The driver for the host: pure cgroup2 at root means v2, anything else v1.

    Hybrid hosts keep their controllers on v1 (the unified mount carries few
    or none), so they get the v1 driver, which also joins the unified
    hierarchy. A host with only a cgroup2 mount under root gets v2 there.
    """
    path = normalize_path(path)
    root = root.rstrip("/") or "/"
    # cgroup.controllers exists only in a cgroup2 root; a tmpfs of v1 mounts has none.
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return V2Cgroup(path, root)
    hierarchies, unified = cgroup_mounts(root)
    if any(not c.startswith("name=") for _mp, _name, ctrls in hierarchies for c in ctrls):
        return V1Cgroup(path, root, hierarchies=hierarchies, unified=unified)
    if unified is not None:
        return V2Cgroup(path, unified)
    raise Unsupported(f"linux.cgroupsPath: no cgroup hierarchies are mounted under {root}")
