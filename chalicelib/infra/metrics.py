"""CloudWatch metrics in Embedded Metric Format (Powertools for AWS Lambda's
Metrics): recorded during an invocation and written as one JSON line when it
ends, which CloudWatch turns into metrics; no call to AWS. Outside an
invocation (operator commands, tests) nothing is recorded.

Namespace CustomerService (POWERTOOLS_METRICS_NAMESPACE), dimension service;
every metric the service records is named in README.md, Operations.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_metrics = None
_active = False


def _get():
    global _metrics
    if _metrics is None:
        from aws_lambda_powertools import Metrics

        _metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "CustomerService",
                           service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-service")
    return _metrics


def count(name: str, value: float = 1) -> None:
    _add(name, "Count", value)


def milliseconds(name: str, value: float) -> None:
    _add(name, "Milliseconds", value)


def seconds(name: str, value: float) -> None:
    _add(name, "Seconds", value)


def _add(name: str, unit: str, value: float) -> None:
    if _active:
        _get().add_metric(name=name, unit=unit, value=value)


@contextlib.contextmanager
def invocation(function_name: str | None, cold_start: bool) -> Iterator[None]:
    global _active
    _active = True
    try:
        if cold_start:
            count("ColdStart")
        yield
    finally:
        _active = False
        metrics = _get()
        if metrics.metric_set:
            if function_name:
                metrics.add_metadata(key="function_name", value=function_name)
            metrics.flush_metrics()
            metrics.clear_metrics()  # flushing leaves them when POWERTOOLS_METRICS_DISABLED
