"""The networks every daemon has while it runs as dockerd with `--bridge=none`: "host"
and "none", with records shaped like the Engine API's."""

from __future__ import annotations

import hashlib
from typing import Any

from dockyard.errors import NotFound

NAMES = ("host", "none")


def record(engine_id: str, name: str) -> dict[str, Any]:
    return {
        "Name": name,
        # Stable for a daemon, as dockerd's are once created.
        "Id": hashlib.sha256(f"{engine_id}/{name}".encode()).hexdigest(),
        "Created": "0001-01-01T00:00:00Z", "Scope": "local",
        "Driver": "host" if name == "host" else "null", "EnableIPv4": False,
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": None},
        "Internal": False, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {}, "Options": {},
        "Labels": {},
    }


def all_records(engine_id: str) -> list[dict[str, Any]]:
    return [record(engine_id, n) for n in NAMES]


def find(engine_id: str, ref: str) -> dict[str, Any]:
    """The network REF names (name or id prefix); NotFound as dockerd words it."""
    for net in all_records(engine_id):
        if ref == net["Name"] or (ref and net["Id"].startswith(ref)):
            return net
    raise NotFound(f"network {ref} not found")
