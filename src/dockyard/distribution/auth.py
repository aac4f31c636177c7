"""Authentication for the registry server: htpasswd basic auth and Docker-style token auth.

Two schemes, as the reference registry (distribution) offers them:

* `BasicAuth`: every request carries `Authorization: Basic`, checked against an htpasswd
  file. An authenticated user may do everything; anyone else gets 401 with
  `WWW-Authenticate: Basic realm="..."`.
* `TokenAuth`: the registry answers 401 with a `Bearer realm="...",service="...",scope="..."`
  challenge; the client fetches a JWT from the realm (the built-in token endpoint, which
  checks the user against htpasswd and grants scopes by a policy) and retries with
  `Authorization: Bearer <jwt>`. This is the Docker Hub flow that docker, skopeo,
  containerd and crane all speak.

Tokens are signed with HS256 (a shared secret, the standard library's hmac) or, when the
`cryptography` package is importable and the key is an EC P-256 PEM, with ES256.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from aiohttp import web

from dockyard.errors import InvalidArgument, Unsupported

log = logging.getLogger(__name__)

# Actions a repository scope may ask for; "*" is what distribution's token server
# grants for "everything", and what catalog scopes use.
REPOSITORY_ACTIONS = frozenset({"pull", "push", "delete", "*"})
TOKEN_LIFETIME = 300  # seconds; docker and skopeo fetch a new one when it runs out


@dataclass(frozen=True)
class Access:
    """One resource scope: `repository:library/busybox:pull,push`."""

    type: str
    name: str
    actions: frozenset[str]

    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scope(text: str) -> list[Access]:
    """Parse a space-separated list of scopes as sent to a token endpoint.

    The name may itself contain ':' (`repository:localhost:5000/x:pull`), so the type
    ends at the first colon and the actions start after the last one.
    """
    accesses: list[Access] = []
    for item in text.split():
        rtype, sep1, rest = item.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep1 and sep2 and rtype and name):
            raise InvalidArgument(f"invalid scope {item!r}")
        # A resource class ("repository(plugin)") does not change what is accessed.
        rtype = rtype.split("(", 1)[0]
        acts = frozenset(a for a in actions.split(",") if a)
        accesses.append(Access(rtype, name, acts))
    return accesses


def _allowed(granted: Iterable[Access], wanted: Access) -> bool:
    for g in granted:
        if g.type == wanted.type and g.name == wanted.name:
            if "*" in g.actions or wanted.actions <= g.actions:
                return True
    return False


# --------------------------------------------------------------------------- htpasswd

def _verify_bcrypt(password: bytes, hashed: str) -> bool:
    try:
        import bcrypt  # type: ignore[import-not-found]
    except ImportError:
        bcrypt = None
    if bcrypt is not None:
        try:
            return bool(bcrypt.checkpw(password, hashed.encode()))
        except ValueError:
            return False
    return _verify_crypt(password, hashed)


def _verify_crypt(password: bytes, hashed: str) -> bool:
    # Without the bcrypt package, libcrypt does the work: glibc's libxcrypt (Debian,
    # Fedora) knows $2a$/$2b$/$2y$ as well as $5$/$6$. The module is gone in 3.13.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # type: ignore[import-not-found]
    except ImportError:
        log.error("htpasswd: cannot verify %s... hashes: install the 'bcrypt' package",
                  hashed[:4])
        return False
    try:
        result = crypt.crypt(password.decode("utf-8", "surrogateescape"), hashed)
    except (OSError, ValueError):
        return False
    return result is not None and hmac.compare_digest(result, hashed)


class Htpasswd:
    """An htpasswd file, as `htpasswd -B` writes it and distribution reads it.

    Accepts bcrypt (`$2y$`, the only kind distribution accepts), `{SHA}` and, where the
    C library can, `$5$`/`$6$`. The file is re-read when its mtime changes, so users can
    be added without a restart.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        # bcrypt costs tens of milliseconds per check and clients send credentials on
        # every request; remember good pairs under a per-process HMAC, never in clear.
        self._cache_key = os.urandom(32)
        self._good: dict[bytes, str] = {}
        self._load()

    def _load(self) -> None:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        entries: dict[str, str] = {}
        for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                log.warning("%s:%d: not user:hash, ignored", self.path, lineno)
                continue
            entries[user] = hashed
        self._entries, self._stamp, self._good = entries, stamp, {}

    def _check(self, hashed: str, password: bytes) -> bool:
        if hashed.startswith(("$2a$", "$2b$", "$2y$", "$2x$")):
            return _verify_bcrypt(password, hashed)
        if hashed.startswith("{SHA}"):
            want = base64.b64encode(hashlib.sha1(password).digest()).decode()
            return hmac.compare_digest(want, hashed[5:])
        if hashed.startswith(("$5$", "$6$")):
            return _verify_crypt(password, hashed)
        # $apr1$ (Apache MD5) and plain text are refused rather than guessed at.
        log.warning("htpasswd: unsupported hash kind %r", hashed[:6])
        return False

    def verify(self, user: str, password: str) -> bool:
        try:
            self._load()
        except OSError as e:
            log.error("htpasswd %s: %s", self.path, e)
            return False
        hashed = self._entries.get(user)
        if hashed is None:
            return False
        pw = password.encode("utf-8", "surrogateescape")
        key = hmac.new(self._cache_key, user.encode() + b"\0" + pw, hashlib.sha256).digest()
        if self._good.get(key) == hashed:
            return True
        if not self._check(hashed, pw):
            return False
        self._good[key] = hashed
        return True

    async def verify_async(self, user: str, password: str) -> bool:
        # Keep the event loop free while bcrypt burns CPU.
        return await asyncio.get_running_loop().run_in_executor(None, self.verify, user, password)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


# --------------------------------------------------------------------------- challenges

class AuthChallenge(Exception):
    """Raised by an authenticator: the request is refused; the server renders it."""

    def __init__(self, status: int, code: str, message: str, *,
                 challenge: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.challenge = challenge
        self.detail = detail


class Authenticator(Protocol):
    """What the server needs from an auth scheme."""

    async def authorize(self, request: web.Request, accesses: list[Access]) -> str | None:
        """Return the user name (None for anonymous) or raise AuthChallenge."""
        ...

    def install(self, app: web.Application) -> None:
        """Add any routes the scheme serves itself (a token endpoint)."""
        ...


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _detail(accesses: list[Access]) -> list[dict[str, str]]:
    # distribution puts the refused scopes into the error detail
    return [{"Type": a.type, "Name": a.name, "Action": act}
            for a in accesses for act in sorted(a.actions)]


@dataclass
class BasicAuth:
    htpasswd: Htpasswd
    realm: str = "Dockyard Registry"

    async def authorize(self, request: web.Request, accesses: list[Access]) -> str | None:
        creds = basic_credentials(request)
        if creds is not None and await self.htpasswd.verify_async(*creds):
            return creds[0]
        if creds is not None:
            log.info("basic auth failed for user %r from %s", creds[0], request.remote)
        raise AuthChallenge(401, "UNAUTHORIZED", "authentication required",
                            challenge=f"Basic realm={_quote(self.realm)}",
                            detail=_detail(accesses) or None)

    def install(self, app: web.Application) -> None:
        pass


# --------------------------------------------------------------------------- JWT

def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenKey:
    """The key tokens are signed and verified with.

    `TokenKey.load(data)`: PEM EC P-256 private key -> ES256 (needs `cryptography`);
    anything else is an HS256 secret. `TokenKey.generate()` makes a random HS256 secret.
    """

    def __init__(self, alg: str, secret: bytes | None = None, private: Any = None) -> None:
        self.alg = alg
        self._secret = secret
        self._private = private
        material = secret if secret is not None else self._public_der()
        # kid only has to be stable for this key; clients never interpret it here.
        self.kid = hashlib.sha256(material).hexdigest()[:16]

    @classmethod
    def generate(cls) -> "TokenKey":
        return cls("HS256", secret=os.urandom(32))

    @classmethod
    def load(cls, data: bytes) -> "TokenKey":
        if data.lstrip().startswith(b"-----BEGIN"):
            try:
                from cryptography.hazmat.primitives.asymmetric import ec
                from cryptography.hazmat.primitives.serialization import load_pem_private_key
            except ImportError as e:
                raise Unsupported("an ES256 token key needs the 'cryptography' package; "
                                  "use an HS256 secret instead") from e
            key = load_pem_private_key(data, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise Unsupported("token key: only EC P-256 (ES256) PEM keys are supported")
            return cls("ES256", private=key)
        secret = data.strip()
        if len(secret) < 16:
            raise InvalidArgument("token key: an HS256 secret needs at least 16 bytes")
        return cls("HS256", secret=secret)

    def _public_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        return self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, signing_input: bytes) -> bytes:
        if self.alg == "HS256":
            assert self._secret is not None
            return hmac.new(self._secret, signing_input, hashlib.sha256).digest()
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        der = self._private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw 64-byte r||s form, not DER
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        if self.alg == "HS256":
            return hmac.compare_digest(self.sign(signing_input), signature)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        if len(signature) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                   int.from_bytes(signature[32:], "big"))
        try:
            self._private.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


class InvalidToken(Exception):
    pass


def encode_jwt(claims: dict[str, Any], key: TokenKey) -> str:
    header = {"typ": "JWT", "alg": key.alg, "kid": key.kid}
    signing_input = (_b64e(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64e(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + _b64e(key.sign(signing_input.encode()))


def decode_jwt(token: str, key: TokenKey, *, issuer: str, audience: str,
               now: float | None = None, leeway: float = 60.0) -> dict[str, Any]:
    """Check signature, algorithm, issuer, audience and validity window; return the claims."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token")
    try:
        header = json.loads(_b64d(parts[0]))
        claims = json.loads(_b64d(parts[1]))
        signature = _b64d(parts[2])
    except (ValueError, binascii.Error) as e:
        raise InvalidToken(f"malformed token: {e}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("malformed token")
    # The algorithm is fixed by the key, never taken from the token ("alg": "none" attacks).
    if header.get("alg") != key.alg:
        raise InvalidToken("unexpected signing algorithm")
    if not key.verify(f"{parts[0]}.{parts[1]}".encode(), signature):
        raise InvalidToken("bad signature")
    now = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer")
    aud = claims.get("aud")
    if audience not in (aud if isinstance(aud, list) else [aud]):
        raise InvalidToken("wrong audience")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or now > exp + leeway:
        raise InvalidToken("token expired")
    if not isinstance(nbf, (int, float)) or now + leeway < nbf:
        raise InvalidToken("token not yet valid")
    return claims


# --------------------------------------------------------------------------- token auth

Policy = Callable[[str | None, Access], frozenset[str]]


def default_policy(user: str | None, wanted: Access) -> frozenset[str]:
    """Authenticated users get whatever they ask for; anonymous users get nothing."""
    if user is None:
        return frozenset()
    if wanted.type == "repository":
        return wanted.actions & REPOSITORY_ACTIONS
    if wanted.type == "registry" and wanted.name == "catalog":
        return wanted.actions & {"*"}
    return frozenset()


@dataclass
class TokenAuth:
    """Bearer token auth with a built-in token endpoint at `path` (default /token).

    `realm` is the URL advertised in challenges; when None it is derived from each
    request's scheme and Host, which suits a registry reached under one name.
    """

    key: TokenKey = field(default_factory=TokenKey.generate)
    htpasswd: Htpasswd | None = None
    realm: str | None = None
    service: str = "dockyard-registry"
    issuer: str = "dockyard-token-issuer"
    policy: Policy = default_policy
    path: str = "/token"
    lifetime: int = TOKEN_LIFETIME

    # ---- the registry side

    def _realm(self, request: web.Request) -> str:
        return self.realm or f"{request.scheme}://{request.host}{self.path}"

    def _challenge(self, request: web.Request, accesses: list[Access],
                   error: str | None = None) -> str:
        parts = [f"realm={_quote(self._realm(request))}", f"service={_quote(self.service)}"]
        if accesses:
            parts.append(f"scope={_quote(' '.join(a.scope() for a in accesses))}")
        if error:
            parts.append(f"error={_quote(error)}")
        return "Bearer " + ",".join(parts)

    async def authorize(self, request: web.Request, accesses: list[Access]) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthChallenge(401, "UNAUTHORIZED", "authentication required",
                                challenge=self._challenge(request, accesses),
                                detail=_detail(accesses) or None)
        try:
            claims = decode_jwt(token.strip(), self.key, issuer=self.issuer,
                                audience=self.service)
        except InvalidToken as e:
            log.info("rejected token from %s: %s", request.remote, e)
            raise AuthChallenge(401, "UNAUTHORIZED", f"invalid token: {e}",
                                challenge=self._challenge(request, accesses, "invalid_token")
                                ) from None
        granted = []
        for item in claims.get("access") or []:
            if isinstance(item, dict) and isinstance(item.get("actions"), list):
                granted.append(Access(str(item.get("type")), str(item.get("name")),
                                      frozenset(map(str, item["actions"]))))
        missing = [a for a in accesses if not _allowed(granted, a)]
        if missing:
            raise AuthChallenge(401, "UNAUTHORIZED", "insufficient scope",
                                challenge=self._challenge(request, accesses, "insufficient_scope"),
                                detail=_detail(missing))
        sub = claims.get("sub")
        return sub if isinstance(sub, str) and sub else None

    # ---- the token endpoint

    def install(self, app: web.Application) -> None:
        app.router.add_get(self.path, self._token_get)
        app.router.add_post(self.path, self._token_post)

    def issue(self, user: str | None, wanted: list[Access]) -> dict[str, Any]:
        """Grant what the policy allows of WANTED and return the token response body."""
        now = int(time.time())
        access = []
        for a in wanted:
            actions = self.policy(user, a)
            if actions:
                access.append({"type": a.type, "name": a.name, "actions": sorted(actions)})
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + self.lifetime, "nbf": now - 1, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        token = encode_jwt(claims, self.key)
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        # docker reads "token", OAuth2 clients "access_token": send both
        return {"token": token, "access_token": token, "expires_in": self.lifetime,
                "issued_at": issued}

    async def _check_user(self, user: str, password: str) -> bool:
        return self.htpasswd is not None and await self.htpasswd.verify_async(user, password)

    def _refuse(self, message: str) -> web.Response:
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": message}]}, status=401,
            headers={"WWW-Authenticate": f"Basic realm={_quote(self.service)}"})

    def _scopes(self, values: list[str]) -> list[Access] | web.Response:
        try:
            return [a for v in values for a in parse_scope(v)]
        except InvalidArgument as e:
            return web.json_response({"errors": [{"code": "UNSUPPORTED", "message": str(e)}]},
                                     status=400)

    async def _token_get(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        if service is not None and service != self.service:
            return web.json_response(
                {"errors": [{"code": "UNSUPPORTED", "message": f"unknown service {service!r}"}]},
                status=400)
        wanted = self._scopes(request.query.getall("scope", []))
        if isinstance(wanted, web.Response):
            return wanted
        user: str | None = None
        creds = basic_credentials(request)
        if creds is not None:
            if not await self._check_user(*creds):
                log.info("token request: bad credentials for %r from %s", creds[0], request.remote)
                return self._refuse("invalid username or password")
            user = creds[0]
        return web.json_response(self.issue(user, wanted))

    async def _token_post(self, request: web.Request) -> web.Response:
        # The OAuth2 form docker uses when it holds an identity token; we only do the
        # password grant, and say so the way RFC 6749 asks.
        form = await request.post()
        grant = form.get("grant_type")
        if grant != "password":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("service") not in (None, self.service):
            return web.json_response({"error": "invalid_request"}, status=400)
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        if not await self._check_user(user, password):
            return self._refuse("invalid username or password")
        wanted = self._scopes([str(v) for v in form.getall("scope", [])])
        if isinstance(wanted, web.Response):
            return wanted
        return web.json_response(self.issue(user, wanted))
