"""moto in server mode, for the local stack, with one difference: the KMS
keys it makes are the same on every run (AWS keeps keys; moto keeps
everything in memory, so a restarted emulator could no longer unwrap the
data keys stored in the local database). Key ids and key material are drawn
from a seed saved under the stack's folder.

    python -m devstack.moto_server -H 127.0.0.1 -p 4566   (started by `make run`)
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import sys
import uuid
from pathlib import Path


def keep_kms_keys(seed_file: Path) -> None:
    import moto.kms.models as kms_models

    if not seed_file.exists():
        seed_file.parent.mkdir(parents=True, exist_ok=True)
        seed_file.write_bytes(os.urandom(32))
        seed_file.chmod(0o600)
    seed = seed_file.read_bytes()
    ids, materials = itertools.count(), itertools.count()

    def derive(label: str, n: int) -> bytes:
        return hmac.new(seed, f"{label}:{n}".encode(), hashlib.sha256).digest()

    kms_models.generate_key_id = lambda multi_region=False: (
        ("mrk-" if multi_region else "") + str(uuid.UUID(bytes=derive("id", next(ids))[:16])))
    kms_models.generate_master_key = lambda: derive("material", next(materials))


def main() -> int:
    from moto.server import main as serve

    keep_kms_keys(Path(os.environ["DEVSTACK_KMS_SEED_FILE"]))
    serve(sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
