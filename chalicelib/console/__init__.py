"""The console's page: plain HTML, CSS and JavaScript (no build step),
served by the API at /console. Read from this folder on first request, so
the API's cold start pays nothing for it."""

from __future__ import annotations

import functools
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8",
          "console.svg": "image/svg+xml"}
PAGE = "index.html"


@functools.cache
def read(name: str) -> str:
    return (FOLDER / name).read_text(encoding="utf-8")


def asset(name: str) -> tuple[str, str] | None:
    """(content, content type) of one of the page's files; None for any other name."""
    return (read(name), ASSETS[name]) if name in ASSETS else None
