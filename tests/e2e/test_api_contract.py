"""The published contract: /openapi.json lists every route, /docs renders it
offline, and schemathesis finds the running API true to it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import app
from chalicelib.api import openapi
from devstack.aws import EMAIL_HASH_SECRET_NAME, KMS_ALIAS, EmulatedAws, key_secrets, provision
from devstack.postgres import free_port
from tests.support.waiting import wait_for

PROJECT = Path(__file__).resolve().parents[2]


def test_the_document_has_every_route_and_method_of_the_app():
    documented = {(path, method.upper()) for path, item in openapi.document()["paths"].items() for method in item}
    routed = {(path, method) for path, entries in app.routes.items() for method in entries}
    assert documented == routed


def test_openapi_json_is_served_and_public(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json_body["openapi"] == "3.1.0"
    assert set(response.json_body["paths"]) >= {"/customer", "/customer/{customer_id}", "/health"}


def test_docs_page_loads_its_script_and_style_from_this_api(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert "https://" not in html and "http://" not in html  # nothing from a CDN
    for asset, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
        assert f'"docs/{asset}"' in html
        served = client.get(f"/docs/{asset}")
        assert served.status_code == 200 and served.headers["Content-Type"].startswith(kind)
        assert len(served.body) > 10_000
    assert client.get("/docs/..%2Fapp.py").status_code == 404
    assert client.get("/docs/index.html").status_code == 404


@pytest.fixture
def emulated_aws(tmp_path):
    """The AWS endpoint `make run` starts, with the KMS key and secrets it makes."""
    emulated = EmulatedAws(free_port(), "eu-west-1", tmp_path)
    emulated.start()
    made = provision(emulated.endpoint, "eu-west-1", {"username": "unused", "password": "unused"},
                     key_secrets(tmp_path))
    yield {**emulated.environment(), "KMS_KEY_ID": KMS_ALIAS, "EMAIL_HASH_SECRET_ARN": EMAIL_HASH_SECRET_NAME,
           "ERASURE_LOG_BUCKET": made["ERASURE_LOG_BUCKET"]}
    emulated.stop()


@pytest.fixture
def running_api(db, kafka_bootstrap, issuer, emulated_aws):
    """The API under chalice local, as `make run` serves it."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "LOG_LEVEL": "error",
           "POWERTOOLS_METRICS_DISABLED": "true", **issuer.environment(), **emulated_aws}
    server = subprocess.Popen([str(Path(sys.executable).parent / "chalice"), "local", "--host", "127.0.0.1",
                               "--port", str(port), "--stage", "dev", "--no-autoreload"],
                              cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import urllib.request

        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json").status == 200
            except OSError:
                return False

        assert wait_for(up, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_schemathesis_finds_no_5xx_and_nothing_the_document_does_not_say(running_api, issuer, tmp_path):
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_headers_conformance,response_schema_conformance")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(Path(__file__).with_name(
            "schemathesis.toml")), "run", f"{running_api}/openapi.json",
         "--checks", checks, "--max-examples", "40", "--phases", "examples,coverage,fuzzing",
         "--workers", "1", "--seed", "1", "--request-timeout", "20", "--no-color",
         "--header",
         f"Authorization: Bearer {issuer.token(scopes='customers:read customers:write customers:erase')}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
