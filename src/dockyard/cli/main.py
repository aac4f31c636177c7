"""The `dockyard` command: the top-level group and error reporting.

Commands live in one module each and are attached lazily, so that a command's
start-up imports only what that command needs.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dockyard.cli.command import BoolFlags, StatusError
from dockyard.errors import DockyardError

# command name -> (module, attribute): imported only when the command runs.
_COMMANDS = {
    "registry": ("dockyard.cli.registry", "registry"),
    "version": ("dockyard.cli.system", "version"),
    "info": ("dockyard.cli.system", "info"),
    "system": ("dockyard.cli.system", "system"),
    "events": ("dockyard.cli.system", "events"),
    "ps": ("dockyard.cli.containers", "ps"),
    "container": ("dockyard.cli.containers", "container"),
    "create": ("dockyard.cli.run", "create"),
    "run": ("dockyard.cli.run", "run"),
    "start": ("dockyard.cli.containers", "start"),
    "stop": ("dockyard.cli.containers", "stop"),
    "restart": ("dockyard.cli.containers", "restart"),
    "kill": ("dockyard.cli.containers", "kill"),
    "rm": ("dockyard.cli.containers", "rm"),
    "logs": ("dockyard.cli.containers", "logs"),
    "wait": ("dockyard.cli.containers", "wait"),
    "rename": ("dockyard.cli.containers", "rename"),
    "pause": ("dockyard.cli.containers", "pause"),
    "unpause": ("dockyard.cli.containers", "unpause"),
    "exec": ("dockyard.cli.containers", "exec_"),
    "top": ("dockyard.cli.containers", "top"),
    "update": ("dockyard.cli.containers", "update"),
    "stats": ("dockyard.cli.stats", "stats"),
    "attach": ("dockyard.cli.containers", "attach"),
    "cp": ("dockyard.cli.cp", "cp"),
    "export": ("dockyard.cli.containers", "export"),
    "commit": ("dockyard.cli.containers", "commit"),
    "diff": ("dockyard.cli.containers", "diff"),
    "port": ("dockyard.cli.containers", "port"),
    "import": ("dockyard.cli.images", "import_"),
    "inspect": ("dockyard.cli.inspect", "inspect"),
    "images": ("dockyard.cli.images", "images"),
    "image": ("dockyard.cli.images", "image"),
    "pull": ("dockyard.cli.images", "pull"),
    "push": ("dockyard.cli.images", "push"),
    "tag": ("dockyard.cli.images", "tag"),
    "rmi": ("dockyard.cli.images", "rmi"),
    "save": ("dockyard.cli.images", "save"),
    "load": ("dockyard.cli.images", "load"),
    "history": ("dockyard.cli.images", "history"),
    "network": ("dockyard.cli.networks", "network"),
    "volume": ("dockyard.cli.networks", "volume"),
    "login": ("dockyard.cli.auth", "login"),
    "logout": ("dockyard.cli.auth", "logout"),
}


class _LazyGroup(BoolFlags, click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        import importlib

        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in _COMMANDS and not args[0].startswith("-"):
            raise StatusError(f"dockyard: unknown command: dockyard {args[0]}\n\n"
                              "Run 'dockyard --help' for more information", 1)
        return super().resolve_command(ctx, args)


@click.group(cls=_LazyGroup, context_settings={"allow_interspersed_args": False,
                                                "help_option_names": ["-h", "--help"]})
@click.option("-D", "--debug", is_flag=True, help="Enable debug mode")
@click.option("-l", "--log-level", type=click.Choice(["debug", "info", "warn", "error", "fatal"]),
              default="info", show_default=True, help="Set the logging level")
@click.option("-H", "--host", "host", metavar="URL",
              help="Daemon socket to connect to (unix:///path or tcp://host:port; "
                   "default: $DOCKYARD_HOST or unix:///run/dockyard.sock)")
@click.option("--tls", is_flag=True, help="Use TLS; implied by --tlsverify")
@click.option("--tlsverify", is_flag=True, help="Use TLS and verify the remote")
@click.option("--tlscacert", metavar="PATH", help="Trust certs signed only by this CA")
@click.option("--tlscert", metavar="PATH", help="Path to TLS certificate file")
@click.option("--tlskey", metavar="PATH", help="Path to TLS key file")
@click.version_option(None, "-v", "--version", package_name="dockyard", prog_name="Dockyard",
                      message="%(prog)s version %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool, log_level: str, host: str | None, tls: bool,
        tlsverify: bool, tlscacert: str | None, tlscert: str | None,
        tlskey: str | None) -> None:
    """A self-sufficient runtime for containers"""
    from dockyard.cli.connection import Connection

    if debug or log_level != "info" or ctx.invoked_subcommand == "registry":
        # logging costs ~5 ms of start-up; the client commands log nothing at the default,
        # the registry server does.
        import logging

        level = logging.DEBUG if debug else getattr(
            logging, {"warn": "WARNING", "fatal": "CRITICAL"}.get(log_level, log_level.upper()))
        logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)
    ctx.obj = Connection(host=host, tls=tls, tlsverify=tlsverify, tlscacert=tlscacert,
                         tlscert=tlscert, tlskey=tlskey, debug=debug)


def _flag_error(e: click.UsageError) -> str:
    """click's wording of a flag error in docker's (pflag's) words."""
    if isinstance(e, click.NoSuchOption):
        name = e.option_name
        if name.startswith("--"):
            return f"unknown flag: {name}"
        return f"unknown shorthand flag: '{name[1:2]}' in {name}"
    if isinstance(e, click.BadOptionUsage) and "requires an argument" in e.message:
        name = e.option_name
        return (f"flag needs an argument: {name}" if name.startswith("--")
                else f"flag needs an argument: '{name[1:]}' in {name}")
    if getattr(e, "docker_message", None):
        return str(e.docker_message)  # type: ignore[attr-defined]
    if isinstance(e, click.BadParameter) and isinstance(e.param, click.Option):
        decl = ", ".join(e.param.opts)
        return f'invalid argument for "{decl}" flag: {e.message}'
    return e.format_message()


def _usage_error(e: click.UsageError) -> int:
    from dockyard.cli.command import ArgumentCountError, Command

    ctx = e.ctx
    usage = ""
    if ctx is not None:
        if isinstance(ctx.command, Command):
            usage = ctx.command.usage_line(ctx)
        elif isinstance(ctx.command, click.Group):
            # docker's: "docker [OPTIONS] COMMAND [ARG...]", "docker container".
            usage = (f"Usage:  {ctx.command_path} [OPTIONS] COMMAND [ARG...]"
                     if ctx.parent is None else f"Usage:  {ctx.command_path}")
        else:
            usage = ctx.get_usage().replace("Usage: ", "Usage:  ", 1)
    path = ctx.command_path if ctx is not None else "dockyard"
    if isinstance(e, ArgumentCountError):
        # docker reports a wrong argument count with status 1 and "See".
        click.echo(f"dockyard: {e.format_message()}\n\n{usage}\n\n"
                   f"{e.footer} '{path} --help' for more information", err=True)
        return 1
    click.echo(f"{_flag_error(e)}\n\n{usage}\n\nRun '{path} --help' for more information",
               err=True)
    return 125


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dockyard", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            # `dockyard` alone: the help, as docker prints it, and success.
            click.echo(e.format_message())
            return 0
        return _usage_error(e)
    except click.ClickException as e:
        click.echo(f"Error: {e.format_message()}", err=True)
        return e.exit_code
    except StatusError as e:
        if e.message:
            click.echo(e.message, err=True)
        return e.status
    except DockyardError as e:
        from dockyard.client.http import ConnectFailed, DaemonUnreachable, is_api_error

        if isinstance(e, (DaemonUnreachable, ConnectFailed)):
            click.echo(str(e), err=True)
            return 1
        if is_api_error(e):
            click.echo(f"Error response from daemon: {e}", err=True)
            return 1
        click.echo(f"Error: {e}", err=True)
        return 125
    except BrokenPipeError:
        # `dockyard ps | head`: the reader left; say nothing, as docker.
        sys.stderr.close()
        return 0
    except OSError as e:
        # A file the user named (a certificate, a key) that cannot be read.
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"Error: {e.strerror or e}{where}", err=True)
        return 125
    return 0


if __name__ == "__main__":
    sys.exit(main())
