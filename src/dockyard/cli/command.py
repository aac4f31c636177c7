"""What every `dockyard` command shares: docker's usage lines, exit statuses, pflag's bool
flags and flag values, and the prompt and report of the prune commands."""

from __future__ import annotations

from typing import Any

import click


class StatusError(Exception):
    """End the command with this message (may be empty) and exit status, as docker's
    cli.StatusError does."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def _parse_bool(text: str, param: click.Option, ctx: click.Context) -> bool:
    """strconv.ParseBool, failing as pflag reports a bad flag value."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    err = click.BadParameter(f'strconv.ParseBool: parsing "{text}": invalid syntax', ctx, param)
    err.docker_message = (  # type: ignore[attr-defined]
        f'invalid argument "{text}" for "{", ".join(param.opts)}" flag: {err.message}')
    raise err


class BoolFlags:
    """pflag's bool flags for a click command: besides the bare `--rm` (true), a value
    joined by "=" sets them either way (`--rm=false`, `--sig-proxy=0`, `-d=false`,
    `-it=false`); the value is never taken from the next argument. Those forms are taken
    out of the arguments before click parses them and applied after."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args, values = _take_bool_values(ctx, args)
        rest = super().parse_args(ctx, args)  # type: ignore[misc]
        ctx.params.update(values)
        return rest


def _take_bool_values(ctx: click.Context, args: list[str]) -> tuple[list[str], dict[str, bool]]:
    opts: dict[str, click.Option] = {}
    for param in ctx.command.get_params(ctx):
        if isinstance(param, click.Option):
            for opt in param.opts:
                opts[opt] = param

    def is_bool(p: click.Option) -> bool:
        # --help and --version act while parsing: click keeps those to itself.
        return p.is_flag and p.is_bool_flag and p.expose_value

    def takes_value(p: click.Option) -> bool:
        return not p.is_flag and not p.count

    out: list[str] = []
    values: dict[str, bool] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            out.append(tok)
            break
        if tok.startswith("--"):
            name, eq, text = tok.partition("=")
            p = opts.get(name)
            if p is not None and is_bool(p):
                if eq:
                    values[p.name or ""] = _parse_bool(text, p, ctx)
                    continue
                values.pop(p.name or "", None)  # the last one given wins
            elif p is not None and takes_value(p) and not eq and i < len(args):
                out.append(tok)
                tok = args[i]
                i += 1
            out.append(tok)
            continue
        if not tok.startswith("-") or tok == "-":
            out.append(tok)
            if not ctx.allow_interspersed_args:
                break
            continue
        # A cluster of shorthands: "-itd", "-d=false", "-it=false", "-p80:80".
        kept = "-"
        value_next = False
        j = 1
        while j < len(tok):
            p = opts.get("-" + tok[j])
            if p is None or not is_bool(p):
                kept += tok[j:]
                value_next = p is not None and takes_value(p) and j == len(tok) - 1
                break
            if len(tok) - j > 2 and tok[j + 1] == "=":
                values[p.name or ""] = _parse_bool(tok[j + 2:], p, ctx)
                break
            values.pop(p.name or "", None)
            kept += tok[j]
            j += 1
        if kept != "-":
            out.append(kept)
        if value_next and i < len(args):
            out.append(args[i])
            i += 1
    out.extend(args[i:])
    return out, values


class Command(BoolFlags, click.Command):
    """A command with docker's usage line (`Usage:  docker run [OPTIONS] IMAGE ...`)."""

    def __init__(self, *args: Any, usage: str = "", interspersed: bool = True,
                 **kwargs: Any) -> None:
        # interspersed=False: flags end at the first argument (the image of `run`, the
        # container of `exec`), so the command's own flags pass through untouched.
        kwargs.setdefault("context_settings", {}).update(
            {"allow_interspersed_args": interspersed, "help_option_names": ["--help"]})
        super().__init__(*args, **kwargs)
        self.usage = usage

    def usage_line(self, ctx: click.Context) -> str:
        return f"Usage:  {ctx.command_path} {self.usage or '[OPTIONS]'}"

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(self.usage_line(ctx) + "\n")


class Group(BoolFlags, click.Group):
    """A management command (`dockyard container ...`) with docker's usage line."""

    command_class = Command

    def __init__(self, *args: Any, usage: str = "", **kwargs: Any) -> None:
        # usage: what docker's use line has after the name (`volume COMMAND`), shown when
        # a subcommand is unknown.
        kwargs.setdefault("context_settings", {}).update(
            {"allow_interspersed_args": False, "help_option_names": ["--help"]})
        super().__init__(*args, **kwargs)
        self.usage = usage

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(f"Usage:  {ctx.command_path} COMMAND\n")

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            path = ctx.command_path
            usage = f"{path} {self.usage}" if self.usage else path
            raise StatusError(f"dockyard: unknown command: {path} {name}\n\nUsage:  {usage}\n\n"
                              f"Run '{path} --help' for more information", 1)
        return super().resolve_command(ctx, args)


def min_args(n: int) -> Any:
    """A positional list needing at least n items; docker's message when it falls short."""

    def check(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < n:
            word = "argument" if n == 1 else "arguments"
            raise ArgumentCountError(ctx, f"'{ctx.command_path}' requires at least {n} {word}")
        return value

    return check


def no_args(ctx: click.Context, param: click.Parameter,
            value: tuple[str, ...]) -> tuple[str, ...]:
    """For a command taking no positional arguments: docker's message when some are given."""
    if value:
        raise ArgumentCountError(ctx, f"'{ctx.command_path}' accepts no arguments", footer="Run")
    return value


def exact_args(n: int) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) != n:
            word = "argument" if n == 1 else "arguments"
            raise ArgumentCountError(ctx, f"'{ctx.command_path}' requires {n} {word}",
                                     footer="Run")
        return value

    return check


class ArgumentCountError(click.UsageError):
    """Too few or too many positional arguments: docker reports these with status 1."""

    def __init__(self, ctx: click.Context, message: str, footer: str = "See") -> None:
        super().__init__(message, ctx)
        self.footer = footer


class FlagValue(click.ParamType):
    """A flag value parsed as docker parses it; a bad one is reported as pflag does:
    invalid argument "x" for "-m, --memory" flag: <reason>."""

    name = "string"

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            decl = ", ".join(param.opts) if param is not None else ""
            err = click.BadParameter(str(exc), ctx, param)
            err.docker_message = f'invalid argument "{value}" for "{decl}" flag: {exc}'  # type: ignore[attr-defined]
            raise err from None


class GoInt(FlagValue):
    name = "int"

    def parse(self, text: str) -> int:
        try:
            return int(text, 0) if text.lower().startswith(("0x", "0o", "0b")) else int(text)
        except ValueError:
            raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


class Bytes(FlagValue):
    """go-units RAMInBytes: 512m, 1g, 1.5GiB (binary multiples); -1 where allowed."""

    name = "bytes"

    def __init__(self, allow_unlimited: bool = False) -> None:
        self.allow_unlimited = allow_unlimited

    def parse(self, text: str) -> int:
        import re

        if self.allow_unlimited and text == "-1":
            return -1
        m = re.fullmatch(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?", text)
        if not m:
            raise ValueError(f"invalid size: '{text}'")
        mult = 1024 ** "bkmgtp".index((m.group(2) or "b").lower())
        return int(float(m.group(1)) * mult)


class Duration(FlagValue):
    """Go's time.ParseDuration, in nanoseconds."""

    name = "duration"

    def parse(self, text: str) -> int:
        import re

        units = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                 "m": 60_000_000_000, "h": 3_600_000_000_000}
        if text in ("0", "+0", "-0"):
            return 0
        parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text.lstrip("+-"))
        rebuilt = "".join(a + b for a, b in parts)
        if not parts or rebuilt != text.lstrip("+-"):
            raise ValueError(f'time: invalid duration "{text}"')
        total = int(sum(float(a) * units[b] for a, b in parts))
        return -total if text.startswith("-") else total


def confirm(warning: str, force: bool) -> bool:
    """docker's prompt before a prune; FORCE answers it."""
    if force:
        return True
    import sys

    click.echo(f"{warning}\nAre you sure you want to continue? [y/N] ", nl=False)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def print_pruned(title: str, deleted: list[str], reclaimed: int | None) -> None:
    """A prune's report as docker prints it: TITLE and the deleted objects, then the
    space reclaimed unless RECLAIMED is None (networks take no space)."""
    if deleted:
        click.echo(title)
        for line in deleted:
            click.echo(line)
        click.echo("")
    if reclaimed is not None:
        from dockyard.cli.formatter import human_size

        click.echo(f"Total reclaimed space: {human_size(reclaimed, 4)}")
