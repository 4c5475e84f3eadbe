"""A Kafka event source mapping, as AWS runs one for MSK or self-managed
Kafka, for `make run` and the tests: it polls the topic and invokes the real
function with batches in the mapping's event shape. When the function raises,
the same batch is retried (with backoff) and no offset is committed past it.
With a retry limit and an on-failure destination, a batch that still fails
after the limit is sent there as Lambda's invocation record and skipped.

Offsets are committed under the mapping's consumer group, but partitions are
assigned rather than subscribed: the embedded broker's group coordinator does
not hand partitions to a new member once earlier members have left.

    python -m devstack.kafka_source      (started by `make run`)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from devstack.kafka_source_events import KafkaRecord, event_from, failure_record

PROJECT = Path(__file__).resolve().parent.parent

Handler = Callable[[dict, object], object]


def _log(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}, default=str), file=sys.stderr, flush=True)


class KafkaEventSource:
    def __init__(self, handler: Handler, bootstrap_servers: str, topic: str, group_id: str, *,
                 function_name: str = "project_customers", batch_size: int = 100,
                 retry_backoff: tuple[float, float] = (0.5, 30.0), max_retry_attempts: int | None = None,
                 on_failure: Callable[[dict], None] | None = None) -> None:
        self.handler = handler
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.function_name = function_name
        self.batch_size = batch_size
        self.retry_backoff = retry_backoff
        # Lambda applies a retry limit only with a destination to send to.
        self.max_retry_attempts = max_retry_attempts if on_failure is not None else None
        self.on_failure = on_failure
        self.invocations = 0
        self.failures = 0
        # How often the source checks whether its topic was made anew.
        self.recreated_check_seconds = 1.0
        self.restarts = 0  # times it started over on a topic made anew

    def run(self, stop: threading.Event) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id, client_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            # A record waits at most this long on the broker before delivery.
            fetch_max_wait_ms=20,
        )
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{self.group_id}-topics")
        try:
            self._assign(consumer, stop)
            topic_id = self._topic_id(admin)
            checked = time.monotonic()
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=100, max_records=self.batch_size)
                # Before a batch is handed over, and every so often when idle:
                # a batch polled from a topic made anew (the embedded broker
                # keeps nothing across a restart) came from an old position.
                if polled or time.monotonic() - checked >= self.recreated_check_seconds:
                    checked = time.monotonic()
                    now = self._topic_id(admin)
                    if now is None and polled:
                        for tp, records in polled.items():  # cannot tell now: polled again later
                            consumer.seek(tp, records[0].offset)
                        stop.wait(0.2)
                        continue
                    if now is not None and now != topic_id:
                        topic_id = now
                        self._start_over(consumer, stop)
                        continue
                batch = [record for tp in sorted(polled, key=lambda tp: tp.partition) for record in polled[tp]]
                if not batch:
                    continue
                if not self._invoke_until_done(batch, stop):
                    return  # stopping: the batch stays uncommitted, to be delivered again
                self._commit(consumer, polled)
        finally:
            consumer.close(autocommit=False)
            admin.close()

    def _assign(self, consumer, stop: threading.Event) -> None:
        """Every partition of the topic, each from its committed offset (or its beginning)."""
        for tp in self._assign_partitions(consumer, stop):
            committed = consumer.committed(tp)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)

    def _start_over(self, consumer, stop: threading.Event) -> None:
        """The topic was made anew: read it from its beginning, as a new
        mapping would (its partitions may differ, and no offset of the old
        one means anything in it)."""
        self.restarts += 1
        assigned = self._assign_partitions(consumer, stop)
        consumer.seek_to_beginning(*assigned)
        _log("event_source_topic_recreated", partitions=[tp.partition for tp in assigned],
             action="reading it from the beginning")

    def _assign_partitions(self, consumer, stop: threading.Event) -> list:
        from kafka import TopicPartition

        partitions = None
        while not partitions and not stop.is_set():
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                stop.wait(0.2)
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions or [])]
        consumer.assign(assigned)
        return assigned

    def _topic_id(self, admin) -> str | None:
        """The topic's id, which a topic made anew under the same name does
        not share; None when the broker cannot say now."""
        from kafka.errors import KafkaError

        try:
            (described,) = admin.describe_topics([self.topic])
        except (KafkaError, ValueError, OSError):
            return None
        if described.get("error_code"):
            return None
        return str(described.get("topic_id")) if described.get("topic_id") else None

    def _invoke_until_done(self, batch, stop: threading.Event) -> bool:
        from chalice.local import LambdaContext

        event = event_from([KafkaRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                                        {k: v for k, v in (r.headers or [])}) for r in batch],
                           bootstrap_servers=self.bootstrap_servers)
        backoff = self.retry_backoff[0]
        attempts = 0
        while not stop.is_set():
            self.invocations += 1
            attempts += 1
            try:
                self.handler(event, LambdaContext(self.function_name, memory_size=128, max_runtime_ms=60_000))
                return True
            except Exception:  # noqa: BLE001 - the mapping retries whatever the function raised
                self.failures += 1
                _log("event_source_invocation_failed", level="error", function=self.function_name,
                     first=f"{batch[0].topic}/{batch[0].partition}@{batch[0].offset}", records=len(batch),
                     retry_in_seconds=backoff, error=traceback.format_exc(limit=3))
            if self.max_retry_attempts is not None and attempts > self.max_retry_attempts and self._send_away(
                    event, attempts):
                return True
            stop.wait(backoff)
            backoff = min(backoff * 2, self.retry_backoff[1])
        return False

    def _send_away(self, event: dict, attempts: int) -> bool:
        """To the on-failure destination; the batch is skipped only once it is there."""
        if self.on_failure is None:
            return False
        try:
            self.on_failure(failure_record(event, f"arn:aws:lambda:local:000000000000:function:{self.function_name}",
                                           attempts))
        except Exception:  # noqa: BLE001 - kept, and tried again after the next backoff
            _log("event_source_on_failure_destination_failed", level="error", error=traceback.format_exc(limit=3))
            return False
        _log("event_source_batch_sent_to_on_failure_destination", level="error", function=self.function_name,
             records=sum(len(r) for r in event["records"].values()), attempts=attempts)
        return True

    @staticmethod
    def _commit(consumer, polled) -> None:
        from kafka.structs import OffsetAndMetadata

        consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in polled.items()})


def send_to_queue(queue_url: str) -> Callable[[dict], None]:
    """An SQS on-failure destination, reached like the functions reach AWS."""
    import boto3

    sqs = boto3.client("sqs")
    return lambda record: sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))


def main() -> int:
    from devstack.schedule import load_app_as_deployed, stop_on_signals

    app_module = load_app_as_deployed()
    stop = stop_on_signals()
    dlq_url = os.environ.get("PROJECTION_DLQ_URL")
    source = KafkaEventSource(
        app_module.project_customers,
        os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        os.environ.get("KAFKA_TOPIC") or "customer-events",
        os.environ.get("PROJECTION_GROUP_ID") or "customer-service-projection",
        batch_size=int(os.environ.get("PROJECTION_BATCH_SIZE", "100")),
        max_retry_attempts=int(os.environ.get("PROJECTION_MAX_RETRY_ATTEMPTS", "3")),
        on_failure=send_to_queue(dlq_url) if dlq_url else None,
    )
    print(f"[event source] {source.topic} -> project_customers, batches of up to {source.batch_size}", flush=True)
    while not stop.is_set():
        try:
            source.run(stop)
        except Exception:  # noqa: BLE001 - broker gone (restart): start over from committed offsets
            _log("event_source_restarting", level="error", error=traceback.format_exc(limit=3))
            stop.wait(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
