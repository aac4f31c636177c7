"""`dockyard-runtime`: runc's command line over the `Runtime` library.

Anything that drives runc (containerd's shim, the daemon, scripts) can drive
this. It runs on every container start, so it imports next to nothing: no
argparse, json, re, enum or logging (together they would double its start-up
time). Flags follow runc's: global ones before the command, the command's
before its arguments.
"""

from __future__ import annotations

import os
import sys

from dockyard.errors import DockyardError, InvalidArgument
from dockyard.runtime import fastjson

PROG = "dockyard-runtime"

# flag -> (destination, takes a value, repeatable). Short aliases map to the same entry.
_GLOBAL = {
    "--root": ("root", True, False), "--debug": ("debug", False, False),
    "--log": ("log", True, False), "--log-format": ("log_format", True, False),
    "--systemd-cgroup": ("systemd_cgroup", False, False), "--rootless": ("rootless", True, False),
    "--version": ("version", False, False), "-v": ("version", False, False),
    "--help": ("help", False, False), "-h": ("help", False, False),
}
_CREATE = {
    "--bundle": ("bundle", True, False), "-b": ("bundle", True, False),
    "--console-socket": ("console_socket", True, False), "--pid-file": ("pid_file", True, False),
    "--preserve-fds": ("preserve_fds", True, False), "--no-pivot": ("no_pivot", False, False),
    "--no-new-keyring": ("no_new_keyring", False, False),
}
_RUN = dict(_CREATE, **{"--detach": ("detach", False, False), "-d": ("detach", False, False),
                        "--keep": ("keep", False, False),
                        "--no-subreaper": ("no_subreaper", False, False)})
_FORMAT = {"--format": ("format", True, False), "-f": ("format", True, False)}
_EXEC = {
    "--console-socket": ("console_socket", True, False), "--cwd": ("cwd", True, False),
    "--env": ("env", True, True), "-e": ("env", True, True),
    "--tty": ("tty", False, False), "-t": ("tty", False, False),
    "--user": ("user", True, False), "-u": ("user", True, False),
    "--additional-gids": ("additional_gids", True, True), "-g": ("additional_gids", True, True),
    "--process": ("process", True, False), "-p": ("process", True, False),
    "--detach": ("detach", False, False), "-d": ("detach", False, False),
    "--pid-file": ("pid_file", True, False), "--cap": ("cap", True, True), "-c": ("cap", True, True),
    "--no-new-privs": ("no_new_privs", False, False),
}
# verb -> (help, flags, positional arguments, rest: whether more arguments are kept as a list)
COMMANDS: dict[str, tuple[str, dict, tuple[str, ...], bool]] = {
    "spec": ("create a new specification file", {"--bundle": ("bundle", True, False),
                                                 "-b": ("bundle", True, False),
                                                 "--rootless": ("rootless", False, False)}, (), False),
    "create": ("create a container", _CREATE, ("id",), False),
    "run": ("create and run a container", _RUN, ("id",), False),
    "start": ("start a created container", {}, ("id",), False),
    "state": ("output the state of a container", {}, ("id",), False),
    "kill": ("send a signal to a container's init (or with --all to all its processes)",
             {"--all": ("all", False, False), "-a": ("all", False, False)}, ("id",), True),
    "delete": ("delete a container's resources", {"--force": ("force", False, False),
                                                  "-f": ("force", False, False)}, ("id",), False),
    "list": ("list containers", dict(_FORMAT, **{"--quiet": ("quiet", False, False),
                                                 "-q": ("quiet", False, False)}), (), False),
    "ps": ("list the processes of a container", _FORMAT, ("id",), True),
    "exec": ("run a new process inside a container", _EXEC, ("id",), True),
    "pause": ("freeze every process of a container", {}, ("id",), False),
    "resume": ("thaw a paused container", {}, ("id",), False),
}


class Args:
    """Parsed flags as attributes; absent ones read as None (lists as [])."""

    def __init__(self) -> None:
        self.rest: list[str] = []

    def __getattr__(self, name: str) -> object:
        return None


def _take(argv: list[str], i: int, flags: dict, args: Args, where: str) -> int:
    """Consume the flag at argv[i] (with its value); return the next index."""
    word = argv[i]
    name, eq, value = word.partition("=")
    if name not in flags:
        raise InvalidArgument(f"flag provided but not defined: {name}" + (f" ({where})" if where else ""))
    dest, takes_value, repeat = flags[name]
    if takes_value:
        if not eq:
            i += 1
            if i >= len(argv):
                raise InvalidArgument(f"flag needs an argument: {name}")
            value = argv[i]
        if repeat:
            getattr(args, dest) or setattr(args, dest, [])
            args.__dict__[dest].append(value)
        else:
            setattr(args, dest, value)
    else:
        setattr(args, dest, value.lower() not in ("false", "0") if eq else True)
    return i + 1


def parse(argv: list[str]) -> Args:
    args = Args()
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        i = _take(argv, i, _GLOBAL, args, "")
    if i == len(argv):
        return args
    verb = argv[i]
    if verb == "help":
        args.help = True
        return args
    if verb not in COMMANDS:
        raise InvalidArgument(f"unknown command {verb!r}; see '{PROG} --help'")
    args.verb = verb
    _help, flags, positional, rest = COMMANDS[verb]
    i += 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":
            i += 1
            break
        if argv[i] in ("--help", "-h"):
            args.help = True
            return args
        i = _take(argv, i, flags, args, verb)
    words = argv[i:]
    if len(words) < len(positional):
        raise InvalidArgument(f'"{PROG} {verb}" requires a container id')
    for name, word in zip(positional, words):
        setattr(args, name, word)
    args.rest = words[len(positional):]
    if args.rest and not rest:
        raise InvalidArgument(f'"{PROG} {verb}": unexpected argument {args.rest[0]!r}')
    return args


def usage() -> str:
    lines = [f"usage: {PROG} [--root DIR] [--log FILE] [--log-format text|json] COMMAND [FLAGS] [ID]",
             "", "An OCI runtime, with runc's command line.", "", "commands:"]
    lines += [f"  {verb:8} {help}" for verb, (help, *_r) in COMMANDS.items()]
    return "\n".join(lines)


def _parse_signal(text: str) -> int:
    import _signal

    name = text.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    num = getattr(_signal, name, None)
    if not isinstance(num, int) or name.startswith("SIG_"):
        raise InvalidArgument(f"unknown signal {text!r}")
    return num


def main(argv: list[str] | None = None) -> int:
    args = Args()
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        if args.help:
            print(usage())
            return 0
        if args.version:
            from dockyard import __version__
            from dockyard.runtime.spec import OCI_VERSION

            print(f"{PROG} version {__version__}\nspec: {OCI_VERSION}")
            return 0
        if not args.verb:
            print(usage())
            return 0
        if args.systemd_cgroup:
            raise InvalidArgument("--systemd-cgroup: the systemd cgroup driver is not supported")
        if args.log_format not in (None, "text", "json"):
            raise InvalidArgument(f"--log-format {args.log_format!r}: must be text or json")
        return _dispatch(args) or 0
    except DockyardError as e:
        _report(args, str(e))
        return e.exit_code
    except OSError as e:
        _report(args, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except KeyboardInterrupt:
        return 130


def _report(args: Args, message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
    if args.log:
        import time

        with open(args.log, "a") as f:
            if args.log_format == "json":
                f.write(fastjson.dumps({"level": "error", "msg": message,
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
            else:
                f.write(f"level=error msg={fastjson.dumps(message)}\n")


def _dispatch(args: Args) -> int | None:
    if args.verb == "spec":
        return _spec(args)
    from dockyard.runtime.container import Runtime

    rt = Runtime(args.root or os.environ.get("DOCKYARD_RUNTIME_ROOT", "/run/dockyard-runtime"))
    c = args.verb
    if c == "create":
        rt.create(args.id, args.bundle or ".", console_socket=args.console_socket,
                  pid_file=args.pid_file, preserve_fds=_int(args.preserve_fds, "--preserve-fds"))
    elif c == "run":
        return _run(rt, args)
    elif c == "start":
        rt.start(args.id)
    elif c == "state":
        print(fastjson.dumps_indented(rt.state(args.id)))
    elif c == "kill":
        if len(args.rest) > 1:
            raise InvalidArgument(f"kill: unexpected argument {args.rest[1]!r}")
        rt.kill(args.id, _parse_signal(args.rest[0] if args.rest else "SIGTERM"), all=bool(args.all))
    elif c == "delete":
        rt.delete(args.id, force=bool(args.force))
    elif c == "pause":
        rt.pause(args.id)
    elif c == "resume":
        rt.resume(args.id)
    elif c == "list":
        _list(rt, args)
    elif c == "ps":
        _ps(rt, args)
    elif c == "exec":
        return _exec(rt, args)
    return 0


def _spec(args: Args) -> int:
    from dockyard.runtime.spec import default_spec

    if args.rootless:
        raise InvalidArgument("--rootless: rootless containers are not supported yet")
    path = os.path.join(args.bundle or ".", "config.json")
    if os.path.exists(path):
        raise InvalidArgument("File config.json exists. Remove it first")
    with open(path, "w") as f:
        f.write(fastjson.dumps_indented(default_spec(), "\t") + "\n")
    return 0


def _int(value: object, flag: str) -> int:
    if value is None:
        return 0
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidArgument(f"{flag} {value!r}: not a number") from None


def _run(rt, args: Args) -> int:
    from dockyard.runtime import spec

    bundle = args.bundle or "."
    terminal = spec.load(bundle)["process"].get("terminal", False)
    if not terminal or args.detach or args.console_socket:
        return rt.run(args.id, bundle, detach=bool(args.detach), console_socket=args.console_socket,
                      pid_file=args.pid_file, preserve_fds=_int(args.preserve_fds, "--preserve-fds"),
                      keep=bool(args.keep))
    # A terminal in the foreground: we own the console socket and relay the pty.
    import socket

    from dockyard.runtime import console
    from dockyard.runtime import linux
    from dockyard.runtime.container import wait_exit

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    linux.set_child_subreaper()
    pid = rt.create(args.id, bundle, console_socket=theirs, pid_file=args.pid_file)
    theirs.close()
    try:
        master = console.receive_master(ours)
        rt.start(args.id)
        console.relay(master, pid)
        return wait_exit(pid)
    finally:
        if not args.keep:
            rt.delete(args.id, force=True)


def _list(rt, args: Args) -> None:
    states = rt.list()
    if args.quiet:
        for s in states:
            print(s["id"])
    elif args.format == "json":
        print(fastjson.dumps(states))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root")
                 for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _ps(rt, args: Args) -> None:
    pids = rt.ps(args.id)
    if args.format == "json":
        print(fastjson.dumps(pids))
        return
    import subprocess

    out = subprocess.run(["ps", *(args.rest or ["-ef"])], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    header = out[0]
    col = header.split().index("PID")
    print(header)
    wanted = set(pids)
    for line in out[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)


def _exec(rt, args: Args) -> int:
    import socket

    if args.process:
        with open(args.process, "rb") as f:
            try:
                process = fastjson.loads(f.read())
            except ValueError as e:
                raise InvalidArgument(f"{args.process}: malformed JSON: {e}") from None
    else:
        if not args.rest:
            raise InvalidArgument("exec: a command is required (or --process)")
        base = rt.state_config(args.id)["process"]
        process = {k: v for k, v in base.items() if k not in ("terminal", "consoleSize")}
        process["args"] = args.rest
        process["env"] = base.get("env", []) + (args.env or [])
        process["terminal"] = bool(args.tty)
        if args.cwd:
            process["cwd"] = args.cwd
        if args.user:
            uid, _, gid = args.user.partition(":")
            try:
                process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
            except ValueError:
                raise InvalidArgument(f"--user {args.user!r}: must be uid[:gid] numbers") from None
        if args.additional_gids:
            process.setdefault("user", {})["additionalGids"] = [
                _int(g, "--additional-gids") for g in args.additional_gids]
        if args.cap:
            caps = dict(process.get("capabilities") or {})
            for key in ("bounding", "effective", "permitted", "ambient"):
                caps[key] = list(caps.get(key, [])) + args.cap
            process["capabilities"] = caps
        if args.no_new_privs:
            process["noNewPrivileges"] = True
    terminal = process.get("terminal", False)
    if not terminal or args.detach or args.console_socket:
        code = rt.exec(args.id, process, console_socket=args.console_socket,
                       detach=bool(args.detach), pid_file=args.pid_file)
        return 0 if args.detach else code
    from dockyard.runtime import console
    from dockyard.runtime import linux
    from dockyard.runtime.container import wait_exit

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    linux.set_child_subreaper()
    pid = rt.exec(args.id, process, console_socket=theirs, detach=True, pid_file=args.pid_file)
    theirs.close()
    master = console.receive_master(ours)
    console.relay(master, pid)
    return wait_exit(pid)


if __name__ == "__main__":
    sys.exit(main())
