"""Ending the stack's child processes."""

from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen | None, sig: signal.Signals = signal.SIGTERM, grace: float = 10) -> None:
    """Sends `sig` to a running process and waits `grace` seconds for it to
    exit, then kills it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
