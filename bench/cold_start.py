"""Cold start of the API function: `import app` plus the first request (an
authenticated read of a customer) in a fresh process, as a new Lambda
container pays it. With the database URL in the environment, and with the
credentials read from the database secret (Secrets Manager, emulated by
moto in server mode): what the secret costs.

    python -m bench.cold_start [--project DIR]   (DIR: another checkout to compare)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack import aws
from devstack.issuer import DevIssuer
from devstack.postgres import database_for_run, free_port

PROJECT = Path(__file__).resolve().parent.parent

# Run in the fresh process: time the import, make a first request, time it.
_PROBE = """
import json, sys, time
began = time.perf_counter()
import app
imported = time.perf_counter()
from chalice.test import Client
with Client(app.app) as client:
    before = time.perf_counter()
    response = client.http.get("/customer/" + sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
    done = time.perf_counter()
assert response.status_code == 200, response.body
print(json.dumps({"import_ms": (imported - began) * 1000, "first_request_ms": (done - before) * 1000}))
"""


def measure(project: Path, env: dict[str, str], customer_id: str, token: str, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _PROBE, customer_id, token], cwd=project, env=env, check=True,
                             capture_output=True, text=True).stdout
        samples.append(json.loads(out.strip().splitlines()[-1]))
    import_ms = statistics.median(s["import_ms"] for s in samples)
    request_ms = statistics.median(s["first_request_ms"] for s in samples)
    return {"import_ms": import_ms, "first_request_ms": request_ms, "total_ms": import_ms + request_ms}


def run(project: Path = PROJECT, runs: int = 7, secret: bool = True) -> dict[str, dict[str, float]]:
    from chalicelib.application import CustomerApplication
    from chalicelib.eventstore.events import CommandContext
    from chalicelib.infra.settings import Settings

    issuer = DevIssuer(Path(tempfile.mkdtemp(prefix="bench-issuer-")), free_port())
    issuer.serve()
    emulated = aws.EmulatedAws(free_port(), "eu-west-1", Path(tempfile.mkdtemp(prefix="bench-aws-")))
    emulated.start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "DATABASE_SECRET_ARN"}
    base.update(issuer.environment(), LOG_LEVEL="warning", POWERTOOLS_METRICS_DISABLED="true")
    try:
        with database_for_run("customer_cold_start", durable=False) as url:
            os.environ["DATABASE_URL"] = url
            application = CustomerApplication(Settings.from_env())
            customer_id = application.create_customer("Ada", "ada@example.com",
                                                       CommandContext("bench", "bench")).customer_id
            application.close()
            token = issuer.token(subject="bench")
            params = __import__("psycopg").conninfo.conninfo_to_dict(url)
            made = aws.provision(emulated.endpoint, "eu-west-1", {
                "username": params["user"], "password": params.get("password", "unused"), "host": params["host"],
                "port": params["port"], "dbname": params["dbname"]}, aws.email_hash_secret(emulated.state))
            results = {"database_url": measure(project, {**base, "DATABASE_URL": url}, customer_id, token, runs)}
            if not secret:
                return results
            results["database_secret"] = measure(project, {**base, **emulated.environment(),
                                                           "DATABASE_SECRET_ARN": made["DATABASE_SECRET_ARN"]},
                                                 customer_id, token, runs)
    finally:
        emulated.stop()
        issuer.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=PROJECT)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--url-only", action="store_true", help="for a checkout that reads no secret")
    args = parser.parse_args()
    results = run(args.project.resolve(), args.runs, secret=not args.url_only)
    for name, figures in results.items():
        print(f"{name:>16}: import {figures['import_ms']:6.0f} ms + first request {figures['first_request_ms']:6.0f} ms"
              f" = {figures['total_ms']:6.0f} ms (median of {args.runs} fresh processes)")
    if "database_secret" in results:
        secret, url = results["database_secret"]["total_ms"], results["database_url"]["total_ms"]
        print(f"the secret adds {secret - url:.0f} ms ({secret / url:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
