"""dockyardd on TCP as dockerd: TLS with client certificates (--tlsverify), TLS alone,
daemon.json's TLS keys, bad certificate files, and plain TCP off loopback refused unless
TLS is turned off explicitly. Certificates are made here with `cryptography`; every
daemon is a real dockyardd, driven by the real docker CLI and by docker-py."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dockyard.daemon.config import DaemonConfig, parse_host
from dockyard.errors import InvalidArgument
from engine_daemon import end_process, ping_reply

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
MUSL = Path(os.environ.get("DOCKYARD_SHARED", Path(__file__).resolve().parents[1].parent
                           / "shared")) / "images" / "busybox" / "1.38.0-musl"
CGROUP_PARENT = "/dockyard-test-tls"


# -- certificates ---------------------------------------------------------------------

@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path    # a client certificate from another CA
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
           *, ca: bool = False, usage: x509.ObjectIdentifier | None = None,
           san: list[x509.GeneralName] | None = None
           ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                          crl_sign=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(signer, hashes.SHA256()), key


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = _issue("dockyard test CA", None, ca=True)
    server = _issue("localhost", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                    san=[x509.DNSName("localhost"),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = _issue("client", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_ca = _issue("another CA", None, ca=True)
    rogue = _issue("rogue client", rogue_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = Pki(d / "ca.pem", d / "server-cert.pem", d / "server-key.pem", d / "cert.pem",
              d / "key.pem", d / "rogue-cert.pem", d / "rogue-key.pem")
    pki.ca.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    for (cert, key), cert_path, key_path in ((server, pki.server_cert, pki.server_key),
                                             (client, pki.client_cert, pki.client_key),
                                             (rogue, pki.rogue_cert, pki.rogue_key)):
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_flags(pki: Pki) -> list[str]:
    return ["--tlscacert", str(pki.ca), "--tlscert", str(pki.server_cert),
            "--tlskey", str(pki.server_key)]


# -- daemons --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def _base_args(root: Path) -> list[str]:
    return ["--data-root", str(root / "data"), "--exec-root", str(root / "exec")]


def run_daemon(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dockyardd expected to refuse to start."""
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "dockyard.daemon.main", *_base_args(root),
                           *args], capture_output=True, text=True, timeout=60)


class TlsDaemon:
    """dockyardd on a unix socket under ROOT plus whatever hosts ARGS give; PREFIX runs
    it under another command (a network namespace)."""

    def __init__(self, root: Path, *args: str, prefix: tuple[str, ...] = (),
                 unix: bool = True) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.sock = root / "d.sock"
        self.exec_root = root / "exec"
        self.log = open(root / "dockyardd.log", "wb")
        host = ["-H", f"unix://{self.sock}"] if unix else []
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "dockyard.daemon.main",
                                      *_base_args(root), *host, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_unix(self) -> None:
        deadline = time.monotonic() + 30
        while not self._pings():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"dockyardd did not start:\n{self.output()}")
            time.sleep(0.05)

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"dockyardd never {what}:\n{self.output()}")
            time.sleep(0.05)

    def _pings(self) -> bool:
        return ping_reply(self.sock).split(b" ")[1:2] == [b"200"]

    def output(self) -> str:
        return (self.root / "dockyardd.log").read_text(errors="replace")

    def stop(self) -> None:
        end_process(self.proc, 15)
        pidfile = self.exec_root / "monitor.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        self.log.close()


def cli(*args: str, host: str, env: dict[str, str] | None = None, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    # Only DOCKER_CONFIG (private, see _cli_config) is kept from the environment.
    cli_env = {k: v for k, v in os.environ.items()
               if not k.startswith("DOCKER_") or k == "DOCKER_CONFIG"}
    cli_env.update(env or {})
    return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, text=True,
                          timeout=60, env=cli_env, input=stdin)


def tls_cli(pki: Pki, *args: str, port: int, cert: bool = True, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    flags = ["--tlsverify", "--tlscacert", str(pki.ca)]
    if cert:
        flags += ["--tlscert", str(pki.client_cert), "--tlskey", str(pki.client_key)]
    return cli(*flags, *args, host=f"tcp://127.0.0.1:{port}", stdin=stdin)


@pytest.fixture(autouse=True)
def _cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The docker CLI reads and may write its config directory: a private one per test.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-cli"))
    # requests lets these override the CA docker-py's TLSConfig hands it.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="dockyardd needs root"),
    pytest.mark.skipif(not os.path.exists(DOCKER), reason="docker CLI missing"),
]


@pytest.fixture(scope="module")
def verifying(tmp_path_factory: pytest.TempPathFactory, pki: Pki
              ) -> Iterator[tuple[TlsDaemon, int]]:
    """dockyardd with --tlsverify on a loopback port and on a unix socket at once."""
    port = free_port()
    d = TlsDaemon(tmp_path_factory.mktemp("tlsverify"), "--config-file", "/dev/null",
                  "--tlsverify", *server_flags(pki), "-H", f"tcp://127.0.0.1:{port}")
    try:
        d.wait_unix()
        d.wait_until(lambda: listening(port), "listened on TCP")
        yield d, port
    finally:
        if d.proc.poll() is None:
            env = {"DOCKER_CONFIG": str(d.root / "docker-cli")}
            ids = cli("ps", "-aq", host=f"unix://{d.sock}", env=env).stdout.split()
            if ids:
                cli("rm", "-f", *ids, host=f"unix://{d.sock}", env=env)
        d.stop()
        assert not listening(port) and not d.sock.exists()
        with open("/proc/self/mountinfo") as f:
            assert [m for m in f if f" {d.root}/" in m] == []
        # The parent cgroup, in the unified hierarchy or in each v1 one.
        name = CGROUP_PARENT.strip("/")
        for cg in [Path("/sys/fs/cgroup") / name, *Path("/sys/fs/cgroup").glob(f"*/{name}")]:
            if cg.is_dir():
                cg.rmdir()


# -- --tlsverify ----------------------------------------------------------------------

def test_cli_with_client_certificate(verifying, pki):
    d, port = verifying
    r = tls_cli(pki, "version", "--format", "{{json .Server}}", port=port)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ApiVersion"] == "1.45"
    r = tls_cli(pki, "info", "--format", "{{json .}}", port=port)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["OSType"] == "linux"
    # The unix socket is served by the same daemon at the same time.
    r = cli("version", "--format", "{{.Server.APIVersion}}", host=f"unix://{d.sock}")
    assert r.returncode == 0 and r.stdout.strip() == "1.45"
    assert "without --tlsverify" not in d.output()


def test_cli_without_client_certificate_refused(verifying, pki):
    d, port = verifying
    r = tls_cli(pki, "version", port=port, cert=False)
    assert r.returncode != 0
    assert "remote error: tls: certificate required" in r.stderr, r.stderr
    # A certificate from a CA the daemon does not trust is no better than none.
    r = cli("--tlsverify", "--tlscacert", str(pki.ca), "--tlscert", str(pki.rogue_cert),
            "--tlskey", str(pki.rogue_key), "version", host=f"tcp://127.0.0.1:{port}")
    assert r.returncode != 0 and "remote error: tls: unknown certificate authority" in r.stderr
    assert "TLS handshake error from 127.0.0.1" in d.output()


def _handshake(port: int, pki: Pki, cert: bool, **ctx_settings) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    for name, value in ctx_settings.items():
        setattr(ctx, name, value)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except Exception:
        raw.close()
        raise


def _get(s: socket.socket, path: str) -> bytes:
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _assert_refused(port: int, pki: Pki, cert: bool, **ctx_settings) -> None:
    """No request gets through: the handshake, or (a missing client certificate in TLS 1.3)
    the first read, fails."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        s = _handshake(port, pki, cert, **ctx_settings)
        try:
            _get(s, "/_ping")
        finally:
            s.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_handshake_details(verifying, pki):
    _, port = verifying
    with _handshake(port, pki, True, maximum_version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.version() == "TLSv1.2" and "ECDHE" in s.cipher()[0]
        assert _get(s, "/_ping").split(b" ")[1] == b"200"
    with _handshake(port, pki, True) as s:
        assert s.version() == "TLSv1.3"
    # Below TLS 1.2 the daemon does not talk.
    _assert_refused(port, pki, True, minimum_version=ssl.TLSVersion.TLSv1,
                    maximum_version=ssl.TLSVersion.TLSv1_1)
    # Nor without a client certificate.
    _assert_refused(port, pki, False)


def test_plain_http_to_tls_port_fails(verifying, pki):
    _, port = verifying
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert b" 200 " not in answer
    r = cli("version", host=f"tcp://127.0.0.1:{port}")
    assert r.returncode != 0 and "Server:" not in r.stdout


def test_docker_py_over_tls(verifying, pki):
    import docker
    from docker.tls import TLSConfig

    _, port = verifying
    tls = TLSConfig(client_cert=(str(pki.client_cert), str(pki.client_key)),
                    ca_cert=str(pki.ca), verify=True)
    client = docker.DockerClient(base_url=f"https://127.0.0.1:{port}", tls=tls)
    try:
        assert client.version()["ApiVersion"] == "1.45"
        assert client.ping()
    finally:
        client.close()
    # Without a client certificate the handshake fails, and says why.
    with pytest.raises(docker.errors.DockerException, match="CERTIFICATE_REQUIRED"):
        docker.DockerClient(base_url=f"https://127.0.0.1:{port}",
                            tls=TLSConfig(ca_cert=str(pki.ca), verify=True)).close()


def test_run_and_exec_over_tls(verifying, pki, tmp_path):
    """Attach and exec hijack the connection; over TLS the CLI half-closes with a
    close_notify, and the output must still come back."""
    if not MUSL.is_dir():
        pytest.skip("busybox layout missing")
    d, port = verifying
    archive = tmp_path / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(MUSL.iterdir()):
            tar.add(entry, arcname=entry.name)
    assert cli("load", "-i", str(archive), host=f"unix://{d.sock}").returncode == 0
    r = tls_cli(pki, "run", "--rm", "--cgroup-parent", CGROUP_PARENT, "busybox:1.38.0-musl",
                "sh", "-c", "echo out; echo err >&2; exit 3", port=port)
    assert (r.returncode, r.stdout) == (3, "out\n") and "err" in r.stderr, r.stderr
    r = tls_cli(pki, "run", "-d", "--cgroup-parent", CGROUP_PARENT, "busybox:1.38.0-musl",
                "sleep", "60", port=port)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        r = tls_cli(pki, "exec", cid, "echo", "from exec", port=port)
        assert (r.returncode, r.stdout) == (0, "from exec\n"), r.stderr
        r = tls_cli(pki, "exec", "-i", cid, "cat", port=port, stdin="piped\n")
        assert (r.returncode, r.stdout) == (0, "piped\n"), r.stderr
    finally:
        cli("rm", "-f", cid, host=f"unix://{d.sock}")


# -- TLS without client verification, daemon.json -------------------------------------

def test_tls_without_verification(tmp_path, pki):
    """--tlsverify=false is TLS that accepts any client (dockerd's reading: naming
    tlsverify turns TLS on); --tls alone verifies clients, as dockerd does."""
    port = free_port()
    d = TlsDaemon(tmp_path / "d", "--config-file", "/dev/null", "--tlsverify=false",
                  *server_flags(pki), "-H", f"tcp://127.0.0.1:{port}")
    try:
        d.wait_unix()
        d.wait_until(lambda: listening(port), "listened on TCP")
        # The client still checks the server; it just has no certificate of its own.
        r = cli("--tlsverify", "--tlscacert", str(pki.ca), "version", "--format",
                "{{.Server.APIVersion}}", host=f"tcp://127.0.0.1:{port}")
        assert r.returncode == 0 and r.stdout.strip() == "1.45", r.stderr
        assert "Binding to IP address without --tlsverify is insecure" in d.output()
    finally:
        d.stop()
    assert not listening(port)

    port = free_port()
    d = TlsDaemon(tmp_path / "e", "--config-file", "/dev/null", "--tls",
                  *server_flags(pki), "-H", f"tcp://127.0.0.1:{port}")
    try:
        d.wait_unix()
        d.wait_until(lambda: listening(port), "listened on TCP")
        assert tls_cli(pki, "version", port=port, cert=False).returncode != 0
        assert tls_cli(pki, "version", port=port).returncode == 0
    finally:
        d.stop()
    assert not listening(port)


def test_daemon_json_tls_keys(tmp_path, pki):
    import docker
    from docker.tls import TLSConfig

    port = free_port()
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({
        "tlsverify": True, "tlscacert": str(pki.ca), "tlscert": str(pki.server_cert),
        "tlskey": str(pki.server_key),
        "hosts": [f"unix://{tmp_path / 'd' / 'd.sock'}", f"tcp://127.0.0.1:{port}"]}))
    d = TlsDaemon(tmp_path / "d", "--config-file", str(cfg), unix=False)
    try:
        d.wait_unix()
        d.wait_until(lambda: listening(port), "listened on TCP")
        tls = TLSConfig(client_cert=(str(pki.client_cert), str(pki.client_key)),
                        ca_cert=str(pki.ca), verify=True)
        client = docker.DockerClient(base_url=f"https://127.0.0.1:{port}", tls=tls)
        try:
            assert client.info()["OSType"] == "linux"
        finally:
            client.close()
        _assert_refused(port, pki, False)
    finally:
        d.stop()
    assert not listening(port)


# -- bad input ------------------------------------------------------------------------

def _refused(proc: subprocess.CompletedProcess[str], root: Path, port: int = 0) -> str:
    assert proc.returncode == 1, proc.stderr
    assert not (root / "d.sock").exists()
    if port:
        assert not listening(port)
    return proc.stderr


def test_missing_or_invalid_files(tmp_path, pki):
    port = free_port()
    host = ["-H", f"unix://{tmp_path / 'd.sock'}", "-H", f"tcp://127.0.0.1:{port}",
            "--config-file", "/dev/null", "--tlsverify"]
    missing = tmp_path / "absent.pem"
    cases = [
        (["--tlscacert", str(pki.ca), "--tlscert", str(missing), "--tlskey",
          str(pki.server_key)],
         f"could not load X509 key pair (cert: \"{missing}\", key: \"{pki.server_key}\"): "
         f"open {missing}: no such file or directory"),
        (["--tlscacert", str(pki.ca), "--tlscert", str(pki.server_cert), "--tlskey",
          str(missing)], f"open {missing}: no such file or directory"),
        (["--tlscacert", str(missing), "--tlscert", str(pki.server_cert), "--tlskey",
          str(pki.server_key)],
         f"could not read CA certificate \"{missing}\": open {missing}: no such file or "
         "directory"),
    ]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases += [
        (["--tlscacert", str(garbage), "--tlscert", str(pki.server_cert), "--tlskey",
          str(pki.server_key)], f"failed to append certificates from PEM file: \"{garbage}\""),
        (["--tlscacert", str(pki.ca), "--tlscert", str(garbage), "--tlskey",
          str(pki.server_key)], f"error reading X509 key pair - make sure the key is not "
                                f"encrypted (cert: \"{garbage}\""),
        # A key that does not match the certificate.
        (["--tlscacert", str(pki.ca), "--tlscert", str(pki.server_cert), "--tlskey",
          str(pki.client_key)], "error reading X509 key pair"),
        (["--tlscacert", str(pki.ca), "--tlscert", str(tmp_path), "--tlskey",
          str(pki.server_key)], f"open {tmp_path}: is a directory"),
    ]
    # An encrypted key is refused, not prompted for.
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    locked = tmp_path / "locked-key.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    cases.append((["--tlscacert", str(pki.ca), "--tlscert", str(pki.server_cert), "--tlskey",
                   str(locked)], "make sure the key is not encrypted"))
    for flags, message in cases:
        err = _refused(run_daemon(tmp_path, *host, *flags), tmp_path, port)
        assert "invalid TLS configuration: " in err and message in err, (flags, err)


def test_default_certificate_paths(tmp_path):
    """Without the flags, the files are looked for under $DOCKER_CERT_PATH."""
    certs = tmp_path / "certs"
    env = dict(os.environ, DOCKER_CERT_PATH=str(certs))
    proc = subprocess.run([sys.executable, "-m", "dockyard.daemon.main", *_base_args(tmp_path),
                           "--config-file", "/dev/null", "-H", f"unix://{tmp_path / 'd.sock'}",
                           "--tlsverify"], capture_output=True, text=True, timeout=60, env=env)
    err = _refused(proc, tmp_path)
    assert f"open {certs / 'cert.pem'}: no such file or directory" in err
    assert f"key: \"{certs / 'key.pem'}\"" in err
    help_text = subprocess.run([sys.executable, "-m", "dockyard.daemon.main", "--help"],
                               capture_output=True, text=True, env=env, timeout=60).stdout
    assert str(certs / "ca.pem") in "".join(help_text.split())


def test_flag_and_file_conflict(tmp_path, pki):
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"tlsverify": True, "tlscert": str(pki.server_cert)}))
    proc = run_daemon(tmp_path, "-H", f"unix://{tmp_path / 'd.sock'}", "--config-file",
                      str(cfg), "--tlsverify", "--tlscert", "/x/cert.pem")
    err = _refused(proc, tmp_path)
    assert ("the following directives are specified both as a flag and in the configuration "
            "file: ") in err
    assert "tlsverify: (from flag: true, from file: true)" in err
    assert f"tlscert: (from flag: /x/cert.pem, from file: {pki.server_cert})" in err
    # Any setting, not only TLS's: -H against "hosts".
    cfg.write_text(json.dumps({"hosts": ["unix:///a.sock", "unix:///b.sock"]}))
    err = _refused(run_daemon(tmp_path, "-H", f"unix://{tmp_path / 'd.sock'}",
                              "--config-file", str(cfg)), tmp_path)
    assert (f"hosts: (from flag: [unix://{tmp_path / 'd.sock'}], from file: "
            "[unix:///a.sock unix:///b.sock])") in err


def test_bad_tls_values(tmp_path):
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"tls": "yes"}))
    err = _refused(run_daemon(tmp_path, "-H", f"unix://{tmp_path / 'd.sock'}",
                              "--config-file", str(cfg)), tmp_path)
    assert "tls must be true or false" in err
    proc = run_daemon(tmp_path, "-H", f"unix://{tmp_path / 'd.sock'}", "--config-file",
                      "/dev/null", "--tlsverify=maybe")
    assert proc.returncode == 2 and 'invalid argument "maybe"' in proc.stderr
    assert not (tmp_path / "d.sock").exists()


def test_non_loopback_without_tls_refused(tmp_path):
    for host in ("tcp://0.0.0.0:2375", "tcp://192.0.2.1:2375", "192.0.2.1:2375"):
        err = _refused(run_daemon(tmp_path, "-H", f"unix://{tmp_path / 'd.sock'}",
                                  "--config-file", "/dev/null", "-H", host), tmp_path)
        assert "refusing to listen on tcp://" in err and "without TLS" in err
        assert "--tlsverify" in err and "--tls=false" in err
    # daemon.json's hosts are held to the same rule.
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"hosts": [f"unix://{tmp_path / 'd.sock'}",
                                         "tcp://0.0.0.0:2375"]}))
    err = _refused(run_daemon(tmp_path, "--config-file", str(cfg)), tmp_path)
    assert "refusing to listen on tcp://0.0.0.0:2375 without TLS" in err


def _netns_available() -> bool:
    return shutil.which("unshare") is not None and shutil.which("nsenter") is not None \
        and shutil.which("ip") is not None and subprocess.run(
            ["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _netns_available(), reason="no network namespaces here")
def test_non_loopback_forced_with_tls_false(tmp_path):
    """--tls=false is the explicit way to take the risk: the daemon warns and serves.
    The non-loopback address lives in a private network namespace so nothing is exposed."""
    addr = "192.0.2.1"
    setup = f"ip link set lo up && ip addr add {addr}/32 dev lo && exec \"$@\""
    d = TlsDaemon(tmp_path / "d", "--config-file", "/dev/null", "--tls=false",
                  "-H", f"tcp://{addr}:2375", prefix=("unshare", "--net", "sh", "-c", setup, "sh"))
    try:
        d.wait_unix()

        def answers() -> bool:
            r = subprocess.run(["nsenter", f"--net=/proc/{d.proc.pid}/ns/net", DOCKER, "-H",
                                f"tcp://{addr}:2375", "version", "--format",
                                "{{.Server.APIVersion}}"], capture_output=True, text=True,
                               timeout=30)
            return r.returncode == 0 and r.stdout.strip() == "1.45"

        d.wait_until(answers, "answered on the non-loopback address")
        out = d.output()
        assert "Binding to IP address without --tlsverify is insecure" in out
        assert "TLS was turned off explicitly" in out
    finally:
        d.stop()


# -- configuration, in process --------------------------------------------------------

def test_parse_host_as_dockerd():
    assert parse_host("tcp://127.0.0.1:2376").port == 2376
    ln = parse_host("tcp://")
    assert (ln.address, ln.port) == ("localhost", 2375)
    ln = parse_host("127.0.0.1:1234")
    assert (ln.kind, ln.address, ln.port) == ("tcp", "127.0.0.1", 1234)
    ln = parse_host("tcp://[::1]:2376")
    assert ln.address == "::1" and ln.loopback and ln.hostport == "[::1]:2376"
    assert not parse_host("tcp://192.0.2.1:1").loopback
    for bad, message in (("tcp://127.0.0.1:0", "invalid port: 0"),
                         ("tcp://127.0.0.1:http", "invalid port: http"),
                         ("tcp://127.0.0.1:2375/path", "should not contain a path element")):
        with pytest.raises(InvalidArgument, match=message):
            parse_host(bad)


def test_tls_settings_resolve_as_dockerd(tmp_path):
    cfg_file = tmp_path / "daemon.json"
    cfg_file.write_text("{}")
    base = {"data_root": str(tmp_path / "d"), "exec_root": str(tmp_path / "e")}

    def load(**flags) -> DaemonConfig:
        return DaemonConfig.load(str(cfg_file), {**base, **flags})

    plain = load()
    assert plain.tls is None and not plain.verify_clients
    assert plain.hosts == ["unix:///run/dockyard.sock"]
    assert load(tlsverify=True).tls is True and load(tlsverify=True).verify_clients
    off = load(tlsverify=False)
    assert off.tls is True and not off.verify_clients
    assert load(tls=True).verify_clients
    assert load(tls=True).hosts == ["tcp://localhost:2376"]
    forced = load(tls=False, hosts=["tcp://0.0.0.0:2375"])
    assert forced.tls is False and forced.listeners()[0].address == "0.0.0.0"
    with pytest.raises(InvalidArgument, match="without TLS"):
        load(hosts=["tcp://0.0.0.0:2375"])
