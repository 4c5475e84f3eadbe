"""Logs and the invocation they belong to, the way Lambda users expect them:
Powertools for AWS Lambda's Logger, one JSON line per thing worth logging,
each with the correlation id, and inside an invocation the function's name,
the Lambda request id, the cold-start flag and the X-Ray trace id.

The logger is made once per process, on first use (not at import: cold
start), under a lock: `chalice local` serves every request on a thread of
its own, and the first requests arrive together. What belongs to one
invocation (its context, its correlation id, its metrics) is kept in
context variables, which each thread has to itself; Powertools' own
appended keys are process-wide and are not used. It writes to whatever
sys.stderr is at the time (Lambda sends both streams to CloudWatch).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from chalicelib.infra import metrics

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
_invocation: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("invocation", default=None)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_logger = None
_logger_lock = threading.Lock()
_cold_start = True
_cold_start_lock = threading.Lock()


class _CurrentStderr(logging.StreamHandler):
    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _get():
    global _logger
    if _logger is None:
        with _logger_lock:
            if _logger is None:
                from aws_lambda_powertools import Logger

                logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-service",
                                level=logging.DEBUG, logger_handler=_CurrentStderr(), use_rfc3339=True)
                logger._logger.propagate = False  # written once, by its own handler
                _logger = logger  # only once it is whole: a failure is tried again by the next caller
    return _logger


def log(event: str, level: str = "info", **fields: Any) -> None:
    number = _LEVELS.get(level, logging.INFO)
    if number < _LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), logging.INFO):
        return
    _get().log(number, event, extra={**(_invocation.get() or {}), "correlation_id": correlation_id.get(), **fields},
               stacklevel=2)


def _claim_cold_start() -> bool:
    """True for the first invocation of this process, and only for it."""
    global _cold_start
    with _cold_start_lock:
        cold, _cold_start = _cold_start, False
    return cold


def request_id() -> str | None:
    """The Lambda request id of the invocation running here, if any."""
    return (_invocation.get() or {}).get("function_request_id")


@contextlib.contextmanager
def invocation(context: Any) -> Iterator[None]:
    """One invocation of a function: its log lines carry the Lambda context,
    and its metrics are flushed (as EMF) when it ends."""
    cold = _claim_cold_start()
    keys = {}
    if context is not None:
        keys = {"function_name": getattr(context, "function_name", None),
                "function_request_id": getattr(context, "aws_request_id", None),
                "cold_start": cold, "xray_trace_id": os.environ.get("_X_AMZN_TRACE_ID")}
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
