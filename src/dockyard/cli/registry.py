"""`dockyard registry serve`: an OCI distribution registry of our own."""

from __future__ import annotations

import click


@click.group(context_settings={"allow_interspersed_args": False})
def registry() -> None:
    """Manage a registry server"""


@registry.command(context_settings={"allow_interspersed_args": False})
@click.option("--addr", default="127.0.0.1:5000", show_default=True,
              help="Address to listen on (host:port)")
@click.option("--root", default="/var/lib/dockyard/registry", show_default=True,
              help="Directory for the registry's storage")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate (PEM)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Private key for --tls-cert (PEM)")
@click.option("--htpasswd", type=click.Path(exists=True, dir_okay=False), help="Require users from this htpasswd file (bcrypt)")
@click.option("--token-realm", help="Token auth: URL clients get tokens from")
@click.option("--token-issuer", help="Token auth: issuer name")
@click.option("--token-key", type=click.Path(exists=True, dir_okay=False), help="Token auth: HS256 secret or EC P-256 PEM key file")
@click.option("--token-service", help="Token auth: service name")
@click.option("--no-delete", is_flag=True, help="Refuse DELETE of manifests and blobs")
def serve(addr: str, root: str, tls_cert: str | None, tls_key: str | None, htpasswd: str | None,
          token_realm: str | None, token_issuer: str | None, token_key: str | None,
          token_service: str | None, no_delete: bool) -> None:
    """Serve an OCI distribution (Docker registry v2) API"""
    from dockyard.distribution.server import serve as run

    run(addr, root, tls_cert=tls_cert, tls_key=tls_key, htpasswd=htpasswd,
        token_realm=token_realm, token_issuer=token_issuer, token_key=token_key,
        token_service=token_service, delete_enabled=not no_delete)
