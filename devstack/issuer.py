"""A development OpenID Connect issuer: an RSA key pair kept in a folder
(`.devstack/issuer` for `make run`), its JWKS served over HTTP on loopback,
and tokens signed with it. The local stack and the tests use it the way the
service uses Cognito or any other issuer on AWS. Never deployed.

It signs the developer in to the console as an issuer's hosted sign-in
page does: OpenID Connect's authorization code flow with PKCE (S256) for
the public client `customer-console`, redirecting only to loopback
addresses; the page asks for a name and the scopes to grant, no password.

    python -m devstack.issuer token    (make token) a token for the running stack,
                                       SCOPES="customers:read customers:write", SUBJECT=...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

AUDIENCE = "customer-service"
DEFAULT_SCOPES = "customers:read customers:write"
CONSOLE_CLIENT_ID = "customer-console"
SCOPES = ("customers:operate", "customers:read", "customers:write", "customers:erase", "customers:feed")
CODE_SECONDS = 60


class DevIssuer:
    def __init__(self, folder: Path, port: int) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.folder = folder
        self.port = port
        folder.mkdir(parents=True, exist_ok=True)
        key_file = folder / "private-key.pem"
        if not key_file.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            key_file.chmod(0o600)
            (folder / "kid").write_text(uuid.uuid4().hex[:16])
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{key_file} does not hold an RSA private key")
        self.private_key = loaded
        self.kid = (folder / "kid").read_text().strip()
        self.extra_keys: list[dict] = []  # published too: rotation in tests
        self.jwks_requests = 0
        self.down = False  # answers 503, as an issuer in an outage: tests
        self._server: ThreadingHTTPServer | None = None
        self._codes: dict[str, dict] = {}  # code: what it was issued for, until used or CODE_SECONDS old
        self._codes_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def environment(self) -> dict[str, str]:
        """The service's settings for trusting this issuer, and the console's for signing in at it."""
        return {"AUTH_ISSUER": self.url, "AUTH_AUDIENCE": AUDIENCE, "AUTH_JWKS_URL": self.jwks_url,
                "CONSOLE_CLIENT_ID": CONSOLE_CLIENT_ID, "AUTH_AUTHORIZE_URL": f"{self.url}/authorize",
                "AUTH_TOKEN_URL": f"{self.url}/token"}

    def discovery(self) -> dict:
        return {"issuer": self.url, "jwks_uri": self.jwks_url, "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token", "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"], "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", *SCOPES], "token_endpoint_auth_methods_supported": ["none"]}

    def authorization_refusal(self, query: dict[str, str]) -> str | None:
        """Why a request to sign in is refused (shown, never redirected: the
        redirect address is not trusted until checked)."""
        if query.get("response_type") != "code":
            return "response_type must be code"
        if query.get("client_id") != CONSOLE_CLIENT_ID:
            return f"unknown client {query.get('client_id')!r}: this issuer knows {CONSOLE_CLIENT_ID} only"
        redirect = urllib.parse.urlsplit(query.get("redirect_uri") or "")
        if redirect.scheme != "http" or redirect.hostname not in ("127.0.0.1", "localhost"):
            return "redirect_uri must be a loopback http address"
        if query.get("code_challenge_method") != "S256" or len(query.get("code_challenge") or "") < 43:
            return "PKCE is required: code_challenge (S256, 43 characters or more) and code_challenge_method=S256"
        if not query.get("state"):
            return "state is required"
        return None

    def issue_code(self, query: dict[str, str], subject: str, scopes: list[str]) -> str:
        """The redirect back to the client with a code for these grants."""
        code = secrets.token_urlsafe(32)
        with self._codes_lock:
            now = time.monotonic()
            self._codes = {c: g for c, g in self._codes.items() if now - g["at"] < CODE_SECONDS}
            self._codes[code] = {"at": now, "subject": subject, "scope": " ".join(s for s in SCOPES if s in scopes),
                                 "redirect_uri": query["redirect_uri"], "challenge": query["code_challenge"]}
        return (query["redirect_uri"] + ("&" if "?" in query["redirect_uri"] else "?")
                + urllib.parse.urlencode({"code": code, "state": query["state"]}))

    def exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        """The token endpoint: a code, once, for the verifier its challenge was made of."""
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != CONSOLE_CLIENT_ID:
            return 401, {"error": "invalid_client"}
        with self._codes_lock:
            grant = self._codes.pop(form.get("code") or "", None)
        verifier = (form.get("code_verifier") or "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if (grant is None or time.monotonic() - grant["at"] >= CODE_SECONDS
                or grant["redirect_uri"] != form.get("redirect_uri") or not hmac.compare_digest(
                    challenge, grant["challenge"])):
            return 400, {"error": "invalid_grant"}
        return 200, {"access_token": self.token(grant["subject"], grant["scope"], client_id=CONSOLE_CLIENT_ID),
                     "token_type": "Bearer", "expires_in": 3600, "scope": grant["scope"]}

    def jwks(self) -> dict:
        from jwt.algorithms import RSAAlgorithm

        public = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}, *self.extra_keys]}

    def token(self, subject: str = "dev-user", scopes: str = DEFAULT_SCOPES, *, expires_in: float = 3600,
              client_id: str | None = "dev-client", key=None, kid: str | None = None, **claims) -> str:
        """A signed access token; `claims` override or add any claim."""
        import jwt

        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "sub": subject, "scope": scopes, "iat": now, "nbf": now,
                   "exp": now + int(expires_in), "jti": uuid.uuid4().hex}
        if client_id:
            payload["client_id"] = client_id
        payload.update(claims)
        return jwt.encode(payload, key or self.private_key, algorithm="RS256",
                          headers={"kid": kid or self.kid})

    def serve(self) -> ThreadingHTTPServer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path, _, raw_query = self.path.partition("?")
                if path == "/authorize":
                    self._authorize(dict(urllib.parse.parse_qsl(raw_query)))
                    return
                documents = {
                    "/.well-known/jwks.json": issuer.jwks,
                    "/.well-known/openid-configuration": issuer.discovery,
                }
                if path not in documents:
                    self.send_error(404)
                    return
                if path.endswith("jwks.json"):
                    issuer.jwks_requests += 1
                if issuer.down:
                    self.send_error(503)
                    return
                self._send(200, "application/json", json.dumps(documents[path]()).encode())

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path == "/token":
                    status, body = issuer.exchange(form)
                    self._send(status, "application/json", json.dumps(body).encode(), cors=True)
                elif self.path == "/authorize":
                    if self._refused(form):
                        return
                    scopes = [s for s in SCOPES if form.get(s) == "on"]
                    self.send_response(303)
                    self.send_header("Location", issuer.issue_code(form, form.get("subject") or "dev-user", scopes))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            def _refused(self, asked: dict[str, str]) -> bool:
                """Answers 400 with the reason to an authorization request it refuses."""
                refusal = issuer.authorization_refusal(asked)
                if refusal:
                    self._send(400, "text/plain; charset=utf-8", refusal.encode())
                return bool(refusal)

            def _authorize(self, query: dict[str, str]) -> None:
                if self._refused(query):
                    return
                asked = set((query.get("scope") or "").split())
                hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                                 for k, v in query.items())
                boxes = "".join(f'<label><input type="checkbox" name="{s}"{" checked" if s in asked else ""}>'
                                f" {s}</label><br>" for s in SCOPES)
                page = ("<!doctype html><meta charset=utf-8><title>Sign in: development issuer</title>"
                        "<h1>Development issuer</h1><p>Sign in to the console as anyone, with the scopes you"
                        " choose. (On AWS the configured issuer's own sign-in page asks here.)</p>"
                        f'<form method="post" action="/authorize">{hidden}<label>Name <input name="subject"'
                        f' value="dev-user"></label><p>{boxes}</p><button type="submit">Sign in</button></form>')
                self._send(200, "text/html; charset=utf-8", page.encode())

            def _send(self, status: int, content_type: str, body: bytes, cors: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if cors:
                    self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def main(argv: list[str]) -> int:
    if argv[:1] != ["token"]:
        print(__doc__, file=sys.stderr)
        return 2
    project = Path(__file__).resolve().parent.parent
    state = Path(os.environ.get("DEVSTACK_DIR") or project / ".devstack")
    env_file = state / "stack.env"
    if not env_file.exists():
        print("no local stack is running: start it with `make run`", file=sys.stderr)
        return 1
    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    issuer = DevIssuer(state / "issuer", int(settings["AUTH_ISSUER"].rsplit(":", 1)[1]))
    print(issuer.token(subject=os.environ.get("SUBJECT") or "dev-user",
                       scopes=os.environ.get("SCOPES") or DEFAULT_SCOPES))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
