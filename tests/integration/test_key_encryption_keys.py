"""Key-encryption keys: KMS is asked with the encryption context the key
policy requires, keys in clear live in memory for a bounded time, and keys
wrapped without the context (before the policy required it) are rewrapped
by an operator command. KMS is moto, which binds a ciphertext to its
context as KMS does."""

import uuid

import psycopg
import pytest
from botocore.exceptions import ClientError

from chalicelib.personal.keyring import ENCRYPTION_CONTEXT, KEY_CACHE_SECONDS, KeyNeedsRewrap, KeyRing
from ops.__main__ import main as ops
from tests.support.clock import Clock

pytestmark = pytest.mark.usefixtures("encryption")


def kek_rows(db):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT id, wrapped, encryption_context FROM key_encryption_keys ORDER BY id").fetchall()


def test_a_key_encryption_key_is_wrapped_under_the_context_and_opens_only_with_it(client, db, aws):
    client.create_id("ctx@example.com")
    ((_, wrapped, context),) = kek_rows(db)
    assert context == ENCRYPTION_CONTEXT
    assert len(aws("kms").decrypt(CiphertextBlob=bytes(wrapped), EncryptionContext=context)["Plaintext"]) == 32
    with pytest.raises(ClientError, match="InvalidCiphertext"):
        aws("kms").decrypt(CiphertextBlob=bytes(wrapped))


def container_with_a_customer(db, aws, key_id):
    """A container's key ring on a clock of the test's, and a customer whose key it made and stored."""
    clock = Clock()
    keys = KeyRing(lambda: psycopg.connect(db, autocommit=True), lambda: aws("kms"), key_id, clock=clock)
    customer = uuid.uuid4()
    _, wrapped = keys.new_key(customer)
    with psycopg.connect(db) as conn:
        KeyRing.store(conn, customer, wrapped)
    return keys, clock, customer


def key_for(keys, customer, db):
    with psycopg.connect(db) as conn:
        return keys.key_for(customer, conn)


def test_keys_in_clear_stay_in_memory_for_five_minutes_at_most(db, aws, encryption):
    keys, clock, customer = container_with_a_customer(db, aws, encryption)
    assert keys.kms_calls == 1
    clock.now = KEY_CACHE_SECONDS - 1
    assert key_for(keys, customer, db) is not None
    keys.new_key(uuid.uuid4())
    assert keys.kms_calls == 1  # all from memory

    assert KEY_CACHE_SECONDS <= 300
    clock.now = KEY_CACHE_SECONDS + 1
    assert key_for(keys, customer, db) is not None
    assert keys.kms_calls == 2  # the key-encryption key unwrapped again
    clock.now = 2 * KEY_CACHE_SECONDS + 2
    keys.new_key(uuid.uuid4())
    assert keys.kms_calls == 3  # the same one again, not a new one
    assert len(kek_rows(db)) == 1
    clock.now = 3 * KEY_CACHE_SECONDS + 3
    assert key_for(keys, customer, db) is not None
    assert keys.kms_calls == 4  # KMS is asked at least every five minutes: what it stops allowing stops serving


def test_keys_wrapped_without_the_context_are_rewrapped_by_the_operator_command_once(application, client, db, aws,
                                                                                     capsys):
    customer_id = client.create_id("old@example.com", "Old Release")
    ((kek_id, wrapped, context),) = kek_rows(db)
    kms = aws("kms")
    plaintext = kms.decrypt(CiphertextBlob=bytes(wrapped), EncryptionContext=context)["Plaintext"]
    key_id = kms.describe_key(KeyId=application.settings.kms_key_id)["KeyMetadata"]["Arn"]
    old = kms.encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]  # wrapped without the context
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE key_encryption_keys SET wrapped = %s, encryption_context = NULL, kms_key_id = %s",
                     (old, key_id))
    application.parts.close()  # a new container: nothing in memory
    with pytest.raises(KeyNeedsRewrap, match="python -m ops rewrap-keys"):
        application.customer(uuid.UUID(customer_id), strong=True)  # the service asks KMS only with the context

    assert ops(["rewrap-keys"]) == 0
    assert f"rewrapped 1 key-encryption keys with the encryption context (ids {kek_id})" in capsys.readouterr().out
    ((_, rewrapped, context),) = kek_rows(db)
    assert context == ENCRYPTION_CONTEXT
    with pytest.raises(ClientError, match="InvalidCiphertext"):
        kms.decrypt(CiphertextBlob=bytes(rewrapped))
    application.parts.close()
    assert client.get(f"/customer/{customer_id}?consistency=strong").json_body["name"] == "Old Release"
    assert ops(["rewrap-keys"]) == 0
    assert "none needed it" in capsys.readouterr().out
    assert kek_rows(db)[0][1] == rewrapped


def test_a_key_another_container_erased_stops_serving_within_five_minutes(db, aws, encryption):
    from chalicelib.personal.keyring import delete_key

    container, clock, customer = container_with_a_customer(db, aws, encryption)
    assert key_for(container, customer, db) is not None  # cached here
    with psycopg.connect(db) as conn:
        assert delete_key(conn, customer)  # erased by another container
    clock.now = KEY_CACHE_SECONDS - 1
    assert key_for(container, customer, db) is not None  # still cached: at most five minutes
    clock.now = KEY_CACHE_SECONDS + 1
    assert key_for(container, customer, db) is None
    assert KEY_CACHE_SECONDS <= 300  # what the documentation promises
