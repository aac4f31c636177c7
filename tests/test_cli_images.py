"""`dockyard images`, `pull`, `push`, `tag`, `rmi`, `save`, `load`, `history` and `image
prune` against a real dockyardd (and a `dockyard registry serve` on loopback), beside the
docker CLI where the output should be the same."""

from __future__ import annotations

import json
import subprocess

import pytest

from cli_helpers import DOCKYARD, dockyard, free_port, registry_server
from engine_daemon import CGROUP_PARENT, daemon, docker  # noqa: F401 (daemon: fixture)


@pytest.mark.parametrize("args", [["images"], ["images", "-q"], ["images", "--digests"],
                                  ["images", "--no-trunc"], ["images", "-a"],
                                  ["images", "--format", "json"], ["images", "busybox"],
                                  ["images", "busybox:latest"], ["images", "nosuch"],
                                  ["images", "--filter", "reference=busybox:1*"],
                                  ["images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"],
                                  ["image", "ls"], ["image", "list", "-q"],
                                  ["history", "busybox"], ["history", "--no-trunc", "busybox"],
                                  ["history", "-q", "busybox"], ["image", "history", "busybox"]])
def test_listing_matches_docker(daemon, args):
    ours, theirs = dockyard(daemon, *args, check=False), docker(daemon, *args, check=False)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)


@pytest.mark.parametrize("args", [["history", "nosuch"], ["rmi", "nosuch"], ["tag", "nosuch", "x"],
                                  ["image", "inspect", "nosuch"], ["images", "--filter", "bogus=1"]])
def test_errors_match_docker(daemon, args):
    ours, theirs = dockyard(daemon, *args, check=False), docker(daemon, *args, check=False)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout,
                                                           theirs.stderr)


def test_tag_and_rmi(daemon):
    try:
        assert dockyard(daemon, "tag", "busybox", "mine/bb:v1").stdout == ""
        assert "mine/bb" in dockyard(daemon, "images", "mine/bb").stdout
        r = dockyard(daemon, "rmi", "mine/bb:v1")
        assert r.stdout == "Untagged: mine/bb:v1\n"
        r = dockyard(daemon, "tag", "busybox", "Bad:Name", check=False)
        assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ")
    finally:
        docker(daemon, "rmi", "mine/bb:v1", check=False)


def test_save_and_load_round_trip(daemon, tmp_path):
    archive = tmp_path / "bb.tar"
    try:
        dockyard(daemon, "tag", "busybox", "roundtrip:1")
        dockyard(daemon, "save", "-o", str(archive), "roundtrip:1")
        assert archive.stat().st_size > 100_000
        dockyard(daemon, "rmi", "roundtrip:1")
        r = dockyard(daemon, "load", "-i", str(archive))
        assert r.stdout == "Loaded image: roundtrip:1\n"
        # Through the pipes, as `docker save img | docker load`.
        with open(archive, "rb") as f:
            r = subprocess.run([*DOCKYARD, "load"], stdin=f, capture_output=True,
                               env={"DOCKYARD_HOST": daemon.host, "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0 and b"Loaded image: roundtrip:1" in r.stdout
        saved = subprocess.run([*DOCKYARD, "save", "roundtrip:1"], capture_output=True,
                               env={"DOCKYARD_HOST": daemon.host, "PATH": "/usr/bin:/bin"})
        assert saved.returncode == 0 and saved.stdout[:100] == archive.read_bytes()[:100]
    finally:
        docker(daemon, "rmi", "roundtrip:1", check=False)
    r = dockyard(daemon, "load", "-i", str(tmp_path / "none.tar"), check=False)
    assert r.returncode == 1
    assert r.stderr == f"open {tmp_path / 'none.tar'}: no such file or directory\n"
    r = dockyard(daemon, "save", "-o", str(tmp_path / "x.tar"), "nosuch", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ")
    assert not (tmp_path / "x.tar").exists()


@pytest.fixture
def registry(tmp_path):
    with registry_server(tmp_path) as address:
        yield address


def test_push_pull_and_run_pulls_a_missing_image(daemon, registry):
    ref = f"{registry}/test/bb"
    try:
        dockyard(daemon, "tag", "busybox", f"{ref}:v1")
        r = dockyard(daemon, "push", f"{ref}:v1")
        assert "v1: digest: sha256:" in r.stdout
        dockyard(daemon, "rmi", f"{ref}:v1")
        r = dockyard(daemon, "pull", f"{ref}:v1")
        assert "\nStatus: " in r.stdout and r.stdout.endswith(f"\n{ref}:v1\n")
        assert dockyard(daemon, "pull", "-q", f"{ref}:v1").stdout == f"{ref}:v1\n"
        dockyard(daemon, "rmi", f"{ref}:v1")
        r = dockyard(daemon, "run", "--rm", "--cgroup-parent", CGROUP_PARENT, f"{ref}:v1",
                     "echo", "pulled")
        assert r.stdout == "pulled\n"
        assert r.stderr.startswith(f"Unable to find image '{ref}:v1' locally\n")
        # A tag that is not there: the registry's answer, status 125 for run.
        r = dockyard(daemon, "run", "--rm", f"{ref}:v2", check=False)
        assert r.returncode == 125
        assert f"Unable to find image '{ref}:v2' locally" in r.stderr
        assert "dockyard: Error response from daemon: " in r.stderr
        r = dockyard(daemon, "pull", f"{ref}:v2", check=False)
        assert r.returncode == 1 and "Error response from daemon: " in r.stderr
    finally:
        docker(daemon, "rmi", f"{ref}:v1", check=False)


def test_pull_from_unreachable_registry(daemon):
    args = ["pull", f"127.0.0.1:{free_port()}/x"]
    ours, theirs = dockyard(daemon, *args, check=False), docker(daemon, *args, check=False)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout,
                                                           theirs.stderr)


def test_image_prune(daemon):
    ours = dockyard(daemon, "image", "prune", "-f")
    assert ours.returncode == 0 and ours.stdout.endswith("Total reclaimed space: 0B\n")
    r = dockyard(daemon, "image", "prune", input="n\n")
    assert r.stdout.startswith("WARNING! This will remove all dangling images.\n")


@pytest.fixture
def private_registry(tmp_path):
    from test_registry_server import make_htpasswd

    users = tmp_path / "htpasswd"
    make_htpasswd(users, {"alice": "s3cret"})
    with registry_server(tmp_path, "--htpasswd", str(users)) as address:
        yield address


def test_login_push_pull_logout(daemon, private_registry, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "cli-config")}
    host = private_registry
    ref = f"{host}/priv/bb:v1"
    try:
        r = dockyard(daemon, "login", "-u", "alice", "--password-stdin", host, input="wrong\n",
                     env=env, check=False)
        assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ")
        assert not (tmp_path / "cli-config" / "config.json").exists()
        r = dockyard(daemon, "login", "-u", "alice", "--password-stdin", host, input="s3cret\n",
                     env=env)
        assert r.stdout == "Login Succeeded\n"
        config = json.loads((tmp_path / "cli-config" / "config.json").read_text())
        assert host in config["auths"]
        dockyard(daemon, "tag", "busybox", ref)
        dockyard(daemon, "push", ref, env=env)
        dockyard(daemon, "rmi", ref)
        assert dockyard(daemon, "pull", "-q", ref, env=env).stdout == f"{ref}\n"
        dockyard(daemon, "rmi", ref)
        r = dockyard(daemon, "logout", host, env=env)
        assert r.stdout == f"Removing login credentials for {host}\n"
        assert dockyard(daemon, "logout", host, env=env).stdout == f"Not logged in to {host}\n"
        r = dockyard(daemon, "pull", ref, env=env, check=False)
        assert r.returncode == 1 and "Error response from daemon: " in r.stderr
    finally:
        docker(daemon, "rmi", ref, check=False)


def test_login_bad_input(daemon, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "cli-config")}
    r = dockyard(daemon, "login", "--password-stdin", "127.0.0.1:1", input="x\n", env=env,
                 check=False)
    assert (r.returncode, r.stderr) == (1, "Must provide --username with --password-stdin\n")
    r = dockyard(daemon, "login", "-p", "x", "--password-stdin", "-u", "a", "127.0.0.1:1",
                 env=env, check=False)
    assert r.returncode == 1 and "mutually exclusive" in r.stderr
    r = dockyard(daemon, "login", "127.0.0.1:1", input="", env=env, check=False)
    assert r.returncode == 1
    assert "Cannot perform an interactive login from a non TTY device" in r.stderr
