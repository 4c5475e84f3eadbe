"""CloudWatch metrics in Embedded Metric Format (Powertools for AWS Lambda):
recorded during an invocation and written as one JSON line when it ends,
which CloudWatch turns into metrics; no call to AWS. Outside an invocation
(operator commands, tests) nothing is recorded.

Each invocation has a metric set of its own (Powertools' EphemeralMetrics,
in a context variable): Powertools' Metrics shares one set per process,
and under `chalice local` concurrent requests would flush each other's.

Namespace CustomerService (POWERTOOLS_METRICS_NAMESPACE), dimension service;
every metric the service records is named in README.md, Operations.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("metrics", default=None)


def count(name: str, value: float = 1) -> None:
    _add(name, "Count", value)


def milliseconds(name: str, value: float) -> None:
    _add(name, "Milliseconds", value)


def seconds(name: str, value: float) -> None:
    _add(name, "Seconds", value)


def _add(name: str, unit: str, value: float) -> None:
    recorded = _current.get()
    if recorded is not None:
        recorded.add_metric(name=name, unit=unit, value=value)


def _new_set():
    from aws_lambda_powertools.metrics import EphemeralMetrics

    return EphemeralMetrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "CustomerService",
                            service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-service")


@contextlib.contextmanager
def invocation(function_name: str | None, cold_start: bool,
               metadata: Callable[[], dict[str, Any]] = dict) -> Iterator[None]:
    """Metrics recorded inside are this invocation's; flushed as one EMF line
    at its end, with `metadata()` (its request and correlation ids) beside them."""
    recorded = _new_set()
    token = _current.set(recorded)
    try:
        if cold_start:
            count("ColdStart")
        yield
    finally:
        _current.reset(token)
        if recorded.metric_set:
            for key, value in {"function_name": function_name, **metadata()}.items():
                if value:
                    recorded.add_metadata(key=key, value=value)
            _write(recorded)


def _write(recorded) -> None:
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    if is_metrics_disabled():
        return
    # One write of the whole line, flushed: lines of concurrent invocations
    # never interleave, and none waits in a buffer (print writes the newline
    # apart, and stdout into a pipe is block-buffered).
    sys.stdout.write(json.dumps(recorded.serialize_metric_set(), separators=(",", ":")) + "\n")
    sys.stdout.flush()
