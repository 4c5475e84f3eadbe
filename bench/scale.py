"""`python -m bench.scale`: does the service slow down as its store grows?

Customer creations per second as deployed (the facade POST /customer calls,
personal data sealed, at 1 and 4 writers) and a customer's load time (as a
command loads it, through a unit of work) on a store of 1,000,000 events of
other customers (BENCH_SCALE_EVENTS) and on an empty one: two databases of
the same server, each deployed as the template deploys it, measured in
turns in the same run. Targets: creations >= 0.9 of the
empty store's rate, a load within 1.2x of its time.

The stored customers are what creations and email changes leave: five
events each, sealed under the customer's own key (made and wrapped by the
deployed key ring, so every one of them opens), the key's row and the email
reservation's; written with COPY, since through the API the fill would take
longer than the measurements by far. Their outbox rows are gone, as the
relay prunes published ones. Statistics are as autovacuum leaves them on a
store that grew over months: analyzed (ANALYZE once the store is filled).

Not in `make bench`: the fill takes minutes. BENCH_QUICK=1 stores 20,000
events and measures for a moment: it shows that it runs, not the figures.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
import uuid
from typing import Any

import orjson
import psycopg

from bench import deployed, write_side
from bench.deployed import Deployment, become_container
from bench.figures import met, quick_mode, seconds_and_rounds, write
from chalicelib.domain.customer import EMAIL_SCOPE, CustomerCreated, CustomerEmailChanged, registry
from chalicelib.eventstore.events import Metadata, Reservation
from chalicelib.eventstore.postgres import one
from devstack.kafka import broker_for_run
from devstack.postgres import database_beside, database_for_run
from ops.progress import Progress

TARGETS = {"creations_vs_empty": 0.9, "load_vs_empty": 1.2}
EVENTS_PER_CUSTOMER = 5
LOADED_EVENTS = 10  # the customer whose load is timed: created, then nine email changes
_CHUNK_CUSTOMERS = 2000


def measure(deployment: Deployment, url: str, seconds: float) -> dict[str, Any]:
    """One round: creations per second at 1 and 4 writers, and the median
    load time of a customer of LOADED_EVENTS events."""
    creations = {str(writers): write_side.rate(functools.partial(write_side.ours, deployment.env), url, writers,
                                               seconds) for writers in (1, 4)}
    return {"creations_per_second": creations,
            "load_ms": write_side.load_time(deployment.env, LOADED_EVENTS, repeats=200) * 1000}


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"creations_per_second": {writers: statistics.median(r["creations_per_second"][writers] for r in rounds)
                                     for writers in rounds[0]["creations_per_second"]},
            "load_ms": statistics.median(r["load_ms"] for r in rounds)}


def fill(env: dict[str, str], url: str, events: int, progress: Progress) -> int:
    """Other customers' histories until `events` are stored; how many were added."""
    become_container(env)
    from chalicelib import application

    personal = application.current().parts.required_personal_data()
    fields = personal.declared.events
    customers = events // EVENTS_PER_CUSTOMER
    added = 0
    with psycopg.connect(url) as conn:
        for first in range(0, customers, _CHUNK_CUSTOMERS):
            chunk = range(first, min(first + _CHUNK_CUSTOMERS, customers))
            rows, keys, reservations = [], [], []
            for n in chunk:
                stream_id = uuid.uuid4()
                key, wrapped = personal.keys.new_key(stream_id)
                personal.keys.forget(stream_id)  # not this container's customers: the cache stays as it was
                emails = [f"stored{n}.{v}@example.com" for v in range(EVENTS_PER_CUSTOMER)]
                history = [CustomerCreated(name=f"Stored Customer {n}", email=emails[0]),
                           *(CustomerEmailChanged(email=emails[v], previous_email=emails[v - 1])
                             for v in range(1, EVENTS_PER_CUSTOMER))]
                for version, event in enumerate(history, start=1):
                    new = registry.serialize(event, Metadata.new("bench-scale", "bench-scale"))
                    data = personal.seal(key, "event", stream_id, version, new.data, fields[new.event_type])
                    rows.append((stream_id, "Customer", version, new.event_type, new.schema_version,
                                 orjson.dumps(data).decode(), orjson.dumps(new.metadata).decode()))
                keys.append((stream_id, wrapped.kek_id, wrapped.wrapped))
                reservations.append((EMAIL_SCOPE, personal.hashed(Reservation(EMAIL_SCOPE, emails[-1])).key, stream_id))
            with conn.transaction():
                with conn.cursor().copy("COPY events (stream_id, stream_type, version, event_type, schema_version,"
                                        " data, metadata) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                with conn.cursor().copy("COPY stream_keys (stream_id, kek_id, wrapped_key) FROM STDIN") as copy:
                    for key_row in keys:
                        copy.write_row(key_row)
                with conn.cursor().copy("COPY reservations (scope, key, owner) FROM STDIN") as copy:
                    for reservation in reservations:
                        copy.write_row(reservation)
            added += len(rows)
            progress(added, customers * EVENTS_PER_CUSTOMER)
    progress.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE events, stream_keys, reservations")
    return added


def run(quick: bool) -> dict[str, Any]:
    seconds, rounds = seconds_and_rounds(quick)
    events = 20_000 if quick else int(os.environ.get("BENCH_SCALE_EVENTS", "1000000"))
    with (database_for_run("customer_scale", durable=True) as url, broker_for_run() as bootstrap,
          database_beside(url, f"customer_scale_empty_{uuid.uuid4().hex[:8]}") as empty_url,
          deployed.deployment(url, bootstrap) as grown, deployed.deployment(empty_url, bootstrap) as empty):
        began = time.monotonic()
        added = fill(grown.env, url, events, Progress("filling the store"))
        filled_seconds = time.monotonic() - began
        with psycopg.connect(url) as conn:
            stored = one(conn.execute("SELECT count(*) FROM events"))
        # Rounds take turns, so that a slow spell of the disk does not land on one store only.
        measured: dict[str, list[dict[str, Any]]] = {"empty": [], "full": []}
        for _ in range(rounds):
            measured["empty"].append(measure(empty, empty_url, seconds))
            measured["full"].append(measure(grown, url, seconds))
    return {"stored_events": stored, "added_events": added, "fill_seconds": filled_seconds,
            "empty": medians(measured["empty"]), "full": medians(measured["full"]),
            "seconds_per_case": seconds, "rounds": rounds, "quick": quick}


def report(results: dict[str, Any]) -> bool:
    """Prints each figure beside its target; True when all are met."""
    empty, full = results["empty"], results["full"]
    ok = True
    print(f"\nA store of {results['stored_events']:,} events against an empty one, same server, same run, in turns"
          f" (filled in {results['fill_seconds']:.0f} s)")
    results["ratios"] = ratios = {}
    for writers, rate in empty["creations_per_second"].items():
        ratio = full["creations_per_second"][writers] / rate
        good = ratio >= TARGETS["creations_vs_empty"]
        ok &= good
        ratios[f"creations_{writers}"] = ratio
        print(f"  creations, {writers} writer{'s' if writers != '1' else ' '}: {rate:6.0f}/s empty,"
              f" {full['creations_per_second'][writers]:6.0f}/s grown: ratio {ratio:.2f}"
              f" (target >= {TARGETS['creations_vs_empty']}: {met(good)})")
    load = full["load_ms"] / empty["load_ms"]
    good = load <= TARGETS["load_vs_empty"]
    ok &= good
    ratios["load"] = load
    print(f"  load a {LOADED_EVENTS}-event customer: {empty['load_ms']:.2f} ms empty, {full['load_ms']:.2f} ms grown:"
          f" {load:.2f}x (target <= {TARGETS['load_vs_empty']}x: {met(good)})")
    return ok


def main() -> int:
    quick = quick_mode("a small store, each case for a moment")
    results = run(quick)
    results["targets_met"] = report(results)
    write(results, "scale.json", quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
