"""Publishing recorded events to Kafka with kafka-python.

The producer is created on first use and kept by warm invocations. Its
settings make reordering on retry impossible: idempotence (the broker drops
a retried duplicate and refuses a gap) with one request in flight per
connection, and acks from all in-sync replicas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.eventstore import cloudevents
from chalicelib.eventstore.errors import PublishError, UnpublishableEvent
from chalicelib.eventstore.events import RecordedEvent
from chalicelib.infra.credentials import CredentialsUnavailable
from chalicelib.infra.message_signing import HEADER

# kafka-python's default max_request_size, and about the broker's default
# message.max.bytes: a larger message would be refused on every try.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000

PRODUCER_SETTINGS = {
    "acks": "all",
    "enable_idempotence": True,
    "max_in_flight_requests_per_connection": 1,
    "retries": 2**31 - 1,  # bounded by delivery_timeout_ms instead
    "linger_ms": 5,
    "max_block_ms": 5_000,
    "bootstrap_timeout_ms": 5_000,  # a broker that is down fails a batch in seconds, not 30
    "request_timeout_ms": 10_000,
    "delivery_timeout_ms": 30_000,
}


class KafkaPublisher:
    """The outbox relay's sender (chalicelib.eventstore.relay.Sender): sends
    a batch asynchronously; waiting for it flushes once and raises
    PublishError unless every message was acked."""

    def __init__(self, bootstrap_servers: str, topic: str, source: str, flush_timeout: float = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 security: Callable[[], dict[str, Any]] = dict,
                 sign: Callable[[bytes], bytes] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.sign = sign
        self.security = security
        self.topic = topic
        self.source = source
        self.flush_timeout = flush_timeout
        self.max_message_bytes = max_message_bytes
        self._producer: Any = None
        self._batches_sent = 0
        self._lock = threading.Lock()

    def _get_producer(self) -> Any:
        from kafka import KafkaProducer  # imported on first use: cold start

        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                client_id="customer-service-outbox",
                **PRODUCER_SETTINGS,
                **self.security(),
            )
        return self._producer

    def _discard_producer(self, producer: Any = None) -> None:
        # A producer that failed may hold a poisoned idempotence state or
        # dead connections; the next batch starts from a fresh one. (Unless
        # the failed one was replaced already.)
        if self._producer is not None and (producer is None or producer is self._producer):
            try:
                self._producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken producer
                pass
            self._producer = None

    def encode(self, event: RecordedEvent) -> bytes:
        """The event's message; UnpublishableEvent when no retry could send it."""
        try:
            value = cloudevents.encode(event, self.source)
        except (KeyError, TypeError, ValueError) as error:
            raise UnpublishableEvent(event, f"cannot be written as a CloudEvent: {type(error).__name__}: {error}")
        if len(value) > self.max_message_bytes:
            raise UnpublishableEvent(event, f"its message has {len(value)} bytes, over the {self.max_message_bytes}"
                                            " a message may have")
        return value

    def send(self, events: Sequence[RecordedEvent],
             extra_headers: Sequence[tuple[str, bytes]] = ()) -> Callable[[], None]:
        """Send a batch without waiting; returns what waits until every
        message was acked (PublishError otherwise). The relay sends the next
        batch while this one is acknowledged. `extra_headers` go on every
        message after ours (a backfill's replay header)."""
        from kafka.errors import KafkaError

        # Every message is made before any is sent: a bad one is named
        # before the batch is half on the topic.
        messages = [(event, self.encode(event)) for event in events]
        with self._lock:
            try:
                signatures = [self.sign(value) for _, value in messages] if self.sign else [None] * len(messages)
                producer = self._get_producer()
                futures = [
                    producer.send(self.topic, key=str(event.stream_id).encode(), value=value,
                                  headers=self._headers(event, signature) + list(extra_headers))
                    for (event, value), signature in zip(messages, signatures, strict=True)
                ]
            except (KafkaError, CredentialsUnavailable) as error:
                self._discard_producer()
                raise PublishError(f"Kafka at {self.bootstrap_servers}: {error!r}") from error
            self._batches_sent += 1
            batch = self._batches_sent
        return lambda: self._wait(producer, batch, messages, futures)

    def _wait(self, producer: Any, batch: int, messages: list[tuple[RecordedEvent, bytes]],
              futures: list[Any]) -> None:
        from kafka.errors import KafkaError, MessageSizeTooLargeError

        if batch == self._batches_sent:
            # The last batch sent: flushing sends it now rather than after
            # linger_ms, and waits for nothing else.
            try:
                producer.flush(timeout=self.flush_timeout)
            except KafkaError:
                pass  # counted below, as every message that was not acknowledged
        else:
            # A batch sent after it is on its way: a flush would wait for that
            # one too, so wait for this batch's acknowledgements only.
            deadline = time.monotonic() + self.flush_timeout
            for future in futures:
                if not future.is_done:
                    try:
                        future.get(timeout=max(0.0, deadline - time.monotonic()))
                    except KafkaError:
                        pass  # counted below
        with self._lock:
            failed = [(event, f) for (event, _), f in zip(messages, futures, strict=True) if not f.succeeded()]
            if failed:
                self._discard_producer(producer)
                event, first = failed[0]
                if first.is_done and isinstance(first.exception, MessageSizeTooLargeError):
                    raise UnpublishableEvent(event, f"the broker refused its size: {first.exception!r}")
                reason = first.exception if first.is_done else "not acknowledged in time"
                raise PublishError(f"{len(failed)} of {len(futures)} events not acknowledged: {reason!r}")

    @staticmethod
    def _headers(event: RecordedEvent, signature: bytes | None) -> list[tuple[str, bytes]]:
        headers = [("content-type", cloudevents.CONTENT_TYPE.encode()), ("event-type", event.event_type.encode())]
        if signature is not None:
            headers.append((HEADER, signature))
        return headers

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
