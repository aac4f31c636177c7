"""Content digests (`sha256:<hex>`, `sha512:<hex>`) as the OCI image spec defines them."""

from __future__ import annotations

import hashlib

from dockyard.errors import InvalidArgument

# algorithm -> length of its hex encoding
ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = frozenset("0123456789abcdef")


class Digest(str):
    """A validated digest string; `algorithm` and `hex` are its two halves."""

    __slots__ = ()

    def __new__(cls, text: str) -> "Digest":
        algorithm, sep, hexpart = text.partition(":")
        if not sep or not algorithm or not hexpart:
            raise InvalidArgument(f"invalid digest {text!r}: expected algorithm:hex")
        if algorithm not in ALGORITHMS:
            if algorithm.isalnum() and algorithm.islower():
                raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} in {text!r}")
            raise InvalidArgument(f"invalid digest {text!r}: bad algorithm")
        if len(hexpart) != ALGORITHMS[algorithm] or not set(hexpart) <= _HEX:
            raise InvalidArgument(f"invalid digest {text!r}: {algorithm} needs "
                                  f"{ALGORITHMS[algorithm]} lowercase hex characters")
        return super().__new__(cls, text)

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.partition(":")[2]

    @property
    def short(self) -> str:
        """The first 12 hex characters, as Docker shows ids."""
        return self.hex[:12]

    def hasher(self) -> "hashlib._Hash":
        return hashlib.new(self.algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> "Digest":
        return cls(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")

    @classmethod
    def from_hasher(cls, h: "hashlib._Hash") -> "Digest":
        return cls(f"{h.name}:{h.hexdigest()}")
