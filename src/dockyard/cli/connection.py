"""The daemon a command talks to, from the global options and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from dockyard.cli.command import StatusError
from dockyard.errors import InvalidArgument

if TYPE_CHECKING:
    from dockyard.client import Client


@dataclass
class Connection:
    host: str | None = None
    tls: bool = False
    tlsverify: bool = False
    tlscacert: str | None = None
    tlscert: str | None = None
    tlskey: str | None = None
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            from dockyard.client import Client
            from dockyard.client.http import TLSConfig

            host = self.host or os.environ.get("DOCKYARD_HOST") or None
            verify = self.tlsverify or bool(os.environ.get("DOCKYARD_TLS_VERIFY"))
            tls = None
            if self.tls or verify:
                certs = os.environ.get("DOCKYARD_CERT_PATH") or os.path.expanduser("~/.dockyard")

                def default(given: str | None, name: str) -> str | None:
                    if given:
                        return given
                    path = os.path.join(certs, name)
                    return path if os.path.exists(path) else None

                tls = TLSConfig(verify=verify, ca=default(self.tlscacert, "ca.pem"),
                                cert=default(self.tlscert, "cert.pem"),
                                key=default(self.tlskey, "key.pem"))
            try:
                self._client = Client(host, tls)
            except InvalidArgument as exc:
                raise StatusError("Failed to initialize: unable to resolve dockyard endpoint: "
                                  f"{exc}", 1) from None
        return self._client


def client() -> Client:
    """The client of the running command's daemon."""
    ctx = click.get_current_context()
    conn = ctx.find_object(Connection)
    if conn is None:
        conn = ctx.ensure_object(Connection)
    return conn.client()
