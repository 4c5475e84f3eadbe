"""Runs the app's `@app.schedule` functions the way EventBridge and Lambda
would, which `chalice local` does not: every rate period, a scheduled event
and a Lambda context with the function's configured timeout are handed to the
real handler, each invocation in its own thread (so they may overlap, as on
AWS). The relay is invoked once per shard (RELAY_SHARDS), its shard in the
event's detail, as the template's schedules do.

    python -m devstack.schedule      (started by `make run`)
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression) -> float:
    text = expression if isinstance(expression, str) else expression.to_string()
    match = _RATE.match(text.strip())
    if not match:
        raise ValueError(f"only rate(...) schedules run locally, not {text!r}")
    value, unit = int(match.group(1)), match.group(2).rstrip("s")
    return value * _SECONDS[unit]


def _config() -> dict:
    return json.loads((PROJECT / ".chalice" / "config.json").read_text())


def stage_environment(stage: str = "dev") -> dict[str, str]:
    """The stage's environment variables, which win over the process's own,
    as they do on Lambda and in `chalice local`."""
    config = _config()
    return {**config.get("environment_variables", {}),
            **config.get("stages", {}).get(stage, {}).get("environment_variables", {})}


def lambda_settings(function_name: str, stage: str = "dev") -> tuple[int, int]:
    """(timeout seconds, memory MB) as `chalice deploy` would configure them."""
    config = _config()
    timeout, memory = config.get("lambda_timeout", 60), config.get("lambda_memory_size", 128)
    stage_config = config.get("stages", {}).get(stage, {})
    timeout = stage_config.get("lambda_timeout", timeout)
    memory = stage_config.get("lambda_memory_size", memory)
    function = stage_config.get("lambda_functions", {}).get(function_name, {})
    return function.get("lambda_timeout", timeout), function.get("lambda_memory_size", memory)


def scheduled_event(rule_name: str, detail: dict | None = None) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "local",
        "resources": [f"arn:aws:events:local:000000000000:rule/{rule_name}"],
        "detail": detail or {},
    }


def invoke(handler, name: str, timeout: int, memory: int, detail: dict | None = None) -> None:
    from chalice.local import LambdaContext

    context = LambdaContext(name, memory_size=memory, max_runtime_ms=timeout * 1000)
    try:
        handler(scheduled_event(name, detail), context)
    except Exception:  # noqa: BLE001 - a failed invocation is logged, the schedule goes on
        print(json.dumps({"event": "scheduled_invocation_failed", "level": "error", "function": name,
                          "error": traceback.format_exc()}), file=sys.stderr, flush=True)


def load_app_as_deployed(stage: str = "dev"):
    """The app module, imported with the stage's environment, as Lambda would."""
    sys.path.insert(0, str(PROJECT))
    os.environ.update(stage_environment(stage))
    import app as app_module

    return app_module


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def main() -> int:
    from chalice.app import ScheduledEventConfig

    app_module = load_app_as_deployed()
    stop = stop_on_signals()

    schedules = [s for s in app_module.app.event_sources if isinstance(s, ScheduledEventConfig)]

    def run_schedule(config: ScheduledEventConfig) -> None:
        handler = getattr(app_module, config.handler_string.rsplit(".", 1)[-1])
        period = rate_seconds(config.schedule_expression)
        timeout, memory = lambda_settings(config.name)
        shards = int(os.environ.get("RELAY_SHARDS") or 1) if config.name == "relay_outbox" else 1
        print(f"[schedule] {config.name}: every {period:.0f} s, timeout {timeout} s"
              + (f", {shards} shards" if shards > 1 else ""), flush=True)
        while not stop.is_set():
            for shard in range(shards):
                detail = {"shard": shard} if shards > 1 else None
                threading.Thread(target=invoke, args=(handler, config.name, timeout, memory, detail),
                                 daemon=True).start()
            stop.wait(period)

    threads = [threading.Thread(target=run_schedule, args=(s,), daemon=True) for s in schedules]
    for t in threads:
        t.start()
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
