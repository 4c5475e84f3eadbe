"""Reading records back from Kafka: by their offsets (the dead-letter
replay names a failed batch by offsets, not by records), and a topic's
partitions, messages and consumer-group lag for the console. Never as a
member of a group: partitions are assigned, nothing is committed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def keys_at(bootstrap_servers: str, ranges: Sequence[Any], security: dict[str, Any] | None = None,
            timeout: float = 10.0) -> tuple[list[bytes | None], bool]:
    """The keys of the records in these offset ranges (topic, partition,
    first, last), and whether every record was still on the topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), group_id=None,
                             enable_auto_commit=False, client_id="customer-service-dead-letters",
                             **(security or {}))
    try:
        wanted = {TopicPartition(r.topic, r.partition): r for r in ranges}
        consumer.assign(list(wanted))
        for tp, r in wanted.items():
            consumer.seek(tp, r.first)
        keys, found, deadline = [], 0, time.monotonic() + timeout
        expected = sum(r.last - r.first + 1 for r in ranges)
        pending = set(wanted)
        while pending and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if record.offset <= wanted[tp].last:
                        keys.append(record.key)
                        found += 1
                if consumer.position(tp) > wanted[tp].last:
                    pending.discard(tp)
        return keys, found == expected
    finally:
        consumer.close(autocommit=False)


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    beginning: int  # the oldest offset still on the topic
    end: int  # the next offset to be written
    committed: int | None = None  # the consumer group's next offset to read; None: it has none


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a producer with the default partitioner sends `key` to
    (murmur2, as Java's and kafka-python's): a customer's messages are all
    on the partition its id names."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


class TopicReader:
    """One topic, read for a person looking at it: a reader per request."""

    def __init__(self, bootstrap_servers: str, topic: str, security: dict[str, Any] | None = None,
                 timeout: float = 5.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.security = security or {}
        self.timeout = timeout

    def _consumer(self, group_id: str | None = None) -> Any:
        from kafka import KafkaConsumer

        return KafkaConsumer(bootstrap_servers=self.bootstrap_servers.split(","), group_id=group_id,
                             enable_auto_commit=False, client_id="customer-service-console",
                             consumer_timeout_ms=int(self.timeout * 1000), **self.security)

    def partitions(self, group_id: str | None = None) -> list[PartitionOffsets]:
        """Each partition's first and next offsets, and `group_id`'s committed one."""
        from kafka import TopicPartition

        consumer = self._consumer(group_id)
        try:
            numbers = sorted(consumer.partitions_for_topic(self.topic) or ())
            tps = [TopicPartition(self.topic, p) for p in numbers]
            beginnings = consumer.beginning_offsets(tps) if tps else {}
            ends = _ends(consumer, tps, beginnings) if tps else {}
            committed = {tp: consumer.committed(tp) for tp in tps} if group_id else {}
            return [PartitionOffsets(tp.partition, beginnings[tp], ends[tp], committed.get(tp)) for tp in tps]
        finally:
            consumer.close(autocommit=False)

    def partition_count(self) -> int:
        """How many partitions the topic has (0: no such topic); metadata only."""
        consumer = self._consumer()
        try:
            return len(consumer.partitions_for_topic(self.topic) or ())
        finally:
            consumer.close(autocommit=False)

    def offset_at(self, partition: int, when: datetime) -> int | None:
        """The first offset of a message at or after `when`; None: none is."""
        from kafka import TopicPartition

        consumer = self._consumer()
        try:
            tp = TopicPartition(self.topic, partition)
            found = consumer.offsets_for_times({tp: int(when.timestamp() * 1000)}).get(tp)
            return None if found is None else found.offset
        finally:
            consumer.close(autocommit=False)

    def read(self, partition: int, start: int, limit: int, *, keep: Callable[[TopicRecord], bool] | None = None,
             scan_limit: int = 10_000) -> list[TopicRecord]:
        """Up to `limit` records of a partition from offset `start` (those
        `keep` keeps, when given), reading no further than the end offset
        when asked, or `scan_limit` records."""
        from kafka import TopicPartition

        consumer = self._consumer()
        try:
            tp = TopicPartition(self.topic, partition)
            beginning = consumer.beginning_offsets([tp])[tp]
            end = _ends(consumer, [tp], {tp: beginning})[tp]
            start = max(start, beginning)
            if start >= end:
                return []
            consumer.seek(tp, start)
            found: list[TopicRecord] = []
            scanned, deadline = 0, time.monotonic() + self.timeout
            while len(found) < limit and scanned < scan_limit and time.monotonic() < deadline:
                for record in consumer.poll(timeout_ms=200, max_records=500).get(tp, []):
                    if record.offset >= end:
                        return found
                    scanned += 1
                    read = TopicRecord(partition, record.offset, datetime.fromtimestamp(record.timestamp / 1000, UTC),
                                       record.key, record.value, [(k, bytes(v or b"")) for k, v in record.headers])
                    if keep is None or keep(read):
                        found.append(read)
                        if len(found) == limit:
                            return found
                if consumer.position(tp) >= end:
                    break
            return found
        finally:
            consumer.close(autocommit=False)


def _ends(consumer: Any, tps: list[Any], beginnings: dict[Any, int], timeout: float = 2.0) -> dict[Any, int]:
    """Each partition's next offset. Some brokers (the embedded one among
    them) answer it as of the first record of the newest batch, so the last
    record is read to be sure: a fetch per partition, all at once."""
    reported = consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(beginnings[tp], reported[tp] - 1))
    ends = dict(reported)
    deadline = time.monotonic() + timeout
    wait = 500  # the first fetch; then until nothing more comes
    while time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=wait)
        if not polled:
            break
        for tp, records in polled.items():
            ends[tp] = max(ends[tp], records[-1].offset + 1)
        wait = 100
    return ends
