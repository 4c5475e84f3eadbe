"""A consumer that starts late: it gets the history from a backfill's topic
and everything after from the live topic, and joins the two by customer and
version (`subject`, `streamversion`), so that each event is applied once, in
each customer's order.

    1. start this consumer: it reads the live topic from its end now;
    2. then ask for the backfill:  python -m ops backfill --topic my-service-backfill
    3. it reads the backfill's topic from its beginning, beside the live one.

    pip install kafka-python
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092 BACKFILL_TOPIC=my-service-backfill python docs/examples/catch_up.py

The backfill sends every event of the transactions begun before it was asked
for; the live topic carries every event committed after the consumer
started: together, everything. Some events come on both (a duplicate is
skipped), and a live event may come before the backfill's of the versions
below it: it waits until they have come.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition


class Joined:
    """Applies each customer's events once, in version order, whichever topic
    brings them first."""

    def __init__(self, apply: Callable[[dict], None]) -> None:
        self.apply = apply
        self.applied: dict[str, int] = defaultdict(int)  # customer: the last version applied
        self.waiting: dict[str, dict[int, dict]] = defaultdict(dict)  # customer: version: event
        self.duplicates = 0

    def take(self, event: dict) -> None:
        customer, version = event["subject"], event["streamversion"]
        if version <= self.applied[customer] or version in self.waiting[customer]:
            self.duplicates += 1
            return
        self.waiting[customer][version] = event
        while (self.applied[customer] + 1) in self.waiting[customer]:
            self.applied[customer] += 1
            self.apply(self.waiting[customer].pop(self.applied[customer]))

    @property
    def held_back(self) -> int:
        """Events waiting for an earlier version of their customer."""
        return sum(len(events) for events in self.waiting.values())


def consumer(bootstrap: str, topic: str, *, from_the_end: bool) -> KafkaConsumer:
    reader = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
    reader.assign(partitions)
    if from_the_end:
        reader.seek_to_end(*partitions)
        for partition in partitions:
            reader.position(partition)  # pinned now, before the backfill is asked for
    else:
        reader.seek_to_beginning(*partitions)
    return reader


def poll(reader: KafkaConsumer, joined: Joined) -> int:
    """What the reader has now, taken; how many records."""
    records = [r for batch in reader.poll(timeout_ms=200).values() for r in batch]
    for record in records:
        joined.take(json.loads(record.value))
    return len(records)


def main() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    live = consumer(bootstrap, os.environ.get("KAFKA_TOPIC", "customer-events"), from_the_end=True)
    print("reading the live topic from now on: ask for the backfill", file=sys.stderr, flush=True)
    backfill = consumer(bootstrap, os.environ["BACKFILL_TOPIC"], from_the_end=False)
    joined = Joined(lambda event: print(f"{event['subject']} v{event['streamversion']} {event['type']}", flush=True))
    idle, idle_polls = 0, int(os.environ.get("IDLE_SECONDS", "10")) * 5
    while idle < idle_polls:  # both topics quiet for a while: stop (a real consumer goes on with `live`)
        idle = 0 if poll(backfill, joined) + poll(live, joined) else idle + 1
    print(f"applied {sum(joined.applied.values())} events of {len(joined.applied)} customers,"
          f" skipped {joined.duplicates} duplicates, {joined.held_back} waiting", file=sys.stderr)
    live.close()
    backfill.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
