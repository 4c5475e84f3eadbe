"""Relays side by side (RELAY_SHARDS): each drains its share of the outbox,
a customer's events always through one, and what one relay promises holds
for each of several running at once, and while their number changes. Real
PostgreSQL, real broker."""

import threading
import time
import uuid
from collections import defaultdict

import psycopg
import pytest

from chalicelib.domain.commands import ChangeEmail
from chalicelib.eventstore.events import CommandContext
from chalicelib.eventstore.outbox import BUCKETS
from chalicelib.eventstore.relay import RELAY_LOCK_BASE, OutboxRelay, buckets_of
from tests.integration.test_outbox_relay import append_uncommitted
from tests.support.builders import id_in_bucket, new_customer, unpublished
from tests.support.kafka import cloudevent, read_topic
from tests.support.relay import Crash, SendThenCrash, start_relay, stop_relay
from tests.support.waiting import wait_for

CTX = CommandContext("sharded-relay-test")


def relay(db, sender, shard, shards, **options):
    return OutboxRelay(lambda: psycopg.connect(db, autocommit=True), sender, shard=shard, shards=shards,
                       idle_wait=600, **options)


def bucket(stream_id: uuid.UUID) -> int:
    return stream_id.bytes[15] % BUCKETS


def shard_of(stream_id: uuid.UUID, shards: int) -> int:
    return bucket(stream_id) % shards


def versions_on_the_topic(kafka_bootstrap, topic, expected):
    """Each customer's versions in the order the topic holds them."""
    by_customer = defaultdict(list)
    for record in read_topic(kafka_bootstrap, topic, expected=expected, timeout=30):
        message = cloudevent(record)
        by_customer[message["subject"]].append(message["streamversion"])
    return by_customer


def test_buckets_are_split_among_the_shards_and_cover_the_outbox():
    for shards in (1, 2, 3, 4, 8, 32):
        split = [buckets_of(shard, shards) for shard in range(shards)]
        assert sorted(b for buckets in split for b in buckets) == list(range(BUCKETS))
    with pytest.raises(ValueError):
        buckets_of(2, 2)
    with pytest.raises(ValueError):
        buckets_of(0, BUCKETS + 1)


def test_four_shards_publish_everything_once_each_customer_in_order_through_one_shard(
        db, commands, publisher, kafka_bootstrap, topic):
    results = []
    running = [start_relay(relay(db, publisher, shard, 4), results) for shard in range(4)]
    try:
        customers = [new_customer(commands, n, CTX).id for n in range(60)]
        for customer_id in customers:
            commands.change_email(ChangeEmail(customer_id, f"{customer_id.hex}@example.org"), CTX)
        assert wait_for(lambda: unpublished(db) == 0, timeout=30)
    finally:
        for stop, thread in running:
            stop_relay(db, stop, thread)
    by_customer = versions_on_the_topic(kafka_bootstrap, topic, expected=120)
    assert {c: v for c, v in by_customer.items()} == {str(c): [1, 2] for c in customers}  # once each, in order
    assert sum(r.published for r in results) == 120
    assert all(r.published for r in results) and not any(r.locked_out or r.missing for r in results)
    with psycopg.connect(db) as conn:
        by_bucket = dict(conn.execute("SELECT stream_id, bucket FROM outbox").fetchall())
    assert all(by_bucket[c] == bucket(c) for c in customers)


def test_a_late_commit_below_a_published_row_of_its_shard_is_not_skipped(db, commands, publisher):
    running = [start_relay(relay(db, publisher, shard, 2)) for shard in range(2)]
    writer = psycopg.connect(db)
    try:
        late = append_uncommitted(writer, "Late")  # its outbox id is taken now, committed last
        same_shard, n = [], 0
        while len(same_shard) < 3:  # commit later ids in the same shard, which get published first
            n += 1
            customer = new_customer(commands, n, CTX)
            if shard_of(customer.id, 2) == shard_of(late, 2):
                same_shard.append(customer.id)
        assert wait_for(lambda: unpublished(db) == 0, timeout=20)  # the late row is not visible yet
        with psycopg.connect(db) as conn:
            (published,) = conn.execute("SELECT count(*) FROM outbox WHERE stream_id = ANY(%s)"
                                        " AND published_at IS NOT NULL", (same_shard,)).fetchone()
        assert published == 3
        writer.commit()
        assert wait_for(lambda: unpublished(db) == 0 and published_at(db, late) is not None, timeout=20)
    finally:
        writer.close()
        for stop, thread in running:
            stop_relay(db, stop, thread)


def published_at(db, stream_id):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT published_at FROM outbox WHERE stream_id = %s", (stream_id,)).fetchone()[0]


def test_a_crashed_shard_is_taken_over_and_nothing_is_lost(db, commands, publisher, kafka_bootstrap, topic):
    customers = [new_customer(commands, n, CTX).id for n in range(20)]
    in_shard_1 = [c for c in customers if shard_of(c, 2) == 1]

    with pytest.raises(Crash):
        relay(db, SendThenCrash(publisher), 1, 2).run_once()  # its connection closes: PostgreSQL frees its locks
    assert unpublished(db) == 20  # published, not marked

    results = [relay(db, publisher, shard, 2).run_once() for shard in (1, 0)]
    assert [r.published for r in results] == [len(in_shard_1), 20 - len(in_shard_1)]
    by_customer = versions_on_the_topic(kafka_bootstrap, topic, expected=20 + len(in_shard_1))
    assert set(by_customer) == {str(c) for c in customers}
    assert all(v == [1, 1] if uuid.UUID(c) in in_shard_1 else v == [1] for c, v in by_customer.items())


def test_one_bad_row_parks_only_its_customer_and_the_other_shards_go_on(db, commands, publisher):
    customers = [new_customer(commands, n, CTX).id for n in range(12)]
    bad = customers[0]
    commands.change_email(ChangeEmail(bad, "later@example.org"), CTX)

    def refuse_the_bad_one(conn, event):
        if event.stream_id == bad and event.version == 1:
            raise ValueError("cannot be read")
        return event

    results = [relay(db, publisher, shard, 2, prepare=refuse_the_bad_one).run_once() for shard in range(2)]
    assert sum(r.parked for r in results) == 1
    with psycopg.connect(db) as conn:
        waiting = conn.execute("SELECT o.stream_id, e.version, o.parked_at IS NOT NULL FROM outbox o"
                               " JOIN events e USING (global_position) WHERE o.published_at IS NULL"
                               " ORDER BY o.id").fetchall()
    assert waiting == [(bad, 1, True), (bad, 2, False)]  # its later event waits behind it; every other went


class Writer:
    """Changes customers' emails in a loop, as traffic would, until stopped."""

    def __init__(self, commands, customers):
        self.commands, self.customers = commands, customers
        self.stop = threading.Event()
        self.written = defaultdict(lambda: 1)
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        n = 0
        while not self.stop.is_set():
            customer_id = self.customers[n % len(self.customers)]
            self.commands.change_email(ChangeEmail(customer_id, f"{customer_id.hex}.{n}@example.org"), CTX)
            self.written[customer_id] += 1
            n += 1


def test_changing_the_shard_count_under_a_writer_keeps_each_customer_in_order_and_publishes_once(
        db, commands, publisher, kafka_bootstrap, topic):
    """From one relay to four and back while a writer writes, with relays of
    both counts running at once on the way, as invocations of the old and the
    new configuration overlap during a deploy."""
    customers = [new_customer(commands, n, CTX).id for n in range(24)]
    writer = Writer(commands, customers)
    results = []

    def start(shard, shards):
        return start_relay(relay(db, publisher, shard, shards), results)

    def stop(*running):
        for stop_event, thread in running:
            stop_relay(db, stop_event, thread)

    writer.thread.start()
    try:
        one = start(0, 1)
        time.sleep(0.7)
        stop(one)
        four = {shard: start(shard, 4) for shard in (0, 1)}  # two of the new relays are up
        time.sleep(0.7)
        one = start(0, 1)  # an old one starts and takes the rest: both counts run at once
        time.sleep(0.7)
        four.update({shard: start(shard, 4) for shard in (2, 3)})  # find their buckets taken: return
        stop(four.pop(0))  # the old one takes over its buckets too
        time.sleep(1.5)
        stop(one)
        four.update({shard: start(shard, 4) for shard in (0, 2, 3)})  # the next tick: four shards
        time.sleep(0.7)
        one = start(0, 1)  # back to one: it finds every bucket taken, returns
        time.sleep(0.3)
        stop(*four.values())
        one = start(0, 1)  # the next tick
        time.sleep(0.7)
    finally:
        writer.stop.set()
        writer.thread.join(timeout=30)
    try:
        assert wait_for(lambda: unpublished(db) == 0, timeout=30)
    finally:
        stop(one)
    events = len(customers) + sum(writer.written[c] - 1 for c in customers)
    assert events > 200  # the writer kept writing throughout
    by_customer = versions_on_the_topic(kafka_bootstrap, topic, expected=events)
    for customer_id in customers:
        assert by_customer[str(customer_id)] == list(range(1, writer.written[customer_id] + 1)), customer_id
    assert sum(r.published for r in results) == events  # none published twice
    assert sum(1 for r in results if r.published) >= 6  # the work did move between relays
    assert sum(1 for r in results if r.locked_out) >= 3


def test_buckets_another_relay_held_are_taken_over_soon_after_their_release_not_after_the_idle_wait(
        db, commands, publisher):
    """During a change of shard count a relay starts without some of its
    buckets: once their holder lets go, it takes them within about a second
    (its idle wait here is ten minutes)."""
    odd = [RELAY_LOCK_BASE + b for b in range(BUCKETS) if b % 2]
    holder = psycopg.connect(db, autocommit=True)  # a relay of two shards, draining shard 1
    holder.execute("SELECT pg_advisory_lock(k) FROM unnest(%s::bigint[]) AS k", (odd,))
    results = []
    stop, thread = start_relay(relay(db, publisher, 0, 1), results)
    try:
        customers = [new_customer(commands, n, CTX, id_in_bucket(n % BUCKETS)).id for n in range(12)]
        waiting = [c for c in customers if bucket(c) % 2]
        assert waiting and wait_for(lambda: unpublished(db) == len(waiting), timeout=10)
        time.sleep(0.5)
        assert unpublished(db) == len(waiting)  # its buckets held elsewhere: not published
        holder.close()  # the other relay ends
        assert wait_for(lambda: unpublished(db) == 0, timeout=5)
    finally:
        stop_relay(db, stop, thread)
    assert results[0].missing == 0
