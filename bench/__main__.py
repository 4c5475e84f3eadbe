"""`make bench`: every benchmark, through the service as deployed (personal
data sealed, messages signed, tokens checked, the relay through its
handler), ratios against baselines run in the same process; the figures
printed as tables and written to bench/results.json (or BENCH_RESULTS).

BENCH_QUICK=1 runs each case for a moment on small data: it shows that
every benchmark runs, not how fast anything is.
"""

from __future__ import annotations

import sys
from typing import Any

from bench import (
    backfill,
    catch_up,
    cold_start,
    deployed,
    http_api,
    http_load,
    outbox_relay,
    personal_data,
    projection,
    write_side,
)
from bench.figures import met, quick_mode, seconds_and_rounds, write
from devstack.kafka import broker_for_run
from devstack.postgres import database_for_run

TARGETS: dict[str, Any] = {
    # creations
    "raw_sql": 0.85, "creations_vs_same_rows": 0.9, "eventsourcing": {"1": 1.3, "4": 2.5},
    "snapshot_speedup": 20, "snapshot_vs_one_event": 2,
    # relay
    "relay_vs_raw_producer": 0.95, "relay_2_shards_vs_1": 1.7, "commit_to_kafka_p50_ms": 25,
    "commit_to_kafka_p99_ms": 25, "catch_up_stale_vs_fresh": 0.9, "backfill_vs_raw_producer": 0.8,
    # projection
    "projection_per_second": 5000, "projection_vs_raw": 0.8, "commit_to_read_model_p50_ms": 150,
    # HTTP, personal data
    "token_checks_vs_none": 0.9, "sealed_creations_vs_clear": 0.95, "sealed_load_vs_clear": 1.2,
    "sealed_reads_vs_clear": 0.9, "cold_start_vs_floor": cold_start.TARGET,
}


def measure(quick: bool) -> dict[str, Any]:
    seconds, rounds = seconds_and_rounds(quick)
    # First, in this process's own environment: the other benchmarks leave a
    # deployed function's settings in it.
    cold = cold_start.run(runs=3 if quick else 9)
    with (database_for_run("customer_bench", durable=True) as url, broker_for_run() as bootstrap,
          deployed.deployment(url, bootstrap) as deployment):
        results = write_side.run(url, deployment.env, deployment.clear(), seconds, rounds)
        # Latency first: the throughput runs leave the outbox and the broker
        # with tens of thousands of rows and messages behind.
        commands = 30 if quick else 400
        results["commit_to_kafka"] = outbox_relay.latency(deployment, url, bootstrap, events=commands)
        results["commit_to_kafka_sharded"] = outbox_relay.latency(deployment, url, bootstrap, events=commands,
                                                                  shards=2 if quick else 4)
        results["commit_to_kafka_during_backfill"] = backfill.live_latency_during(deployment, url, bootstrap,
                                                                                  events=commands)
        if quick:
            results["backfill"] = backfill.rate(deployment, url, bootstrap, streams=20, per_stream=10, rounds=1)
        else:
            results["backfill"] = backfill.rate(deployment, url, bootstrap)
        if quick:
            results["catch_up"] = catch_up.rate(deployment, url, bootstrap, streams=20, per_stream=10)
        else:
            results["catch_up"] = catch_up.rate(deployment, url, bootstrap)
        if quick:
            results["outbox_relay"] = outbox_relay.throughput(deployment, url, bootstrap, streams=20, per_stream=10,
                                                              rounds=1, shard_counts=(1, 2))
            results["projection"] = projection.throughput(deployment, url, customers=100, per_customer=3, rounds=1)
        else:
            results["outbox_relay"] = outbox_relay.throughput(deployment, url, bootstrap)
            results["projection"] = projection.throughput(deployment, url)
        results["commit_to_read_model"] = projection.latency(deployment, url, bootstrap,
                                                             commands=20 if quick else 300)
        results["http_api"] = http_api.throughput(deployment, requests=20 if quick else 200,
                                                  rounds=2 if quick else 20)
        results["personal_data"] = personal_data.run(deployment, rounds, quick=quick)
        if quick:
            results["http_load"] = http_load.run(url, bootstrap, seconds=0.5, clients=(8,))
        else:
            results["http_load"] = http_load.run(url, bootstrap)
    results["cold_start"] = cold
    results["seconds_per_case"] = seconds
    results["rounds"] = rounds
    return results


def report(results: dict[str, Any]) -> bool:
    """Prints every figure beside its target; True when all are met."""
    ok = True
    print("\nCustomer creations per second as deployed (the facade POST /customer calls, personal data sealed;"
          " no HTTP)")
    print(f"{'writers':>8} {'ours':>7} {'raw SQL':>8} {'ours/raw':>9} {'raw 1-stmt':>11} {'ours/1-stmt':>12}"
          f" {'same rows':>10} {'ours/same':>10} {'eventsourcing':>14} {'ours/es':>8} {'in clear':>9}")
    for writers, f in results["creations_per_second"].items():
        f["ratio_vs_raw_sql"] = f["ours"] / f["raw_sql"]
        f["ratio_vs_raw_sql_one_statement"] = f["ours"] / f["raw_sql_one_statement"]
        f["ratio_vs_raw_same_rows"] = f["ours"] / f["raw_same_rows"]
        f["ratio_vs_eventsourcing"] = f["ours"] / f["eventsourcing"]
        good = (f["ratio_vs_raw_sql"] >= TARGETS["raw_sql"]
               and f["ratio_vs_raw_same_rows"] >= TARGETS["creations_vs_same_rows"]
               and f["ratio_vs_eventsourcing"] >= TARGETS["eventsourcing"][writers])
        ok &= good
        print(f"{writers:>8} {f['ours']:>7.0f} {f['raw_sql']:>8.0f} {f['ratio_vs_raw_sql']:>9.2f}"
              f" {f['raw_sql_one_statement']:>11.0f} {f['ratio_vs_raw_sql_one_statement']:>12.2f}"
              f" {f['raw_same_rows']:>10.0f} {f['ratio_vs_raw_same_rows']:>10.2f}"
              f" {f['eventsourcing']:>14.0f} {f['ratio_vs_eventsourcing']:>7.2f}x {f['ours_in_clear']:>9.0f}")
    print("(raw SQL: an event and its outbox row by hand; 1-stmt: the two in one statement; same rows: in one"
          " statement, every row a sealed creation writes: event, outbox row, email reservation, wrapped key)")
    same = TARGETS["creations_vs_same_rows"]
    for writers, f in results["creations_per_second"].items():
        print(f"targets at {writers} writer{'s' if writers != '1' else ''}: ours/raw >= {TARGETS['raw_sql']}"
              f" ({met(f['ratio_vs_raw_sql'] >= TARGETS['raw_sql'])}), ours/same rows >="
              f" {same} ({met(f['ratio_vs_raw_same_rows'] >= same)}),"
              f" ours/eventsourcing >= {TARGETS['eventsourcing'][writers]}x"
              f" ({met(f['ratio_vs_eventsourcing'] >= TARGETS['eventsourcing'][writers])})")

    loads = results["load_1000_events_ms"]
    print(f"\nLoad a 1,000-event customer (sealed): {loads['sealed']:.1f} ms (median)")
    snap = results["snapshots"]
    snap["speedup"] = snap["load_without_ms"] / snap["load_with_ms"]
    snap["vs_one_event"] = snap["load_with_ms"] / snap["load_1_event_ms"]
    snap_ok = (snap["speedup"] >= TARGETS["snapshot_speedup"]
               and snap["vs_one_event"] <= TARGETS["snapshot_vs_one_event"])
    print(f"Load a {snap['events']:,}-event customer: {snap['load_without_ms']:.1f} ms without snapshots,"
          f" {snap['load_with_ms']:.2f} ms with one every {snap['every']} events ({snap['speedup']:.0f}x faster);"
          f" a 1-event customer {snap['load_1_event_ms']:.2f} ms ({snap['vs_one_event']:.2f}x)"
          f"  (targets >= {TARGETS['snapshot_speedup']}x and within {TARGETS['snapshot_vs_one_event']}x:"
          f" {met(snap_ok)}); worst case, a snapshot and {snap['every'] - 1} events after it:"
          f" {snap['load_unlucky_with_ms']:.2f} ms")
    ok &= snap_ok

    relay = results["outbox_relay"]
    relay["ratio_vs_raw_producer"] = relay["relay_per_second"] / relay["raw_producer_per_second"]
    relay_ok = relay["ratio_vs_raw_producer"] >= TARGETS["relay_vs_raw_producer"]
    print(f"\nOutbox relay to Kafka as deployed (relay_outbox as its schedule invokes it; {relay['events']} sealed"
          " events, signed messages, batches of 500; each relay and each raw producer a process of its own)")
    for shards, f in relay["shards"].items():
        f["ratio_vs_raw_producer"] = f["relay_per_second"] / f["raw_producer_per_second"]
        print(f"  {shards} shard{'s' if shards != '1' else ' '}: relays {f['relay_per_second']:>6.0f} events/s,"
              f" {shards} raw producer{'s' if shards != '1' else ' '} {f['raw_producer_per_second']:>6.0f} events/s:"
              f" ratio {f['ratio_vs_raw_producer']:.2f}")
    print(f"  (target at 1 shard >= {TARGETS['relay_vs_raw_producer']}: {met(relay_ok)})")
    ok &= relay_ok
    if "2" in relay["shards"]:
        relay["two_shards_vs_one"] = relay["shards"]["2"]["relay_per_second"] / relay["shards"]["1"]["relay_per_second"]
        two_ok = relay["two_shards_vs_one"] >= TARGETS["relay_2_shards_vs_1"]
        print(f"  2 shards / 1 shard: {relay['two_shards_vs_one']:.2f}x (target >= {TARGETS['relay_2_shards_vs_1']}x:"
              f" {met(two_ok)})")
        ok &= two_ok
    for key in ("commit_to_kafka", "commit_to_kafka_sharded"):
        latency = results[key]
        target = TARGETS["commit_to_kafka_p50_ms"]
        good = latency["p50_ms"] < target
        verdict = f"target p50 < {target} ms: {met(good)}"
        if latency["shards"] == 1:
            p99_met = latency["p99_ms"] < TARGETS["commit_to_kafka_p99_ms"]
            verdict += f"; p99 < {TARGETS['commit_to_kafka_p99_ms']} ms: {met(p99_met)}"
            good &= p99_met
        ok &= good
        print(f"  commit to consumer, {latency['shards']} shard{'s' if latency['shards'] > 1 else ''}"
              f" ({latency['events']} commands at 100/s): p50 {latency['p50_ms']:.1f} ms,"
              f" p99 {latency['p99_ms']:.1f} ms; commit to broker ack p50 {latency['commit_to_acked_p50_ms']:.1f} ms"
              f" ({verdict})")

    catch = results["catch_up"]
    catch["ratio"] = catch["stale_statistics_per_second"] / catch["fresh_statistics_per_second"]
    catch_ok = catch["ratio"] >= TARGETS["catch_up_stale_vs_fresh"]
    print(f"  catch-up, 1 shard, a backlog of {catch['events']:,} events: {catch['stale_statistics_per_second']:.0f}"
          f" events/s on an outbox analyzed while nearly empty, {catch['fresh_statistics_per_second']:.0f} events/s"
          f" freshly analyzed: ratio {catch['ratio']:.2f} (target >= {TARGETS['catch_up_stale_vs_fresh']}:"
          f" {met(catch_ok)})")
    ok &= catch_ok

    ok &= _report_backfill(results)

    proj = results["projection"]
    raw = proj["raw_per_second"]
    for name in ("deployed", "unsigned", "unsigned_in_clear"):
        proj[f"{name}_ratio_vs_raw_upserts"] = proj[f"{name}_per_second"] / raw
    proj_ok = (proj["deployed_per_second"] >= TARGETS["projection_per_second"]
               and proj["deployed_ratio_vs_raw_upserts"] >= TARGETS["projection_vs_raw"])
    print(f"\nProjection ({proj['events']} events, MSK-shaped batches of {proj['batch_size']})")
    print(f"  as deployed (signatures checked, rows sealed) {proj['deployed_per_second']:.0f} events/s, raw batched"
          f" upserts of the same rows {raw:.0f} events/s: ratio {proj['deployed_ratio_vs_raw_upserts']:.2f}"
          f" (targets >= {TARGETS['projection_per_second']} events/s and >= {TARGETS['projection_vs_raw']}:"
          f" {met(proj_ok)})")
    print(f"  unsigned: {proj['unsigned_per_second']:.0f} events/s, ratio {proj['unsigned_ratio_vs_raw_upserts']:.2f};"
          f" unsigned in clear: {proj['unsigned_in_clear_per_second']:.0f} events/s,"
          f" ratio {proj['unsigned_in_clear_ratio_vs_raw_upserts']:.2f}")
    e2e = results["commit_to_read_model"]
    e2e_ok = e2e["p50_ms"] < TARGETS["commit_to_read_model_p50_ms"]
    print(f"  commit to read-model row ({e2e['commands']} commands at 50/s, relay + event source + function):"
          f" p50 {e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms"
          f" (target p50 < {TARGETS['commit_to_read_model_p50_ms']} ms: {met(e2e_ok)})")
    ok &= proj_ok and e2e_ok

    http = results["http_api"]
    http_ok = all(http[kind]["ratio"] >= TARGETS["token_checks_vs_none"] for kind in ("read", "create"))
    print("\nHTTP API in process (chalice.test.Client) as deployed, with bearer token checks and without, same run")
    for kind, label in (("read", "GET /customer/{id}"), ("create", "POST /customer")):
        f = http[kind]
        print(f"  {label:<20} {f['with_token_checks']:>7.0f} req/s with checks, {f['without']:>7.0f} without:"
              f" ratio {f['ratio']:.2f}")
    print(f"  (target >= {TARGETS['token_checks_vs_none']}: {met(http_ok)})")
    ok &= http_ok

    one = results["creations_per_second"]["1"]
    pd = results["personal_data"]
    pd["creations_ratio"] = one["ours"] / one["ours_in_clear"]
    pd["load_ratio"] = loads["sealed"] / loads["clear"]
    reads = pd["reads_per_second"]
    pd["reads_ratio"] = reads["sealed"] / reads["clear"]
    pd_ok = (pd["creations_ratio"] >= TARGETS["sealed_creations_vs_clear"]
             and pd["load_ratio"] <= TARGETS["sealed_load_vs_clear"]
             and pd["reads_ratio"] >= TARGETS["sealed_reads_vs_clear"])
    print("\nPersonal data sealed (KMS envelope, AES-256-GCM) against stored in clear, same run")
    print(f"  creations (1 writer): {one['ours']:.0f}/s sealed, {one['ours_in_clear']:.0f}/s in clear:"
          f" ratio {pd['creations_ratio']:.2f}")
    print(f"  load a 1,000-event customer: {loads['sealed']:.1f} ms sealed, {loads['clear']:.1f} ms in clear:"
          f" {pd['load_ratio']:.2f}x")
    print(f"  GET /customer/{{id}} from the read model: {reads['sealed']:.0f}/s sealed rows,"
          f" {reads['clear']:.0f}/s rows in clear: ratio {pd['reads_ratio']:.2f}")
    print(f"  KMS calls per 1,000 commands on a warm container: {pd['kms_calls_per_1000_commands']:.0f}")
    print(f"  (targets creations >= {TARGETS['sealed_creations_vs_clear']}, load <= {TARGETS['sealed_load_vs_clear']}x,"
          f" reads >= {TARGETS['sealed_reads_vs_clear']}: {met(pd_ok)})")
    ok &= pd_ok

    ok = http_load.report(results["http_load"]) and ok

    cold = results["cold_start"]
    cold["ratio"] = cold["database_url"]["total_ms"] / cold["floor"]["total_ms"]
    cold_ok = cold["ratio"] <= TARGETS["cold_start_vs_floor"]
    print("\nCold start of the API function (import app + the first authenticated read, a fresh process each,"
          " the handler invoked as Lambda does) against a floor app (Chalice, psycopg, one query)")
    for name, figures in cold.items():
        if isinstance(figures, dict):
            print(f"  {name:>16}: import {figures['import_ms']:4.0f} ms + first request"
                  f" {figures['first_request_ms']:4.0f} ms = {figures['total_ms']:4.0f} ms")
    print(f"  ours (DATABASE_URL) / floor: {cold['ratio']:.2f}x (target <= {TARGETS['cold_start_vs_floor']}x:"
          f" {met(cold_ok)})")
    ok &= cold_ok
    return ok


def _report_backfill(results: dict[str, Any]) -> bool:
    rate = results["backfill"]
    rate["ratio_vs_raw_producer"] = rate["backfill_per_second"] / rate["raw_producer_per_second"]
    rate_ok = rate["ratio_vs_raw_producer"] >= TARGETS["backfill_vs_raw_producer"]
    print(f"\nBackfill as deployed (backfill_events as its schedule invokes it; {rate['events']} sealed events,"
          " signed messages with the replay header; it and the raw producer each a process of its own)")
    print(f"  backfill {rate['backfill_per_second']:>6.0f} events/s, a raw producer of the same messages"
          f" {rate['raw_producer_per_second']:>6.0f} events/s: ratio {rate['ratio_vs_raw_producer']:.2f}"
          f" (target >= {TARGETS['backfill_vs_raw_producer']}: {met(rate_ok)})")
    beside = results["commit_to_kafka_during_backfill"]
    target = TARGETS["commit_to_kafka_p50_ms"]
    latency_ok = beside["p50_ms"] < target and beside["backfill_running_at_end"]
    print(f"  live commit to consumer while backfills of the whole store ({beside['stored_events']:,} events) run"
          f" at full speed beside it ({beside['backfill_per_second_beside']:.0f} events/s,"
          f" {'throughout' if beside['backfill_running_at_end'] else 'NOT throughout'}): p50 {beside['p50_ms']:.1f} ms,"
          f" p99 {beside['p99_ms']:.1f} ms (target p50 < {target} ms: {met(latency_ok)})")
    return rate_ok and latency_ok


def main() -> int:
    quick = quick_mode("every benchmark for a moment on small data")
    results = measure(quick)
    results["targets_met"] = report(results)
    write(results, "results.json", quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
