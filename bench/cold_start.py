"""Cold start of the API function, as a new Lambda container pays it:
`import app` plus the first request (an authenticated read of a customer),
in a fresh process, the handler invoked the way Lambda invokes it (an API
Gateway proxy event and a context). Against a floor: a Chalice app that
reads the same row with psycopg (imported on first use) and nothing else,
measured the same way in the same run. With the database URL in the
environment, and with the credentials read from the database secret
(Secrets Manager, emulated by moto in server mode): what the secret costs.

    python -m bench.cold_start [--project DIR]   (DIR: another checkout to compare)
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from devstack import aws
from devstack.issuer import DevIssuer
from devstack.postgres import database_for_run, free_port

PROJECT = Path(__file__).resolve().parent.parent
TARGET = 1.2  # ours against the floor (`make bench` prints it too)

# Run in the fresh process: time the import, invoke the handler once, time it.
_PROBE = """
import json, sys, time, uuid
began = time.perf_counter()
import app
imported = time.perf_counter()

class Context:
    function_name, memory_limit_in_mb, aws_request_id = "api_handler", 512, str(uuid.uuid4())
    def get_remaining_time_in_millis(self):
        return 25_000

event = {
    "resource": "/customer/{customer_id}", "path": "/customer/" + sys.argv[1], "httpMethod": "GET",
    "headers": {"authorization": "Bearer " + sys.argv[2], "host": "localhost"},
    "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
    "pathParameters": {"customer_id": sys.argv[1]}, "stageVariables": None, "body": None, "isBase64Encoded": False,
    "requestContext": {"resourcePath": "/customer/{customer_id}", "httpMethod": "GET", "path": "/api/customer",
                       "requestId": str(uuid.uuid4()), "stage": "api"},
}
before = time.perf_counter()
response = app.app(event, Context())
done = time.perf_counter()
assert response["statusCode"] == 200, response
print(json.dumps({"import_ms": (imported - began) * 1000, "first_request_ms": (done - before) * 1000}))
"""

# What any API function must do at least: Chalice, psycopg, one query.
FLOOR_APP = '''
import os

from chalice import Chalice, NotFoundError

app = Chalice(app_name="floor")
_connection = None


@app.route("/customer/{customer_id}")
def get_customer(customer_id):
    global _connection
    import psycopg

    if _connection is None:
        _connection = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    row = _connection.execute("SELECT id, name, email, version FROM customers_view WHERE id = %s",
                              (customer_id,)).fetchone()
    if row is None:
        raise NotFoundError(customer_id)
    return {"id": str(row[0]), "name": row[1], "email": row[2], "version": row[3]}
'''


def probe(project: Path, env: dict[str, str], customer_id: str, token: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _PROBE, customer_id, token], cwd=project, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed in {project}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(cases: dict[str, tuple[Path, dict[str, str]]], customer_id: str, token: str,
            runs: int) -> dict[str, dict[str, float]]:
    """Each case run `runs` times, the cases taking turns (so that the
    machine's drift hits them alike); the medians."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (project, env) in cases.items():
            samples[name].append(probe(project, env, customer_id, token))
    return {name: {"import_ms": statistics.median(s["import_ms"] for s in taken),
                   "first_request_ms": statistics.median(s["first_request_ms"] for s in taken),
                   "total_ms": statistics.median(s["import_ms"] + s["first_request_ms"] for s in taken)}
            for name, taken in samples.items()}


def packaged(source: Path | None) -> Path:
    """The function's code as `make package` ships it: app.py and chalicelib/
    with their bytecode compiled (Lambda cannot write it, and would compile
    every module at every cold start); `source` None: the floor app."""
    folder = Path(tempfile.mkdtemp(prefix="bench-cold-start-"))
    if source is None:
        (folder / "app.py").write_text(FLOOR_APP)
    else:
        shutil.copy(source / "app.py", folder / "app.py")
        shutil.copytree(source / "chalicelib", folder / "chalicelib",
                        ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(folder, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return folder


def run(project: Path = PROJECT, runs: int = 9, secret: bool = True) -> dict[str, dict[str, float]]:
    from chalicelib.application import CustomerApplication
    from chalicelib.eventstore.events import CommandContext
    from chalicelib.infra.settings import Settings

    issuer = DevIssuer(Path(tempfile.mkdtemp(prefix="bench-issuer-")), free_port())
    issuer.serve()
    emulated = aws.EmulatedAws(free_port(), "eu-west-1", Path(tempfile.mkdtemp(prefix="bench-aws-")))
    emulated.start()
    # Only what the deployed function's environment holds (no stage file is read).
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DB_", "DATABASE_"))}
    base.update(issuer.environment(), LOG_LEVEL="warning", POWERTOOLS_METRICS_DISABLED="true")
    try:
        with database_for_run("customer_cold_start", durable=False) as url:
            given = os.environ.get("DATABASE_URL")
            os.environ["DATABASE_URL"] = url
            application = CustomerApplication(Settings.from_env())
            customer_id = application.create_customer("Ada", "ada@example.com",
                                                       CommandContext("bench", "bench")).customer_id
            application.reproject({uuid.UUID(customer_id)})  # both read it from the read model
            application.close()
            # Left as found: `make bench` goes on, and a DATABASE_URL names the server to use.
            if given is None:
                os.environ.pop("DATABASE_URL")
            else:
                os.environ["DATABASE_URL"] = given
            token = issuer.token(subject="bench")
            params = __import__("psycopg").conninfo.conninfo_to_dict(url)
            made = aws.provision(emulated.endpoint, "eu-west-1", {
                "username": params["user"], "password": params.get("password", "unused"), "host": params["host"],
                "port": params["port"], "dbname": params["dbname"]}, aws.key_secrets(emulated.state))
            with_url = {**base, "DATABASE_URL": url}
            code = packaged(project)
            cases = {"floor": (packaged(None), with_url), "database_url": (code, with_url)}
            if secret:
                cases["database_secret"] = (code, {**base, **emulated.environment(),
                                                      "DATABASE_SECRET_ARN": made["DATABASE_SECRET_ARN"]})
            results = measure(cases, customer_id, token, runs)
    finally:
        emulated.stop()
        issuer.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=PROJECT)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--url-only", action="store_true", help="for a checkout that reads no secret")
    args = parser.parse_args()
    results = run(args.project.resolve(), args.runs, secret=not args.url_only)
    for name, figures in results.items():
        print(f"{name:>16}: import {figures['import_ms']:6.0f} ms + first request {figures['first_request_ms']:6.0f} ms"
              f" = {figures['total_ms']:6.0f} ms (median of {args.runs} fresh processes)")
    floor = results["floor"]["total_ms"]
    print(f"ours with DATABASE_URL against the floor: {results['database_url']['total_ms'] / floor:.2f}x"
          f" (target <= {TARGET}x)")
    if "database_secret" in results:
        secret, url = results["database_secret"]["total_ms"], results["database_url"]["total_ms"]
        print(f"the secret adds {secret - url:.0f} ms ({secret / url:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
