"""Logs and the invocation they belong to, the way Lambda users expect them:
one JSON line per thing worth logging, in the shape of Powertools for AWS
Lambda's Logger (`level`, `location`, `message`, `timestamp`, `service`, the
fields), each with the correlation id, and inside an invocation the
function's name, the Lambda request id, the cold-start flag and the X-Ray
trace id.

Written here rather than through Powertools: its import (Logger, Metrics,
Tracer and jmespath together) cost every new container about 12 ms, and
its appended keys are process-wide, where `chalice local` serves each
request on a thread of its own. What belongs to one invocation (its
context, its correlation id, its metrics) is kept in context variables,
which each thread has to itself. Lines go to whatever sys.stderr is at the
time (Lambda sends both streams to CloudWatch), each in one write.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from chalicelib.infra import metrics

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
_invocation: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("invocation", default=None)

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_cold_start = True
_cold_start_lock = threading.Lock()


def log(event: str, level: str = "info", **fields: Any) -> None:
    number = _LEVELS.get(level, 20)
    if number < _LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), 20):
        return
    caller = sys._getframe(1)
    line = {"level": level.upper(), "location": f"{caller.f_code.co_name}:{caller.f_lineno}", "message": event,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "service": os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-service",
            **(_invocation.get() or {}), "correlation_id": correlation_id.get(), **fields}
    text = json.dumps({key: value for key, value in line.items() if value is not None}, default=str,
                      separators=(",", ":"))
    stream = sys.stderr
    stream.write(text + "\n")  # one write: lines of concurrent requests never interleave
    stream.flush()


def _claim_cold_start() -> bool:
    """True for the first invocation of this process, and only for it."""
    global _cold_start
    with _cold_start_lock:
        cold, _cold_start = _cold_start, False
    return cold


def restored() -> None:
    """This process was restored from a snapshot (chalicelib.snapstart): its
    next invocation is a cold start again."""
    global _cold_start
    with _cold_start_lock:
        _cold_start = True


def request_id() -> str | None:
    """The Lambda request id of the invocation running here, if any."""
    return (_invocation.get() or {}).get("function_request_id")


@contextlib.contextmanager
def invocation(context: Any) -> Iterator[None]:
    """One invocation of a function: its log lines carry the Lambda context,
    and its metrics are flushed (as EMF) when it ends."""
    cold = _claim_cold_start()
    keys: dict[str, Any] = {}
    if context is not None:
        trace = os.environ.get("_X_AMZN_TRACE_ID")
        keys = {"function_name": getattr(context, "function_name", None),
                "function_request_id": getattr(context, "aws_request_id", None), "cold_start": cold,
                "xray_trace_id": trace.split(";")[0].replace("Root=", "") if trace else None}
    token, correlation = _invocation.set(keys), correlation_id.set(None)
    try:
        with metrics.invocation(keys.get("function_name"), cold,
                                lambda: {"function_request_id": keys.get("function_request_id"),
                                         "correlation_id": correlation_id.get()}):
            yield
    finally:
        # The correlation id set inside (by the HTTP middleware) ends with the invocation.
        correlation_id.reset(correlation)
        _invocation.reset(token)
