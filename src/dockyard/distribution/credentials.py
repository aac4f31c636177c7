"""Registry credentials and authentication, client side: the docker CLI's config.json
(`auths`, `credsStore`, `credHelpers`), `docker login`/`logout`, and the answer to a
registry's 401 challenge (Basic, or Bearer tokens from a token server as on the Hub).

Credentials live where the docker CLI keeps them, so `docker login` and Dockyard share
them: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. An `auths` entry holds
base64 `user:password` in "auth" (or an "identitytoken", an OAuth refresh token). A
`credHelpers` entry for the registry, else `credsStore`, sends the secret to an external
program `docker-credential-<name>` instead, speaking its JSON protocol on stdin/stdout.
The Hub's key is the historical `https://index.docker.io/v1/`.

Token flow (distribution's registry/client/auth, as dockerd uses it): a 401 carries
`WWW-Authenticate: Bearer realm="...",service="...",scope="..."`; the client GETs the realm
with `service` and `scope` (Basic credentials when it has some, anonymous otherwise) and
retries with `Authorization: Bearer <token>`. Tokens are cached per scope set until they
expire. With an identity token the realm is POSTed an OAuth2 refresh_token grant instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from dockyard.errors import DockyardError, InvalidArgument, SystemFailure
from dockyard.distribution.registries import (DOCKER_HUB, RegistryConfig, normalize_registry)

log = logging.getLogger(__name__)

# The key Docker files Hub credentials under, kept for compatibility with docker login.
HUB_CONFIG_KEY = "https://index.docker.io/v1/"
# What credential helpers print when they hold nothing for a server.
HELPER_NOT_FOUND = "credentials not found in native keychain"
# A username that means "the secret is an identity (refresh) token".
TOKEN_USERNAME = "<token>"
# Tokens shorter-lived than this are treated as living this long (distribution does so).
MIN_TOKEN_LIFETIME = 60
HELPER_TIMEOUT = 30


class Unauthorized(DockyardError):
    """The registry refused the credentials, or wants some and has none."""

    http_status = 401


@dataclass
class AuthConfig:
    """What a user authenticates with: a password or an identity token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth2 refresh token (from docker login on some registries)
    server_address: str = ""

    def __repr__(self) -> str:  # never print secrets into logs
        return f"AuthConfig(username={self.username!r}, server_address={self.server_address!r})"

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


def config_key(registry: str) -> str:
    """The config.json key for REGISTRY: the Hub's legacy URL, else host[:port]."""
    host = normalize_registry(registry)
    return HUB_CONFIG_KEY if host == DOCKER_HUB else host


def _hostname(key: str) -> str:
    """docker CLI's ConvertToHostname: scheme and path dropped."""
    text = key
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    return text.split("/", 1)[0]


def default_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


# -- credential helpers --------------------------------------------------------

def _run_helper(helper: str, action: str, payload: str) -> str:
    program = f"docker-credential-{helper}"
    path = shutil.which(program)
    if path is None:
        raise SystemFailure(f"error {_verb(action)} credentials - err: exec: \"{program}\": "
                            "executable file not found in $PATH, out: ``")
    try:
        proc = subprocess.run([path, action], input=payload.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"error {_verb(action)} credentials - err: {program} {action} took "
                            f"more than {HELPER_TIMEOUT}s") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        if HELPER_NOT_FOUND in out:
            raise _HelperNotFound()
        raise SystemFailure(f"error {_verb(action)} credentials - err: exit status "
                            f"{proc.returncode}, out: `{out or proc.stderr.decode(errors='replace').strip()}`")
    return out


def _verb(action: str) -> str:
    return {"get": "getting", "store": "storing", "erase": "erasing"}.get(action, action)


class _HelperNotFound(Exception):
    pass


class CredentialStore:
    """config.json credentials, read on every call so `docker login` elsewhere is seen."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_config_path()

    # -- the file ----------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SystemFailure(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if not text.strip():
            return {}
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(f"{self.path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{self.path}: the configuration must be a JSON object")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Atomic replace: a crash must not leave a truncated config (and lose every login).
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _helper_for(self, doc: dict[str, Any], key: str) -> str | None:
        helpers = doc.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for candidate in (key, _hostname(key)):
                if isinstance(helpers.get(candidate), str) and helpers[candidate]:
                    return helpers[candidate]
        store = doc.get("credsStore")
        return store if isinstance(store, str) and store else None

    @staticmethod
    def _find_entry(auths: dict[str, Any], key: str) -> tuple[str, dict[str, Any]] | None:
        if isinstance(auths.get(key), dict):
            return key, auths[key]
        host = _hostname(key)
        for k, v in auths.items():
            if isinstance(v, dict) and _hostname(k) == host:
                return k, v
        return None

    # -- API ---------------------------------------------------------------

    def get(self, registry: str) -> AuthConfig | None:
        """The credentials for REGISTRY (a host, URL, or '' for the Hub), or None."""
        key = config_key(registry)
        doc = self._load()
        helper = self._helper_for(doc, key)
        if helper is not None:
            try:
                out = _run_helper(helper, "get", key)
            except _HelperNotFound:
                return None
            try:
                creds = json.loads(out)
                username, secret = creds.get("Username", ""), creds.get("Secret", "")
            except (ValueError, AttributeError):
                raise SystemFailure(f"credential helper docker-credential-{helper} printed "
                                    f"invalid JSON for {key}") from None
            if username == TOKEN_USERNAME:
                return AuthConfig(identity_token=secret, server_address=key)
            return AuthConfig(username=username, password=secret, server_address=key)
        auths = doc.get("auths") or {}
        found = self._find_entry(auths, key) if isinstance(auths, dict) else None
        if found is None:
            return None
        entry_key, entry = found
        cfg = AuthConfig(username=entry.get("username", "") or "",
                         password=entry.get("password", "") or "",
                         identity_token=entry.get("identitytoken", "") or "",
                         server_address=entry_key)
        encoded = entry.get("auth")
        if encoded:
            try:
                user, sep, password = base64.b64decode(encoded, validate=False).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidArgument(f"{self.path}: invalid auth configuration for {entry_key}") from None
            if not sep:
                raise InvalidArgument(f"{self.path}: invalid auth configuration for {entry_key}")
            cfg.username, cfg.password = user, password.strip("\x00")
        return None if cfg.empty else cfg

    def store(self, registry: str, auth: AuthConfig) -> None:
        key = config_key(registry)
        doc = self._load()
        helper = self._helper_for(doc, key)
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            auths = doc["auths"] = {}
        if helper is not None:
            username = TOKEN_USERNAME if auth.identity_token else auth.username
            secret = auth.identity_token or auth.password
            _run_helper(helper, "store", json.dumps(
                {"ServerURL": key, "Username": username, "Secret": secret}))
            if doc.get("credsStore") == helper:
                # As the docker CLI does: an empty entry records that a login exists.
                auths[key] = {}
                self._save(doc)
            return
        entry: dict[str, Any] = {}
        if auth.username or auth.password:
            entry["auth"] = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        if auth.identity_token:
            entry["identitytoken"] = auth.identity_token
        found = self._find_entry(auths, key)
        if found is not None and found[0] != key:
            del auths[found[0]]  # one entry per registry, under the canonical key
        auths[key] = entry
        self._save(doc)

    def erase(self, registry: str) -> bool:
        """Forget REGISTRY's credentials; False when there were none."""
        key = config_key(registry)
        doc = self._load()
        helper = self._helper_for(doc, key)
        removed = False
        if helper is not None:
            try:
                _run_helper(helper, "erase", key)
                removed = True
            except _HelperNotFound:
                pass
        auths = doc.get("auths")
        if isinstance(auths, dict):
            found = self._find_entry(auths, key)
            if found is not None:
                del auths[found[0]]
                removed = True
                self._save(doc)
        return removed


# -- challenges and tokens -----------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    scheme: str                   # "bearer" or "basic", lower case
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """The challenges of a WWW-Authenticate header (RFC 7235, as registries send it)."""
    out: list[Challenge] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if m is None:
            break
        scheme = m.group(1).lower()
        rest = rest[m.end():]
        params: dict[str, str] = {}
        while rest:
            pm = _PARAM.match(rest)
            if pm is None:
                break
            # A bare `token` followed by a space starts the next challenge, not a param.
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[pm.end():]
        out.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return out


@dataclass
class _Token:
    value: str
    expires: float


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


CredentialLookup = Callable[[str], "AuthConfig | None"]


class Authorizer:
    """Answers registry challenges: remembers each endpoint's challenge (from its /v2/
    ping or a 401) and produces Authorization headers, fetching and caching tokens.

    LOOKUP maps a config key (see config_key) to credentials; it is consulted once per
    key per Authorizer, so a credential helper runs at most once per pull or push.
    """

    def __init__(self, lookup: CredentialLookup | None = None, *,
                 registries: RegistryConfig | None = None, user_agent: str = "dockyard",
                 client_id: str = "dockyard") -> None:
        self._lookup = lookup
        self._registries = registries
        self.user_agent = user_agent
        self.client_id = client_id
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[Any, ...], _Token] = {}
        self._creds: dict[str, AuthConfig | None] = {}
        self.token_requests = 0  # how many times a token server was asked (tests, debugging)
        self.refresh_tokens: dict[str, str] = {}  # identity tokens handed out at login

    def credentials(self, key: str) -> AuthConfig | None:
        if key not in self._creds:
            creds = self._lookup(key) if self._lookup is not None else None
            self._creds[key] = None if creds is None or creds.empty else creds
        return self._creds[key]

    def challenge(self, base_url: str) -> Challenge | None:
        return self._challenges.get(base_url)

    def set_challenge(self, base_url: str, header: str | None) -> Challenge | None:
        """Record the first Bearer or Basic challenge of HEADER for BASE_URL."""
        if not header:
            return None
        for ch in parse_www_authenticate(header):
            if ch.scheme in ("bearer", "basic"):
                self._challenges[base_url] = ch
                return ch
        log.warning("unsupported authentication challenge from %s: %s", base_url, header)
        return None

    async def header(self, session: Any, base_url: str, key: str, scopes: Iterable[str], *,
                     refresh: bool = False, extra_scope: str = "", offline: bool = False
                     ) -> str | None:
        """The Authorization value for a request to BASE_URL needing SCOPES, or None
        when the endpoint has not challenged (or wants Basic and no credentials exist).

        REFRESH skips the token cache (the cached token was just refused); EXTRA_SCOPE is
        the `scope` a 401 challenge named, which is added to what is asked for.
        """
        ch = self._challenges.get(base_url)
        if ch is None:
            return None
        creds = self.credentials(key)
        if ch.scheme == "basic":
            if creds is None or not creds.username:
                return None
            return basic_header(creds.username, creds.password)
        wanted = set(scopes)
        if extra_scope:
            wanted.update(s for s in extra_scope.split(" ") if s)
        if ch.params.get("scope") and not wanted:
            wanted.update(s for s in ch.params["scope"].split(" ") if s)
        cache_key = (ch.realm, ch.params.get("service", ""), frozenset(wanted), key)
        tok = self._tokens.get(cache_key)
        if tok is not None and not refresh and tok.expires > time.monotonic():
            return f"Bearer {tok.value}"
        tok = await self._fetch_token(session, ch, sorted(wanted), creds, offline=offline, key=key)
        self._tokens[cache_key] = tok
        return f"Bearer {tok.value}"

    async def _fetch_token(self, session: Any, ch: Challenge, scopes: list[str],
                           creds: AuthConfig | None, *, offline: bool, key: str) -> _Token:
        import aiohttp  # imported by the client anyway; kept local so this module loads fast

        realm = ch.realm
        if not realm.startswith(("https://", "http://")):
            raise Unauthorized(f"invalid token realm {realm!r} in the registry's challenge")
        service = ch.params.get("service", "")
        ssl = self._registries.ssl_for_url(realm) if self._registries is not None else None
        self.token_requests += 1
        headers = {"User-Agent": self.user_agent}
        try:
            if creds is not None and creds.identity_token:
                # OAuth2 refresh grant: the identity token stands in for the password.
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "service": service, "client_id": self.client_id,
                        "scope": " ".join(scopes)}
                resp = await session.post(realm, data=form, headers=headers, ssl=ssl)
            else:
                params: list[tuple[str, str]] = []
                if service:
                    params.append(("service", service))
                params.extend(("scope", s) for s in scopes)
                if creds is not None and creds.username:
                    params.append(("account", creds.username))
                    headers["Authorization"] = basic_header(creds.username, creds.password)
                    if offline:
                        params += [("offline_token", "true"), ("client_id", self.client_id)]
                resp = await session.get(realm, params=params, headers=headers, ssl=ssl)
            async with resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SystemFailure(f"cannot get a token from {realm}: {exc}") from None
        if status in (401, 403):
            if creds is not None:
                raise Unauthorized(f"unauthorized: incorrect username or password "
                                   f"(token server {realm} refused the credentials for {key})")
            raise Unauthorized(f"unauthorized: authentication required (token server {realm} "
                               "refused an anonymous token)")
        if status != 200:
            raise Unauthorized(f"token server {realm} answered {status}: "
                               f"{body[:200].decode(errors='replace')}")
        try:
            doc = json.loads(body)
        except ValueError:
            raise Unauthorized(f"token server {realm} sent an invalid response") from None
        value = doc.get("access_token") or doc.get("token") if isinstance(doc, dict) else None
        if not value or not isinstance(value, str):
            raise Unauthorized(f"authorization server {realm} did not include a token in the response")
        lifetime = doc.get("expires_in")
        lifetime = lifetime if isinstance(lifetime, (int, float)) and lifetime > 0 else 0
        lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
        refresh_token = doc.get("refresh_token")
        if isinstance(refresh_token, str) and refresh_token:
            self.refresh_tokens[key] = refresh_token
        # A little slack, so a token is not sent in the second it expires.
        return _Token(value, time.monotonic() + lifetime - 5)


# -- login / logout -------------------------------------------------------------

async def login(registry: str, username: str, password: str, *,
                credentials: CredentialStore | None = None,
                registries: RegistryConfig | None = None,
                user_agent: str = "dockyard") -> str:
    """Check USERNAME/PASSWORD against REGISTRY's /v2/ (as `docker login` does), then
    store them; returns "Login Succeeded". Unauthorized when the registry refuses them.
    """
    import aiohttp

    from dockyard.distribution.registries import Endpoint

    if not username:
        raise InvalidArgument("username is required to log in")
    host = normalize_registry(registry)
    key = config_key(host)
    store = credentials if credentials is not None else CredentialStore()
    registries = registries if registries is not None else RegistryConfig()
    auth = AuthConfig(username=username, password=password, server_address=key)
    authorizer = Authorizer(lambda _k: auth, registries=registries, user_agent=user_agent)
    endpoints: list[Endpoint] = registries.endpoints(host, pull=False)
    last_error: Exception | None = None
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=15)
    async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": user_agent}) as session:
        for ep in endpoints:
            url = f"{ep.url}/v2/"
            try:
                async with session.get(url, ssl=ep.ssl) as resp:
                    await resp.read()
                    status, challenge = resp.status, resp.headers.get("WWW-Authenticate")
                if status == 401:
                    if authorizer.set_challenge(ep.url, challenge) is None:
                        raise Unauthorized(f"login to {host} failed: unsupported challenge {challenge!r}")
                    header = await authorizer.header(session, ep.url, key, (), offline=True)
                    async with session.get(url, ssl=ep.ssl, headers={"Authorization": header or ""}) as resp:
                        await resp.read()
                        status = resp.status
                    if status in (401, 403):
                        raise Unauthorized(f'Get "{url}": unauthorized: incorrect username or password')
                if status != 200:
                    raise SystemFailure(f"login to {host} failed: Get \"{url}\": the registry "
                                        f"answered {status}")
                break
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last_error = exc
                log.info("login: %s failed: %s; trying the next endpoint", url, exc)
                continue
        else:
            raise SystemFailure(f"cannot log in to {host}: registry unreachable: {last_error}")
    token = authorizer.refresh_tokens.get(key)
    if token:
        # As docker login: an identity token replaces the password on disk.
        auth = AuthConfig(username=username, identity_token=token, server_address=key)
    store.store(host, auth)
    log.info("logged in to %s as %s", host, username)
    return "Login Succeeded"


def logout(registry: str, *, credentials: CredentialStore | None = None) -> str:
    """Forget the credentials for REGISTRY; the message `docker logout` prints."""
    host = normalize_registry(registry)
    store = credentials if credentials is not None else CredentialStore()
    shown = config_key(host)
    if store.erase(host):
        return f"Removing login credentials for {shown}"
    return f"Not logged in to {shown}"
