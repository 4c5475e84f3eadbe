"""Signed tokens (compact JWS, RFC 7515) checked against an issuer's keys
(JWK, RFC 7517), for the asymmetric algorithms of RFC 7518 and RFC 8037
only, with the `cryptography` package alone.

PyJWT would do this too, but its import takes in `cryptography.x509` and
every key type it supports: about 40 ms of each API container's cold
start, against about 6 ms here. The tests sign with PyJWT and check that
every token it signs with our algorithms is accepted, and every way a
token can be wrong is refused.

Nothing here trusts the token before its signature is checked: the header
names the algorithm, but the key decides which algorithms it may be used
with (its type, its curve, and its `alg` when the issuer states one), so a
public key can never serve as an HMAC secret, and `none` is never accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

# alg -> (key type, hash, curve); RSA algorithms as PKCS#1 v1.5 (RS) or PSS (PS).
ALGORITHMS: dict[str, tuple[str, str | None, str | None]] = {
    "RS256": ("RSA", "SHA256", None), "RS384": ("RSA", "SHA384", None), "RS512": ("RSA", "SHA512", None),
    "PS256": ("RSA", "SHA256", None), "PS384": ("RSA", "SHA384", None), "PS512": ("RSA", "SHA512", None),
    "ES256": ("EC", "SHA256", "P-256"), "ES384": ("EC", "SHA384", "P-384"), "ES512": ("EC", "SHA512", "P-521"),
    "EdDSA": ("OKP", None, None),
}
MAX_TOKEN_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_CURVES = {"P-256": ("SECP256R1", 32), "P-384": ("SECP384R1", 48), "P-521": ("SECP521R1", 66)}


class InvalidToken(Exception):
    """The token is malformed, or not signed by the key it names."""


@dataclass(frozen=True)
class Token:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True)
class PublicKey:
    kty: str
    key: Any  # a `cryptography` public key
    crv: str | None = None
    alg: str | None = None  # when the issuer ties the key to one algorithm


def parse(token: str) -> Token:
    """The token's parts, decoded; its signature is not checked yet."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a JWT (three parts separated by dots)")
    header, claims = (_json_object(_decode(part)) for part in parts[:2])
    return Token(header, claims, f"{parts[0]}.{parts[1]}".encode(), _decode(parts[2]))


def public_key(jwk: dict[str, Any]) -> PublicKey | None:
    """The signing key a JWK describes; None for a key this service does not
    use (encryption keys, symmetric keys, other algorithms)."""
    if jwk.get("use", "sig") != "sig" or (jwk.get("alg") is not None and jwk.get("alg") not in ALGORITHMS):
        return None
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            from cryptography.hazmat.primitives.asymmetric import rsa

            rsa_key = rsa.RSAPublicNumbers(_integer(jwk["e"]), _integer(jwk["n"])).public_key()
            if rsa_key.key_size < MIN_RSA_BITS:
                return None
            return PublicKey("RSA", rsa_key, alg=jwk.get("alg"))
        if kty == "EC" and jwk.get("crv") in _CURVES:
            from cryptography.hazmat.primitives.asymmetric import ec

            name, size = _CURVES[jwk["crv"]]
            x, y = _decode(jwk["x"]), _decode(jwk["y"])
            if len(x) != size or len(y) != size:
                return None
            ec_key = ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, name)(), b"\x04" + x + y)
            return PublicKey("EC", ec_key, crv=jwk["crv"], alg=jwk.get("alg"))
        if kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448"):
            from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

            kind = ed25519.Ed25519PublicKey if jwk["crv"] == "Ed25519" else ed448.Ed448PublicKey
            return PublicKey("OKP", kind.from_public_bytes(_decode(jwk["x"])), crv=jwk["crv"], alg=jwk.get("alg"))
    except (KeyError, TypeError, ValueError, InvalidToken):
        return None
    return None


def verify(token: Token, key: PublicKey) -> None:
    """Raises InvalidToken unless `key` signed the token with the algorithm
    its header names, and that algorithm is one the key may be used with."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes

    alg = token.header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise InvalidToken(f"tokens signed with {str(alg)[:20]!r} are not accepted")
    if "crit" in token.header:
        raise InvalidToken("the token has critical header parameters this service does not understand")
    kty, hash_name, curve = ALGORITHMS[alg]
    hash_name = hash_name or ""  # EdDSA names none
    if key.kty != kty or (curve is not None and key.crv != curve) or (key.alg is not None and key.alg != alg):
        raise InvalidToken(f"the key the token names is not for {alg}")
    try:
        if kty == "RSA":
            from cryptography.hazmat.primitives.asymmetric import padding

            digest = getattr(hashes, hash_name)()
            scheme = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(
                mgf=padding.MGF1(getattr(hashes, hash_name)()), salt_length=digest.digest_size)
            key.key.verify(token.signature, token.signing_input, scheme, digest)
        elif kty == "EC":
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

            size = _CURVES[curve or ""][1]
            if len(token.signature) != 2 * size:
                raise InvalidToken("the signature has the wrong length")
            r, s = (int.from_bytes(token.signature[i:i + size], "big") for i in (0, size))
            key.key.verify(encode_dss_signature(r, s), token.signing_input, ec.ECDSA(getattr(hashes, hash_name)()))
        else:
            key.key.verify(token.signature, token.signing_input)
    except InvalidSignature:
        raise InvalidToken("the signature does not verify") from None


def _decode(part: Any) -> bytes:
    if not isinstance(part, str) or not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidToken("not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, binascii.Error):
        raise InvalidToken("not base64url") from None


def _integer(part: Any) -> int:
    return int.from_bytes(_decode(part), "big")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidToken("not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken("not a JSON object")
    return value
