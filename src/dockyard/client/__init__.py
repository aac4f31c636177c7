"""A client of the Engine API, shaped like docker-py's low-level API: one module per
resource, each a thin class over one HTTPClient. Standard library only, so that the
`dockyard` command starts fast."""

from __future__ import annotations

from functools import cached_property
# typing costs more to import than this package; annotations are never evaluated.
TYPE_CHECKING = False

from dockyard.client.http import HTTPClient, TLSConfig

if TYPE_CHECKING:
    from dockyard.client.containers import Containers
    from dockyard.client.exec import Execs
    from dockyard.client.images import Images
    from dockyard.client.networks import Networks
    from dockyard.client.system import System
    from dockyard.client.volumes import Volumes


class Client:
    """The Engine API of one daemon; resources are imported when first used."""

    def __init__(self, host: str | None = None, tls: TLSConfig | None = None,
                 version: str | None = None) -> None:
        self.http = HTTPClient(host, tls, version)

    @cached_property
    def containers(self) -> Containers:
        from dockyard.client.containers import Containers

        return Containers(self.http)

    @cached_property
    def images(self) -> Images:
        from dockyard.client.images import Images

        return Images(self.http)

    @cached_property
    def system(self) -> System:
        from dockyard.client.system import System

        return System(self.http)

    @cached_property
    def networks(self) -> Networks:
        from dockyard.client.networks import Networks

        return Networks(self.http)

    @cached_property
    def volumes(self) -> Volumes:
        from dockyard.client.volumes import Volumes

        return Volumes(self.http)

    @cached_property
    def execs(self) -> Execs:
        from dockyard.client.exec import Execs

        return Execs(self.http)


__all__ = ["Client", "HTTPClient", "TLSConfig"]
