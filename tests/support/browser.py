"""A real Chromium for the console's tests, driven by Playwright: the one
Playwright installed, else one on the machine, else installed now
(Playwright's download where the machine reaches it, Debian's `chromium`
package where it does not). The tests never skip for want of one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# As root in a container Chromium needs --no-sandbox; the rest keeps it from
# reaching out to the network at start (a closed network refuses it).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
_ON_THE_MACHINE = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _playwrights_own() -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        return playwright.chromium.executable_path


def _on_the_machine() -> str | None:
    return next((found for found in map(shutil.which, _ON_THE_MACHINE) if found), None)


def chromium() -> tuple[str | None, str]:
    """(executable to launch, or None for Playwright's own; which one it is)."""
    own = _playwrights_own()
    if Path(own).exists():
        return None, f"Playwright's own Chromium ({own})"
    found = _on_the_machine()
    if found:
        return found, f"the machine's Chromium ({found})"
    tried = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], capture_output=True,
                           text=True, timeout=300)
    if tried.returncode == 0 and Path(own).exists():
        return None, "Playwright's own Chromium, downloaded now"
    if shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                     ["apt-get", "install", "-y", "-q", "chromium"]):
            subprocess.run(sudo + step, capture_output=True, env=env, timeout=900)
            found = _on_the_machine()
            if found:
                return found, f"Debian's chromium package, installed now ({found})"
    pytest.fail("no Chromium for the console's tests: Playwright's download failed"
                f" ({tried.stderr.strip()[-300:]}) and there is no apt-get to install Debian's chromium")
