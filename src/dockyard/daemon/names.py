"""Container names as dockerd handles them: the validity rule and the random names.

A name is stored and compared in its canonical form, with a leading "/" (Docker's
names live in a tree where links appear as "/parent/alias"); users may give it with
or without the slash. Validity is checked on the name without its slash, with the
same pattern dockerd uses for container and volume names.

Random names follow Docker's namesgenerator: "adjective_surname" from two word
lists, the first try bare and later tries with one random digit appended, six
tries in all, then the container's short id (dockerd's generateAndReserveName).
The word lists here are our own; the rule that "boring_wozniak" is never produced
is Docker's, kept because Steve Wozniak is not boring.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from dockyard.errors import InvalidArgument

__all__ = ["LEFT", "RESTRICTED_NAME_CHARS", "RIGHT", "canonical_name", "generate_name",
           "is_valid_name", "random_name", "validate_name"]

RESTRICTED_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
# fullmatch, not Python's "$": Go's "$" never matches before a trailing newline.
_RESTRICTED_NAME = re.compile(RESTRICTED_NAME_CHARS + "+")

# dockerd tries six generated names (the first bare, then with a digit) before it
# falls back to the short id.
GENERATE_TRIES = 6


def is_valid_name(name: str) -> bool:
    """NAME (with or without its leading "/") satisfies Docker's name pattern."""
    return _RESTRICTED_NAME.fullmatch(name.removeprefix("/")) is not None


def validate_name(name: str) -> str:
    """NAME in canonical form ("/name"); InvalidArgument in dockerd's words when the
    name is not allowed. The message quotes NAME as given, as dockerd does."""
    if not is_valid_name(name):
        raise InvalidArgument(
            f"Invalid container name ({name}), only {RESTRICTED_NAME_CHARS} are allowed")
    return canonical_name(name)


def canonical_name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


# ~100 adjectives. Lowercase ASCII only: every pairing must be a valid name.
LEFT: tuple[str, ...] = (
    "admiring", "affable", "agile", "amazing", "amiable", "ardent", "artful", "astute",
    "awesome", "blissful", "bold", "boring", "brave", "breezy", "bright", "brisk",
    "busy", "calm", "candid", "careful", "charming", "cheerful", "clever", "cosmic",
    "courteous", "crafty", "curious", "daring", "dapper", "dazzling", "decisive",
    "devoted", "diligent", "dreamy", "eager", "earnest", "ecstatic", "elated",
    "elegant", "eloquent", "epic", "exuberant", "fearless", "festive", "fervent",
    "focused", "friendly", "frosty", "gallant", "generous", "gentle", "gifted",
    "gleeful", "goofy", "gracious", "happy", "hardy", "hopeful", "humble", "hungry",
    "inspired", "intrepid", "jaunty", "jolly", "jovial", "keen", "kind", "laughing",
    "lively", "loyal", "lucid", "lucky", "magical", "mellow", "merry", "modest",
    "musing", "nifty", "nimble", "noble", "optimistic", "patient", "peaceful",
    "pensive", "plucky", "polite", "practical", "quiet", "quirky", "radiant",
    "relaxed", "resolute", "serene", "sharp", "sleepy", "spirited", "steady", "stoic",
    "sunny", "tender", "thoughtful", "tidy", "upbeat", "valiant", "vibrant",
    "vigilant", "whimsical", "witty", "youthful", "zealous", "zen", "zesty",
)

# ~200 surnames of notable scientists, mathematicians, engineers and inventors.
RIGHT: tuple[str, ...] = (
    "agnesi", "alhazen", "allen", "almeida", "ampere", "anning", "archimedes",
    "aristarchus", "arrhenius", "aryabhata", "avogadro", "babbage", "backus", "banach",
    "bardeen", "barton", "bassi", "bell", "bernoulli", "bessel", "bhabha", "blackwell",
    "bohr", "boltzmann", "boole", "borg", "bose", "boyle", "bragg", "brahe", "brattain",
    "brown", "burnell", "cannon", "cantor", "cardano", "carson", "carver", "cauchy",
    "cavendish", "cerf", "chadwick", "chandrasekhar", "chebyshev", "clarke", "cohen",
    "conway", "copernicus", "coulomb", "cray", "curie", "darwin", "dedekind", "diffie",
    "dijkstra", "dirac", "doppler", "edison", "ehrlich", "einstein", "elion", "engelbart",
    "euclid", "euler", "faraday", "fermat", "fermi", "feynman", "fibonacci", "fleming",
    "fourier", "franklin", "fresnel", "galileo", "galois", "gauss", "germain", "gibbs",
    "godel", "goodall", "gosling", "gould", "hamilton", "hawking", "heisenberg",
    "hellman", "hertz", "hilbert", "hodgkin", "hofstadter", "hollerith", "hooke",
    "hopper", "hoover", "hubble", "humboldt", "huygens", "hypatia", "jackson", "jang",
    "jemison", "jennings", "johnson", "joliot", "joule", "kalam", "kapitsa", "kare",
    "kelvin", "kepler", "khorana", "kilby", "kirch", "knuth", "kolmogorov",
    "kovalevskaya", "lagrange", "lamarr", "lamport", "laplace", "lavoisier", "leakey",
    "leavitt", "lederberg", "leibniz", "lemaitre", "liskov", "lorentz", "lovelace",
    "lumiere", "mayer", "mccarthy", "mcclintock", "meitner", "mendel", "mendeleev",
    "merkle", "michelson", "minsky", "mirzakhani", "moore", "morse", "moser", "napier",
    "nash", "neumann", "newton", "nightingale", "nobel", "noether", "noyce", "ohm",
    "oppenheimer", "pascal", "pasteur", "pauli", "pauling", "payne", "perlman",
    "planck", "poincare", "ptolemy", "pythagoras", "raman", "ramanujan", "ride",
    "riemann", "ritchie", "roentgen", "rosalind", "rutherford", "sagan", "salk",
    "sammet", "sanger", "schrodinger", "shannon", "shockley", "sinoussi", "snyder",
    "somerville", "stallman", "stonebraker", "sutherland", "swanson", "tesla", "thompson",
    "torvalds", "turing", "vaughan", "volta", "wallace", "watt", "wescoff", "wiles",
    "williams", "wilson", "wing", "wozniak", "wright", "wu", "yalow", "yonath",
    "zhukovsky", "zuse",
)

_NOT_BORING = "boring_wozniak"  # Steve Wozniak is not boring (Docker's rule)


def random_name(retry: int = 0, rng: random.Random | None = None) -> str:
    """One "adjective_surname" (no slash); from the second try on (RETRY > 0) a
    random digit is appended, as Docker's GetRandomName does, so that a crowded
    host still finds a free name quickly."""
    r = rng or random
    while True:
        name = f"{r.choice(LEFT)}_{r.choice(RIGHT)}"
        if name != _NOT_BORING:
            break
    if retry > 0:
        name += str(r.randrange(10))
    return name


def generate_name(taken: Callable[[str], bool], container_id: str,
                  rng: random.Random | None = None) -> str:
    """A free canonical name ("/adjective_surname"): TAKEN(name) says whether a
    canonical name is in use. After GENERATE_TRIES collisions, "/" + the short id,
    as dockerd does (ids are unique, so that one is free)."""
    for i in range(GENERATE_TRIES):
        name = "/" + random_name(i, rng)
        if not taken(name):
            return name
    return "/" + container_id[:12]
