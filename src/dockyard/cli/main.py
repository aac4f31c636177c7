"""The `dockyard` command: the top-level group and error reporting.

Commands live in one module each and are attached lazily, so that a command's
start-up imports only what that command needs.
"""

from __future__ import annotations

import sys

import click

from dockyard.errors import DockyardError

# command name -> (module, attribute): imported only when the command runs.
_COMMANDS = {
    "registry": ("dockyard.cli.registry", "registry"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        import importlib

        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"allow_interspersed_args": False,
                                                "help_option_names": ["-h", "--help"]})
@click.option("-D", "--debug", is_flag=True, help="Enable debug mode")
@click.option("-l", "--log-level", type=click.Choice(["debug", "info", "warn", "error", "fatal"]),
              default="info", show_default=True, help="Set the logging level")
@click.version_option(package_name="dockyard", prog_name="Dockyard", message="%(prog)s version %(version)s")
def cli(debug: bool, log_level: str) -> None:
    """A self-sufficient runtime for containers"""
    import logging

    level = logging.DEBUG if debug else getattr(logging, {"warn": "WARNING", "fatal": "CRITICAL"}
                                                .get(log_level, log_level.upper()))
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dockyard", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.UsageError as e:
        # docker: flag and usage errors exit 125 with the command's usage hint.
        click.echo(f"dockyard: {e.format_message()}", err=True)
        if e.ctx is not None:
            click.echo(f"See '{e.ctx.command_path} --help'.", err=True)
        return 125
    except click.ClickException as e:
        click.echo(f"Error: {e.format_message()}", err=True)
        return e.exit_code
    except DockyardError as e:
        click.echo(f"Error: {e}", err=True)
        return 125
    except OSError as e:
        # A file the user named (a certificate, a key) that cannot be read.
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"Error: {e.strerror or e}{where}", err=True)
        return 125
    return 0


if __name__ == "__main__":
    sys.exit(main())
