"""`dockyard network ...` and `dockyard volume ...` beside the docker CLI on one dockyardd."""

from __future__ import annotations

import pytest

from cli_helpers import dockyard
from engine_daemon import daemon, docker  # noqa: F401 (daemon: fixture)


@pytest.mark.parametrize("args", [
    ["network", "ls"], ["network", "ls", "-q"], ["network", "ls", "--no-trunc"],
    ["network", "ls", "--format", "json"], ["network", "ls", "--format", "{{.Name}} {{.Driver}}"],
    ["network", "inspect", "nosuch"], ["network", "rm", "nosuch"],
    ["network", "prune", "-f"],
    ["volume", "ls"], ["volume", "ls", "-q"], ["volume", "ls", "--format", "json"],
    ["volume", "inspect", "nosuch"], ["volume", "rm", "nosuch"], ["volume", "prune", "-f"],
])
def test_as_docker(daemon, args):
    ours, theirs = dockyard(daemon, *args, check=False), docker(daemon, *args, check=False)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout,
                                                           theirs.stderr)


def test_inspect_each_network_as_docker(daemon):
    names = docker(daemon, "network", "ls", "--format", "{{.Name}}").stdout.split()
    for name in names:
        for args in (["network", "inspect", name], ["network", "inspect", "-f", "{{.Driver}}", name]):
            assert dockyard(daemon, *args).stdout == docker(daemon, *args).stdout


def test_bad_input(daemon):
    r = dockyard(daemon, "network", "inspect", check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("dockyard: 'dockyard network inspect' requires at least 1 argument")
    r = dockyard(daemon, "volume", "create", "a", "b", check=False)
    assert r.returncode == 1 and "requires at most 1 argument" in r.stderr
    r = dockyard(daemon, "volume", "create", "--name", "a", "b", check=False)
    assert r.returncode == 1 and "conflicting options" in r.stderr
