"""Operator commands: `python -m ops migrate`."""

from __future__ import annotations

import argparse
import os
import sys

from chalicelib.eventstore.migrations import migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the SQL migrations in chalicelib/schema that are not applied yet")
    args = parser.parse_args(argv)

    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        parser.error("DATABASE_URL is not set (the local stack applies migrations itself at start)")
    if args.command == "migrate":
        applied = migrate(database_url)
        print("applied: " + ", ".join(applied) if applied else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
