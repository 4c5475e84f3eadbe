"""The consumer example in docs/ runs: against a real broker, it reads what
the relay published and dispatches each event on its type and version."""

import subprocess
import sys
from pathlib import Path

from chalicelib.domain.commands import ChangeEmail, DeleteCustomer
from tests.support.builders import CONTEXT, new_customer

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "consumer.py"


def test_the_consumer_example_reads_every_event_the_relay_published(application, commands, kafka_bootstrap, topic):
    customer = new_customer(commands, 1)
    commands.change_email(ChangeEmail(customer.id, "moved@example.org"), CONTEXT)
    commands.delete(DeleteCustomer(customer.id), CONTEXT)
    assert application.outbox_relay().run_once().published == 3

    run = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120,
                         env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic, "IDLE_SECONDS": "3",
                              "PATH": ""})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"CustomerCreated v1 #1: new customer {customer.id}: Customer 1 <c1@example.com>",
        f"CustomerEmailChanged v2 #2: customer {customer.id} moved from <c1@example.com> to <moved@example.org>",
        f"CustomerDeleted v1 #3: customer {customer.id} deleted",
    ]
