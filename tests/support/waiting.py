"""Waiting for something that happens in another thread or process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """The first truthy value of `condition()`, or its last value once
    `timeout` seconds have passed (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def run_in_threads(target: Callable[..., None], arguments: Iterable[tuple], timeout: float = 60.0) -> None:
    """Run target(*args) for each tuple of arguments in a thread of its own,
    all at once, and wait for every one."""
    threads = [threading.Thread(target=target, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)


def in_background(run: Callable[[threading.Event], object]) -> tuple[threading.Event, threading.Thread]:
    """run(stop) in a thread of its own (an event source, say); set `stop`
    and join the thread to end it."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,))
    thread.start()
    return stop, thread
