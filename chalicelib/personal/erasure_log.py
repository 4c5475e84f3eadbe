"""Every erasure, recorded where a restore of the database does not reach:
an object per customer in an S3 bucket (ERASURE_LOG_BUCKET), written
before the erasure's transaction. A database restored from a backup taken
before some erasures has their customers' keys back; `python -m ops
reapply-erasures` erases them again from this log.

An object holds the customer's id and when the erasure was asked for, no
personal data. The bucket is versioned and kept when the stack is deleted
(deploy/template.yaml); nothing here deletes from it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

PREFIX = "erasures/"


class ErasureNotRecorded(RuntimeError):
    """The erasure log could not be written: nothing was erased."""


class ErasureLog:
    def __init__(self, bucket: str, client: Callable[[str], Any]) -> None:
        self.bucket = bucket
        self._client = client

    def record(self, customer_id: uuid.UUID, correlation_id: str | None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = {"customer_id": str(customer_id), "requested_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "correlation_id": correlation_id}
        try:
            self._client("s3").put_object(Bucket=self.bucket, Key=f"{PREFIX}{customer_id}",
                                          Body=json.dumps(body).encode(), ContentType="application/json")
        except (BotoCoreError, ClientError) as error:
            raise ErasureNotRecorded(f"the erasure log (s3://{self.bucket}) cannot be written: {error}") from error

    def customers(self) -> Iterator[uuid.UUID | str]:
        """Every customer the log names; what is not a customer id comes as
        the object's key, for the operator to look at."""
        pages = self._client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=PREFIX)
        for page in pages:
            for item in page.get("Contents", []):
                try:
                    yield uuid.UUID(item["Key"][len(PREFIX):])
                except ValueError:
                    yield item["Key"]
