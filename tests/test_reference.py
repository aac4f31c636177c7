"""Image reference parsing against Docker's behaviour.

The vectors follow distribution/reference's own tests (reference_test.go,
normalize_test.go) plus the Docker quirks worth pinning down; every error case
asserts Docker's exact message, since users and scripts match on it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dockyard.errors import InvalidArgument
from dockyard.image.digest import Digest
from dockyard.image.reference import (
    Reference,
    parse,
    parse_canonical,
    parse_docker_ref,
    parse_normalized,
    parse_raw,
    repo_tag_reference,
    split_repo_tag,
    with_name,
)

F64 = "f" * 64
SHA256 = "sha256:" + F64
SHA512 = "sha512:" + "f" * 128
BUSYBOX_DIGEST = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
HEX_ID = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

INVALID = "invalid reference format"
UPPER = "repository name must be lowercase"
TOO_LONG = "repository name must not be more than 255 characters"


def upper_repo(remote: str) -> str:
    return f"invalid reference format: repository name ({remote}) must be lowercase"


def assert_refused(func, text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        func(text)
    assert str(info.value) == message


# --- reference.Parse: no normalisation ----------------------------------------------

# input, name, domain, tag, digest; str(ref) must give the input back.
RAW_VALID = [
    ("test_com", "test_com", "", None, None),
    ("test.com:tag", "test.com", "", "tag", None),
    # A lone host:port is a name and a tag; the grammar only sees a domain before '/'.
    ("test.com:5000", "test.com", "", "5000", None),
    ("test.com/repo:tag", "test.com/repo", "test.com", "tag", None),
    ("test:5000/repo", "test:5000/repo", "test:5000", None, None),
    ("test:5000/repo:tag", "test:5000/repo", "test:5000", "tag", None),
    (f"test:5000/repo@{SHA256}", "test:5000/repo", "test:5000", None, SHA256),
    (f"test:5000/repo:tag@{SHA256}", "test:5000/repo", "test:5000", "tag", SHA256),
    ("lowercase:Uppercase", "lowercase", "", "Uppercase", None),
    # Without normalisation any first component that fits the domain grammar is one.
    ("Uppercase/lowercase:tag", "Uppercase/lowercase", "Uppercase", "tag", None),
    ("a/" * 127 + "a:tag-puts-this-over-max", "a/" * 127 + "a", "a",
     "tag-puts-this-over-max", None),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com",
     None, None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux",
     "sub-dom1.foo.com", "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io/test.example.com/my-app",
     "b.gcr.io", "test.example.com", None),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage", "xn--n3h.com",
     "xn--n3h.com", None),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}", "xn--7o8h.com/myimage", "xn--7o8h.com",
     "xn--7o8h.com", SHA512),
    ("foo_bar.com:8080", "foo_bar.com", "", "8080", None),
    ("foo/foo_bar.com:8080", "foo/foo_bar.com", "foo", "8080", None),
    ("192.168.1.1", "192.168.1.1", "", None, None),
    ("192.168.1.1:tag", "192.168.1.1", "", "tag", None),
    ("192.168.1.1:5000", "192.168.1.1", "", "5000", None),
    ("192.168.1.1/repo", "192.168.1.1/repo", "192.168.1.1", None, None),
    ("192.168.1.1:5000/repo", "192.168.1.1:5000/repo", "192.168.1.1:5000", None, None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo", "192.168.1.1:5000", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]/repo", "[2001:db8::1]", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo",
     "[2001:db8:1:2:3:4:5:6]", "tag", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None, None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000",
     "tag", None),
    (f"[2001:db8::1]:5000/repo@{SHA256}", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000",
     None, SHA256),
    (f"[2001:db8::1]:5000/repo:tag@{SHA256}", "[2001:db8::1]:5000/repo",
     "[2001:db8::1]:5000", "tag", SHA256),
    ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo", "[2001:db8::]:5000", None, None),
    ("[::1]:5000/repo", "[::1]:5000/repo", "[::1]:5000", None, None),
    ("example.com:8000/named", "example.com:8000/named", "example.com:8000", None, None),
    ("test-com:8080/foo", "test-com:8080/foo", "test-com:8080", None, None),
]


@pytest.mark.parametrize("text,name,domain,tag,digest", RAW_VALID, ids=[v[0][:60] for v in RAW_VALID])
def test_parse_raw_valid(text: str, name: str, domain: str, tag: str | None,
                         digest: str | None) -> None:
    ref = parse_raw(text)
    assert str(ref) == text
    assert ref.name == name
    assert ref.domain == domain
    assert ref.tag == tag
    assert ref.digest == digest
    if digest is not None:
        assert isinstance(ref.digest, Digest)


RAW_INVALID = [
    ("", "repository name must have at least one component"),
    (":justtag", INVALID),
    (f"@{SHA256}", INVALID),
    ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
    (f"validname@invaliddigest:{F64}", "unsupported digest algorithm"),
    ("Uppercase:tag", UPPER),
    ("test:5000/Uppercase/lowercase:tag", UPPER),
    # Here "a" is the domain, so the path is 257 characters; 255 would pass.
    ("a/" * 129 + "a:tag", TOO_LONG),
    ("aa/asdf$$^/aa", INVALID),
    ("[2001:db8::1]", INVALID),
    ("[2001:db8::1]:5000", INVALID),
    ("[2001:db8::1]:tag", INVALID),
    ("[fe80::1%eth0]:5000/repo", INVALID),
    ("[fe80::1%@invalidzone]:5000/repo", INVALID),
]


@pytest.mark.parametrize("text,message", RAW_INVALID, ids=[v[0][:60] for v in RAW_INVALID])
def test_parse_raw_invalid(text: str, message: str) -> None:
    assert_refused(parse_raw, text, message)


# --- reference.ParseNormalizedNamed -------------------------------------------------

# input, canonical string, familiar string, domain, path
NORMALIZED_VALID = [
    ("busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox"),
    ("busybox:latest", "docker.io/library/busybox:latest", "busybox:latest", "docker.io",
     "library/busybox"),
    ("user/app", "docker.io/user/app", "user/app", "docker.io", "user/app"),
    ("user/app:1.0", "docker.io/user/app:1.0", "user/app:1.0", "docker.io", "user/app"),
    ("fooo/bar", "docker.io/fooo/bar", "fooo/bar", "docker.io", "fooo/bar"),
    ("index.docker.io/fooo/bar", "docker.io/fooo/bar", "fooo/bar", "docker.io", "fooo/bar"),
    ("library/ubuntu", "docker.io/library/ubuntu", "ubuntu", "docker.io", "library/ubuntu"),
    ("docker.io/busybox", "docker.io/library/busybox", "busybox", "docker.io",
     "library/busybox"),
    ("docker.io/library/busybox", "docker.io/library/busybox", "busybox", "docker.io",
     "library/busybox"),
    ("index.docker.io/busybox", "docker.io/library/busybox", "busybox", "docker.io",
     "library/busybox"),
    ("index.docker.io/library/debian", "docker.io/library/debian", "debian", "docker.io",
     "library/debian"),
    ("other/library", "docker.io/other/library", "other/library", "docker.io",
     "other/library"),
    ("nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io",
     "nonlibrary/ubuntu"),
    # Only one component under library/ is an official image.
    ("library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar", "docker.io",
     "library/foo/bar"),
    ("docker.io/library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar",
     "docker.io", "library/foo/bar"),
    ("store/foo/bar", "docker.io/store/foo/bar", "store/foo/bar", "docker.io", "store/foo/bar"),
    ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base",
     "docker.io", "library/ubuntu-12.04-base"),
    ("test_com/foo", "docker.io/test_com/foo", "test_com/foo", "docker.io", "test_com/foo"),
    ("docker/migrator", "docker.io/docker/migrator", "docker/migrator", "docker.io",
     "docker/migrator"),
    ("test.com/foo", "test.com/foo", "test.com/foo", "test.com", "foo"),
    ("test.com:8080/foo", "test.com:8080/foo", "test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080/foo", "test-com:8080/foo", "test-com:8080", "foo"),
    ("xn--n3h.com/foo", "xn--n3h.com/foo", "xn--n3h.com/foo", "xn--n3h.com", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo",
     "xn--n3h.com:18080", "foo"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase",
     "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase"),
    ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian", "127.0.0.1:5000/debian",
     "127.0.0.1:5000", "debian"),
    ("example.com/privatebase", "example.com/privatebase", "example.com/privatebase",
     "example.com", "privatebase"),
    ("example.com:8000/private/moonbase", "example.com:8000/private/moonbase",
     "example.com:8000/private/moonbase", "example.com:8000", "private/moonbase"),
    ("192.168.0.1:8/debian", "192.168.0.1:8/debian", "192.168.0.1:8/debian", "192.168.0.1:8",
     "debian"),
    # localhost is a domain even without a dot or port...
    ("localhost/foo", "localhost/foo", "localhost/foo", "localhost", "foo"),
    ("localhost:5000/a/b", "localhost:5000/a/b", "localhost:5000/a/b", "localhost:5000", "a/b"),
    ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1", "localhost:5000/a/b:v1",
     "localhost:5000", "a/b"),
    # ...but a lone component never is: Docker reads these as Hub names with a tag.
    ("localhost", "docker.io/library/localhost", "localhost", "docker.io", "library/localhost"),
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000", "docker.io",
     "library/localhost"),
    ("192.168.0.1", "docker.io/library/192.168.0.1", "192.168.0.1", "docker.io",
     "library/192.168.0.1"),
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80", "docker.io",
     "library/192.168.0.1"),
    ("example.com:5000", "docker.io/library/example.com:5000", "example.com:5000", "docker.io",
     "library/example.com"),
    # IPv6 registries in brackets.
    ("[::1]:5000/foo", "[::1]:5000/foo", "[::1]:5000/foo", "[::1]:5000", "foo"),
    ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker", "[fc00::1]:5000/docker",
     "[fc00::1]:5000", "docker"),
    ("[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker",
     "[fc00::1]:5000/docker/docker", "[fc00::1]:5000", "docker/docker"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
     "[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000",
     "library/debian"),
    ("[2001:db8::1]/repo:tag", "[2001:db8::1]/repo:tag", "[2001:db8::1]/repo:tag",
     "[2001:db8::1]", "repo"),
    # An uppercase first component can only be a registry host.
    ("Foo/bar", "Foo/bar", "Foo/bar", "Foo", "bar"),
    ("FOO/bar", "FOO/bar", "FOO/bar", "FOO", "bar"),
    ("Docker/docker", "Docker/docker", "Docker/docker", "Docker", "docker"),
    ("Example.COM:5000/app", "Example.COM:5000/app", "Example.COM:5000/app",
     "Example.COM:5000", "app"),
    # 64 characters is fine when not all hex, or when a domain says it is a name.
    ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
     "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
     "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "docker.io",
     "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"),
    (f"docker.io/{HEX_ID}", f"docker.io/library/{HEX_ID}", HEX_ID, "docker.io",
     f"library/{HEX_ID}"),
    (HEX_ID[:63], f"docker.io/library/{HEX_ID[:63]}", HEX_ID[:63], "docker.io",
     f"library/{HEX_ID[:63]}"),
    # Separators: one period, one or two underscores, any number of dashes.
    ("docker-rules/docker", "docker.io/docker-rules/docker", "docker-rules/docker",
     "docker.io", "docker-rules/docker"),
    ("docker---rules/docker", "docker.io/docker---rules/docker", "docker---rules/docker",
     "docker.io", "docker---rules/docker"),
    ("dock__er/docker", "docker.io/dock__er/docker", "dock__er/docker", "docker.io",
     "dock__er/docker"),
    ("ns/a.b_c__d-e---f", "docker.io/ns/a.b_c__d-e---f", "ns/a.b_c__d-e---f", "docker.io",
     "ns/a.b_c__d-e---f"),
    ("d/docker", "docker.io/d/docker", "d/docker", "docker.io", "d/docker"),
    ("jess/t", "docker.io/jess/t", "jess/t", "docker.io", "jess/t"),
    ("a/b/c/d/e", "docker.io/a/b/c/d/e", "a/b/c/d/e", "docker.io", "a/b/c/d/e"),
    # Tags: any case, dots and dashes after the first character, up to 128.
    ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", "lowercase:Uppercase",
     "docker.io", "library/lowercase"),
    ("busybox:_x.Y-z", "docker.io/library/busybox:_x.Y-z", "busybox:_x.Y-z", "docker.io",
     "library/busybox"),
    ("busybox:" + "t" * 128, "docker.io/library/busybox:" + "t" * 128, "busybox:" + "t" * 128,
     "docker.io", "library/busybox"),
    # Digests, alone and with a tag (both kept here; parse_docker_ref drops the tag).
    (f"busybox@{BUSYBOX_DIGEST}", f"docker.io/library/busybox@{BUSYBOX_DIGEST}",
     f"busybox@{BUSYBOX_DIGEST}", "docker.io", "library/busybox"),
    (f"busybox:latest@{BUSYBOX_DIGEST}", f"docker.io/library/busybox:latest@{BUSYBOX_DIGEST}",
     f"busybox:latest@{BUSYBOX_DIGEST}", "docker.io", "library/busybox"),
    (f"dmcgowan/myapp@{SHA256}", f"docker.io/dmcgowan/myapp@{SHA256}",
     f"dmcgowan/myapp@{SHA256}", "docker.io", "dmcgowan/myapp"),
    (f"localhost:5000/app:v2@{SHA512}", f"localhost:5000/app:v2@{SHA512}",
     f"localhost:5000/app:v2@{SHA512}", "localhost:5000", "app"),
    # Docker's splitter takes this for a domain, its grammar does not (no '_' in host
    # names), so the whole thing ends up as a domain-less path.
    ("foo_bar.com/x", "foo_bar.com/x", "foo_bar.com/x", "", "foo_bar.com/x"),
    ("a.b_c/d", "a.b_c/d", "a.b_c/d", "", "a.b_c/d"),
    # Name length counts the path only: 255 is the limit, the domain comes on top.
    ("a/" * 127 + "a", "docker.io/" + "a/" * 127 + "a", "a/" * 127 + "a", "docker.io",
     "a/" * 127 + "a"),
    ("example.com/" + "a" * 255, "example.com/" + "a" * 255, "example.com/" + "a" * 255,
     "example.com", "a" * 255),
]


@pytest.mark.parametrize("text,canonical,familiar,domain,path", NORMALIZED_VALID,
                         ids=[v[0][:60] for v in NORMALIZED_VALID])
def test_parse_normalized_valid(text: str, canonical: str, familiar: str, domain: str,
                                path: str) -> None:
    ref = parse_normalized(text)
    assert str(ref) == canonical
    assert ref.familiar() == familiar
    assert ref.domain == domain
    assert ref.path == path
    assert ref.name == (f"{domain}/{path}" if domain else path)
    # Both printed forms parse back to the same reference.
    assert parse_normalized(canonical) == ref
    if familiar != HEX_ID:  # `docker.io/<64 hex>` prints as an id, which cannot be reparsed
        assert parse_normalized(familiar) == ref
    assert parse(text) == ref


NORMALIZED_INVALID = [
    ("", INVALID),
    (":justtag", INVALID),
    (f"@{SHA256}", INVALID),
    ("https://github.com/docker/docker", INVALID),
    ("-docker", INVALID),
    ("-docker/docker", INVALID),
    ("-docker.io/docker/docker", INVALID),
    ("docker-/docker", INVALID),
    ("-docker-/docker", INVALID),
    ("____/____", INVALID),
    ("_docker/_docker", INVALID),
    ("dock..er/docker", INVALID),
    ("dock_.er/docker", INVALID),
    ("dock-.er/docker", INVALID),
    ("dock___er/docker", INVALID),
    ("docker///docker", INVALID),
    ("docker.io/docker///docker", INVALID),
    ("a//b", INVALID),
    ("docker/", INVALID),
    ("foo-", INVALID),
    ("foo.", INVALID),
    ("foo_", INVALID),
    ("/foo", INVALID),
    ("busybox ", INVALID),
    # Python's `$` would accept this newline; Docker's does not.
    ("busybox\n", INVALID),
    ("busybox:latest\n", INVALID),
    ("büsybox", INVALID),
    ("[fc00::1]", INVALID),
    ("[fc00::1]:5000", INVALID),
    ("fc00::1:5000/debian", INVALID),
    ("[fe80::1%eth0]:5000/debian", INVALID),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", INVALID),
    ("example.com:port/app", INVALID),
    ("-example.com/app", INVALID),
    # Repository names must be lowercase; the message quotes the normalised remote.
    ("Busybox", upper_repo("library/Busybox")),
    ("Busybox:Latest", upper_repo("library/Busybox")),
    ("docker/Docker", upper_repo("docker/Docker")),
    ("docker.io/docker/Docker", upper_repo("docker/Docker")),
    ("docker.io/Foo", upper_repo("library/Foo")),
    ("localhost:5000/Foo", upper_repo("Foo")),
    ("example.com/App:v1", upper_repo("App")),
    # Docker cuts at the first ':' even when it belongs to the digest.
    (f"busybox@SHA256:{F64}", upper_repo("library/busybox@SHA256")),
    # The first component is taken as a host for its capital, then fails the host
    # grammar; the lowercased retry then succeeds, so it is a case error after all.
    ("Foo_bar/x", UPPER),
    # Go lowercases these to ASCII, so they count as case errors, not format errors.
    ("busybox:\u0130", UPPER),
    ("busybox:\u212a", UPPER),
    # A bare 64-hex string is an image id, never a name.
    (HEX_ID, f"invalid repository name ({HEX_ID}), cannot specify 64-byte hexadecimal strings"),
    (F64, f"invalid repository name ({F64}), cannot specify 64-byte hexadecimal strings"),
    # Tags.
    ("busybox:" + "t" * 129, INVALID),
    ("busybox:-tag", INVALID),
    ("busybox:.tag", INVALID),
    ("busybox:ta/g", INVALID),
    ("busybox:tag:tag", INVALID),
    ("busybox:", INVALID),
    ("busybox:t@g", INVALID),
    # Digests: the grammar first (32+ hex), then go-digest's checks.
    ("busybox@", INVALID),
    ("busybox@sha256:abc", INVALID),
    ("busybox@sha256", INVALID),
    ("busybox@sha256:" + "g" * 64, INVALID),
    ("busybox@256:" + F64, INVALID),
    ("busybox@sha256:" + "f" * 63, "invalid checksum digest length"),
    ("busybox@sha256:" + "f" * 65, "invalid checksum digest length"),
    ("busybox@sha512:" + F64, "invalid checksum digest length"),
    ("busybox@sha256:" + "F" * 64, "invalid checksum digest format"),
    (f"busybox:tag@SHA256:{F64}", "invalid checksum digest format"),
    ("busybox@md5:" + "f" * 32, "unsupported digest algorithm"),
    ("busybox@sha256+b64:" + F64, "unsupported digest algorithm"),
    # Docker accepts sha384; Dockyard's Digest does not model it, so it is refused.
    ("busybox@sha384:" + "f" * 96, "unsupported digest algorithm"),
    # Length.
    ("a/" * 128 + "a", TOO_LONG),
    ("a/" * 128 + "a:tag", TOO_LONG),
    ("example.com/" + "a" * 256, TOO_LONG),
    ("this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_"
     "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_"
     "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_"
     "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker", TOO_LONG),
]


@pytest.mark.parametrize("text,message", NORMALIZED_INVALID,
                         ids=[repr(v[0][:60]) for v in NORMALIZED_INVALID])
def test_parse_normalized_invalid(text: str, message: str) -> None:
    assert_refused(parse_normalized, text, message)
    assert_refused(parse_docker_ref, text, message)


# --- reference.ParseDockerRef -------------------------------------------------------

DOCKER_REF = [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest", "localhost:5000/a/b:latest"),
    (f"busybox@{BUSYBOX_DIGEST}", f"docker.io/library/busybox@{BUSYBOX_DIGEST}",
     f"busybox@{BUSYBOX_DIGEST}"),
    # Tag and digest: the digest wins, the tag is dropped.
    (f"docker.io/library/busybox:latest@{BUSYBOX_DIGEST}",
     f"docker.io/library/busybox@{BUSYBOX_DIGEST}", f"busybox@{BUSYBOX_DIGEST}"),
    (f"[::1]:5000/foo:v1@{SHA256}", f"[::1]:5000/foo@{SHA256}", f"[::1]:5000/foo@{SHA256}"),
]


@pytest.mark.parametrize("text,canonical,familiar", DOCKER_REF, ids=[v[0][:60] for v in DOCKER_REF])
def test_parse_docker_ref(text: str, canonical: str, familiar: str) -> None:
    ref = parse_docker_ref(text)
    assert str(ref) == canonical
    assert ref.familiar() == familiar
    assert (ref.tag is None) != (ref.digest is None)
    assert parse_docker_ref(canonical) == ref


def test_parse_keeps_both_tag_and_digest() -> None:
    ref = parse(f"busybox:latest@{BUSYBOX_DIGEST}")
    assert ref.tag == "latest"
    assert ref.digest == BUSYBOX_DIGEST
    assert ref.docker_ref() == parse(f"busybox@{BUSYBOX_DIGEST}")


# --- building references ------------------------------------------------------------

def test_reference_parts() -> None:
    ref = parse("localhost:5000/team/app:v1")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("localhost:5000", "team/app", "v1", None)
    assert ref.name == "localhost:5000/team/app"
    assert ref.familiar_name == "localhost:5000/team/app"
    assert ref.repository == Reference("localhost:5000", "team/app")
    assert str(ref.repository) == "localhost:5000/team/app"
    assert not ref.is_name_only and ref.repository.is_name_only
    hub = parse("busybox:1")
    assert hub.familiar_name == "busybox"
    assert hub.repository.familiar() == "busybox"
    # Hashable and comparable, so usable as dict keys.
    assert {parse("busybox"): 1}[parse("docker.io/library/busybox")] == 1


def test_with_tag() -> None:
    ref = parse("busybox")
    assert str(ref.with_tag("1.36")) == "docker.io/library/busybox:1.36"
    assert str(ref.with_tag("TAG5")) == "docker.io/library/busybox:TAG5"
    assert ref.with_tag("x").with_tag("y").tag == "y"
    # A digest stays, as reference.WithTag keeps it on a canonical reference.
    digested = parse(f"test.com:8000/foo@{SHA256}")
    assert str(digested.with_tag("TAG5")) == f"test.com:8000/foo:TAG5@{SHA256}"
    for bad in ("-foo", ".foo", "", "a" * 129, "a/b", "a:b", "tag\n", "t\u0130"):
        with pytest.raises(InvalidArgument) as info:
            ref.with_tag(bad)
        assert str(info.value) == "invalid tag format"


def test_with_digest() -> None:
    ref = parse("test.com/foo:tag")
    assert str(ref.with_digest(SHA256)) == f"test.com/foo:tag@{SHA256}"
    assert isinstance(ref.with_digest(SHA256).digest, Digest)
    assert ref.with_digest(Digest(SHA512)).digest == SHA512
    assert str(parse("foo").with_digest(SHA256)) == f"docker.io/library/foo@{SHA256}"
    for bad in ("foo", "sha256:abc", "sha256:" + F64 + "\n", ":" + F64):
        with pytest.raises(InvalidArgument) as info:
            ref.with_digest(bad)
        assert str(info.value) == "invalid digest format"
    with pytest.raises(InvalidArgument) as info:
        ref.with_digest("sha256:" + "f" * 40)
    assert str(info.value) == "invalid checksum digest length"


def test_with_default_tag() -> None:
    assert str(parse("busybox").with_default_tag()) == "docker.io/library/busybox:latest"
    assert parse("busybox:1").with_default_tag().tag == "1"
    digested = parse(f"busybox@{SHA256}")
    assert digested.with_default_tag() == digested


WITH_NAME = [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "", "test_com/foo"),
    ("test:8080/foo", "test:8080", "foo"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ("foo", "", "foo"),
]


@pytest.mark.parametrize("text,domain,path", WITH_NAME, ids=[v[0] for v in WITH_NAME])
def test_with_name(text: str, domain: str, path: str) -> None:
    ref = with_name(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, None, None)


@pytest.mark.parametrize("text,message", [
    ("", INVALID),
    (":justtag", INVALID),
    (f"@{SHA256}", INVALID),
    (f"validname@invaliddigest:{F64}", INVALID),
    ("name:tag", INVALID),
    ("aa/asdf$$^/aa", INVALID),
    ("a/" * 129 + "a", TOO_LONG),
])
def test_with_name_invalid(text: str, message: str) -> None:
    assert_refused(with_name, text, message)


def test_parse_canonical() -> None:
    assert parse_canonical("docker.io/library/busybox:latest") == parse("busybox:latest")
    assert parse_canonical("localhost:5000/a") == parse("localhost:5000/a")
    for familiar in ("busybox", "user/app", "docker.io/busybox", "index.docker.io/library/x"):
        assert_refused(parse_canonical, familiar, "repository name must be canonical")
    assert_refused(parse_canonical, "Busybox", upper_repo("library/Busybox"))


# --- CLI and API helpers ------------------------------------------------------------

@pytest.mark.parametrize("text,repo,tag", [
    ("busybox", "busybox", "latest"),
    ("busybox:1.36", "busybox", "1.36"),
    ("docker.io/library/busybox:x", "busybox", "x"),
    ("user/app", "user/app", "latest"),
    ("localhost:5000/a/b:v1", "localhost:5000/a/b", "v1"),
    ("[::1]:5000/foo", "[::1]:5000/foo", "latest"),
])
def test_split_repo_tag(text: str, repo: str, tag: str) -> None:
    assert split_repo_tag(text) == (repo, tag)


def test_split_repo_tag_refuses() -> None:
    assert_refused(split_repo_tag, f"busybox@{SHA256}",
                   "refusing to create a tag with a digest reference")
    assert_refused(split_repo_tag, f"busybox:1@{SHA256}",
                   "refusing to create a tag with a digest reference")
    assert_refused(split_repo_tag, "Busybox", upper_repo("library/Busybox"))


def test_repo_tag_reference() -> None:
    assert repo_tag_reference("") is None
    assert repo_tag_reference("", "v1") is None
    assert str(repo_tag_reference("busybox")) == "docker.io/library/busybox:latest"
    assert str(repo_tag_reference("busybox", "v1")) == "docker.io/library/busybox:v1"
    # The separate tag value replaces one written into the repo value.
    assert str(repo_tag_reference("busybox:1", "2")) == "docker.io/library/busybox:2"
    assert str(repo_tag_reference("busybox:1")) == "docker.io/library/busybox:1"
    with pytest.raises(InvalidArgument) as info:
        repo_tag_reference("busybox", "-x")
    assert str(info.value) == "invalid tag format"
    with pytest.raises(InvalidArgument) as info:
        repo_tag_reference(f"busybox@{SHA256}")
    assert str(info.value) == "cannot import digest reference"


# --- non-functional -----------------------------------------------------------------

def test_import_compiles_nothing() -> None:
    # The module sits on the API import path; its grammar is compiled on first use.
    code = ("import dockyard.image.reference as r; "
            "print(r._patterns.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "0"


@pytest.mark.parametrize("text", [
    "a" * 100_000 + "!",
    "a-" * 50_000 + "!",
    "a." * 50_000 + "/b!",
    "a/" * 50_000 + "A",
    "[" + ":" * 100_000,
    "a:" + "1" * 100_000 + "/b!",
])
def test_hostile_input_is_fast(text: str) -> None:
    # A backtracking engine must not go superlinear on long near-misses.
    start = time.monotonic()
    with pytest.raises(InvalidArgument):
        parse(text)
    assert time.monotonic() - start < 2.0
