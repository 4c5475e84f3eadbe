"""Who may call: bearer tokens (JWT) from an OpenID Connect issuer, checked
in the function itself, so the same rules hold under `chalice local`, in
tests and behind API Gateway.

A token is accepted when its signature verifies with a key of the issuer's
JWKS (asymmetric algorithms only: `none` and HMAC are refused, so the public
key can never serve as a shared secret), its `exp` and `nbf` hold within a
small leeway, and `iss` and the audience claim are the configured ones. The
JWKS is fetched on first use, cached, and fetched again when a token names
a key id it does not hold (key rotation), at most once per
`refetch_interval` seconds (so unknown ids cannot make us hammer the issuer).

Callers send the same token with request after request: a verified token
is remembered (at most `cache_size` of them, each until its `exp` and for
at most `cache_seconds`), so its signature and claims are checked once.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass

READ = "customers:read"
WRITE = "customers:write"
ERASE = "customers:erase"
OPERATE = "customers:operate"  # the detailed health report

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Unauthenticated(Exception):
    """No token, or one that is not valid: 401."""

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error  # None when no token was sent at all (RFC 6750, 3.1)


class Forbidden(Exception):
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
                 audience_claim: str = "aud", refetch_interval: float = 10.0, fetch_timeout: float = 5.0,
                 cache_size: int = 1024, cache_seconds: float = 300.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.leeway_seconds = leeway_seconds
        self.audience_claim = audience_claim
        self.refetch_interval = refetch_interval
        self.fetch_timeout = fetch_timeout
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self._keys: dict[str, object] = {}
        self._fetched_at = float("-inf")
        # Two locks: a slow fetch of the issuer's keys must not hold up
        # requests whose tokens are already remembered.
        self._keys_lock = threading.Lock()
        self._verified_lock = threading.Lock()
        self._verified: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    def verify(self, authorization: str | None) -> Caller:
        """The caller named by an `Authorization: Bearer <JWT>` header."""
        import jwt  # on first use: it and cryptography take a tenth of a second to import

        if not authorization:
            raise Unauthenticated("send a bearer token: Authorization: Bearer <JWT>", error=None)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be: Bearer <JWT>", error="invalid_request")
        token = token.strip()
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        header = _header(token)
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated(f"tokens signed with {str(header.get('alg'))[:20]!r} are not accepted")
        key = self._key(str(header.get("kid") or ""))
        options = {"require": ["exp", "iss", "sub"], "verify_aud": self.audience_claim == "aud"}
        try:
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, issuer=self.issuer,
                                audience=self.audience if self.audience_claim == "aud" else None,
                                leeway=self.leeway_seconds, options=options)
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the bearer token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the bearer token is from another issuer") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the bearer token is for another audience") from None
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"the bearer token is not valid: {type(error).__name__}") from None
        if self.audience_claim != "aud" and claims.get(self.audience_claim) != self.audience:
            raise Unauthenticated("the bearer token is for another audience")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthenticated("the bearer token names no subject")
        caller = Caller(subject=claims["sub"], client_id=claims.get("client_id") or claims.get("azp"),
                        scopes=_scopes(claims))
        self._remember(token, caller, claims)
        return caller

    def _remembered(self, token: str) -> Caller | None:
        with self._verified_lock:
            entry = self._verified.get(token)
            if entry is None:
                return None
            caller, valid_until = entry
            if time.time() >= valid_until:
                del self._verified[token]
                return None
            self._verified.move_to_end(token)
            return caller

    def _remember(self, token: str, caller: Caller, claims: dict) -> None:
        if claims.get("nbf", 0) > time.time():
            return  # valid only thanks to the leeway: check it again next time
        valid_until = min(float(claims["exp"]) + self.leeway_seconds, time.time() + self.cache_seconds)
        with self._verified_lock:
            self._verified[token] = (caller, valid_until)
            while len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)

    def _key(self, kid: str) -> object:
        with self._keys_lock:
            key = self._keys.get(kid)
            if key is None and time.monotonic() - self._fetched_at >= self.refetch_interval:
                self._keys = self._fetch()
                self._fetched_at = time.monotonic()
                key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("the bearer token is signed with a key the issuer does not publish")
        return key

    def _fetch(self) -> dict[str, object]:
        import jwt

        try:
            with urllib.request.urlopen(self.jwks_url, timeout=self.fetch_timeout) as response:
                document = json.load(response)
        except (OSError, ValueError) as error:
            # Keep the keys we have: the issuer may be back by the next token.
            raise Unauthenticated(f"the issuer's keys cannot be fetched now ({type(error).__name__})") from None
        keys = {}
        for jwk in document.get("keys", []):
            try:
                parsed = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue  # a key type or algorithm we do not use
            if parsed.algorithm_name in ALGORITHMS and jwk.get("kid"):
                keys[jwk["kid"]] = parsed.key
        return keys


def _header(token: str) -> dict:
    """The JOSE header, read without PyJWT, which would parse the whole
    token once more here before decode() parses it again."""
    try:
        encoded = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error):
        raise Unauthenticated("the bearer token is not a JWT") from None
    if not isinstance(header, dict):
        raise Unauthenticated("the bearer token is not a JWT")
    return header


def _scopes(claims: dict) -> frozenset[str]:
    """OAuth 2.0 `scope` (space separated), or `scp` (a list, some issuers)."""
    scope = claims.get("scope", "")
    listed = claims.get("scp", [])
    return frozenset((scope.split() if isinstance(scope, str) else [])
                     + (listed if isinstance(listed, list) else str(listed).split()))
