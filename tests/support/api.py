"""One client for the HTTP API in tests: chalice.test.Client with the
requests the tests keep making, by name."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from chalice.test import Client

from chalicelib import application as application_module
from chalicelib.application import CustomerApplication

JSON = {"Content-Type": "application/json"}


class _WithToken:
    """client.http, sending the token unless the request names its own
    Authorization (or None: no header at all)."""

    def __init__(self, http, token: str | None) -> None:
        self._http = http
        self.token = token

    def request(self, method: str, path: str, headers: dict | None = None, body=b""):
        headers = dict(headers or {})
        if "Authorization" not in headers and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers = {name: value for name, value in headers.items() if value is not None}
        return self._http.request(method, path, headers=headers, body=body)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)


class Api:
    def __init__(self, client: Client, token: str | None = None) -> None:
        self.client = client
        self.http = _WithToken(client.http, token)
        self.lambda_ = client.lambda_

    def post(self, path: str, body, headers: dict | None = None):
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.http.post(path, body=raw, headers={**JSON, **(headers or {})})

    def create(self, name: str = "Ada Lovelace", email: str = "ada@example.com", headers: dict | None = None,
               expect: int | None = 201):
        """POST /customer; checks the status unless `expect` is None."""
        response = self.post("/customer", {"name": name, "email": email}, headers)
        if expect is not None:
            assert response.status_code == expect, response.body
        return response

    def create_id(self, email: str = "ada@example.com", name: str = "Ada Lovelace") -> str:
        return self.create(name, email).json_body["id"]

    def change_email(self, customer_id: str, email: str, headers: dict | None = None):
        return self.post(f"/customer/{customer_id}/email", {"email": email}, headers)

    def get(self, path: str, headers: dict | None = None):
        return self.http.get(path, headers=headers or {})

    def delete(self, path: str, headers: dict | None = None):
        return self.http.delete(path, headers=headers or {})


@contextlib.contextmanager
def serving(application: CustomerApplication) -> Iterator[CustomerApplication]:
    """The app's functions use `application` inside the block; it is closed
    after, and the one served before is served again."""
    previous = application_module.serve(application)
    try:
        yield application
    finally:
        application_module.serve(previous)
        application.close()
