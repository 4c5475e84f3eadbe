"""One JSON line per thing worth logging, always with the correlation id."""

from __future__ import annotations

import contextvars
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def log(event: str, level: str = "info", **fields: Any) -> None:
    threshold = _LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), 20)
    if _LEVELS.get(level, 20) < threshold:
        return
    line = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "event": event,
        "correlation_id": correlation_id.get(),
        **fields,
    }
    print(json.dumps(line, default=str), file=sys.stderr, flush=True)
