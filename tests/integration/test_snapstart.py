"""Lambda SnapStart: the hooks the runtime runs before its snapshot and after
each restore, run the way the runtime runs them (through
snapshot_restore_py's registries, filled by `import app`), around requests
through the API function. Real PostgreSQL."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import snapshot_restore_py
from chalice.test import Client

from app import app
from chalicelib import application, snapstart
from tests.support.api import Api
from tests.support.builders import client_connections
from tests.support.no_network import REFUSE_NETWORK
from tests.support.waiting import wait_for


def run_hooks(registry) -> None:
    for func, args, kwargs in registry:
        func(*args, **kwargs)


@pytest.fixture
def container(db, issuer, monkeypatch):
    """The API function's container, its application built from the environment on first use."""
    for name, value in issuer.environment().items():
        monkeypatch.setenv(name, value)
    previous = application.serve(None)
    yield
    made = application.serve(previous)
    if made is not None:
        made.close()


def test_importing_the_app_registers_both_hooks():
    assert (snapstart.before_snapshot, (), {}) in snapshot_restore_py.get_before_snapshot()
    assert (snapstart.after_restore, (), {}) in snapshot_restore_py.get_after_restore()


def test_a_restored_container_connects_anew_draws_other_random_numbers_and_logs_a_cold_start(
        container, db, issuer, capfd):
    with Client(app) as lambda_client:
        api = Api(lambda_client, token=issuer.token(subject="snapstart"))
        customer_id = api.create_id("ada@example.com")
        assert client_connections(db) >= 1
        before = application.current()

        random.seed(7)
        snapshot_draw = random.random()
        random.seed(7)  # as the snapshot left it, in every copy
        run_hooks(snapshot_restore_py.get_after_restore())
        assert random.random() != snapshot_draw
        wait_for(lambda: client_connections(db) == 0, timeout=10)  # the snapshot's connections are gone

        capfd.readouterr()
        assert api.get(f"/customer/{customer_id}").status_code == 200
        api.change_email(customer_id, "ada.l@example.com")
        assert application.current() is not before
        assert client_connections(db) >= 1
        colds = [json.loads(line)["cold_start"] for line in capfd.readouterr().err.splitlines()
                 if '"cold_start"' in line and line.startswith("{")]
        assert colds[0] is True and not any(colds[1:])


_BEFORE_SNAPSHOT = REFUSE_NETWORK + """
import sys
import app, snapshot_restore_py
from chalicelib import application, snapstart
for func, args, kwargs in snapshot_restore_py.get_before_snapshot():
    func(*args, **kwargs)
missing = [name for name in snapstart.FIRST_REQUEST_MODULES if name not in sys.modules]
assert not missing, missing
assert application._current is None, "an application was made before the snapshot"
print("ok")
"""


def test_before_the_snapshot_the_first_requests_modules_are_imported_and_nothing_is_opened():
    ran = subprocess.run([sys.executable, "-c", _BEFORE_SNAPSHOT], cwd=Path(__file__).resolve().parents[2],
                         env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PATH": ""},
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr
