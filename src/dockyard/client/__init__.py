"""A client of the Engine API, shaped like docker-py's low-level API: one module per
resource, each a thin class over one HTTPClient. Standard library only, so that the
`dockyard` command starts fast."""

from __future__ import annotations

# typing costs more to import than this package; annotations are never evaluated.
TYPE_CHECKING = False

from dockyard.client.http import HTTPClient, TLSConfig

if TYPE_CHECKING:
    from typing import Any

    from dockyard.client.containers import Containers
    from dockyard.client.exec import Execs
    from dockyard.client.images import Images
    from dockyard.client.networks import Networks
    from dockyard.client.system import System
    from dockyard.client.volumes import Volumes


class _Resource:
    """A Client attribute made on first use from the class CLS of dockyard.client.MODULE,
    so that a command imports only the resources it uses."""

    def __init__(self, module: str, cls: str) -> None:
        self.module = module
        self.cls = cls
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, client: Client | None, owner: type | None = None) -> object:
        if client is None:
            return self
        module = __import__(f"dockyard.client.{self.module}", fromlist=[self.cls])
        value = getattr(module, self.cls)(client.http)
        client.__dict__[self.name] = value
        return value


def _resource(module: str, cls: str) -> Any:
    return _Resource(module, cls)


class Client:
    """The Engine API of one daemon; resources are imported when first used."""

    containers: Containers = _resource("containers", "Containers")
    images: Images = _resource("images", "Images")
    system: System = _resource("system", "System")
    networks: Networks = _resource("networks", "Networks")
    volumes: Volumes = _resource("volumes", "Volumes")
    execs: Execs = _resource("exec", "Execs")

    def __init__(self, host: str | None = None, tls: TLSConfig | None = None,
                 version: str | None = None) -> None:
        self.http = HTTPClient(host, tls, version)


__all__ = ["Client", "HTTPClient", "TLSConfig"]
