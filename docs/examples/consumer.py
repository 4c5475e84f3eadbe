"""A consumer of the customer service's events: reads the topic with
kafka-python, parses each message with the CloudEvents SDK, and dispatches
on the event's type and schema version (the contract: GET /asyncapi.json).

    pip install kafka-python cloudevents
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092 python docs/examples/consumer.py

Delivery is at least once: a real consumer remembers the last
`streamversion` it applied per customer and skips what it has seen.
"""

from __future__ import annotations

import os
import sys

from cloudevents.kafka import KafkaMessage, from_structured
from kafka import KafkaConsumer


def created(event) -> str:
    return f"new customer {event['subject']}: {event.data['name']} <{event.data['email']}>"


def email_changed_v1(event) -> str:  # from the first release: no previous email
    return f"customer {event['subject']} now at <{event.data['email']}>"


def email_changed_v2(event) -> str:
    return f"customer {event['subject']} moved from <{event.data['previous_email']}> to <{event.data['email']}>"


def deleted(event) -> str:
    return f"customer {event['subject']} deleted"


def erased(event) -> str:
    # Delete what you keep of this customer's name and emails; its later
    # messages carry them as null.
    return f"customer {event['subject']} erased: forget its personal data"


HANDLERS = {
    ("CustomerCreated", 1): created,
    ("CustomerEmailChanged", 1): email_changed_v1,
    ("CustomerEmailChanged", 2): email_changed_v2,
    ("CustomerDeleted", 1): deleted,
    ("CustomerPersonalDataErased", 1): erased,
}


def main() -> int:
    consumer = KafkaConsumer(
        os.environ.get("KAFKA_TOPIC", "customer-events"),
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092").split(","),
        group_id=os.environ.get("GROUP_ID"),  # unset: no offsets kept, read from the start each time
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(os.environ.get("IDLE_SECONDS", "5")) * 1000,  # then stop
    )
    for record in consumer:
        event = from_structured(KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value))
        version = event.get("schemaversion", 1)  # absent on the first release's messages
        handler = HANDLERS.get((event["type"], version))
        if handler is None:
            print(f"skipping {event['type']} v{version}: not known to this consumer", file=sys.stderr)
            continue
        print(f"{event['type']} v{version} #{event['streamversion']}: {handler(event)}", flush=True)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
