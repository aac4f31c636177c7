"""Image references (`busybox`, `user/app:1.0`, `host:5000/a/b@sha256:...`), parsed and
normalised the way Docker does it.

Docker's behaviour is defined by the `github.com/distribution/reference` Go package
(v0.6, as vendored by dockerd and the docker CLI) together with
`github.com/opencontainers/go-digest` v1.0.0 for the digest part. This module follows
both, error texts included, because users and scripts match on those texts.

Grammar (from distribution/reference):

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] remote-name
    domain           := host [':' port-number]
    host             := domain-name | IPv4address | \\[ IPv6address \\]
    domain-name      := domain-component ['.' domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path-component   := alpha-numeric [separator alpha-numeric]*
    remote-name      := path-component ['/' path-component]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" hex      (hex at least 32 characters)

Three entry points mirror the Go ones:

* `parse_raw`        ~ reference.Parse: no normalisation, the domain may be "".
* `parse_normalized` ~ reference.ParseNormalizedNamed: `busybox` -> docker.io/library/busybox.
* `parse_docker_ref` ~ reference.ParseDockerRef: normalised, then `:latest` when there is
  neither tag nor digest, and the tag dropped when there are both.

`parse` is `parse_normalized`, the one nearly every caller wants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache

from dockyard.errors import InvalidArgument
from dockyard.image.digest import ALGORITHMS, Digest

DEFAULT_DOMAIN = "docker.io"
# The Docker Hub's historical name; still accepted and rewritten to DEFAULT_DOMAIN.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
# Docker limits the path (remote name) only; the domain does not count.
NAME_TOTAL_LENGTH_MAX = 255

# Docker's error texts, verbatim (distribution/reference and go-digest v1.0.0).
ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
ERR_TAG_INVALID_FORMAT = "invalid tag format"
ERR_DIGEST_INVALID_FORMAT = "invalid digest format"
ERR_NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
ERR_NAME_NOT_CANONICAL = "repository name must be canonical"
ERR_CHECKSUM_FORMAT = "invalid checksum digest format"
ERR_CHECKSUM_LENGTH = "invalid checksum digest length"
ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"


class _Patterns:
    """The compiled grammar. Built on first use so importing this module stays cheap.

    The sub-expressions are Docker's, translated with care for the ways Python's `re`
    differs from Go's: `\\w` and `\\d` are Unicode-aware in Python (Docker's are ASCII),
    so explicit ASCII classes are used; and `$` accepts a trailing newline in Python, so
    every match is a `fullmatch`. Both engines pick submatches leftmost-first, so the
    optional domain group is tried before the path-only reading, exactly as in Go.
    """

    def __init__(self) -> None:
        alnum = r"[a-z0-9]+"
        separator = r"(?:[._]|__|[-]+)"
        path_component = f"{alnum}(?:{separator}{alnum})*"
        remote_name = f"{path_component}(?:/{path_component})*"
        domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
        domain_name = rf"{domain_component}(?:\.{domain_component})*"
        # Brackets only, no zone ids, no embedded IPv4: deliberately narrower than RFC 3986.
        ipv6 = r"\[(?:[a-fA-F0-9:]+)\]"
        domain = f"(?:{domain_name}|{ipv6})(?::[0-9]+)?"
        tag = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}"
        digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
        name = f"(?:{domain}/)?{remote_name}"

        self.reference = re.compile(f"({name})(?::({tag}))?(?:@({digest}))?")
        self.name = re.compile(f"(?:({domain})/)?({remote_name})")
        self.tag = re.compile(tag)
        self.digest = re.compile(digest)
        self.identifier = re.compile(r"[a-f0-9]{64}")
        # go-digest's own, looser, digest syntax; it only decides which of two errors an
        # unknown algorithm gets.
        self.go_digest = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


@cache
def _patterns() -> _Patterns:
    return _Patterns()


def _go_lower(text: str) -> str:
    """strings.ToLower as Go does it, where it matters for which error is reported.

    Go lowercases rune by rune with simple case mapping; Python's full mapping turns
    U+0130 into two characters where Go yields a plain `i`. Every other difference
    produces non-ASCII on both sides, which the grammar rejects either way.
    """
    return text.replace("\u0130", "i").lower()


@dataclass(frozen=True)
class Reference:
    """A named image reference: `domain/path[:tag][@digest]`.

    `domain` is "" only for references from `parse_raw` that have no domain part (and
    for the rare normalised names whose first component looks like a domain to Docker's
    splitter but not to its grammar, e.g. `foo_bar.com/x`). Build instances with the
    parse functions or the `with_*` methods; the constructor does not validate.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The repository name, `domain/path` (reference.Named.Name)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def repository(self) -> Reference:
        """The name alone, tag and digest dropped (reference.TrimNamed)."""
        return Reference(self.domain, self.path)

    @property
    def familiar_name(self) -> str:
        """The name as docker shows it: `busybox`, `user/app`, `localhost:5000/a/b`."""
        domain, path = self.domain, self.path
        if domain == DEFAULT_DOMAIN:
            domain = ""
            # Only a single component under library/ is an official image; Docker keeps
            # `library/foo/bar` as it is.
            if path.startswith(OFFICIAL_REPO_PREFIX):
                rest = path[len(OFFICIAL_REPO_PREFIX):]
                if "/" not in rest:
                    path = rest
        return f"{domain}/{path}" if domain else path

    def _suffix(self) -> str:
        out = ""
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        """The canonical form, e.g. `docker.io/library/busybox:latest`."""
        return self.name + self._suffix()

    def familiar(self) -> str:
        """What docker shows, e.g. `busybox:latest` (reference.FamiliarString)."""
        return self.familiar_name + self._suffix()

    @property
    def is_name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def with_tag(self, tag: str) -> Reference:
        """This reference with TAG; a digest is kept, as reference.WithTag does."""
        if not _patterns().tag.fullmatch(tag):
            raise InvalidArgument(ERR_TAG_INVALID_FORMAT)
        return replace(self, tag=tag)

    def with_digest(self, digest: str | Digest) -> Reference:
        """This reference with DIGEST; a tag is kept, as reference.WithDigest does."""
        if not isinstance(digest, Digest):
            if not _patterns().digest.fullmatch(digest):
                raise InvalidArgument(ERR_DIGEST_INVALID_FORMAT)
            digest = _validate_digest(digest)
        return replace(self, digest=digest)

    def with_default_tag(self) -> Reference:
        """`:latest` added when there is neither tag nor digest (reference.TagNameOnly)."""
        return replace(self, tag=DEFAULT_TAG) if self.is_name_only else self

    def docker_ref(self) -> Reference:
        """Either tagged or digested, never both nor neither (as ParseDockerRef returns)."""
        if self.tag is not None and self.digest is not None:
            return replace(self, tag=None)
        return self.with_default_tag()


def _validate_digest(text: str) -> Digest:
    """Validate a digest that already fits the reference grammar, as go-digest v1.0.0
    does (its errors are what Docker reports), and return it as a Digest.

    Docker also accepts sha384, which Dockyard's Digest does not model; it is reported
    as unsupported rather than accepted and mishandled later.
    """
    algorithm, _, encoded = text.partition(":")
    size = ALGORITHMS.get(algorithm)
    if size is None:
        if not _patterns().go_digest.fullmatch(text):
            raise InvalidArgument(ERR_CHECKSUM_FORMAT)
        raise InvalidArgument(ERR_DIGEST_UNSUPPORTED)
    if len(encoded) != size:
        raise InvalidArgument(ERR_CHECKSUM_LENGTH)
    if encoded.lower() != encoded:
        # The grammar let uppercase hex through; go-digest wants lowercase.
        raise InvalidArgument(ERR_CHECKSUM_FORMAT)
    return Digest(text)


def parse_raw(text: str) -> Reference:
    """Parse TEXT without normalisation (reference.Parse).

    `busybox` stays `busybox` with domain "", and a first component that fits the
    domain grammar is the domain even without a dot (`a/b` has domain `a`).
    """
    if text == "":
        raise InvalidArgument(ERR_NAME_EMPTY)
    pats = _patterns()
    match = pats.reference.fullmatch(text)
    if match is None:
        lowered = _go_lower(text)
        if lowered != text and pats.reference.fullmatch(lowered):
            raise InvalidArgument(ERR_NAME_CONTAINS_UPPERCASE)
        raise InvalidArgument(ERR_REFERENCE_INVALID_FORMAT)
    name, tag, digest = match.groups()
    # The name is split again on its own, so that domain and path come out as Docker's
    # anchored name expression sees them.
    name_match = pats.name.fullmatch(name)
    if name_match is not None:
        domain, path = name_match.group(1) or "", name_match.group(2)
    else:  # not reachable for a name the reference grammar accepted; Docker's fallback
        domain, path = "", name
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(ERR_NAME_TOO_LONG)
    return Reference(domain, path, tag, _validate_digest(digest) if digest else None)


def _split_docker_domain(text: str) -> tuple[str, str]:
    """Split TEXT into domain and remainder the way Docker decides what is a registry.

    The first component is a domain when it is `localhost`, contains `.` or `:`, or has
    an uppercase letter (repository paths cannot, so it must be a host name). Docker
    Hub names get the `library/` namespace when they have a single component.
    """
    first, slash, rest = text.partition("/")
    if not slash:
        # A lone component is always a Hub official image, even `localhost` or
        # `example.com` (Docker keeps this quirk: `example.com:5000` is name + tag).
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + text
    if first == LOCALHOST:
        domain, remainder = first, rest
    elif first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif "." in first or ":" in first or _go_lower(first) != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, text
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized(text: str) -> Reference:
    """Parse a reference as the docker CLI and API accept it (ParseNormalizedNamed).

    `busybox` -> `docker.io/library/busybox`, `user/app` -> `docker.io/user/app`,
    `index.docker.io/x` -> `docker.io/library/x`. Tag and digest are kept as given.
    """
    if _patterns().identifier.fullmatch(text):
        # A bare image id is never a name, so that `docker run <id>` cannot be shadowed
        # by a repository named like an id.
        raise InvalidArgument(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    # Docker checks case on everything before the first ':' of the remainder. With a
    # digest and no tag that takes in part of the digest too; kept for identical errors.
    remote = remainder.partition(":")[0]
    if _go_lower(remote) != remote:
        raise InvalidArgument(
            f"{ERR_REFERENCE_INVALID_FORMAT}: repository name ({remote}) must be lowercase")
    return parse_raw(f"{domain}/{remainder}")


parse = parse_normalized


def parse_docker_ref(text: str) -> Reference:
    """Parse and normalise TEXT, then make it either tagged or digested (ParseDockerRef):
    `busybox` -> `docker.io/library/busybox:latest`; `a:t@sha256:...` -> `a@sha256:...`.
    """
    return parse_normalized(text).docker_ref()


def parse_canonical(text: str) -> Reference:
    """Accept TEXT only if it is already in canonical form (reference.ParseNamed)."""
    ref = parse_normalized(text)
    if str(ref) != text:
        raise InvalidArgument(ERR_NAME_NOT_CANONICAL)
    return ref


def with_name(name: str) -> Reference:
    """A name-only reference from an un-normalised name (reference.WithName)."""
    match = _patterns().name.fullmatch(name)
    if match is None:
        raise InvalidArgument(ERR_REFERENCE_INVALID_FORMAT)
    if len(match.group(2)) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(ERR_NAME_TOO_LONG)
    return Reference(match.group(1) or "", match.group(2))


def split_repo_tag(text: str) -> tuple[str, str]:
    """Split a docker CLI `NAME[:TAG]` argument (commit, tag, import) into the `repo` and
    `tag` values the CLI sends to the API: familiar name, tag defaulting to `latest`.

    A digest is refused with the CLI's message, as tags cannot be created from one.
    """
    ref = parse_normalized(text)
    if ref.digest is not None:
        raise InvalidArgument("refusing to create a tag with a digest reference")
    return ref.familiar_name, ref.tag if ref.tag is not None else DEFAULT_TAG


def repo_tag_reference(repo: str, tag: str = "") -> Reference | None:
    """The reference named by the API's `repo` and `tag` form values (dockerd's
    httputils.RepoTagReference, used by commit, import and image tag).

    None when REPO is empty; TAG, when given, replaces any tag in REPO; the result is
    always tagged.
    """
    if repo == "":
        return None
    ref = parse_normalized(repo)
    if ref.digest is not None:
        raise InvalidArgument("cannot import digest reference")
    if tag:
        return ref.with_tag(tag)
    return ref.with_default_tag()
