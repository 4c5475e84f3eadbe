"""Who may call. Security is tested by refusal: every way a request should be
refused is, with 401 or 403 in Chalice's error shape and a WWW-Authenticate
challenge, and nothing is stored."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.application import CustomerApplication
from chalicelib.auth import TokenVerifier, Unauthenticated
from devstack.issuer import AUDIENCE
from tests.support.api import serving
from tests.support.builders import count
from tests.support.clock import Clock


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def other_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(issuer, **overrides) -> dict:
    now = int(time.time())
    return {"iss": issuer.url, "aud": AUDIENCE, "sub": "mallory", "scope": "customers:read customers:write",
            "iat": now, "nbf": now, "exp": now + 600, **overrides}


def hmac_with_the_public_key(issuer) -> str:
    public_pem = issuer.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    payload = b64(json.dumps(claims(issuer)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def altered_payload(issuer) -> str:
    header, _, signature = issuer.token(subject="alice").split(".")
    payload = b64(json.dumps(claims(issuer, sub="mallory")).encode())
    return f"{header}.{payload}.{signature}"


REFUSED = {
    "no token": lambda issuer: None,
    "not a bearer token": lambda issuer: f"Basic {b64(b'ada:secret')}",
    "bearer without a token": lambda issuer: "Bearer ",
    "malformed": lambda issuer: "Bearer not.a.jwt",
    "expired": lambda issuer: f"Bearer {issuer.token(expires_in=-120)}",
    "not yet valid": lambda issuer: f"Bearer {issuer.token(nbf=int(time.time()) + 600)}",
    "wrong issuer": lambda issuer: f"Bearer {issuer.token(iss='https://issuer.example.org')}",
    "wrong audience": lambda issuer: f"Bearer {issuer.token(aud='another-service')}",
    "no subject": lambda issuer: "Bearer " + jwt.encode(
        {k: v for k, v in claims(issuer).items() if k != "sub"}, issuer.private_key, "RS256", {"kid": issuer.kid}),
    "alg none": lambda issuer: "Bearer " + jwt.encode(claims(issuer), None, algorithm="none"),
    "HMAC signed with the public key": lambda issuer: f"Bearer {hmac_with_the_public_key(issuer)}",
    "payload altered": lambda issuer: f"Bearer {altered_payload(issuer)}",
    "signed by another key": lambda issuer: f"Bearer {issuer.token(key=other_key())}",
    "unknown kid": lambda issuer: f"Bearer {issuer.token(key=other_key(), kid='not-published')}",
    "a header of 1,000 nested arrays": lambda issuer: "Bearer " + ".".join(
        [b64(b"[" * 1000 + b"]" * 1000), *issuer.token().split(".")[1:]]),
    "claims of 1,000 nested arrays": lambda issuer: "Bearer " + ".".join(
        [issuer.token().split(".")[0], b64(b"[" * 1000 + b"]" * 1000), issuer.token().split(".")[2]]),
    "signed scp of nested lists": lambda issuer: f"Bearer {issuer.token(scopes=None, scp=[['customers:write']])}",
    "signed scope that is not text": lambda issuer: f"Bearer {issuer.token(scopes={'customers:write': True})}",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_401_and_nothing_stored(client, db, issuer, case):
    authorization = REFUSED[case](issuer)
    headers = {"Authorization": authorization}
    created = client.post("/customer", {"name": "Mallory", "email": "mallory@example.com"}, headers)
    assert created.status_code == 401, (case, created.body)
    assert created.json_body["Code"] == "UnauthorizedError" and created.json_body["Message"]
    assert created.headers["WWW-Authenticate"].startswith('Bearer realm="customer-service"')
    if authorization is not None:
        assert "error=" in created.headers["WWW-Authenticate"]
    for response in (client.get("/customers?email=ada@example.com", headers),
                     client.get("/customer/123e4567-e89b-12d3-a456-426614174000", headers),
                     client.delete("/customer/123e4567-e89b-12d3-a456-426614174000", headers)):
        assert response.status_code == 401, case
    assert count(db) == 0 and count(db, "outbox") == 0


def test_a_refused_change_leaves_the_customer_as_it_was(client, db, issuer):
    customer_id = client.create_id()
    expired = {"Authorization": f"Bearer {issuer.token(expires_in=-120)}"}
    assert client.change_email(customer_id, "x@example.com", expired).status_code == 401
    assert client.delete(f"/customer/{customer_id}", expired).status_code == 401
    assert count(db) == 1


@pytest.mark.parametrize("scopes, method, path", [
    ("customers:read", "POST", "/customer"),
    ("customers:read", "POST", "/customer/{id}/email"),
    ("customers:read", "DELETE", "/customer/{id}"),
    ("customers:write", "GET", "/customer/{id}"),
    ("customers:write", "GET", "/customer/{id}/events"),
    ("customers:write", "GET", "/customers?email=ada@example.com"),
    ("customers:erase", "GET", "/customer/{id}"),
    ("", "GET", "/customer/{id}"),
])
def test_a_valid_token_without_the_scope_is_403_and_changes_nothing(client, db, issuer, scopes, method, path):
    customer_id = client.create_id()
    token = issuer.token(subject="limited", scopes=scopes)
    body = json.dumps({"name": "Eve", "email": "eve@example.com"} if path == "/customer" else {"email": "e@x.io"})
    response = client.http.request(method, path.format(id=customer_id), body=body.encode(),
                                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 403, response.body
    assert json.loads(response.body)["Code"] == "ForbiddenError"
    needed = "customers:write" if method != "GET" else "customers:read"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="customer-service", error="insufficient_scope", scope="{needed}"')
    assert count(db) == 1


def test_public_routes_need_no_token_and_show_no_data(client, db):
    customer_id = client.create_id(email="stored.person@example.org")
    for path in ("/health", "/openapi.json", "/asyncapi.json", "/docs", "/docs/swagger-ui.css"):
        response = client.get(path, {"Authorization": None})
        assert response.status_code == 200, path
        assert b"stored.person" not in response.body and customer_id.encode() not in response.body


def test_a_rotated_key_is_fetched_when_a_token_names_it(client, db, issuer, application):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, refetch_interval=0)
    with serving(CustomerApplication(application.settings, verifier=verifier)):
        assert client.get("/customers?email=ada@example.com").status_code == 200  # keys fetched and cached
        new_key = other_key()
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(new_key.public_key()))
        issuer.extra_keys.append({**public, "kid": "rotated", "alg": "RS256", "use": "sig"})
        try:
            token = issuer.token(key=new_key, kid="rotated")
            assert client.get("/customers?email=ada@example.com", {"Authorization": f"Bearer {token}"}
                              ).status_code == 200
        finally:
            issuer.extra_keys.clear()


def test_unknown_key_ids_do_not_make_us_fetch_the_keys_again_and_again(issuer):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, refetch_interval=60)
    before = issuer.jwks_requests
    verifier.verify(f"Bearer {issuer.token()}")
    for n in range(5):
        with pytest.raises(Exception, match="key the issuer does not publish"):
            verifier.verify(f"Bearer {issuer.token(key=other_key(), kid=f'random-{n}')}")
    assert issuer.jwks_requests - before == 1


def test_the_caller_is_recorded_on_every_event_in_history_and_on_kafka(client, db, issuer, topic, kafka_bootstrap,
                                                                       application):
    from tests.support.kafka import cloudevent, read_topic

    token = issuer.token(subject="agent-007", client_id="support-desk")
    customer_id = client.create("Ada", "ada@example.com", {"Authorization": f"Bearer {token}"}).json_body["id"]
    client.change_email(customer_id, "ada@engine.org")  # as test-user
    history = client.get(f"/customer/{customer_id}/events").json_body["events"]
    assert [e["actor"] for e in history] == [{"subject": "agent-007", "client_id": "support-desk"},
                                             {"subject": "test-user", "client_id": "dev-client"}]
    application.outbox_relay().run_once()
    events = sorted((cloudevent(r) for r in read_topic(kafka_bootstrap, topic, expected=2)),
                    key=lambda e: e["streamversion"])
    assert [(e["actor"], e["actorclientid"]) for e in events] == [("agent-007", "support-desk"),
                                                                  ("test-user", "dev-client")]


def test_idempotency_keys_are_each_callers_own(client, db, issuer):
    alice = {"Authorization": f"Bearer {issuer.token(subject='alice')}", "Idempotency-Key": "same-key"}
    bob = {"Authorization": f"Bearer {issuer.token(subject='bob')}", "Idempotency-Key": "same-key"}
    first = client.create("Ada", "ada@example.com", alice)
    second = client.create("Bob", "bob@example.com", bob)  # not a 422, not Alice's answer
    assert first.json_body["id"] != second.json_body["id"]
    assert "Idempotent-Replayed" not in second.headers
    assert client.create("Ada", "ada@example.com", alice).headers["Idempotent-Replayed"] == "true"
    assert count(db) == 2


def test_a_remembered_token_is_refused_once_it_expires(issuer):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, leeway_seconds=0)
    expires = int(time.time()) + 3  # exp is in whole seconds
    header = f"Bearer {issuer.token(exp=expires)}"
    assert verifier.verify(header).subject == "dev-user"
    assert verifier.verify(header).subject == "dev-user"  # remembered
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    with pytest.raises(Exception, match="expired"):
        verifier.verify(header)


def test_an_altered_copy_of_a_remembered_token_is_still_refused(issuer):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url)
    token = issuer.token(subject="alice", scopes="customers:read")
    assert verifier.verify(f"Bearer {token}").scopes == {"customers:read"}
    header, _, signature = token.split(".")
    more = b64(json.dumps(claims(issuer, sub="alice", scope="customers:read customers:erase")).encode())
    with pytest.raises(Exception, match="not valid"):
        verifier.verify(f"Bearer {header}.{more}.{signature}")


def test_remembered_tokens_are_bounded(issuer):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, cache_size=3)
    for n in range(10):
        verifier.verify(f"Bearer {issuer.token(subject=f'user-{n}')}")
    assert len(verifier._verified) == 3


def publish_extra_key(issuer, kid: str):
    key = other_key()
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    issuer.extra_keys.append({**public, "kid": kid, "alg": "RS256", "use": "sig"})
    return key


def test_a_withdrawn_key_stops_working_within_the_refresh_interval_remembered_tokens_too(issuer):
    clock = Clock(1000.0)
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, refresh_seconds=300, clock=clock)
    try:
        leaked = publish_extra_key(issuer, "leaked")
        remembered = f"Bearer {issuer.token(key=leaked, kid='leaked')}"
        assert verifier.verify(remembered).subject == "dev-user"
        issuer.extra_keys.clear()  # the issuer withdraws it
        clock.now += 299
        assert verifier.verify(remembered).subject == "dev-user"  # not refreshed yet
        clock.now += 1
        with pytest.raises(Unauthenticated, match="key the issuer does not publish"):
            verifier.verify(remembered)
        with pytest.raises(Unauthenticated, match="key the issuer does not publish"):
            verifier.verify(f"Bearer {issuer.token(key=leaked, kid='leaked')}")
        assert verifier.verify(f"Bearer {issuer.token()}").subject == "dev-user"  # the other key serves on
    finally:
        issuer.extra_keys.clear()


def test_an_issuer_that_is_down_is_asked_once_per_interval_and_the_keys_held_serve_on(issuer):
    clock = Clock(1000.0)
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, refresh_seconds=300, refetch_interval=10,
                             clock=clock)
    issuer.down = True
    try:
        before = issuer.jwks_requests
        for n in range(3):  # three tokens in 9 s while it is down: asked once
            with pytest.raises(Unauthenticated, match="cannot be fetched now"):
                verifier.verify(f"Bearer {issuer.token(kid=f'unknown-{n}')}")
            clock.now += 4.5
        assert issuer.jwks_requests - before == 1
        issuer.down = False
        clock.now += 1
        known = f"Bearer {issuer.token()}"
        assert verifier.verify(known).subject == "dev-user"
        assert issuer.jwks_requests - before == 2

        issuer.down = True
        clock.now += 300  # the keys are due for a refresh and the issuer is down: they serve on
        assert verifier.verify(known).subject == "dev-user"
        assert verifier.verify(f"Bearer {issuer.token(subject='another')}").subject == "another"
        for n in range(3):
            with pytest.raises(Unauthenticated, match="key the issuer does not publish"):
                verifier.verify(f"Bearer {issuer.token(kid=f'unknown-again-{n}')}")
        assert issuer.jwks_requests - before == 3
    finally:
        issuer.down = False


def test_the_refresh_interval_is_at_most_ten_minutes(monkeypatch, issuer):
    from chalicelib.infra.settings import ConfigurationError, Settings

    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/unused")
    monkeypatch.setenv("AUTH_JWKS_REFRESH_SECONDS", "601")
    with pytest.raises(ConfigurationError, match="AUTH_JWKS_REFRESH_SECONDS"):
        Settings.from_env()
    monkeypatch.setenv("AUTH_JWKS_REFRESH_SECONDS", "600")
    assert Settings.from_env().auth_jwks_refresh_seconds == 600


def test_with_the_audience_in_client_id_a_token_of_another_app_client_is_refused(issuer):
    verifier = TokenVerifier(issuer.url, "app-client-a", issuer.jwks_url, audience_claim="client_id")
    assert verifier.verify(f"Bearer {issuer.token(client_id='app-client-a', aud=None)}").client_id == "app-client-a"
    for other in ("app-client-b", None):
        with pytest.raises(Unauthenticated, match="another audience"):
            verifier.verify(f"Bearer {issuer.token(client_id=other, aud='app-client-a')}")


def test_clocks_a_little_apart_are_forgiven_and_no_more(issuer):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url, leeway_seconds=30)
    now = int(time.time())
    ahead = issuer.token(subject="ahead", iat=now + 10, nbf=now + 10)  # the issuer's clock runs ahead of ours
    assert verifier.verify(f"Bearer {ahead}").subject == "ahead"
    just_expired = issuer.token(subject="just", iat=now - 600, nbf=now - 600, exp=now - 10)
    assert verifier.verify(f"Bearer {just_expired}").subject == "just"
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(f"Bearer {issuer.token(iat=now - 600, nbf=now - 600, exp=now - 60)}")
    with pytest.raises(Unauthenticated, match="not valid yet"):
        verifier.verify(f"Bearer {issuer.token(iat=now, nbf=now + 60)}")


def test_a_remembered_tokens_header_and_payload_with_another_signature_is_refused(issuer):
    verifier = TokenVerifier(issuer.url, AUDIENCE, issuer.jwks_url)
    token = issuer.token(subject="alice")
    assert verifier.verify(f"Bearer {token}").subject == "alice"  # verified, remembered
    header, payload, signature = token.split(".")
    forged = b64(bytes(reversed(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))))
    for garbage in (forged, "AAAA", ""):
        with pytest.raises(Unauthenticated):
            verifier.verify(f"Bearer {header}.{payload}.{garbage}")
