"""A relay invocation running in the background of a test, and stopping it."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import psycopg

from chalicelib.eventstore.events import RecordedEvent
from chalicelib.eventstore.outbox import wake_relay
from chalicelib.eventstore.relay import Acknowledgement, OutboxRelay, Sender


def start_relay(relay: OutboxRelay, results: list | None = None) -> tuple[threading.Event, threading.Thread]:
    """relay.run() in a thread until stopped; its RelayResult lands in `results`."""
    stop = threading.Event()
    thread = threading.Thread(target=lambda: (results if results is not None else []).append(
        relay.run(time.monotonic() + 600, stop)))
    thread.start()
    return stop, thread


def stop_relay(database_url: str, stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    with psycopg.connect(database_url, autocommit=True) as conn:
        wake_relay(conn)  # if asleep
    thread.join(timeout=30)


class Crash(BaseException):
    """The process dies: not an error anyone handles."""


class SendThenCrash:
    """A sender whose process dies once the broker has acknowledged a batch,
    before the relay could mark it."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    def send(self, events: Sequence[RecordedEvent]) -> Acknowledgement:
        self.sender.send(events)()
        raise Crash()
