"""Image distribution: talking to registries, and being one.

The registry server (OCI Distribution Spec v1.1): `server` (make_app, serve,
RegistryThread), `auth` (htpasswd and token auth), `storage` (the on-disk layout over
the shared ContentStore) and `gc` (garbage collection). Submodules are imported on
use, so `import dockyard.distribution` stays cheap.
"""

from __future__ import annotations
