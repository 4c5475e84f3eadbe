"""Progress of a long operation (rebuild, encrypt-events, backfill): a bar
with its rate and the time left on a terminal (tqdm), a plain line per step
when the output is a file or a pipe."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """A progress callback, `(done, total)`; `close()` when the work is over."""

    def __init__(self, label: str, unit: str = "events", stream: TextIO | None = None,
                 every_seconds: float = 5.0) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.every_seconds = every_seconds
        self._bar: Any = None
        self._started = time.monotonic()
        self._said_at = float("-inf")
        self._last: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        self._last = (done, total)
        if self.stream.isatty():
            self._draw(done, total)
            return
        now = time.monotonic()
        if now - self._said_at >= self.every_seconds or done >= total:
            self._said_at = now
            self.stream.write(self._line(done, total) + "\n")
            self.stream.flush()

    def _draw(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit=f" {self.unit}", unit_scale=True,
                             file=self.stream, dynamic_ncols=True)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def _line(self, done: int, total: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        share = f"{done / total:.0%}" if total else "100%"
        left = (total - done) / rate if rate > 0 and total >= done else None
        eta = f", {duration(left)} left" if left is not None and done < total else ""
        return f"{self.label}: {done:,}/{total:,} {self.unit} ({share}), {rate:,.0f}/s{eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last is not None and self._said_at == float("-inf"):
            self.stream.write(self._line(*self._last) + "\n")


def duration(seconds: float) -> str:
    """A time a person reads at a glance: 12.3 s, 4.5 min, 2.0 h."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
