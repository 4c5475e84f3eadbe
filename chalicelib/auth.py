"""Who may call: bearer tokens (JWT) from an OpenID Connect issuer, checked
in the function itself, so the same rules hold under `chalice local`, in
tests and behind API Gateway.

A token is accepted when its signature verifies with a key of the issuer's
JWKS (chalicelib.jws: asymmetric algorithms only, `none` and HMAC refused,
so the public key can never serve as a shared secret), its `exp`, `nbf` and
`iat` hold within a small leeway, and `iss` and the audience claim are the
configured ones.

The JWKS is fetched on first use and again once it is `refresh_seconds`
old (AUTH_JWKS_REFRESH_SECONDS, at most 10 minutes), so a key the issuer
withdraws (a leaked one) stops working within that time, tokens remembered
under it included. It is fetched early when a token names a key id it does
not hold (key rotation). The issuer is asked at most once per
`refetch_interval` seconds whatever the outcome, so neither unknown ids nor
an issuer that is down make us hammer it; while it cannot be reached, the
keys fetched last keep serving.

Callers send the same token with request after request: a verified token
is remembered (at most `cache_size` of them, each until its `exp` and for
at most `cache_seconds`), so its signature and claims are checked once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from chalicelib import jws
from chalicelib.infra.logs import log

READ = "customers:read"
WRITE = "customers:write"
ERASE = "customers:erase"
OPERATE = "customers:operate"  # the detailed health report
FEED = "customers:feed"  # every event of every customer, from the catch-up feed

ALGORITHMS = list(jws.ALGORITHMS)


class AuthError(Exception):
    """Base of who-may-call's refusals."""


class Unauthenticated(AuthError):
    """No token, or one that is not valid: 401."""

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error  # None when no token was sent at all (RFC 6750, 3.1)


class Forbidden(AuthError):
    """A valid token without the scope the route needs: 403."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this needs a token with the scope {scope}")
        self.scope = scope


@dataclass(frozen=True)
class Caller:
    subject: str
    client_id: str | None
    scopes: frozenset[str]

    def require(self, scope: str) -> Caller:
        if scope not in self.scopes:
            raise Forbidden(scope)
        return self

    def to_metadata(self) -> dict:
        return {"subject": self.subject, "client_id": self.client_id}


class TokenVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str, *, leeway_seconds: float = 30.0,
                 audience_claim: str = "aud", refresh_seconds: float = 300.0, refetch_interval: float = 10.0,
                 fetch_timeout: float = 5.0, cache_size: int = 1024, cache_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.leeway_seconds = leeway_seconds
        self.audience_claim = audience_claim
        self.refresh_seconds = refresh_seconds
        self.refetch_interval = refetch_interval
        self.fetch_timeout = fetch_timeout
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._keys: dict[str, jws.PublicKey] = {}
        self._fetched_at = float("-inf")  # the keys we hold
        self._asked_at = float("-inf")  # the issuer, whatever it answered
        self._unavailable: str | None = None  # why the last fetch failed
        # Two locks: a slow fetch of the issuer's keys must not hold up
        # requests whose tokens are already remembered.
        self._keys_lock = threading.Lock()
        self._verified_lock = threading.Lock()
        self._verified: OrderedDict[str, tuple[Caller, float, str]] = OrderedDict()  # caller, until, kid

    def verify(self, authorization: str | None) -> Caller:
        """The caller named by an `Authorization: Bearer <JWT>` header."""
        if not authorization:
            raise Unauthenticated("send a bearer token: Authorization: Bearer <JWT>", error=None)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be: Bearer <JWT>", error="invalid_request")
        token = token.strip()
        if self._clock() - self._fetched_at >= self.refresh_seconds:
            # One caller fetches; the others go on with the keys we hold,
            # or wait for them when we hold none yet.
            self._refetch(wait=not self._keys)
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        try:
            parsed = jws.parse(token)
        except jws.InvalidToken:
            raise Unauthenticated("the bearer token is not a JWT") from None
        alg = parsed.header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthenticated(f"tokens signed with {str(alg)[:20]!r} are not accepted")
        kid = str(parsed.header.get("kid") or "")[:200]
        key = self._key(kid)
        try:
            jws.verify(parsed, key)
        except jws.InvalidToken as error:
            raise Unauthenticated(f"the bearer token is not valid: {error}") from None
        claims = parsed.claims
        self._check_claims(claims)
        caller = Caller(subject=claims["sub"], client_id=_text(claims.get("client_id")) or _text(claims.get("azp")),
                        scopes=_scopes(claims))
        self._remember(token, caller, claims, kid)
        return caller

    def _check_claims(self, claims: dict) -> None:
        now, leeway = time.time(), self.leeway_seconds
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _number(claims[name]):
                raise Unauthenticated(f"the bearer token is not valid: {name} is not a number")
        if "exp" not in claims:
            raise Unauthenticated("the bearer token is not valid: it has no exp")
        if claims["exp"] <= now - leeway:
            raise Unauthenticated("the bearer token has expired")
        if claims.get("nbf", now) > now + leeway or claims.get("iat", now) > now + leeway:
            raise Unauthenticated("the bearer token is not valid yet")
        if claims.get("iss") != self.issuer:
            raise Unauthenticated("the bearer token is from another issuer")
        audience = claims.get(self.audience_claim)
        if self.audience_claim == "aud" and isinstance(audience, list):
            allowed = self.audience in audience
        else:
            allowed = audience == self.audience
        if not allowed:
            raise Unauthenticated("the bearer token is for another audience")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthenticated("the bearer token names no subject")

    def _remembered(self, token: str) -> Caller | None:
        with self._verified_lock:
            entry = self._verified.get(token)
            if entry is None:
                return None
            caller, valid_until, _ = entry
            if time.time() >= valid_until:
                del self._verified[token]
                return None
            self._verified.move_to_end(token)
            return caller

    def _remember(self, token: str, caller: Caller, claims: dict, kid: str) -> None:
        if claims.get("nbf", 0) > time.time():
            return  # valid only thanks to the leeway: check it again next time
        valid_until = min(float(claims["exp"]) + self.leeway_seconds, time.time() + self.cache_seconds)
        with self._verified_lock:
            self._verified[token] = (caller, valid_until, kid)
            while len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)

    def _key(self, kid: str) -> jws.PublicKey:
        key = self._keys.get(kid)
        if key is None and self._refetch(wait=True):
            key = self._keys.get(kid)
        if key is None and not self._keys and self._unavailable:
            raise Unauthenticated(f"the issuer's keys cannot be fetched now ({self._unavailable})")
        if key is None:
            raise Unauthenticated("the bearer token is signed with a key the issuer does not publish")
        return key

    def _refetch(self, *, wait: bool) -> bool:
        """Ask the issuer for its keys, unless it was asked less than
        `refetch_interval` ago; True when new keys came."""
        if not self._keys_lock.acquire(blocking=wait):
            return False
        try:
            now = self._clock()
            if now - self._asked_at < self.refetch_interval:
                return False
            self._asked_at = now  # before asking: a failure counts too
            try:
                keys = self._fetch()
            except IssuerUnavailable as error:
                self._unavailable = str(error)
                log("jwks_fetch_failed", level="warning", url=self.jwks_url, error=str(error),
                    keeping=len(self._keys))
                return False
            self._keys, self._fetched_at, self._unavailable = keys, now, None
        finally:
            self._keys_lock.release()
        with self._verified_lock:
            for token in [t for t, (_, _, kid) in self._verified.items() if kid not in keys]:
                del self._verified[token]  # its key was withdrawn
        return True

    def _fetch(self) -> dict[str, jws.PublicKey]:
        from http.client import HTTPException

        try:
            document = _get_json(self.jwks_url, self.fetch_timeout)
        except (OSError, ValueError, HTTPException) as error:
            raise IssuerUnavailable(type(error).__name__) from None
        keys = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            key = jws.public_key(jwk) if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) else None
            if key is not None:
                keys[jwk["kid"]] = key
        return keys


class IssuerUnavailable(Exception):
    """The issuer's keys could not be fetched."""


def _get_json(url: str, timeout: float) -> object:
    """GET a JSON document with http.client: urllib.request would add its
    import (about 5 ms) to every container's first token. No redirects, no
    proxies: an issuer publishes its keys at the URL it names."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        import ssl

        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    else:
        raise ValueError(f"not an http(s) URL: {parts.scheme}")
    try:
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                           headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return json.loads(body)
    finally:
        connection.close()


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _scopes(claims: dict) -> frozenset[str]:
    """OAuth 2.0 `scope` (space separated), or `scp` (a list of strings or
    a string, some issuers). Any other shape is a token we cannot read."""
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            found += value
        else:
            raise Unauthenticated(f"the bearer token is not valid: {name} is neither a string nor a list of strings")
    return frozenset(found)
