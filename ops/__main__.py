"""Operator commands, run against the configured database (DATABASE_SECRET_ARN
or DATABASE_URL) and KAFKA_BOOTSTRAP_SERVERS, or against the running local
stack when those are not set.

  python -m ops migrate            apply the migrations not applied yet
  python -m ops outbox             outbox backlog: unpublished events, oldest age
  python -m ops outbox --publish   publish the backlog to Kafka now, once
  python -m ops outbox --parked    rows that cannot be published; --retry ID|all, --skip ID
  python -m ops rebuild            rebuild the read model from the event store, reads staying online
  python -m ops encrypt-events     encrypt personal data stored in clear before encryption (resumable)
  python -m ops reapply-erasures   after a restore: erase again the customers the erasure log names
  python -m ops rewrap-keys        give key-encryption keys wrapped without the KMS encryption context the context
  python -m ops dlq                the projection's dead letters (PROJECTION_DLQ_URL)
  python -m ops dlq --replay       re-project the customers they name from the event store, delete them
  python -m ops backfill --topic T republish stored events to a consumer's topic (--status, --resume ID)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

from chalicelib.application import CustomerApplication
from chalicelib.eventstore.backfill import Backfill
from chalicelib.infra.settings import ConfigurationError, Settings
from ops.progress import Progress, duration

PROJECT = Path(__file__).resolve().parent.parent
LOCAL_STACK_ENV = Path(os.environ.get("DEVSTACK_DIR") or PROJECT / ".devstack") / "stack.env"


def _use_local_stack_when_unconfigured() -> None:
    if os.environ.get("DATABASE_URL") or os.environ.get("DATABASE_SECRET_ARN") or not LOCAL_STACK_ENV.exists():
        return
    for line in LOCAL_STACK_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        os.environ.setdefault(key, value)
    print(f"(no database configured: using the running local stack, {LOCAL_STACK_ENV.name})", file=sys.stderr)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else duration(seconds)


def cmd_migrate(application: CustomerApplication, args: argparse.Namespace) -> int:
    applied = application.migrate()
    print("applied: " + ", ".join(applied) if applied else "already up to date")
    return 0


def _print_backlog(backlog) -> None:
    print(f"unpublished events: {backlog.unpublished}   oldest waiting: {_age(backlog.oldest_age_seconds)}")
    if backlog.parked:
        print(f"parked: {backlog.parked} (cannot be published), holding back {backlog.held_back} later events of"
              " the same customers: python -m ops outbox --parked")


def cmd_outbox(application: CustomerApplication, args: argparse.Namespace) -> int:
    if args.parked:
        rows = application.parked_outbox_rows()
        for row in rows:
            print(f"outbox {row.outbox_id}  customer {row.stream_id} v{row.version}  {row.event_type}"
                  f" (schema {row.schema_version})  parked {row.parked_at:%Y-%m-%d %H:%M:%S}\n    {row.error}")
        print(f"{len(rows)} parked. --retry ID|all after a fix; --skip ID to give up on one"
              " (its customer's later events then go on; consumers never see it)")
        return 0
    if args.retry:
        ids = None if args.retry == ["all"] else [int(i) for i in args.retry]
        print(f"unparked {application.retry_parked_outbox_rows(ids)}: the relay tries them again")
        return 0
    if args.skip is not None:
        if not application.skip_parked_outbox_row(args.skip):
            print(f"outbox row {args.skip} is not parked", file=sys.stderr)
            return 1
        print(f"skipped outbox row {args.skip}: it will not be published; its customer's later events go on")
        return 0
    if args.publish:
        application.settings.require_kafka()
    before = application.outbox_backlog()
    _print_backlog(before)
    shards = application.outbox_backlog_by_shard()
    if len(shards) > 1:
        for shard, waiting in enumerate(shards):
            print(f"  shard {shard}: {waiting.unpublished} unpublished, oldest {_age(waiting.oldest_age_seconds)}"
                  + (f", {waiting.parked} parked" if waiting.parked else ""))
    if not args.publish:
        return 0
    result, after = application.publish_outbox_now()
    if result.locked_out:
        print("a relay is running (it holds the relay lock): woke it and waited for it;"
              f" {max(0, before.unpublished - after.unpublished)} of the events waiting went out")
    elif result.missing:
        print(f"published {result.published} events; relays running drain {result.missing} of the outbox's"
              f" buckets: woke them and waited; {after.unpublished} still unpublished")
    else:
        print(f"published {result.published} events in {result.batches} batches"
              + (f"; parked {result.parked}" if result.parked else ""))
    _print_backlog(after)
    if result.failures:
        print(f"failed: {result.last_error}", file=sys.stderr)
        return 1
    if (result.locked_out or result.missing) and after.ready:
        print("the running relay did not publish everything in time: see its logs (outbox_publish_failed)",
              file=sys.stderr)
        return 1
    return 0


def cmd_rebuild(application: CustomerApplication, args: argparse.Namespace) -> int:
    progress = Progress("rebuild")
    result = application.rebuild_read_model(progress=progress)
    progress.close()
    print(f"rebuilt customers_view: {result.rows} customers from {result.events} events"
          f" ({result.caught_up} caught up at the swap)")
    for customer_id, why in result.unreadable.items():
        print(f"could not read {customer_id}: {why} (its row is as it was: see python -m ops outbox --parked)",
              file=sys.stderr)
    return 0


def cmd_encrypt_events(application: CustomerApplication, args: argparse.Namespace) -> int:
    progress = Progress("encrypt-events", "customers")
    changed = application.encrypt_stored_events(progress=progress)
    progress.close()
    print(f"encrypted the personal data of {changed} customers; run it again until it says 0"
          " (a customer changed while it ran may need a second pass)")
    return 0


def cmd_reapply_erasures(application: CustomerApplication, args: argparse.Namespace) -> int:
    result = application.reapply_erasures()
    for customer_id in result.erased:
        print(f"erased again: {customer_id}")
    for customer_id in result.missing:
        print(f"not in this database: {customer_id} (created after the backup; nothing to erase)")
    for key in result.not_customers:
        print(f"not a customer id: {key} (left in the log)", file=sys.stderr)
    print(f"{len(result.erased)} erasures made again, {result.already} in place already,"
          f" {len(result.missing)} customers not in this database")
    return 0


def cmd_rewrap_keys(application: CustomerApplication, args: argparse.Namespace) -> int:
    done = application.rewrap_keys()
    print(f"rewrapped {len(done)} key-encryption keys with the encryption context"
          + (f" (ids {', '.join(map(str, done))})" if done else ": none needed it"))
    return 0


def _backfill_line(backfill: Backfill) -> str:
    what = [f"customer {backfill.stream_id}"] if backfill.stream_id else []
    what += [f"types {', '.join(backfill.event_types)}"] if backfill.event_types else []
    what += [f"after position {backfill.after_global_position}"] if backfill.after_global_position else []
    total = "?" if backfill.total is None else f"{backfill.total:,}"
    line = (f"{backfill.name}  {backfill.state:<7}  to {backfill.topic}  {backfill.sent:,}/{total} events"
            f"  at {backfill.at_transaction}.{backfill.at_position}, ending below transaction"
            f" {backfill.end_transaction}" + (f"  ({'; '.join(what)})" if what else "")
            + f"  asked {backfill.created_at:%Y-%m-%d %H:%M:%S} by {backfill.requested_by or '-'}")
    return line + (f"\n    {backfill.error}" if backfill.error else "")


def cmd_backfill(application: CustomerApplication, args: argparse.Namespace) -> int:
    if args.status:
        found = application.backfills()
        for listed in found:
            print(_backfill_line(listed))
        print(f"{len(found)} backfills" + ("" if found else ": python -m ops backfill --topic T asks for one"))
        return 0
    if args.resume is not None:
        resumed = application.resume_backfill(args.resume)
        if resumed is None:
            print(f"no backfill {args.resume}: python -m ops backfill --status lists them", file=sys.stderr)
            return 1
        backfill = resumed
    else:
        if not args.topic:
            print("name the topic to backfill to: --topic T (or --resume ID, --status)", file=sys.stderr)
            return 2
        from chalicelib.eventstore.feed import Selection

        try:
            backfill = application.start_backfill(
                args.topic, Selection(args.customer, tuple(args.type or ()), args.from_position),
                rate_limit=args.rate, requested_by=f"python -m ops backfill ({os.environ.get('USER') or '?'})",
                to_live_topic=args.to_live_topic)
        except ValueError as error:
            print(str(error), file=sys.stderr)
            return 2
        print(f"{backfill.name}: every event of the transactions below {backfill.end_transaction} to"
              f" {backfill.topic}; the live topic carries what comes after")
        if args.detach:
            print(f"asked for; the scheduled backfill_events function runs it (python -m ops backfill --status,"
                  f" or --resume {backfill.id} to run it here)")
            return 0
    progress = Progress(backfill.name)
    result = application.run_backfill(backfill.id, float("inf"), progress)
    while result.running_elsewhere:  # the scheduled function has it: follow it
        time.sleep(1)
        current = application.backfill(backfill.id)
        if current is None or current.finished:
            break
        progress(current.sent, current.total or current.sent)
    progress.close()
    done = application.backfill(backfill.id) or backfill
    print(_backfill_line(done))
    if done.state == "failed":
        print(f"it stopped at an event it cannot send; once that is mended: python -m ops backfill --resume"
              f" {done.id}", file=sys.stderr)
        return 1
    if done.state == "done":
        print(f"done: {done.sent:,} events sent, everything up to position {done.at_transaction}.{done.at_position}"
              f" (below transaction {done.end_transaction})")
    return 0


def cmd_dlq(application: CustomerApplication, args: argparse.Namespace) -> int:
    if args.replay:
        result = application.replay_dead_letters()
        print(f"replayed {result.deleted} of {result.letters} dead letters: {result.customers} customers"
              f" re-projected from the event store, {result.rows_written} read-model rows written")
        for letter, why in result.kept:
            print(f"kept {letter.message_id}: {why}", file=sys.stderr)
        return 1 if result.kept else 0
    letters = application.dead_letters()
    for letter in letters:
        where = ", ".join(map(str, letter.offsets())) or "-"
        key = letter.key() if letter.kind == "unreadable-record" else None
        print(f"{letter.time}  {letter.kind}  {where}" + (f"  key {key.decode(errors='replace')}" if key else "")
              + f"\n    {letter.error}")
    print(f"{len(letters)} dead letters. `make dlq-replay` re-projects the customers they name and deletes them")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the SQL migrations in chalicelib/schema not applied yet")
    outbox = commands.add_parser("outbox", help="show the outbox backlog; --publish publishes it once")
    outbox.add_argument("--publish", action="store_true", help="publish everything unpublished now, then exit")
    outbox.add_argument("--parked", action="store_true", help="list the rows parked because they cannot be published")
    outbox.add_argument("--retry", nargs="+", metavar="ID", help="unpark rows (ids, or all) so the relay tries again")
    outbox.add_argument("--skip", type=int, metavar="ID",
                        help="give up on a parked row: never published, its customer's later events go on")
    commands.add_parser("rebuild", help="rebuild the read model from the event store (build aside, then swap)")
    commands.add_parser("encrypt-events", help="encrypt the personal data of events stored in clear, customer by"
                        " customer; safe to stop and run again")
    commands.add_parser("reapply-erasures", help="after a restore from a backup: erase again every customer the"
                        " erasure log (ERASURE_LOG_BUCKET) names; safe to run at any time")
    commands.add_parser("rewrap-keys", help="re-encrypt, in KMS, the key-encryption keys made without an encryption"
                        " context with one; run with credentials the key policy lets re-encrypt")
    dlq = commands.add_parser("dlq", help="list the projection's dead letters; --replay re-projects and deletes them")
    dlq.add_argument("--replay", action="store_true",
                     help="re-project the customers the dead letters name from the event store, then delete them")
    backfill = commands.add_parser("backfill", help="republish stored events to a topic of a consumer's choice;"
                                   " --status lists the backfills, --resume ID goes on with one")
    backfill.add_argument("--topic", help="where to (the live topic only with --to-live-topic)")
    backfill.add_argument("--customer", type=uuid.UUID, metavar="ID", help="only this customer's events")
    backfill.add_argument("--type", action="append", metavar="TYPE", help="only events of this type (repeatable)")
    backfill.add_argument("--from-position", type=int, metavar="N",
                          help="only events after this global position (the messages' `position`)")
    backfill.add_argument("--rate", type=int, metavar="EVENTS_PER_SECOND", help="at most this many a second")
    backfill.add_argument("--to-live-topic", action="store_true",
                          help="allow the live topic: its consumers get every event again")
    backfill.add_argument("--detach", action="store_true",
                          help="only ask for it: the scheduled backfill_events function runs it")
    backfill.add_argument("--resume", type=int, metavar="ID", help="go on with this backfill from its checkpoint")
    backfill.add_argument("--status", action="store_true", help="list the backfills and their progress")
    args = parser.parse_args(argv)

    _use_local_stack_when_unconfigured()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("DATABASE_SECRET_ARN"):
        parser.error("neither DATABASE_SECRET_ARN nor DATABASE_URL is set, and no local stack is running")
    command = {"migrate": cmd_migrate, "outbox": cmd_outbox, "rebuild": cmd_rebuild, "dlq": cmd_dlq,
               "encrypt-events": cmd_encrypt_events, "rewrap-keys": cmd_rewrap_keys,
               "reapply-erasures": cmd_reapply_erasures, "backfill": cmd_backfill}[args.command]
    try:
        application = CustomerApplication(Settings.from_env())
        try:
            return command(application, args)
        finally:
            application.close()
    except ConfigurationError as error:
        print(f"python -m ops {args.command}: {error}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        print(f"python -m ops {args.command}: cannot reach PostgreSQL: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
