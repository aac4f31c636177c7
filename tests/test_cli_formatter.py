"""docker's formatting layer (dockyard.cli.formatter): --format values, tables through
docker's tabwriter, human units.

TABLES were recorded from the docker CLI 28.2.2: `docker context ls --format FORMAT`
with the five contexts of CONTEXTS (created with `docker context create`), so each
expected table, its header line and its alignment are docker's own output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dockyard.cli.formatter import (bytes_size, ellipsis, human_duration, human_size,
                                    inspect_format, render, tabwrite, truncate_id)
from dockyard.cli.gotemplate import GoStruct
from dockyard.errors import InvalidArgument

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

CONTEXTS = [
    {"Current": False, "Description": "short", "DockerEndpoint": "unix:///run/xy/a.sock",
     "Error": "", "Name": "aa"},
    {"Current": False, "Description": "a\ttab", "DockerEndpoint": "tcp://127.0.0.1:2",
     "Error": "", "Name": "abcdefghijklm"},
    {"Current": False, "Description": "日本語 text é", "DockerEndpoint": "tcp://127.0.0.1:1",
     "Error": "", "Name": "cc"},
    {"Current": True, "Description": "Current DOCKER_HOST based configuration",
     "DockerEndpoint": "unix:///var/run/docker.sock", "Error": "", "Name": "default"},
    {"Current": False, "Description": "", "DockerEndpoint": "unix:///run/xy/b.sock",
     "Error": "", "Name": "very-long-context-name"},
]
ROWS = [GoStruct("*formatter.clientContextContext", c) for c in CONTEXTS]
# docker context ls's header map has no "Current": its title renders as <no value>.
HEADERS = {"Name": "NAME", "Description": "DESCRIPTION", "DockerEndpoint": "DOCKER ENDPOINT",
           "Error": "ERROR"}
DEFAULT = "table {{.Name}}\t{{.Description}}\t{{.DockerEndpoint}}\t{{.Error}}"

TABLES = [
    ('table {{.Name}}\t{{.Description}}', 'NAME                     DESCRIPTION\naa                       short\nabcdefghijklm            a         tab\ncc                       日本語 text é\ndefault                  Current DOCKER_HOST based configuration\nvery-long-context-name   \n', None),
    ('table {{.Name}}\t{{.Description}}\t', 'NAME                     DESCRIPTION                               \naa                       short                                     \nabcdefghijklm            a                                         tab       \ncc                       日本語 text é                             \ndefault                  Current DOCKER_HOST based configuration   \nvery-long-context-name                                             \n', None),
    ('table {{.Description}}\t{{.Name}}\t{{.DockerEndpoint}}', 'DESCRIPTION                               NAME                     DOCKER ENDPOINT\nshort                                     aa                       unix:///run/xy/a.sock\na                                         tab                      abcdefghijklm   tcp://127.0.0.1:2\n日本語 text é                             cc                       tcp://127.0.0.1:1\nCurrent DOCKER_HOST based configuration   default                  unix:///var/run/docker.sock\n                                          very-long-context-name   unix:///run/xy/b.sock\n', None),
    ('table {{.Name}}\t\t{{.Current}}\t', 'NAME                               <no value>   \naa                                 false        \nabcdefghijklm                      false        \ncc                                 false        \ndefault                            true         \nvery-long-context-name             false        \n', None),
    ('{{.Name}}\t{{.Description}}', 'aa\tshort\nabcdefghijklm\ta\ttab\ncc\t日本語 text é\ndefault\tCurrent DOCKER_HOST based configuration\nvery-long-context-name\t\n', None),
    ('table {{upper .Name}}\t{{json .Description}}\t{{pad .Name 2 2}}|', 'NAME                     DESCRIPTION                                   NAME  |\nAA                       "short"                                       aa  |\nABCDEFGHIJKLM            "a\\ttab"                                      abcdefghijklm  |\nCC                       "日本語 text é"                               cc  |\nDEFAULT                  "Current DOCKER_HOST based configuration"     default  |\nVERY-LONG-CONTEXT-NAME   ""                                            very-long-context-name  |\n', None),
    ('table {{.Name}}\n{{.Description}}\t{{.Current}}', 'NAME\nDESCRIPTION   <no value>\naa\nshort     false\nabcdefghijklm\na         tab       false\ncc\n日本語 text é   false\ndefault\nCurrent DOCKER_HOST based configuration   true\nvery-long-context-name\n          false\n', None),
    (' table  {{.Name}}\t{{.Current}} ', 'table  aa\tfalse\ntable  abcdefghijklm\tfalse\ntable  cc\tfalse\ntable  default\ttrue\ntable  very-long-context-name\tfalse\n', None),
    ('table {{.Name}}\t{{if eq .Name "cc"}}\n{{end}}{{.Description}}\t|', 'NAME                     DESCRIPTION   |\naa                       short         |\nabcdefghijklm            a             tab       |\ncc                       \n日本語 text é            |\ndefault                  Current DOCKER_HOST based configuration   |\nvery-long-context-name                                             |\n', None),
    ('table {{truncate .Name 3}}\t{{.Description}}\t{{.DockerEndpoint}}', 'NAME      DESCRIPTION                               DOCKER ENDPOINT\naa        short                                     unix:///run/xy/a.sock\nabc       a                                         tab       tcp://127.0.0.1:2\ncc        日本語 text é                             tcp://127.0.0.1:1\ndef       Current DOCKER_HOST based configuration   unix:///var/run/docker.sock\nver                                                 unix:///run/xy/b.sock\n', None),
    ('table {{.Name}}\t{{.Description}}\t{{.DockerEndpoint}}\t{{.Error}}', 'NAME                     DESCRIPTION                               DOCKER ENDPOINT               ERROR\naa                       short                                     unix:///run/xy/a.sock         \nabcdefghijklm            a                                         tab                           tcp://127.0.0.1:2   \ncc                       日本語 text é                             tcp://127.0.0.1:1             \ndefault                  Current DOCKER_HOST based configuration   unix:///var/run/docker.sock   \nvery-long-context-name                                             unix:///run/xy/b.sock         \n', None),
    ('tablex {{.Name}}|{{json .Name}}|{{upper .Name}}|{{pad .Name 1 1}}|{{truncate .Name 2}}|{{split .Name "c"}}|{{join (split .Name "c") ","}}', 'x NAME|NAME|NAME| NAME |NAME|NAME|NAME\nx aa|"aa"|AA| aa |aa|[aa]|aa\nx abcdefghijklm|"abcdefghijklm"|ABCDEFGHIJKLM| abcdefghijklm |ab|[ab defghijklm]|ab,defghijklm\nx cc|"cc"|CC| cc |cc|[  ]|,,\nx default|"default"|DEFAULT| default |de|[default]|default\nx very-long-context-name|"very-long-context-name"|VERY-LONG-CONTEXT-NAME| very-long-context-name |ve|[very-long- ontext-name]|very-long-,ontext-name\n', None),
    ('table {{.Name}}\t{{.Nope}}', None, 'template parsing error: template: :1:12: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.clientContextContext'),
    ('table {{foo}}', None, 'template parsing error: template: :1: function "foo" not defined'),
    ('json', '{"Current":false,"Description":"short","DockerEndpoint":"unix:///run/xy/a.sock","Error":"","Name":"aa"}\n{"Current":false,"Description":"a\\ttab","DockerEndpoint":"tcp://127.0.0.1:2","Error":"","Name":"abcdefghijklm"}\n{"Current":false,"Description":"日本語 text é","DockerEndpoint":"tcp://127.0.0.1:1","Error":"","Name":"cc"}\n{"Current":true,"Description":"Current DOCKER_HOST based configuration","DockerEndpoint":"unix:///var/run/docker.sock","Error":"","Name":"default"}\n{"Current":false,"Description":"","DockerEndpoint":"unix:///run/xy/b.sock","Error":"","Name":"very-long-context-name"}\n', None),
]


@pytest.mark.parametrize("fmt,expected,error", TABLES)
def test_docker_tables(fmt: str, expected: str | None, error: str | None) -> None:
    if error is None:
        assert render(fmt, ROWS, DEFAULT, HEADERS) == expected
    else:
        with pytest.raises(InvalidArgument) as info:
            render(fmt, ROWS, DEFAULT, HEADERS)
        assert str(info.value) == error


@pytest.mark.parametrize("fmt", [None, "", "table"])
def test_default_table(fmt: str | None) -> None:
    assert render(fmt, ROWS[:1], "table {{.Name}}\t{{.Error}}", HEADERS) == (
        "NAME      ERROR\naa        \n")


def test_no_rows_prints_the_header_only() -> None:
    assert render(None, [], "table {{.Name}}\t{{.Description}}", HEADERS) == "NAME      DESCRIPTION\n"
    assert render("{{.Name}}", [], "", HEADERS) == ""
    assert render("json", [], "", HEADERS) == ""


def test_header_functions_leave_titles_alone() -> None:
    out = render('table {{lower .Name}}\\t{{json .Name}}\\t{{title .Name}}\\t{{truncate .Name 1}}'
                 '\\t{{join (split .Name "a") "-"}}', ROWS[:1], "", HEADERS)
    assert out.splitlines()[0].split() == ["NAME"] * 5
    assert out.splitlines()[1].split() == ["aa", '"aa"', "Aa", "a", "--"]


def test_a_header_that_fails_keeps_what_it_printed() -> None:
    rows = [GoStruct("Row", {"ID": "x", "Label": lambda k: k.upper()})]
    # The header map has no method Label: docker prints the header up to the error.
    assert render(r'table {{.ID}}\t{{.Label "k"}}', rows, "", {"ID": "ID"}) == (
        "ID        \nx         K\n")


@pytest.mark.parametrize("fmt,error", [
    ("{{.Name", 'template parsing error: template: :1: unclosed action'),
    ("{{.Name}", "template parsing error: template: :1: bad character U+007D '}'"),
    ("{{nope .Name}}", 'template parsing error: template: :1: function "nope" not defined'),
    ("{{.Name.X}}", 'template parsing error: template: :1:7: executing "" at <.Name.X>: '
                    "can't evaluate field X in type string"),
    ("table {{.Nope}}", 'template parsing error: template: :1:2: executing "" at <.Nope>: '
                        "can't evaluate field Nope in type *formatter.clientContextContext"),
])
def test_bad_formats(fmt: str, error: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        render(fmt, ROWS, DEFAULT, HEADERS)
    assert str(info.value) == error
    assert info.value.http_status == 400


def test_inspect_format() -> None:
    items = [{"Id": "a", "Env": ["X=1"]}, {"Id": "b", "Env": []}]
    assert inspect_format("{{.Id}}\\t{{json .Env}}", items) == 'a\\t["X=1"]\nb\\t[]\n'
    assert inspect_format("table {{.Id}}", items) == "table a\ntable b\n"
    with pytest.raises(InvalidArgument, match=r"^template parsing error: template: :1: "
                                              r"function \"nope\" not defined$"):
        inspect_format("{{nope}}", items)


@pytest.mark.parametrize("text,expected", [
    # Go's text/tabwriter documentation example (minwidth 10, padding 3 as docker).
    ("a\tb\tc\naa\tbb\tcc\naaa\n", "a         b         c\naa        bb        cc\naaa\n"),
    ("aaaa\tbbb\td\naa\tb\tdd\na\t\naa\tcccc\teee\n",
     "aaaa      bbb       d\naa        b         dd\na         \naa        cccc      eee\n"),
    ("x\n", "x\n"),
    ("", ""),
    ("no newline\tat end", "no newline   at end"),
    ("0123456789ab\tx\n\ty\n", "0123456789ab   x\n               y\n"),
    ("日本\tx\nabc\ty\n", "日本      x\nabc       y\n"),
])
def test_tabwrite(text: str, expected: str) -> None:
    assert tabwrite(text) == expected


@pytest.mark.parametrize("size,expected", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1024, "1.02kB"), (1536, "1.54kB"),
    (999_999, "1e+03kB"), (1_000_000, "1MB"), (1_048_576, "1.05MB"), (4_404_019, "4.4MB"),
    (3.42 * 10**9, "3.42GB"), (5.372 * 10**12, "5.37TB"), (2.22 * 10**15, "2.22PB"),
    (10**21, "1ZB"), (10**28, "1e+04YB"),
])
def test_human_size(size: float, expected: str) -> None:
    assert human_size(size) == expected


def test_human_size_precision_four_is_go_units_human_size() -> None:
    assert human_size(1024, 4) == "1.024kB"
    assert human_size(3.42 * 10**9, 4) == "3.42GB"
    assert human_size(5.372 * 10**12, 4) == "5.372TB"


@pytest.mark.parametrize("size,expected", [
    (0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1024 * 1024, "1MiB"), (1536, "1.5KiB"),
    (1024**3, "1GiB"), (3.42 * 1024**3, "3.42GiB"), (5.372 * 1024**4, "5.372TiB"),
    (2.22 * 1024**5, "2.22PiB"),
])
def test_bytes_size(size: float, expected: str) -> None:
    assert bytes_size(size) == expected


MINUTE, HOUR, DAY = 60, 3600, 86400
WEEK, MONTH, YEAR = 7 * DAY, 30 * DAY, 365 * DAY


@pytest.mark.parametrize("seconds,expected", [
    # go-units' own test table.
    (0.45, "Less than a second"), (1, "1 second"), (45, "45 seconds"), (59, "59 seconds"),
    (60, "About a minute"), (3 * MINUTE, "3 minutes"), (35 * MINUTE + 40, "35 minutes"),
    (59 * MINUTE, "59 minutes"), (HOUR, "About an hour"), (HOUR + 29 * MINUTE, "About an hour"),
    (HOUR + 31 * MINUTE, "2 hours"), (3 * HOUR + 29 * MINUTE, "3 hours"),
    (3 * HOUR + 31 * MINUTE, "4 hours"), (DAY, "24 hours"), (DAY + 12 * HOUR, "36 hours"),
    (2 * DAY, "2 days"), (7 * DAY, "7 days"), (13 * DAY + 5 * HOUR, "13 days"),
    (2 * WEEK, "2 weeks"), (2 * WEEK + 4 * DAY, "2 weeks"), (4 * WEEK + 3 * DAY, "4 weeks"),
    (MONTH, "4 weeks"), (MONTH + 2 * WEEK, "6 weeks"), (2 * MONTH, "2 months"),
    (5 * MONTH + 2 * WEEK, "5 months"), (13 * MONTH, "13 months"), (24 * MONTH, "24 months"),
    (24 * MONTH + 2 * WEEK, "2 years"), (3 * YEAR + 2 * MONTH, "3 years"),
])
def test_human_duration(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_truncate_id() -> None:
    full = "4fa6e0f0c6786287e131c3852c58a2e01cc697a68231826813597e4994f1d6e2"
    assert truncate_id(full) == "4fa6e0f0c678"
    assert truncate_id("sha256:" + full) == "4fa6e0f0c678"
    assert truncate_id("abc") == "abc"


@pytest.mark.parametrize("text,width,expected", [
    ("hello world", 20, "hello world"), ("hello world", 5, "hell…"), ("hello", 5, "hello"),
    ("hello", 1, "h"), ("hello", 0, ""), ("日本語の文字", 7, "日本語…"), ("日本語", 6, "日本語"),
])
def test_ellipsis(text: str, width: int, expected: str) -> None:
    assert ellipsis(text, width) == expected


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="docker CLI not installed")
def test_tables_against_docker_cli(tmp_path: Path) -> None:
    # The same contexts in a fresh docker configuration: context ls needs no daemon.
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env["DOCKER_CONFIG"] = str(tmp_path)
    for c in CONTEXTS:
        if c["Name"] == "default":
            continue
        endpoint = c["DockerEndpoint"]
        subprocess.run([DOCKER, "context", "create", c["Name"], "--description", c["Description"],
                        "--docker", f"host={endpoint}"], env=env, check=True, capture_output=True,
                       timeout=30)
    for fmt, _, _ in TABLES:
        p = subprocess.run([DOCKER, "context", "ls", "--format", fmt], env=env,
                           capture_output=True, text=True, timeout=30)
        if p.returncode == 0:
            assert p.stdout == render(fmt, ROWS, DEFAULT, HEADERS), fmt
        else:
            with pytest.raises(InvalidArgument) as info:
                render(fmt, ROWS, DEFAULT, HEADERS)
            assert p.stderr.strip() == str(info.value), fmt
