"""Token signatures: every token PyJWT (the reference) signs with an
algorithm we accept verifies with the issuer's key, and every way a token
or a key can be wrong is refused."""

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from chalicelib import jws

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEYS = {"P-256": ec.generate_private_key(ec.SECP256R1()), "P-384": ec.generate_private_key(ec.SECP384R1()),
           "P-521": ec.generate_private_key(ec.SECP521R1())}
SIGNERS = {
    **{alg: (RSA_KEY, jwt.algorithms.RSAAlgorithm) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": (EC_KEYS["P-256"], jwt.algorithms.ECAlgorithm), "ES384": (EC_KEYS["P-384"], jwt.algorithms.ECAlgorithm),
    "ES512": (EC_KEYS["P-521"], jwt.algorithms.ECAlgorithm),
}
CLAIMS = {"sub": "ada", "iss": "https://issuer.example"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(private_key, algorithm) -> dict:
    return json.loads(algorithm.to_jwk(private_key.public_key()))


@pytest.mark.parametrize("alg", list(SIGNERS))
def test_every_algorithm_pyjwt_signs_verifies_with_the_issuers_key(alg):
    private_key, algorithm = SIGNERS[alg]
    token = jws.parse(jwt.encode(CLAIMS, private_key, algorithm=alg))
    jws.verify(token, jws.public_key(jwk(private_key, algorithm)))
    assert token.claims == CLAIMS and token.header["alg"] == alg


@pytest.mark.parametrize("kind", [ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey])
def test_eddsa_verifies_with_either_curve(kind):
    private_key = kind.generate()
    token = jws.parse(jwt.encode(CLAIMS, private_key, algorithm="EdDSA"))
    jws.verify(token, jws.public_key(jwk(private_key, jwt.algorithms.OKPAlgorithm)))


def refused(token: str, key: jws.PublicKey | None) -> None:
    with pytest.raises(jws.InvalidToken):
        jws.verify(jws.parse(token), key)


RSA_JWK = jwk(RSA_KEY, jwt.algorithms.RSAAlgorithm)


def test_a_key_serves_only_the_algorithms_of_its_kind():
    refused(jwt.encode(CLAIMS, EC_KEYS["P-256"], algorithm="ES256"), jws.public_key(RSA_JWK))
    refused(jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256"),
            jws.public_key(jwk(EC_KEYS["P-256"], jwt.algorithms.ECAlgorithm)))
    # ES384 named in the header, a P-256 key: the curve must be the algorithm's.
    header = b64(json.dumps({"alg": "ES384"}).encode())
    payload = b64(json.dumps(CLAIMS).encode())
    refused(f"{header}.{payload}.{b64(bytes(96))}", jws.public_key(jwk(EC_KEYS["P-256"], jwt.algorithms.ECAlgorithm)))
    # The issuer ties the key to RS256: a PS256 signature by the same key is refused.
    refused(jwt.encode(CLAIMS, RSA_KEY, algorithm="PS256"), jws.public_key({**RSA_JWK, "alg": "RS256"}))
    jws.verify(jws.parse(jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256")), jws.public_key({**RSA_JWK, "alg": "RS256"}))


def test_unsigned_hmac_altered_and_truncated_tokens_are_refused():
    key = jws.public_key(RSA_JWK)
    refused(jwt.encode(CLAIMS, None, algorithm="none"), key)
    refused(jwt.encode(CLAIMS, "a shared secret of thirty-two bytes!", algorithm="HS256"), key)
    header, payload, signature = jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256").split(".")
    forged = b64(json.dumps({**CLAIMS, "sub": "mallory"}).encode())
    refused(f"{header}.{forged}.{signature}", key)
    refused(f"{header}.{payload}.{signature[:-8]}", key)
    flipped = bytearray(base64.urlsafe_b64decode(signature + "==="))
    flipped[10] ^= 1
    refused(f"{header}.{payload}.{b64(bytes(flipped))}", key)
    # Correctly signed, but with a critical header parameter we cannot honour.
    critical = b64(json.dumps({"alg": "RS256", "crit": ["exp"], "exp": 1}).encode())
    signed = RSA_KEY.sign(f"{critical}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    refused(f"{critical}.{payload}.{b64(signed)}", key)


def test_an_ecdsa_signature_of_the_wrong_length_is_refused():
    key = jws.public_key(jwk(EC_KEYS["P-256"], jwt.algorithms.ECAlgorithm))
    header, payload, signature = jwt.encode(CLAIMS, EC_KEYS["P-256"], algorithm="ES256").split(".")
    raw = base64.urlsafe_b64decode(signature + "===")
    refused(f"{header}.{payload}.{b64(raw + b'x')}", key)


@pytest.mark.parametrize("token", [
    "not-a-jwt", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.a", "WzFd.e30.c2ln",  # header a list
    b64(b"[" * 1000 + b"]" * 1000) + ".e30.c2ln", b64(b'{"alg": "RS256"}') + "." + "e" * 20_000 + ".c2ln",
    b64(b'{"alg": "RS256"}') + ".bm90IGpzb24.c2ln",  # payload not JSON
])
def test_a_malformed_token_is_refused_before_any_key_is_looked_at(token):
    with pytest.raises(jws.InvalidToken):
        jws.parse(token)


def test_keys_this_service_cannot_trust_are_not_taken():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert jws.public_key(jwk(weak, jwt.algorithms.RSAAlgorithm)) is None
    assert jws.public_key({**RSA_JWK, "use": "enc"}) is None
    assert jws.public_key({**RSA_JWK, "alg": "HS256"}) is None
    assert jws.public_key({"kty": "oct", "k": b64(b"secret")}) is None
    p256 = jwk(EC_KEYS["P-256"], jwt.algorithms.ECAlgorithm)
    assert jws.public_key({**p256, "x": p256["x"][:-2]}) is None  # a coordinate too short
    assert jws.public_key({**p256, "y": p256["x"]}) is None  # not a point on the curve
    assert jws.public_key({"kty": "RSA", "n": "***", "e": "AQAB"}) is None
