"""Lambda SnapStart for the API function (ApiSnapStart in the template):
Lambda initializes a published version once, snapshots the container and
starts new containers from copies of that snapshot.

Before the snapshot: the modules the first request needs are imported (the
bulk of a cold start); nothing is opened, so the snapshot holds no
connection, secret or key. After each restore, what must differ between
containers or cannot outlive the snapshot: the `random` module reseeded
from the system's entropy (copies would share its state), the application's
parts dropped (made again on first use: connections, secrets, keys, caches
timed by a clock the restore moved), and the next invocation logged as a
cold start.

The hooks are registered through `snapshot_restore_py`, which the Lambda
runtime provides from Python 3.12 on; elsewhere there is nothing to
register.
"""

from __future__ import annotations

import importlib
import random

# What the first request of a container imports, beyond `import app`
# (tests/unit/test_cold_start.py keeps them out of the import).
FIRST_REQUEST_MODULES = (
    "chalicelib.bootstrap", "chalicelib.usecases.commands", "chalicelib.usecases.queries",
    "chalicelib.usecases.unit_of_work", "chalicelib.personal.sealing", "chalicelib.domain.customer",
    "chalicelib.readmodel.queries", "chalicelib.usecases.health", "psycopg", "psycopg_pool", "jwt",
    "cryptography.hazmat.primitives.ciphers.aead", "orjson", "boto3", "botocore.session",
)


def before_snapshot() -> None:
    for name in FIRST_REQUEST_MODULES:
        importlib.import_module(name)


def after_restore() -> None:
    from chalicelib import application
    from chalicelib.infra import logs

    random.seed()
    previous = application.serve(None)
    if previous is not None:
        previous.close()
    logs.restored()


def register() -> bool:
    """Register the hooks where the runtime snapshots; False elsewhere."""
    try:
        import snapshot_restore_py
    except ImportError:
        return False
    snapshot_restore_py.register_before_snapshot(before_snapshot)
    snapshot_restore_py.register_after_restore(after_restore)
    return True
