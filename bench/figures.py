"""What every benchmark run shares: its mode, its verdicts, its file of figures."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def quick_mode(what_it_does: str) -> bool:
    """BENCH_QUICK=1: each case for a moment on small data, to show that it
    runs; says so, and what the run does instead."""
    quick = os.environ.get("BENCH_QUICK", "").strip().lower() in ("1", "true", "yes")
    if quick:
        print(f"BENCH_QUICK: {what_it_does}; the figures mean little")
    return quick


def seconds_and_rounds(quick: bool) -> tuple[float, int]:
    """How long each case runs (BENCH_SECONDS) and how many rounds take
    turns (BENCH_ROUNDS), whose median is the figure."""
    if quick:
        return 0.3, 1
    return float(os.environ.get("BENCH_SECONDS", "2")), int(os.environ.get("BENCH_ROUNDS", "3"))


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def write(results: dict[str, Any], name: str, quick: bool) -> None:
    """The figures as JSON in bench/`name`, or where BENCH_RESULTS says,
    with the mode, the time and the machine they were measured on."""
    results["quick"] = quick
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).parent / name)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
