"""Logs and the invocation they belong to, the way Lambda users expect them:
Powertools for AWS Lambda's Logger, one JSON line per thing worth logging,
each with the correlation id, and inside an invocation the function's name,
the Lambda request id, the cold-start flag and the X-Ray trace id.

The logger is made on first use, not at import (cold start), and writes to
whatever sys.stderr is at the time (Lambda sends both streams to CloudWatch).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from chalicelib.infra import metrics

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_INVOCATION_KEYS = ("function_name", "function_request_id", "cold_start", "xray_trace_id")
_logger = None
_cold_start = True


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
        from aws_lambda_powertools import Logger

        _logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-service",
                         level=logging.DEBUG, logger_handler=_CurrentStderr(), use_rfc3339=True)
        _logger._logger.propagate = False  # written once, by its own handler
    return _logger


def log(event: str, level: str = "info", **fields: Any) -> None:
    number = _LEVELS.get(level, logging.INFO)
    if number < _LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), logging.INFO):
        return
    _get().log(number, event, extra={"correlation_id": correlation_id.get(), **fields}, stacklevel=2)


@contextlib.contextmanager
def invocation(context: Any) -> Iterator[None]:
    """One invocation of a function: its log lines carry the Lambda context,
    and its metrics are flushed (as EMF) when it ends."""
    global _cold_start
    logger = _get()
    cold, _cold_start = _cold_start, False
    if context is not None:
        logger.append_keys(function_name=getattr(context, "function_name", None),
                           function_request_id=getattr(context, "aws_request_id", None),
                           cold_start=cold, xray_trace_id=os.environ.get("_X_AMZN_TRACE_ID"))
    try:
        with metrics.invocation(getattr(context, "function_name", None), cold):
            yield
    finally:
        logger.remove_keys(_INVOCATION_KEYS)
