"""Erasures are recorded outside the database before they are made, so that
a database restored from a backup taken before them has them made again by
`python -m ops reapply-erasures`. A real pg_dump and pg_restore; S3 is moto."""

import json
import uuid

import psycopg
import pytest

from chalicelib.personal.erasure_log import PREFIX
from ops.__main__ import main as ops
from tests.support.builders import count
from tests.support.pgtools import backup, restore

pytestmark = pytest.mark.usefixtures("encryption")


def test_erasures_undone_by_a_restore_are_made_again_once_and_the_others_are_left_alone(
        application, client, eraser, db, aws, tmp_path, capsys):
    erased_after_backup = client.create_id("gone@example.com", "Gone Person")
    kept = client.create_id("kept@example.com", "Kept Person")
    erased_before_backup = client.create_id("early@example.com", "Early Person")
    assert eraser.http.delete(f"/customer/{erased_before_backup}/personal-data").status_code == 204
    backup(db, tmp_path / "backup.dump")
    assert eraser.http.delete(f"/customer/{erased_after_backup}/personal-data").status_code == 204
    created_after_backup = client.create_id("late@example.com", "Late Person")
    assert eraser.http.delete(f"/customer/{created_after_backup}/personal-data").status_code == 204

    application.parts.close()  # the service stops while the database is restored
    restore(db, tmp_path / "backup.dump")
    strong = "?consistency=strong"
    assert client.http.get(f"/customer/{erased_after_backup}{strong}").json_body["name"] == "Gone Person"  # undone

    assert ops(["reapply-erasures"]) == 0
    out = capsys.readouterr().out
    assert f"erased again: {erased_after_backup}" in out
    assert f"not in this database: {created_after_backup}" in out
    assert "1 erasures made again, 1 in place already, 1 customers not in this database" in out
    application.parts.close()
    assert client.http.get(f"/customer/{erased_after_backup}{strong}").status_code == 404
    history = client.http.get(f"/customer/{erased_after_backup}/events").json_body["events"]
    assert history[0]["data"]["name"] is None and history[-1]["type"] == "CustomerPersonalDataErased"
    assert client.http.get(f"/customer/{kept}{strong}").json_body["name"] == "Kept Person"
    with psycopg.connect(db) as conn:
        (keys,) = conn.execute("SELECT count(*) FROM stream_keys WHERE stream_id = ANY(%s)",
                               ([uuid.UUID(erased_after_backup), uuid.UUID(erased_before_backup)],)).fetchone()
    assert keys == 0

    events = count(db)
    assert ops(["reapply-erasures"]) == 0  # again: nothing to do
    assert "0 erasures made again, 2 in place already, 1 customers not in this database" in capsys.readouterr().out
    assert count(db) == events


def test_the_log_names_the_customer_and_no_personal_data(application, client, eraser, aws):
    customer_id = client.create_id("logged@example.com", "Logged Person")
    response = eraser.http.delete(f"/customer/{customer_id}/personal-data",
                                  headers={"X-Correlation-Id": "erase-1"})
    assert response.status_code == 204
    bucket = application.settings.erasure_log_bucket
    body = json.loads(aws("s3").get_object(Bucket=bucket, Key=f"{PREFIX}{customer_id}")["Body"].read())
    assert body["customer_id"] == customer_id and body["correlation_id"] == "erase-1"
    assert "logged" not in json.dumps(body).lower()


def test_an_erasure_that_cannot_be_recorded_is_refused_with_503_and_erases_nothing(
        application, client, eraser, db, aws):
    customer_id = client.create_id("unlogged@example.com", "Unlogged Person")
    events = count(db)
    aws("s3").delete_bucket(Bucket=application.settings.erasure_log_bucket)
    response = eraser.http.delete(f"/customer/{customer_id}/personal-data")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "nothing was erased" in response.json_body["Message"]
    assert count(db) == events
    assert client.http.get(f"/customer/{customer_id}?consistency=strong").json_body["name"] == "Unlogged Person"

    aws("s3").create_bucket(Bucket=application.settings.erasure_log_bucket,
                            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert eraser.http.delete(f"/customer/{customer_id}/personal-data").status_code == 204  # heals by itself


def test_an_unknown_customer_is_404_and_not_recorded(application, eraser, aws):
    response = eraser.http.delete(f"/customer/{uuid.uuid4()}/personal-data")
    assert response.status_code == 404
    listed = aws("s3").list_objects_v2(Bucket=application.settings.erasure_log_bucket)
    assert listed.get("KeyCount", 0) == 0


def test_reapply_erasures_reads_the_whole_log_however_many_pages_s3_answers_it_in(
        application, client, eraser, aws, monkeypatch, capsys):
    """S3 lists at most 1,000 objects a page: an erasure on the second page
    is made again as much as one on the first."""
    import chalicelib.application

    last = uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff")  # listed after every other key
    with monkeypatch.context() as patched:
        patched.setattr(chalicelib.application.uuid, "uuid4", lambda: last)
        assert client.create_id("paged@example.com", "Paged Person") == str(last)
    assert eraser.http.delete(f"/customer/{last}/personal-data").status_code == 204
    bucket, s3 = application.settings.erasure_log_bucket, aws("s3")
    for n in range(1000):  # erasures of customers this database does not have
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}00000000-0000-4000-8000-{n:012d}", Body=b"{}")

    assert ops(["reapply-erasures"]) == 0
    assert "0 erasures made again, 1 in place already, 1000 customers not in this database" in capsys.readouterr().out
