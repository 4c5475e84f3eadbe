"""Import is Lambda cold start: it must open no connection of any kind."""

import subprocess
import sys
from pathlib import Path

from tests.support.no_network import REFUSE_NETWORK

GUARD = REFUSE_NETWORK + """
import app
print(sorted(app.app.routes))
"""


def test_importing_the_app_does_no_network_io():
    result = subprocess.run(
        [sys.executable, "-c", GUARD],
        cwd=Path(__file__).resolve().parents[2],
        env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PATH": ""},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "/customer/{customer_id}" in result.stdout


# Loaded by the functions that need them, when they need them: each is
# milliseconds of every new container's cold start.
NOT_AT_IMPORT = [
    "chalicelib.eventstore.outbox", "chalicelib.eventstore.relay", "chalicelib.infra.kafka_publisher",
    "chalicelib.infra.kafka_delivery",
    "chalicelib.infra.dead_letters", "chalicelib.readmodel.projection", "chalicelib.readmodel.rebuild",
    "chalicelib.usecases.commands", "chalicelib.usecases.publishing", "chalicelib.usecases.read_side",
    "chalicelib.usecases.erasure", "chalicelib.personal.sealing", "chalicelib.domain.customer",
    "chalicelib.usecases.health", "kafka", "boto3", "botocore", "cryptography", "jwt", "psycopg_pool",
    "aws_lambda_powertools", "orjson", "urllib.request",
]

LOADED = """
import sys
import app
print(sorted(name for name in sys.modules if name in set(sys.argv[1:])))
"""


def test_importing_the_app_loads_only_what_every_function_needs():
    result = subprocess.run([sys.executable, "-c", LOADED, *NOT_AT_IMPORT], cwd=Path(__file__).resolve().parents[2],
                            env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PATH": ""},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
