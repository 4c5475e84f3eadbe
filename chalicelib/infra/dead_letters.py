"""Dead letters of the projection, in an SQS queue (PROJECTION_DLQ_URL).

Two kinds arrive there:
- an unreadable record, sent by the projection function itself: where it
  was (topic, partition, offset), its key and value, and why it could not be
  read; the rest of its batch is projected;
- a failed batch, sent by the Kafka trigger when the function kept failing
  past the retry limit (on AWS the event source mapping's on-failure
  destination, locally the emulated mapping): Lambda's invocation record,
  which names the batch's offsets per partition but carries no records.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib.infra.kafka_delivery import DeliveredRecord

UNREADABLE_RECORD = "unreadable-record"
MAX_ERROR_CHARACTERS = 500


class DeadLetterQueueUnavailable(RuntimeError):
    pass


def unreadable_record(record: DeliveredRecord, error: str, function: str) -> dict:
    """A letter for a record the projection cannot read: where it is on the
    topic, its key, its size and digest, and why; not its value, which may
    hold personal data (the letter outlives an erasure). The record is read
    back from the topic by its offset when needed."""
    value = record.value or b""
    return {
        "deadLetter": UNREADABLE_RECORD,
        "function": function,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.raw.get("key"),
        "valueBytes": len(value),
        "valueSha256": hashlib.sha256(value).hexdigest(),
        "error": error[:MAX_ERROR_CHARACTERS],
    }


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.first}" + (f"..{self.last}" if self.last != self.first else "")


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        if self.body.get("deadLetter") == UNREADABLE_RECORD:
            return UNREADABLE_RECORD
        if "KafkaBatchInfo" in self.body:
            return "failed-batch"
        return "unknown"

    @property
    def error(self) -> str:
        if self.kind == "failed-batch":
            context = self.body.get("requestContext") or {}
            return f"{context.get('condition', 'failed')} after {context.get('approximateInvokeCount', '?')} tries"
        return str(self.body.get("error", ""))

    @property
    def time(self) -> str:
        return str(self.body.get("time") or self.body.get("timestamp") or "")

    def offsets(self) -> list[OffsetRange]:
        """Where its records are on the topic."""
        if self.kind == UNREADABLE_RECORD:
            return [OffsetRange(self.body["topic"], int(self.body["partition"]), int(self.body["offset"]),
                                int(self.body["offset"]))]
        ranges = []
        for name, info in ((self.body.get("KafkaBatchInfo") or {}).get("recordsInfo") or {}).items():
            topic, _, partition = name.rpartition("-")
            ranges.append(OffsetRange(topic, int(partition), int(info["firstRecordOffset"]),
                                      int(info["lastRecordOffset"])))
        return ranges

    def key(self) -> bytes | None:
        """The record's key, for an unreadable record."""
        raw = self.body.get("key")
        return base64.b64decode(raw) if raw else None


class DeadLetterQueue:
    def __init__(self, queue_url: str, client: Callable[[str], Any]) -> None:
        self.queue_url = queue_url
        self._client = client

    def _sqs(self):
        return self._client("sqs")

    def send(self, bodies: list[dict], attempts: int = 3) -> None:
        """Every body, ten to a request (SQS's limit); entries SQS refuses
        are sent again, `attempts` times in all. Otherwise
        DeadLetterQueueUnavailable: the caller's batch then fails and is
        delivered again, so no dead letter is lost."""
        from botocore.exceptions import BotoCoreError, ClientError

        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": json.dumps(body)}
                       for i, body in enumerate(bodies[start:start + 10])]
            for attempt in range(1, attempts + 1):
                try:
                    answer = self._sqs().send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                except (BotoCoreError, ClientError) as error:
                    raise DeadLetterQueueUnavailable(f"cannot send to {self.queue_url}: {error}") from error
                refused = {failure["Id"] for failure in answer.get("Failed", [])}
                if not refused:
                    break
                if attempt == attempts:
                    raise DeadLetterQueueUnavailable(f"{self.queue_url} refused {answer['Failed']}")
                entries = [entry for entry in entries if entry["Id"] in refused]

    def receive(self, hold_seconds: int) -> Iterator[DeadLetter]:
        """Every letter in the queue, each hidden from other readers for
        `hold_seconds` (until deleted or released)."""
        seen = set()
        while True:
            answer = self._sqs().receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                 VisibilityTimeout=hold_seconds, WaitTimeSeconds=0)
            messages = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
            if not messages:
                return
            for message in messages:
                seen.add(message["MessageId"])
                try:
                    body = json.loads(message["Body"])
                except ValueError:
                    body = {"error": "not JSON", "raw": message["Body"][:200]}
                yield DeadLetter(message["MessageId"], message["ReceiptHandle"],
                                 body if isinstance(body, dict) else {"raw": body})

    def release(self, letters: list[DeadLetter]) -> None:
        """Visible again at once, for the next reader."""
        for start in range(0, len(letters), 10):
            self._sqs().change_message_visibility_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": letter.receipt, "VisibilityTimeout": 0}
                for i, letter in enumerate(letters[start:start + 10])])

    def delete(self, letter: DeadLetter) -> None:
        self._sqs().delete_message(QueueUrl=self.queue_url, ReceiptHandle=letter.receipt)
