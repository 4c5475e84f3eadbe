"""The outbox relay against real PostgreSQL and a real Kafka-protocol broker."""

import dataclasses
import time
import uuid
from collections import defaultdict

import psycopg
import pytest

from chalicelib.application import CustomerApplication
from chalicelib.domain.commands import ChangeEmail, DeleteCustomer
from chalicelib.domain.customer import CustomerCreated, registry
from chalicelib.eventstore.events import CommandContext, Metadata
from chalicelib.eventstore.outbox import BUCKETS
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.eventstore.relay import RELAY_LOCK_BASE, OutboxRelay
from chalicelib.infra.kafka_publisher import PRODUCER_SETTINGS, KafkaPublisher
from tests.support.builders import id_in_bucket, new_customer, unpublished
from tests.support.kafka import cloudevent, read_topic
from tests.support.relay import Crash, SendThenCrash, start_relay, stop_relay
from tests.support.waiting import wait_for

CTX = CommandContext(correlation_id="corr-relay", causation_id="cause-relay")


@pytest.fixture
def service(commands):
    return commands


def relay(db, sender, **options):
    return OutboxRelay(lambda: psycopg.connect(db, autocommit=True), sender, **options)


def create(service, n=0):
    return new_customer(service, n, CTX)


def append_uncommitted(conn: psycopg.Connection, name: str) -> uuid.UUID:
    """A customer's creation appended in `conn`'s open transaction."""
    stream_id = uuid.uuid4()
    event = registry.serialize(CustomerCreated(name=name, email=f"{name.lower()}@example.com"),
                               Metadata.new(name.lower(), None))
    PostgresEventStore(conn).append(stream_id, "Customer", 0, [event])
    return stream_id



def test_relay_publishes_cloudevents_keyed_by_customer(db, service, publisher, kafka_bootstrap, topic):
    customer = create(service)
    service.change_email(ChangeEmail(customer_id=customer.id, email="new@example.com"), CTX)
    result = relay(db, publisher).run_once()
    assert (result.published, result.failures) == (2, 0)
    assert unpublished(db) == 0

    records = read_topic(kafka_bootstrap, topic, expected=2)
    assert len(records) == 2
    assert {r.key for r in records} == {str(customer.id).encode()}
    first, second = sorted((cloudevent(r) for r in records), key=lambda e: e["streamversion"])
    with psycopg.connect(db) as conn:
        event_id, occurred_at = conn.execute(
            "SELECT metadata->>'event_id', metadata->>'occurred_at' FROM events ORDER BY version LIMIT 1").fetchone()
    assert first == {
        "specversion": "1.0", "id": event_id, "source": "/customer-service", "type": "CustomerCreated",
        "subject": str(customer.id), "time": occurred_at, "datacontenttype": "application/json",
        "data": {"name": "Customer 0", "email": "c0@example.com"},
        "schemaversion": 1, "streamtype": "Customer", "streamversion": 1, "position": first["position"],
        "correlationid": "corr-relay", "causationid": "cause-relay",
    }
    assert second["type"] == "CustomerEmailChanged"
    assert second["data"] == {"email": "new@example.com", "previous_email": "c0@example.com"}
    headers = dict(sorted(records, key=lambda r: r.offset)[0].headers)
    assert headers["event-type"] in (b"CustomerCreated", b"CustomerEmailChanged")
    assert headers["content-type"].startswith(b"application/cloudevents+json")


def test_crash_after_publishing_and_before_marking_republishes(db, service, publisher, kafka_bootstrap, topic):
    customers = [create(service, n) for n in range(5)]

    with pytest.raises(Crash):
        relay(db, SendThenCrash(publisher)).run_once()
    assert unpublished(db) == 5  # published, but not marked

    result = relay(db, publisher).run_once()  # the next run; the lock was freed
    assert result.published == 5 and unpublished(db) == 0
    records = read_topic(kafka_bootstrap, topic, expected=10)
    seen = [cloudevent(r)["subject"] for r in records]
    assert sorted(set(seen)) == sorted(str(c.id) for c in customers)
    assert len(seen) == 10  # each twice: duplicates allowed, loss never


def test_an_earlier_transaction_committing_late_is_not_skipped(db, service, publisher, kafka_bootstrap, topic):
    early = psycopg.connect(db)  # a transaction, left open
    early_id = append_uncommitted(early, "Early")
    late = create(service)  # takes a higher outbox id, commits first
    assert relay(db, publisher).run_once().published == 1

    early.commit()
    early.close()
    with psycopg.connect(db) as conn:
        ids = dict(conn.execute("SELECT stream_id, id FROM outbox").fetchall())
    assert ids[early_id] < ids[late.id]  # committed out of id order
    assert relay(db, publisher).run_once().published == 1

    records = read_topic(kafka_bootstrap, topic, expected=2)
    assert sorted(cloudevent(r)["subject"] for r in records) == sorted([str(early_id), str(late.id)])


def test_per_customer_order_is_kept_on_the_topic(db, service, publisher, kafka_bootstrap, topic):
    customers = [create(service, n) for n in range(12)]
    for round_ in range(4):  # interleaved across customers
        for n, customer in enumerate(customers):
            service.change_email(ChangeEmail(customer_id=customer.id, email=f"c{n}-{round_}@example.com"), CTX)
    service.delete(DeleteCustomer(customer_id=customers[0].id), CTX)
    result = relay(db, publisher, batch_size=7).run_once()  # many batches
    assert result.published == 12 * 5 + 1 and result.batches > 5

    by_key = defaultdict(list)
    for record in sorted(read_topic(kafka_bootstrap, topic, expected=61), key=lambda r: (r.partition, r.offset)):
        by_key[record.key.decode()].append(cloudevent(record)["streamversion"])
    assert by_key[str(customers[0].id)] == [1, 2, 3, 4, 5, 6]
    for customer in customers[1:]:
        assert by_key[str(customer.id)] == [1, 2, 3, 4, 5]


def test_producer_cannot_reorder_on_retry():
    # Idempotence with one request in flight: a retried batch can neither be
    # duplicated by the broker nor overtaken by the next one.
    assert PRODUCER_SETTINGS["enable_idempotence"] is True
    assert PRODUCER_SETTINGS["max_in_flight_requests_per_connection"] == 1
    assert PRODUCER_SETTINGS["acks"] == "all"


def test_only_one_relay_runs_at_a_time(db, service, publisher):
    create(service)
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(k) FROM unnest(%s::bigint[]) AS k",
                       ([RELAY_LOCK_BASE + b for b in range(BUCKETS)],))
        began = time.monotonic()
        result = relay(db, publisher).run(deadline=time.monotonic() + 30)
        assert result.locked_out and result.published == 0
        assert time.monotonic() - began < 5  # returned at once, not after its 30 s
        assert unpublished(db) == 1
    assert relay(db, publisher).run_once().published == 1


def test_two_concurrent_invocations_one_relays_one_returns(db, service, publisher):
    for n in range(3):
        create(service, n)
    results = []
    stop, first = start_relay(relay(db, publisher), results)
    wait_for(lambda: unpublished(db) == 0)
    second = relay(db, publisher).run(time.monotonic() + 30)
    stop_relay(db, stop, first)
    assert second.locked_out
    assert results[0].published == 3 and not results[0].locked_out


def test_a_sleeping_relay_is_woken_by_a_commit(db, service, publisher, kafka_bootstrap, topic):
    # No polling to fall back on: only the notification can wake it in time.
    stop, thread = start_relay(relay(db, publisher, idle_wait=600))
    try:
        time.sleep(0.5)  # let it go to sleep on an empty outbox
        customer = create(service)
        assert wait_for(lambda: unpublished(db) == 0, interval=0.02)
        records = read_topic(kafka_bootstrap, topic, expected=1)
        assert [cloudevent(r)["subject"] for r in records] == [str(customer.id)]
    finally:
        stop_relay(db, stop, thread)
    assert not thread.is_alive()


def test_broker_down_commands_succeed_and_the_relay_resumes_by_itself(db, application, service, capfd):
    from devstack.kafka import EmbeddedKafka, create_topic
    from devstack.postgres import free_port

    broker = EmbeddedKafka(free_port())  # not started yet: the broker is down
    down = CustomerApplication(dataclasses.replace(application.settings, kafka_topic="customer-events",
                                                   kafka_bootstrap_servers=broker.bootstrap_servers))
    customers = [create(service, n) for n in range(3)]

    results = []
    stop, running = start_relay(down.outbox_relay(), results)
    try:
        logged = []
        wait_for(lambda: logged.append(capfd.readouterr().err) or "outbox_publish_failed" in "".join(logged),
                 timeout=30, interval=0.2)
        logged = "".join(logged)
        assert "outbox_publish_failed" in logged
        assert broker.bootstrap_servers in logged
        assert unpublished(db) == 3  # the outbox keeps everything

        broker.start()
        create_topic(broker.bootstrap_servers, "customer-events")
        customers.append(create(service, 3))
        assert wait_for(lambda: unpublished(db) == 0, timeout=60, interval=0.2)
        records = read_topic(broker.bootstrap_servers, "customer-events", expected=4)
        assert sorted({cloudevent(r)["subject"] for r in records}) == sorted(str(c.id) for c in customers)
    finally:
        stop_relay(db, stop, running)
        down.close()
        broker.stop()
    assert results and results[0].failures >= 1


def test_writers_notify_only_while_the_relay_sleeps(db, service):
    """Notifying makes concurrent commits queue; it is only needed to wake a
    sleeping relay, which holds the sleep lock while it sleeps."""
    from chalicelib.eventstore.relay import SLEEP_LOCK_BASE

    every_bucket = [SLEEP_LOCK_BASE + b for b in range(BUCKETS)]
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("; ".join(f"LISTEN outbox_{b}" for b in range(BUCKETS)))
        create(service, 1)  # nobody asleep: no notification
        assert list(listener.notifies(timeout=0.3)) == []

        listener.execute("SELECT pg_advisory_lock(k) FROM unnest(%s::bigint[]) AS k", (every_bucket,))  # asleep
        customer = create(service, 2)
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [f"outbox_{bucket(customer.id)}"]
        listener.execute("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k", (every_bucket,))


def bucket(stream_id: uuid.UUID) -> int:
    return stream_id.bytes[15] % BUCKETS


def test_writers_wake_only_the_shard_they_wrote_to(db, service):
    from chalicelib.eventstore.relay import SLEEP_LOCK_BASE, buckets_of

    shard_0 = buckets_of(0, 2)
    with psycopg.connect(db, autocommit=True) as sleeping_shard_0:
        sleeping_shard_0.execute("; ".join(f"LISTEN outbox_{b}" for b in shard_0))
        sleeping_shard_0.execute("SELECT pg_advisory_lock(k) FROM unnest(%s::bigint[]) AS k",
                                 ([SLEEP_LOCK_BASE + b for b in shard_0],))
        customers = [new_customer(service, n, CTX, id_in_bucket(n % BUCKETS)) for n in range(12)]
        expected = sorted({f"outbox_{bucket(c.id)}" for c in customers if bucket(c.id) in shard_0})
        assert expected and len(expected) < len(customers)  # some wrote to shard 1
        got = sorted({n.channel for n in sleeping_shard_0.notifies(timeout=1)})
        assert got == expected


def test_a_relay_going_to_sleep_waits_for_a_writer_that_saw_it_awake(db, service, publisher, kafka_bootstrap, topic):
    # A writer inserts while the relay is awake (so it will not notify) and
    # commits only after the relay has published and wants to sleep.
    writer = psycopg.connect(db)
    append_uncommitted(writer, "Slow")
    stop, thread = start_relay(relay(db, publisher, idle_wait=600))
    try:
        time.sleep(0.5)  # the relay has published nothing and tries to sleep
        writer.commit()
        assert wait_for(lambda: unpublished(db) == 0, interval=0.02)
    finally:
        writer.close()
        stop_relay(db, stop, thread)


def test_a_lost_database_connection_is_reopened_and_publishing_goes_on(db, service, publisher, kafka_bootstrap, topic):
    def connect():
        return psycopg.connect(db, autocommit=True, application_name="relay-under-test")

    def kill_relay_connections() -> int:
        with psycopg.connect(db, autocommit=True) as admin:
            return len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                     " WHERE application_name = 'relay-under-test'").fetchall())

    results = []
    stop, thread = start_relay(OutboxRelay(connect, publisher, idle_wait=600), results)
    try:
        create(service, 1)
        assert wait_for(lambda: unpublished(db) == 0)
        assert kill_relay_connections() == 1  # as a database restart would, while it sleeps
        customer = create(service, 2)
        assert wait_for(lambda: unpublished(db) == 0, timeout=10), "not published soon after the loss"
        assert thread.is_alive()
        records = read_topic(kafka_bootstrap, topic, expected=2)
        assert str(customer.id) in {cloudevent(r)["subject"] for r in records}
    finally:
        stop_relay(db, stop, thread)
    assert results[0].failures >= 1 and "connection" in results[0].last_error


def test_one_long_running_relay_does_not_skip_a_row_that_commits_late(db, service, publisher, kafka_bootstrap,
                                                                      topic):
    """In production one invocation relays for most of a minute: a relay that
    remembered the last id it published would skip a row committed below it."""
    results = []
    stop, thread = start_relay(relay(db, publisher, idle_wait=600), results)
    try:
        early = psycopg.connect(db)  # takes the lower outbox id, commits last
        early_id = append_uncommitted(early, "Early")
        late = create(service)
        assert wait_for(lambda: unpublished(db) == 0)  # the same relay published `late` ...
        early.commit()
        early.close()
        assert wait_for(lambda: unpublished(db) == 0)  # ... and then, still running, `early`
        assert thread.is_alive()
    finally:
        stop_relay(db, stop, thread)
    assert results[0].published == 2
    subjects = {cloudevent(r)["subject"] for r in read_topic(kafka_bootstrap, topic, expected=2)}
    assert subjects == {str(early_id), str(late.id)}


class RefusingProducer:
    """A producer that is connected but whose sends the broker refuses or
    never acknowledges: every future fails."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def send(self, topic, key, value, headers):
        from kafka.producer.future import FutureProduceResult, FutureRecordMetadata

        produced = FutureProduceResult(None)
        future = FutureRecordMetadata(produced, 0, -1, None, len(key), len(value), -1)
        if self.error is not None:
            produced.failure(self.error)
        return future

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


@pytest.mark.parametrize("error", [None, "refused"])
def test_a_batch_the_broker_did_not_acknowledge_is_not_marked(db, service, error):
    from kafka.errors import NotLeaderForPartitionError

    publisher = KafkaPublisher("127.0.0.1:9", "customer-events", "/customer-service", flush_timeout=0.1)
    publisher._producer = RefusingProducer(NotLeaderForPartitionError() if error else None)
    create(service, 1)
    create(service, 2)
    result = relay(db, publisher).run_once()
    assert result.published == 0 and result.failures == 1 and "not acknowledged" in result.last_error
    assert unpublished(db) == 2


def test_a_row_committed_just_before_the_relay_sleeps_is_published_without_waiting(db, service, publisher):
    """The window between the relay's last empty read and its going to sleep:
    a writer committing there saw the relay awake and does not notify, so
    only the relay's last look before sleeping finds the row."""

    written = []

    class CommitInTheWindow(OutboxRelay):
        def _send_next(self, conn, buckets, in_flight):
            sent = super()._send_next(conn, buckets, in_flight)
            if sent is None and in_flight is None and not written:
                written.append(create(service, 7))  # commits now, after the last empty read
            return sent

    stop, thread = start_relay(CommitInTheWindow(lambda: psycopg.connect(db, autocommit=True), publisher,
                                                 idle_wait=600))
    try:
        assert wait_for(lambda: written and unpublished(db) == 0, timeout=5)
    finally:
        stop_relay(db, stop, thread)

