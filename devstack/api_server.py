"""The local API: Chalice's own local server (`chalice local`), started by
our launcher so that it takes load like the API Gateway it stands in for.

`chalice local` listens with the standard library's backlog of 5: beyond a
handful of simultaneous new connections, clients see connection resets.
This serves the same app, with the same stage configuration and the same
request handling, from a server that keeps up to BACKLOG connections
waiting and answers without Nagle's delay (the headers and the body are
two writes; with delayed ACKs a keep-alive client waited 40 ms for the body).

    python -m devstack.api_server --port 8000 [--host 127.0.0.1] [--stage dev]   (started by `make run`)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BACKLOG = 1024  # the kernel caps it at net.core.somaxconn


def create_server(host: str, port: int, stage: str = "dev"):
    from chalice import local
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.validate import validate_routes

    class Server(local.ThreadedHTTPServer):
        request_queue_size = BACKLOG

    class Handler(local.ChaliceRequestHandler):
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            # The app logs every request itself, naming the route: a request
            # line would put the query string (an email) in the log.
            pass

    # What `chalice local` does: the stage's configuration and environment,
    # the app loaded from the project, its routes checked as a deploy would.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    config = CLIFactory(str(PROJECT), environ=os.environ).create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    validate_routes(app.routes)
    # Thread-local current_request, as `chalice local` makes it.
    local.CustomLocalChalice.__bases__ = (local.LocalChalice, app.__class__)
    app.__class__ = local.CustomLocalChalice
    return local.LocalDevServer(app, config, host, port, handler_cls=Handler, server_cls=Server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.api_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT))
    server = create_server(args.host, args.port, args.stage)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
