"""CloudWatch metrics in Embedded Metric Format: recorded during an
invocation and written as one JSON line when it ends, which CloudWatch
turns into metrics; no call to AWS. Outside an invocation (operator
commands, tests) nothing is recorded.

Each invocation has a metric set of its own, in a context variable, so
concurrent requests under `chalice local` never flush each other's. The line
is the one Powertools for AWS Lambda's Metrics writes (namespace
POWERTOOLS_METRICS_NAMESPACE, default CustomerService; dimension `service`;
each metric's values as a list; the invocation's request and correlation
ids as metadata), written here for the reason logs.py gives.

Every metric the service records is named in the README, Operations.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

_current: contextvars.ContextVar[dict[str, tuple[str, list[float]]] | None] = contextvars.ContextVar(
    "metrics", default=None)


def count(name: str, value: float = 1) -> None:
    _add(name, "Count", value)


def milliseconds(name: str, value: float) -> None:
    _add(name, "Milliseconds", value)


def seconds(name: str, value: float) -> None:
    _add(name, "Seconds", value)


def _add(name: str, unit: str, value: float) -> None:
    recorded = _current.get()
    if recorded is not None:
        recorded.setdefault(name, (unit, []))[1].append(float(value))


@contextlib.contextmanager
def invocation(function_name: str | None, cold_start: bool,
               metadata: Callable[[], dict[str, Any]] = dict) -> Iterator[None]:
    """Metrics recorded inside are this invocation's; flushed as one EMF line
    at its end, with `metadata()` (its request and correlation ids) beside them."""
    recorded: dict[str, tuple[str, list[float]]] = {}
    token = _current.set(recorded)
    try:
        if cold_start:
            count("ColdStart")
        yield
    finally:
        _current.reset(token)
        if recorded:
            _write(recorded, {"function_name": function_name, **metadata()})


def emf_line(recorded: dict[str, tuple[str, list[float]]], metadata: dict[str, Any]) -> str:
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-service"
    directive = {"Namespace": os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "CustomerService",
                 "Dimensions": [["service"]],
                 "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in recorded.items()]}
    blob = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]}, "service": service,
            **{key: value for key, value in metadata.items() if value},
            # A metric keeps at most 100 values per line (EMF's limit).
            **{name: values[:100] for name, (_, values) in recorded.items()}}
    return json.dumps(blob, separators=(",", ":"))


def _write(recorded: dict[str, tuple[str, list[float]]], metadata: dict[str, Any]) -> None:
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return
    # One write of the whole line, flushed: lines of concurrent invocations
    # never interleave, and none waits in a buffer (stdout into a pipe is
    # block-buffered).
    sys.stdout.write(emf_line(recorded, metadata) + "\n")
    sys.stdout.flush()
