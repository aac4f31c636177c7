"""`dockyardd`: the daemon serving the Docker Engine API on unix sockets and, with TLS as
dockerd sets it up, on TCP."""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any

from dockyard import __version__
from dockyard.daemon.config import DaemonConfig, Listener, default_cert_path
from dockyard.errors import DockyardError, InvalidArgument

log = logging.getLogger("dockyardd")


def _flag_bool(text: str) -> bool:
    # The spellings Go's strconv.ParseBool accepts, since dockerd's flags take them.
    value = text.strip()
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f'invalid argument "{text}": parse error')


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockyardd", description="A self-sufficient runtime for "
                                "containers: the Dockyard daemon")
    p.add_argument("-H", "--host", action="append", dest="hosts",
                   help="Daemon socket(s) to connect to (unix:///path or tcp://host:port)")
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
    # --tls=false must be told apart from no --tls at all: it is how an operator says
    # that plain TCP off loopback is intended.
    p.add_argument("--tls", nargs="?", const=True, type=_flag_bool, metavar="BOOL",
                   help="Use TLS; implied by --tlsverify")
    p.add_argument("--tlsverify", nargs="?", const=True, type=_flag_bool, metavar="BOOL",
                   help="Use TLS and verify the remote")
    certs = default_cert_path()
    p.add_argument("--tlscacert", help="Trust certs signed only by this CA (default "
                   f"{os.path.join(certs, 'ca.pem')})")
    p.add_argument("--tlscert", help="Path to TLS certificate file (default "
                   f"{os.path.join(certs, 'cert.pem')})")
    p.add_argument("--tlskey", help="Path to TLS key file (default "
                   f"{os.path.join(certs, 'key.pem')})")
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


def _open_error(path: str, exc: OSError) -> str:
    # Go's wording ("open PATH: no such file or directory"), which operators search for.
    reason = exc.strerror or str(exc)
    return f"open {path}: {reason[:1].lower()}{reason[1:]}"


def tls_context(cfg: DaemonConfig) -> ssl.SSLContext | None:
    """The server context for TCP listeners as dockerd builds it (TLS 1.2 at least, ECDHE
    suites only, client certificates required and checked against the CA alone when
    verifying), or None without TLS. A file that cannot be used is an InvalidArgument
    naming it."""
    if not cfg.tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.set_alpn_protocols(["http/1.1"])
    pair = f'(cert: "{cfg.tlscert}", key: "{cfg.tlskey}")'
    for path in (cfg.tlscert, cfg.tlskey):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise InvalidArgument(f"invalid TLS configuration: could not load X509 key pair "
                                  f"{pair}: {_open_error(path, exc)}") from None
    try:
        # An empty password instead of none: OpenSSL would otherwise prompt on the
        # terminal for an encrypted key.
        ctx.load_cert_chain(cfg.tlscert, cfg.tlskey, password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidArgument(f"invalid TLS configuration: error reading X509 key pair - make "
                              f"sure the key is not encrypted {pair}: {exc}") from None
    if not cfg.tlsverify:
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not cfg.tlscacert:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return ctx
    try:
        with open(cfg.tlscacert, encoding="ascii", errors="replace") as f:
            pem = f.read()
    except OSError as exc:
        raise InvalidArgument(f'invalid TLS configuration: could not read CA certificate '
                              f'"{cfg.tlscacert}": {_open_error(cfg.tlscacert, exc)}') from None
    try:
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ssl.SSLError("no certificate")
        ctx.load_verify_locations(cadata=pem)
    except ssl.SSLError:
        raise InvalidArgument(f'invalid TLS configuration: failed to append certificates from '
                              f'PEM file: "{cfg.tlscacert}"') from None
    return ctx


class _DockerTLS(asyncio.sslproto.SSLProtocol):
    """asyncio's server-side TLS with two of Go's behaviours that docker clients rely on.

    A failed handshake sends its alert before the connection is dropped: asyncio aborts at
    once and the alert is lost, so a client refused for lacking a certificate would see a
    bare reset instead of "certificate required".

    A close_notify from the client is a half-close when the protocol asks to stay open:
    the docker CLI sends one on a hijacked attach/exec connection once it has no more
    stdin, and the container's output must still reach it afterwards, as over a unix
    socket. asyncio would shut the connection down instead."""

    _half_closed = False

    def _call_eof_received(self) -> None:
        states = asyncio.sslproto.AppProtocolState
        if self._app_state != states.STATE_CON_MADE:
            return
        self._app_state = states.STATE_EOF
        try:
            self._half_closed = bool(self._app_protocol.eof_received())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Error calling eof_received()")

    def _start_shutdown(self) -> None:
        # Called right after _call_eof_received when the peer's close_notify was read;
        # later calls (our side closing) shut down as usual.
        if self._half_closed:
            self._half_closed = False
            return
        super()._start_shutdown()

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()
            peer = self._transport.get_extra_info("peername") if self._transport else None
            log.info("http: TLS handshake error from %s: %s",
                     ":".join(map(str, peer[:2])) if peer else "?", handshake_exc)
        super()._on_handshake_complete(handshake_exc)


def _tls_site_supported() -> bool:
    # _DockerTLS leans on asyncio's TLS internals (Python 3.11+); without them, plain
    # asyncio TLS still serves, only less like dockerd.
    return hasattr(asyncio.sslproto, "AppProtocolState") and all(
        hasattr(asyncio.sslproto.SSLProtocol, name)
        for name in ("_on_handshake_complete", "_process_outgoing", "_call_eof_received",
                     "_start_shutdown"))


async def _start_tcp_site(runner: Any, ln: Listener, tls: ssl.SSLContext | None) -> None:
    from aiohttp import web

    if tls is None or not _tls_site_supported():
        await web.TCPSite(runner, ln.address, ln.port, ssl_context=tls).start()
        return

    class TlsSite(web.TCPSite):
        async def start(self) -> None:
            await web.BaseSite.start(self)
            loop = asyncio.get_running_loop()
            handler = runner.server
            self._server = await loop.create_server(
                lambda: _DockerTLS(loop, handler(), tls, None, server_side=True),
                ln.address, ln.port, backlog=self._backlog)

    await TlsSite(runner, ln.address, ln.port, ssl_context=tls).start()


async def _warn_unauthenticated(cfg: DaemonConfig, ln: Listener) -> None:
    host = f"tcp://{ln.hostport}"
    log.warning("Binding to IP address without --tlsverify is insecure and gives root access "
                "on this machine to everyone who has access to your network. host=%s", host)
    log.warning("Binding to an IP address, even on localhost, can also give access to "
                "scripts run in a browser. Be safe out there! host=%s", host)
    if not ln.loopback:
        why = ("--tlsverify=false was given" if cfg.tls
               else "TLS was turned off explicitly (--tls=false)")
        log.warning("Listening on %s without client authentication because %s: consider "
                    "--tlsverify with client certificates instead", host, why)
    # dockerd slows its start-up here so that the warning is seen; so do we.
    await asyncio.sleep(1)


async def _serve(cfg: DaemonConfig, tls: ssl.SSLContext | None) -> None:
    from aiohttp import web

    from dockyard.api.server import create_app
    from dockyard.daemon.engine import Engine

    listeners: list[Listener] = cfg.listeners()
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
                if not cfg.verify_clients:
                    await _warn_unauthenticated(cfg, ln)
                await _start_tcp_site(runner, ln, tls)
            log.info("API listen on %s", ln.address if ln.kind == "unix" else ln.hostport)
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
    try:
        cfg = DaemonConfig.load(args.config_file, {
            "hosts": args.hosts, "data_root": args.data_root, "exec_root": args.exec_root,
            "pidfile": args.pidfile, "debug": args.debug, "log_level": args.log_level,
            "registry_mirrors": args.registry_mirrors,
            "insecure_registries": args.insecure_registries,
            "tls": args.tls, "tlsverify": args.tlsverify, "tlscacert": args.tlscacert,
            "tlscert": args.tlscert, "tlskey": args.tlskey,
        })
        tls = tls_context(cfg)
    except DockyardError as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        return 1
    _setup_logging(cfg)
    if os.geteuid() != 0:
        log.warning("not running as root: image unpacking may fail")
    try:
        asyncio.run(_serve(cfg, tls))
    except DockyardError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
