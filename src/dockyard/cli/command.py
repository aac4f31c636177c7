"""What every `dockyard` command shares: docker's usage lines and exit statuses."""

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


class Command(click.Command):
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


class Group(click.Group):
    """A management command (`dockyard container ...`) with docker's usage line."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {}).update(
            {"allow_interspersed_args": False, "help_option_names": ["--help"]})
        super().__init__(*args, **kwargs)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(f"Usage:  {ctx.command_path} COMMAND\n")


def min_args(n: int) -> Any:
    """A positional list needing at least n items; docker's message when it falls short."""

    def check(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < n:
            word = "argument" if n == 1 else "arguments"
            raise ArgumentCountError(ctx, f"'{ctx.command_path}' requires at least {n} {word}")
        return value

    return check


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
