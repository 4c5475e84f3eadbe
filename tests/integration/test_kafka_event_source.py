"""The local Kafka event source mapping, against the real broker: batches in
the mapping's shape, retried without committing past a failure, resumed from
committed offsets."""

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from chalicelib.infra import kafka_delivery
from devstack.kafka_source import KafkaEventSource
from tests.support.waiting import in_background, wait_for


@pytest.fixture
def producer(kafka_bootstrap):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    yield producer
    producer.close()


def send(producer, topic, values, key=b"k"):
    for value in values:
        producer.send(topic, key=key, value=value, headers=[("event-type", b"Test")])
    producer.flush()


class Recorder:
    """A function that remembers what it was invoked with; fails on demand."""

    def __init__(self, fail_times=0):
        self.events = []
        self.fail_times = fail_times

    def __call__(self, event, context):
        self.events.append(event)
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("the function failed")
        return {"ok": True}

    def values(self):
        return [r.value for e in self.events for r in kafka_delivery.records(e)]


def start(source):
    return in_background(source.run)




def committed(bootstrap, topic, group):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)}
    finally:
        consumer.close(autocommit=False)


def test_batches_arrive_in_the_mapping_shape(kafka_bootstrap, topic, producer):
    send(producer, topic, [b"one", b"two", b"three"])
    recorder = Recorder()
    source = KafkaEventSource(recorder, kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}")
    stop, thread = start(source)
    try:
        assert wait_for(lambda: len(recorder.values()) == 3)
    finally:
        stop.set()
        thread.join(timeout=20)
    event = recorder.events[0]
    assert event["eventSource"] == "SelfManagedKafka" and event["bootstrapServers"] == kafka_bootstrap
    (key, batch), = event["records"].items()
    partition = batch[0]["partition"]
    assert key == f"{topic}-{partition}"
    assert [r["offset"] for r in batch] == [0, 1, 2]
    assert batch[0]["topic"] == topic and isinstance(batch[0]["timestamp"], int)
    assert batch[0]["headers"] == [{"event-type": list(b"Test")}]
    assert recorder.values() == [b"one", b"two", b"three"]


def test_a_failing_batch_is_retried_and_not_committed_past(kafka_bootstrap, topic, producer):
    group = f"g-{uuid.uuid4().hex[:8]}"
    send(producer, topic, [b"a", b"b"])
    recorder = Recorder(fail_times=10**6)  # fails until told otherwise
    source = KafkaEventSource(recorder, kafka_bootstrap, topic, group, retry_backoff=(0.05, 0.1))
    stop, thread = start(source)
    try:
        assert wait_for(lambda: len(recorder.events) >= 3)
        assert all(v is None for v in committed(kafka_bootstrap, topic, group).values())
        first = recorder.events[0]
        assert all(e == first for e in recorder.events)  # the same batch, again and again
        recorder.fail_times = 0
        assert wait_for(lambda: any(v is not None for v in committed(kafka_bootstrap, topic, group).values()))
    finally:
        stop.set()
        thread.join(timeout=20)
    offsets = [o for o in committed(kafka_bootstrap, topic, group).values() if o is not None]
    assert offsets == [2]


def test_a_restarted_source_resumes_after_what_it_committed(kafka_bootstrap, topic, producer):
    group = f"g-{uuid.uuid4().hex[:8]}"
    send(producer, topic, [b"1", b"2"])
    first = Recorder()
    stop, thread = start(KafkaEventSource(first, kafka_bootstrap, topic, group))
    try:
        assert wait_for(lambda: len(first.values()) == 2)
        assert wait_for(lambda: 2 in committed(kafka_bootstrap, topic, group).values())
    finally:
        stop.set()
        thread.join(timeout=20)

    send(producer, topic, [b"3"])
    second = Recorder()
    stop, thread = start(KafkaEventSource(second, kafka_bootstrap, topic, group))
    try:
        assert wait_for(lambda: len(second.values()) == 1, timeout=20)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert second.values() == [b"3"]


def test_the_whole_read_side_through_the_real_function(client, application, kafka_bootstrap, topic):
    """Command -> outbox -> relay -> Kafka -> event source -> function -> read model -> GET."""
    import app as app_module

    source = KafkaEventSource(app_module.project_customers, kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}")
    stop, thread = start(source)
    try:
        customer_id = client.create().json_body["id"]
        client.change_email(customer_id, "ada@engine.org")
        assert application.outbox_relay().run_once().published == 2

        def projected():
            response = client.get(f"/customer/{customer_id}")
            return response.headers.get("X-Read-Source") == "read-model" and response.json_body["version"] == 2

        assert wait_for(projected, timeout=20)
        assert client.get(f"/customer/{customer_id}").json_body["email"] == "ada@engine.org"
        found = client.get("/customers?email=ada@engine.org").json_body["customers"]
        assert [c["id"] for c in found] == [customer_id]
    finally:
        stop.set()
        thread.join(timeout=20)
    assert source.failures == 0


def test_a_topic_made_anew_is_read_from_its_beginning_once_each_time_whatever_its_length(tmp_path):
    """A broker that comes back empty (the embedded one keeps nothing) gets
    the topic again and the outbox's events again: fewer than the source had
    read, or more. Either way every new record is delivered, and the source
    starts over once per new topic, not again and again."""
    from devstack.kafka import EmbeddedKafka, create_topic
    from devstack.postgres import free_port

    broker = EmbeddedKafka(free_port(), log_path=tmp_path / "kafka.log")
    bootstrap = broker.start()
    topic = "customer-events"
    recorder = Recorder()
    source = KafkaEventSource(recorder, bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}")
    source.recreated_check_seconds = 0.2
    try:
        for incarnation, count in enumerate((12, 4, 30)):
            if incarnation:
                broker.process.kill()
                broker.process.wait()
                broker.start()
            create_topic(bootstrap, topic, partitions=1)
            producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)  # batches of many records
            send(producer, topic, [f"{incarnation}-{n}".encode() for n in range(count)])
            producer.close()
            if incarnation == 0:
                stop, thread = start(source)
            wanted = [f"{incarnation}-{n}".encode() for n in range(count)]
            assert wait_for(lambda wanted=wanted: [v for v in recorder.values() if v in wanted] == wanted,
                            timeout=30), (incarnation, recorder.values())
        time.sleep(2)  # settled: nothing read again
        values = recorder.values()
        assert sorted(values) == sorted(f"{i}-{n}".encode() for i, c in enumerate((12, 4, 30)) for n in range(c))
        assert source.restarts == 2
    finally:
        stop.set()
        thread.join(timeout=20)
        broker.stop()
