"""`dockyard-runtime`: runc's command line over the `Runtime` library.

Anything that drives runc (containerd's shim, the daemon, scripts) can drive
this. argparse rather than click: this command runs on every container start,
and every millisecond of import shows in the start time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from dockyard.errors import DockyardError, InvalidArgument

PROG = "dockyard-runtime"


def _parse_signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"unknown signal {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="An OCI runtime, with runc's command line.")
    p.add_argument("--root", default=os.environ.get("DOCKYARD_RUNTIME_ROOT",
                                                    "/run/dockyard-runtime"),
                   help="directory for the containers' state")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--log", help="also write errors to this file")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="not supported: cgroups are managed through the filesystem")
    p.add_argument("--version", "-v", action="store_true")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    s = cmd("spec", "create a new specification file")
    s.add_argument("--bundle", "-b", default=".")
    s.add_argument("--rootless", action="store_true")
    for name, help in (("create", "create a container"), ("run", "create and run a container")):
        s = cmd(name, help)
        s.add_argument("id")
        s.add_argument("--bundle", "-b", default=".")
        s.add_argument("--console-socket")
        s.add_argument("--pid-file")
        s.add_argument("--preserve-fds", type=int, default=0)
        s.add_argument("--no-pivot", action="store_true")
        s.add_argument("--no-new-keyring", action="store_true")
        if name == "run":
            s.add_argument("--detach", "-d", action="store_true")
            s.add_argument("--keep", action="store_true")
            s.add_argument("--no-subreaper", action="store_true")
    for name, help in (("start", "start a created container"), ("state", "the state of a container"),
                       ("pause", "freeze every process of a container"),
                       ("resume", "thaw a paused container")):
        cmd(name, help).add_argument("id")
    s = cmd("kill", "send a signal to a container's init (or to all its processes)")
    s.add_argument("id")
    s.add_argument("signal", nargs="?", default="SIGTERM")
    s.add_argument("--all", "-a", action="store_true")
    s = cmd("delete", "delete a container's resources")
    s.add_argument("id")
    s.add_argument("--force", "-f", action="store_true")
    s = cmd("list", "list containers")
    s.add_argument("--format", "-f", choices=("table", "json"), default="table")
    s.add_argument("--quiet", "-q", action="store_true")
    s = cmd("ps", "processes running inside a container")
    s.add_argument("--format", "-f", choices=("table", "json"), default="table")
    s.add_argument("id")
    s.add_argument("ps_args", nargs=argparse.REMAINDER)
    s = cmd("exec", "run a new process inside a container")
    s.add_argument("--console-socket")
    s.add_argument("--cwd")
    s.add_argument("--env", "-e", action="append", default=[])
    s.add_argument("--tty", "-t", action="store_true")
    s.add_argument("--user", "-u")
    s.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    s.add_argument("--process", "-p")
    s.add_argument("--detach", "-d", action="store_true")
    s.add_argument("--pid-file")
    s.add_argument("--cap", "-c", action="append", default=[])
    s.add_argument("--no-new-privs", action="store_true")
    s.add_argument("id")
    s.add_argument("command", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from dockyard import __version__
        from dockyard.runtime.spec import OCI_VERSION

        print(f"{PROG} version {__version__}\nspec: {OCI_VERSION}")
        return 0
    if not args.verb:
        _parser().print_help()
        return 0
    try:
        if args.systemd_cgroup:
            raise InvalidArgument("--systemd-cgroup: the systemd cgroup driver is not supported")
        return _dispatch(args) or 0
    except DockyardError as e:
        _report(args, str(e))
        return e.exit_code
    except OSError as e:
        _report(args, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except KeyboardInterrupt:
        return 130


def _report(args: argparse.Namespace, message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
    if args.log:
        import time

        with open(args.log, "a") as f:
            if args.log_format == "json":
                f.write(json.dumps({"level": "error", "msg": message,
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
            else:
                f.write(f"level=error msg={json.dumps(message)}\n")


def _dispatch(args: argparse.Namespace) -> int | None:
    if args.verb == "spec":
        return _spec(args)
    from dockyard.runtime.container import Runtime

    rt = Runtime(args.root)
    c = args.verb
    if c == "create":
        rt.create(args.id, args.bundle, console_socket=args.console_socket,
                  pid_file=args.pid_file, preserve_fds=args.preserve_fds)
    elif c == "run":
        return _run(rt, args)
    elif c == "start":
        rt.start(args.id)
    elif c == "state":
        print(json.dumps(rt.state(args.id), indent=2))
    elif c == "kill":
        rt.kill(args.id, _parse_signal(args.signal), all=args.all)
    elif c == "delete":
        rt.delete(args.id, force=args.force)
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


def _spec(args: argparse.Namespace) -> int:
    from dockyard.runtime.spec import default_spec

    if args.rootless:
        raise InvalidArgument("--rootless: rootless containers are not supported yet")
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument("File config.json exists. Remove it first")
    with open(path, "w") as f:
        json.dump(default_spec(), f, indent="\t")
    return 0


def _run(rt, args: argparse.Namespace) -> int:
    from dockyard.runtime import spec

    terminal = spec.load(args.bundle)["process"].get("terminal", False)
    if not terminal or args.detach or args.console_socket:
        return rt.run(args.id, args.bundle, detach=args.detach, console_socket=args.console_socket,
                      pid_file=args.pid_file, preserve_fds=args.preserve_fds, keep=args.keep)
    # A terminal in the foreground: we own the console socket and relay the pty.
    import socket

    from dockyard.runtime import console
    from dockyard.runtime import linux
    from dockyard.runtime.container import wait_exit

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    linux.set_child_subreaper()
    pid = rt.create(args.id, args.bundle, console_socket=theirs, pid_file=args.pid_file)
    theirs.close()
    try:
        master = console.receive_master(ours)
        rt.start(args.id)
        console.relay(master, pid)
        return wait_exit(pid)
    finally:
        if not args.keep:
            rt.delete(args.id, force=True)


def _list(rt, args: argparse.Namespace) -> None:
    states = rt.list()
    if args.quiet:
        for s in states:
            print(s["id"])
    elif args.format == "json":
        print(json.dumps(states))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root")
                 for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _ps(rt, args: argparse.Namespace) -> None:
    pids = rt.ps(args.id)
    if args.format == "json":
        print(json.dumps(pids))
        return
    import subprocess

    out = subprocess.run(["ps", *(args.ps_args or ["-ef"])], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    header = out[0]
    col = header.split().index("PID")
    print(header)
    wanted = set(pids)
    for line in out[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)


def _exec(rt, args: argparse.Namespace) -> int:
    import socket

    if args.process:
        with open(args.process, "rb") as f:
            try:
                process = json.load(f)
            except json.JSONDecodeError as e:
                raise InvalidArgument(f"{args.process}: malformed JSON: {e}") from None
    else:
        if not args.command:
            raise InvalidArgument("exec: a command is required (or --process)")
        base = rt.state_config(args.id)["process"]
        process = {k: v for k, v in base.items() if k not in ("terminal", "consoleSize")}
        process["args"] = args.command
        process["env"] = base.get("env", []) + args.env
        process["terminal"] = args.tty
        if args.cwd:
            process["cwd"] = args.cwd
        if args.user:
            uid, _, gid = args.user.partition(":")
            try:
                process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
            except ValueError:
                raise InvalidArgument(f"--user {args.user!r}: must be uid[:gid] numbers") from None
        if args.additional_gids:
            process.setdefault("user", {})["additionalGids"] = args.additional_gids
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
                       detach=args.detach, pid_file=args.pid_file)
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
