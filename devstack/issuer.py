"""A development OpenID Connect issuer: an RSA key pair kept in a folder
(`.devstack/issuer` for `make run`), its JWKS served over HTTP on loopback,
and tokens signed with it. The local stack and the tests use it the way the
service uses Cognito or any other issuer on AWS. Never deployed.

    python -m devstack.issuer token    (make token) a token for the running stack,
                                       SCOPES="customers:read customers:write", SUBJECT=...
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

AUDIENCE = "customer-service"
DEFAULT_SCOPES = "customers:read customers:write"


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def environment(self) -> dict[str, str]:
        """The service's settings for trusting this issuer."""
        return {"AUTH_ISSUER": self.url, "AUTH_AUDIENCE": AUDIENCE, "AUTH_JWKS_URL": self.jwks_url}

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
                documents = {
                    "/.well-known/jwks.json": issuer.jwks,
                    "/.well-known/openid-configuration": lambda: {"issuer": issuer.url,
                                                                  "jwks_uri": issuer.jwks_url},
                }
                if self.path not in documents:
                    self.send_error(404)
                    return
                if self.path.endswith("jwks.json"):
                    issuer.jwks_requests += 1
                if issuer.down:
                    self.send_error(503)
                    return
                body = json.dumps(documents[self.path]()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
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
