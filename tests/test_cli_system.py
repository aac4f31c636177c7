"""`dockyard version`, `info`, the global options and how the command reports an absent
daemon, judged against the docker CLI on the same dockyardd."""

from __future__ import annotations

import socket

import pytest

from cli_helpers import dockyard
from engine_daemon import CGROUP_PARENT, daemon, docker  # noqa: F401 (daemon: fixture)


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    out = []
    for line in lines[start:]:
        if not line and out:
            break
        out.append(line)
    return out


def test_version_has_client_and_server_sections(daemon):
    out = dockyard(daemon, "version").stdout
    client = _section(out, "Client:")
    assert client[1].split() == ["Version:", "0.1.0"]
    assert any(line.startswith(" API version:       1.45") for line in client)
    assert " Context:           default" in client
    # The server section is docker's, line for line.
    assert _section(out, "Server:") == _section(docker(daemon, "version").stdout, "Server:")


def test_version_format(daemon):
    assert dockyard(daemon, "version", "-f", "{{.Server.Version}}").stdout == "0.1.0\n"
    assert dockyard(daemon, "version", "--format", "{{.Client.ApiVersion}}").stdout == "1.45\n"


def test_info_server_section_matches_docker(daemon):
    ours = dockyard(daemon, "info").stdout
    theirs = docker(daemon, "info").stdout
    assert ours.startswith("Client:\n Version:    0.1.0\n Context:    default\n")

    def stable(text: str) -> list[str]:
        # The runtime names come in Go's random map order.
        return [line for line in _section(text, "Server:") if not line.startswith(" Runtimes:")]

    assert stable(ours) == stable(theirs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host", ["unix:///nonexistent/dockyard.sock", None])
def test_unreachable_daemon(tmp_path, host):
    host = host or f"tcp://127.0.0.1:{_free_port()}"
    r = dockyard(None, "-H", host, "ps", check=False)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == (f"Cannot connect to the Dockyard daemon at {host}. Is the dockyard "
                        "daemon running? (start it with: dockyardd)\n")
    r = dockyard(None, "version", check=False, env={"DOCKYARD_HOST": host})
    assert r.returncode == 1
    assert r.stdout.startswith("Client:\n") and "Server:" not in r.stdout
    assert "Cannot connect to the Dockyard daemon" in r.stderr
    # run reports it as docker run reports every failure: prefixed, status 125.
    r = dockyard(None, "-H", host, "run", "busybox", check=False)
    assert r.returncode == 125
    assert r.stderr.startswith(f"dockyard: Cannot connect to the Dockyard daemon at {host}.")
    assert r.stderr.endswith("\n\nRun 'dockyard run --help' for more information\n")


def test_default_socket_is_named():
    r = dockyard(None, "ps", check=False, env={"DOCKYARD_HOST": ""})
    # The default daemon may or may not run on this machine; if not, it is named.
    if r.returncode:
        assert "unix:///run/dockyard.sock" in r.stderr


def test_bad_host_is_refused(daemon):
    r = dockyard(None, "-H", "foo://x", "ps", check=False)
    assert r.returncode == 1
    assert r.stderr == ("Failed to initialize: unable to resolve dockyard endpoint: invalid "
                        "bind address format: foo://x\n")
    r = dockyard(None, "-H", "tcp://127.0.0.1:99999", "ps", check=False)
    assert r.returncode == 1 and "invalid bind address format" in r.stderr


def test_host_flag_and_environment(daemon):
    assert dockyard(None, "-H", daemon.host, "ps", "-q").returncode == 0
    assert dockyard(None, "--host", daemon.sock.as_posix(), "ps", "-q").returncode == 0


def test_unknown_command_and_flag(daemon):
    r = dockyard(daemon, "frobnicate", check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("dockyard: unknown command: dockyard frobnicate\n")
    r = dockyard(daemon, "version", "--bar", check=False)
    assert r.returncode == 125
    assert r.stderr == ("unknown flag: --bar\n\nUsage:  dockyard version [OPTIONS]\n\n"
                        "Run 'dockyard version --help' for more information\n")


def test_tls_to_a_plain_socket_fails_cleanly(daemon):
    r = dockyard(None, "-H", daemon.host, "--tls", "ps", check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr


def test_tls_with_client_certificates(tmp_path):
    from test_daemon_tls import TlsDaemon, free_port, listening, make_pki, server_flags

    pki = make_pki(tmp_path / "pki")
    port = free_port()
    d = TlsDaemon(tmp_path / "d", "--config-file", "/dev/null", "--tlsverify",
                  *server_flags(pki), "-H", f"tcp://127.0.0.1:{port}")
    try:
        d.wait_unix()
        d.wait_until(lambda: listening(port), "listened on TCP")
        host = f"tcp://127.0.0.1:{port}"
        r = dockyard(None, "-H", host, "--tlsverify", "--tlscacert", str(pki.ca), "--tlscert",
                     str(pki.client_cert), "--tlskey", str(pki.client_key), "version", "-f",
                     "{{.Server.ApiVersion}}")
        assert r.stdout == "1.45\n"
        # The certificates from the default names in $DOCKYARD_CERT_PATH.
        r = dockyard(None, "ps", "-q", env={"DOCKYARD_HOST": host, "DOCKYARD_TLS_VERIFY": "1",
                                            "DOCKYARD_CERT_PATH": str(tmp_path / "pki")})
        assert r.stdout == ""
        # Without a client certificate the daemon refuses the handshake.
        r = dockyard(None, "-H", host, "--tlsverify", "--tlscacert", str(pki.ca), "ps",
                     check=False, env={"DOCKYARD_CERT_PATH": str(tmp_path / "none")})
        assert r.returncode == 1 and r.stderr.startswith("error during connect: ")
        # Plain HTTP to a TLS port: the daemon's refusal, not a crash.
        r = dockyard(None, "-H", host, "ps", check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr
    finally:
        d.stop()


def test_events_match_docker(daemon):
    import time

    since = str(int(time.time()))
    dockyard(daemon, "run", "--rm", "--name", "evt", "--cgroup-parent",
             CGROUP_PARENT, "busybox", "true")
    until = str(int(time.time()) + 1)
    for args in (["events"], ["events", "--format", "{{json .}}"],
                 ["events", "--filter", "event=start"], ["system", "events", "-f", "type=container"]):
        args = [*args, "--since", since, "--until", until]
        ours, theirs = dockyard(daemon, *args), docker(daemon, *args)
        assert ours.stdout == theirs.stdout, args
    assert " container start " in dockyard(daemon, "events", "--since", since, "--until",
                                           until).stdout


def test_system_df_matches_docker(daemon):
    docker(daemon, "run", "-d", "--name", "dfbox", "--cgroup-parent", CGROUP_PARENT, "busybox",
           "sleep", "1000")
    try:
        for args in (["system", "df"], ["system", "df", "--format", "json"],
                     ["system", "df", "--format", "{{.Type}}: {{.Reclaimable}}"]):
            assert dockyard(daemon, *args).stdout == docker(daemon, *args).stdout, args
    finally:
        docker(daemon, "rm", "-f", "dfbox", check=False)


@pytest.mark.parametrize("args", [["version"], ["ps", "-a"], ["images"], ["inspect", "busybox"]])
def test_hot_paths_stay_import_light(daemon, args):
    import os
    import subprocess
    import sys

    # What makes `dockyard ps` slow to start: a web framework, a terminal toolkit, or
    # http.client's email parser. None of them may come in on these paths.
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "dockyard.cli.main", *args],
                       capture_output=True, text=True, env=dict(os.environ, DOCKYARD_HOST=daemon.host))
    assert r.returncode == 0, r.stderr
    modules = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
               if line.startswith("import time:")}
    heavy = {m for m in modules if m.split(".")[0] in ("aiohttp", "rich", "email", "asyncio",
                                                       "cryptography", "ssl")
             or m == "http.client" or m.startswith("dockyard.daemon")}
    assert heavy == set()


@pytest.mark.parametrize("args", [["info", "-f", "{{.Foo"], ["version", "-f", "{{.Foo"],
                                  ["info", "-f", "{{.Name"]])
def test_template_that_does_not_parse_is_status_64(daemon, args):
    ours, theirs = dockyard(daemon, *args, check=False), docker(daemon, *args, check=False)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (64, "")
    assert ours.stderr == theirs.stderr  # version's template is named "version", as docker's


@pytest.mark.parametrize("command", ["info", "version"])
@pytest.mark.parametrize("template", ["{{.Foo}}", "{{json .RegistryConfig.Nope}}"])
def test_format_errors_match_docker(daemon, command, template):
    """A field the document does not have is an error (docker's are Go structs), with
    what was written before it and docker's exit status."""
    if command == "version" and "RegistryConfig" in template:
        template = "{{json .Server.Nope}} {{.Client.Version}}"
    theirs = docker(daemon, command, "-f", template, check=False)
    ours = dockyard(daemon, command, "-f", template, check=False)
    assert (ours.returncode, ours.stdout, ours.stderr) == \
        (theirs.returncode, theirs.stdout, theirs.stderr)
