"""`dockyardd`: the daemon serving the Docker Engine API on a unix socket."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from dockyard import __version__
from dockyard.daemon.config import DaemonConfig, Listener, parse_host
from dockyard.errors import DockyardError, InvalidArgument

log = logging.getLogger("dockyardd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockyardd", description="A self-sufficient runtime for "
                                "containers: the Dockyard daemon")
    p.add_argument("-H", "--host", action="append", dest="hosts",
                   help="Daemon socket(s) to connect to (unix:///path or tcp://127.0.0.1:port)")
    p.add_argument("--data-root", help="Root directory of persistent state (default "
                   "/var/lib/dockyard)")
    p.add_argument("--exec-root", help="Root directory for execution state (default "
                   "/run/dockyard)")
    p.add_argument("--config-file", help="Daemon configuration file (default "
                   "/etc/dockyard/daemon.json)")
    p.add_argument("-p", "--pidfile", help="Path to use for the daemon PID file")
    p.add_argument("-D", "--debug", action="store_true", default=None,
                   help="Enable debug mode")
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warn", "error", "fatal"],
                   help="Set the logging level")
    p.add_argument("--registry-mirror", action="append", dest="registry_mirrors",
                   help="Preferred registry mirror")
    p.add_argument("--insecure-registry", action="append", dest="insecure_registries",
                   help="Enable insecure registry communication")
    for flag in ("--tls", "--tlsverify"):
        p.add_argument(flag, action="store_true", default=False, help=argparse.SUPPRESS)
    for flag in ("--tlscacert", "--tlscert", "--tlskey"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true", help="Print version information")
    return p


def _setup_logging(cfg: DaemonConfig) -> None:
    level = "debug" if cfg.debug else cfg.log_level
    py_level = {"warn": logging.WARNING, "fatal": logging.CRITICAL}.get(
        level, getattr(logging, level.upper(), logging.INFO))
    logging.basicConfig(level=py_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if py_level > logging.DEBUG:
        # aiohttp's access log is one line per request: debug only.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _write_pidfile(path: str) -> None:
    # As dockerd: refuse when another live process holds the pidfile.
    try:
        with open(path) as f:
            other = int(f.read().strip() or "0")
    except (FileNotFoundError, ValueError):
        other = 0
    if other and other != os.getpid() and os.path.exists(f"/proc/{other}"):
        raise InvalidArgument(f"pid file found, ensure dockyardd is not running or delete {path}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(f"{os.getpid()}")
    os.replace(path + ".tmp", path)


def _unix_socket(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except FileNotFoundError:
        pass
    except (ConnectionRefusedError, OSError):
        # A stale socket from a daemon that died: take it over.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        probe.close()
        sock.close()
        raise InvalidArgument(f"{path} is in use by another daemon")
    finally:
        probe.close()
    # Created private, then opened to the group: no window where anyone may connect.
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    try:
        import grp

        os.chown(path, 0, grp.getgrnam("docker").gr_gid)
    except (KeyError, PermissionError, ImportError):
        pass  # no docker group: root only, as dockerd does
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _serve(cfg: DaemonConfig) -> None:
    from aiohttp import web

    from dockyard.api.server import create_app
    from dockyard.daemon.engine import Engine

    listeners: list[Listener] = [parse_host(h) for h in cfg.hosts]
    # Blocking engine calls run in worker threads, and some block for as long as a
    # container runs (wait, attach, logs --follow): asyncio's default pool (cpus + 4
    # threads) would run dry with a handful of attached containers and stall every
    # request behind them.
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=512, thread_name_prefix="engine"))
    eng = await asyncio.to_thread(Engine, cfg)
    eng.events.bind(asyncio.get_running_loop())
    app = create_app(eng)
    # A short shutdown grace: streams like /events never end on their own.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=3.0,
                           access_log=log.getChild("access") if cfg.debug else None)
    await runner.setup()
    sockets: list[str] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for ln in listeners:
            if ln.kind == "unix":
                sock = _unix_socket(ln.address)
                sockets.append(ln.address)
                await web.SockSite(runner, sock).start()
            else:
                await web.TCPSite(runner, ln.address, ln.port).start()
            log.info("API listen on %s", ln.address if ln.kind == "unix"
                     else f"{ln.address}:{ln.port}")
        if cfg.pidfile:
            _write_pidfile(cfg.pidfile)
        log.info("Daemon has completed initialization (version %s, data root %s)", __version__,
                 cfg.data_root)
        await stop.wait()
        log.info("Processing signal: shutting down")
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await eng.close()
        for path in sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if cfg.pidfile:
            with contextlib.suppress(FileNotFoundError):
                with open(cfg.pidfile) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(cfg.pidfile)
        log.info("Daemon shutdown complete")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"Dockyard version {__version__}")
        return 0
    if args.tls or args.tlsverify or args.tlscacert or args.tlscert or args.tlskey:
        print("dockyardd: TLS is not supported yet; listen on a unix socket or on a loopback "
              "address", file=sys.stderr)
        return 1
    try:
        cfg = DaemonConfig.load(args.config_file, {
            "hosts": args.hosts, "data_root": args.data_root, "exec_root": args.exec_root,
            "pidfile": args.pidfile, "debug": args.debug, "log_level": args.log_level,
            "registry_mirrors": args.registry_mirrors,
            "insecure_registries": args.insecure_registries,
        })
    except DockyardError as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        return 1
    _setup_logging(cfg)
    if os.geteuid() != 0:
        log.warning("not running as root: image unpacking may fail")
    try:
        asyncio.run(_serve(cfg))
    except DockyardError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
