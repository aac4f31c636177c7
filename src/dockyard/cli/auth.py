"""`dockyard login` / `logout`, and the registry credentials pull and push send.

Credentials live where the docker CLI keeps them (distribution/credentials.py), so a
`docker login` serves dockyard too and the other way round."""

from __future__ import annotations

import base64
import json
import os
import sys

import click

from dockyard.cli.command import Command, StatusError
from dockyard.cli.connection import client


def _config_exists() -> bool:
    # Checked before importing the credential store, which is slow to import.
    directory = os.environ.get("DOCKER_CONFIG")
    path = (os.path.join(directory, "config.json") if directory
            else os.path.expanduser("~/.docker/config.json"))
    return os.path.exists(path)


def registry_of(ref: str) -> str:
    """The registry host of an image reference: its first component when that looks
    like a host, else Docker Hub."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_auth_header(ref: str) -> str | None:
    """X-Registry-Auth for REF from the stored credentials, or None."""
    if not _config_exists():
        return None
    from dockyard.distribution.credentials import CredentialStore

    auth = CredentialStore().get(registry_of(ref))
    if auth is None or auth.empty:
        return None
    doc = {"username": auth.username, "password": auth.password,
           "serveraddress": auth.server_address}
    if auth.identity_token:
        doc["identitytoken"] = auth.identity_token
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@click.command(cls=Command, usage="[OPTIONS] [SERVER]")
@click.option("-p", "--password", metavar="string", help="Password or Personal Access Token (PAT)")
@click.option("--password-stdin", is_flag=True, help="Take the Password or Personal Access Token (PAT) from stdin")
@click.option("-u", "--username", metavar="string", help="Username")
@click.argument("server", nargs=-1)
def login(password: str | None, password_stdin: bool, username: str | None,
          server: tuple[str, ...]) -> None:
    """Authenticate to a registry"""
    from dockyard.distribution.credentials import AuthConfig, CredentialStore, config_key

    if len(server) > 1:
        raise StatusError("dockyard: 'dockyard login' requires at most 1 argument", 1)
    if password is not None and password_stdin:
        raise StatusError("--password and --password-stdin are mutually exclusive", 1)
    if password_stdin:
        if not username:
            raise StatusError("Must provide --username with --password-stdin", 1)
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                   err=True)
    host = server[0] if server else "docker.io"
    key = config_key(host)
    if not username:
        if not sys.stdin.isatty():
            raise StatusError("Error: Cannot perform an interactive login from a non TTY "
                              "device", 1)
        username = input("Username: ").strip()
        if not username:
            raise StatusError("Error: Non-null Username Required", 1)
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
        if not password:
            raise StatusError("Error: Password Required", 1)
    answer = client().images.auth({"username": username, "password": password,
                                   "serveraddress": key})
    token = answer.get("IdentityToken") or ""
    stored = (AuthConfig(username=username, identity_token=token, server_address=key) if token
              else AuthConfig(username=username, password=password, server_address=key))
    CredentialStore().store(host, stored)
    click.echo(answer.get("Status") or "Login Succeeded")


@click.command(cls=Command, usage="[SERVER]")
@click.argument("server", nargs=-1)
def logout(server: tuple[str, ...]) -> None:
    """Log out from a registry"""
    from dockyard.distribution.credentials import logout as forget

    if len(server) > 1:
        raise StatusError("dockyard: 'dockyard logout' requires at most 1 argument", 1)
    click.echo(forget(server[0] if server else "docker.io"))
