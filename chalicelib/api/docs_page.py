"""GET /docs: Swagger UI over /openapi.json, with its script and style sheet
served by the API itself (from the openapi-ui-bundles package), so the page
works offline and with no CDN; and a link to /asyncapi.json, the contract
of the events on Kafka."""

from __future__ import annotations

import functools

# Relative links: behind API Gateway the page lives under the stage's path.
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Customer service API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <p style="font-family: sans-serif; margin: 1em 2em">Events published on Kafka (topic customer-events):
    <a href="asyncapi.json">asyncapi.json</a>, their AsyncAPI 3.0 contract.</p>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""

ASSETS = {"swagger-ui.css": "text/css; charset=utf-8", "swagger-ui-bundle.js": "text/javascript; charset=utf-8"}


def asset(name: str) -> tuple[str, str] | None:
    """(content, content type) of one of the page's files; None for any other name."""
    return _read(name) if name in ASSETS else None


@functools.cache
def _read(name: str) -> tuple[str, str]:
    from openapi_ui_bundles.swagger_ui import static_path  # on first use: cold start

    return (static_path / name).read_text(encoding="utf-8"), ASSETS[name]
