"""`make bench`: print the figures as a table and write bench/results.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import http_api, http_load, outbox_relay, personal_data, projection, write_side
from devstack.kafka import broker_for_run
from devstack.postgres import database_for_run

TARGETS = {"raw_sql": 0.85, "eventsourcing": {"1": 1.3, "4": 2.5}, "relay_vs_raw_producer": 0.85,
           "commit_to_kafka_p50_ms": 25, "projection_per_second": 5000, "projection_vs_raw": 0.6,
           "commit_to_read_model_p50_ms": 150, "snapshot_speedup": 20, "snapshot_vs_one_event": 2,
           "token_checks_vs_none": 0.9, "encrypted_creations_vs_clear": 0.8, "encrypted_load_vs_clear": 1.2,
           "encrypted_reads_vs_clear": 0.9}


def main() -> int:
    os.environ.setdefault("LOG_LEVEL", "warning")  # a line per batch would bury the table
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # made per invocation, not printed
    seconds = float(os.environ.get("BENCH_SECONDS", "2"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    with database_for_run("customer_bench", durable=True) as url, broker_for_run() as bootstrap:
        results = write_side.run(url, seconds, rounds)
        # Latency first: the throughput runs leave the outbox and the broker
        # with tens of thousands of rows and messages behind.
        results["commit_to_kafka"] = outbox_relay.latency(url, bootstrap)
        results["commit_to_kafka_sharded"] = outbox_relay.latency(url, bootstrap, shards=4)
        results["outbox_relay"] = outbox_relay.throughput(url, bootstrap)
        results["projection"] = projection.throughput(url)
        results["commit_to_read_model"] = projection.latency(url, bootstrap)
        results["http_api"] = http_api.throughput(url)
        results["personal_data"] = personal_data.run(url, seconds, rounds)
        results["http_load"] = http_load.run(url, bootstrap)

    print("\nCustomer creations per second (one event + outbox row each, handler path, no HTTP)")
    print(f"{'writers':>8} {'ours':>9} {'raw SQL':>9} {'ours/raw':>9} {'raw 1-stmt':>11} {'ours/1-stmt':>12}"
          f" {'eventsourcing':>14} {'ours/es':>8}")
    ok = True
    for writers, f in results["creations_per_second"].items():
        vs_raw = f["ours"] / f["raw_sql"]
        vs_one = f["ours"] / f["raw_sql_one_statement"]
        vs_es = f["ours"] / f["eventsourcing"]
        f["ratio_vs_raw_sql"] = vs_raw
        f["ratio_vs_raw_sql_one_statement"] = vs_one
        f["ratio_vs_eventsourcing"] = vs_es
        met = vs_raw >= TARGETS["raw_sql"] and vs_es >= TARGETS["eventsourcing"][writers]
        ok &= met
        print(f"{writers:>8} {f['ours']:>9.0f} {f['raw_sql']:>9.0f} {vs_raw:>9.2f} {f['raw_sql_one_statement']:>11.0f}"
              f" {vs_one:>12.2f} {f['eventsourcing']:>14.0f} {vs_es:>7.2f}x")
    print(f"targets: ours/raw >= {TARGETS['raw_sql']}; ours/eventsourcing >= {TARGETS['eventsourcing']['1']}x"
          f" (1 writer), >= {TARGETS['eventsourcing']['4']}x (4 writers): {'met' if ok else 'NOT met'}")
    print(f"\nLoad a 1,000-event customer: {results['load_1000_events_ms']:.1f} ms (median)")
    snap = results["snapshots"]
    snap["speedup"] = snap["load_10000_events_without_ms"] / snap["load_10000_events_with_ms"]
    snap["vs_one_event"] = snap["load_10000_events_with_ms"] / snap["load_1_event_ms"]
    snap_ok = (snap["speedup"] >= TARGETS["snapshot_speedup"]
               and snap["vs_one_event"] <= TARGETS["snapshot_vs_one_event"])
    print(f"Load a 10,000-event customer: {snap['load_10000_events_without_ms']:.1f} ms without snapshots,"
          f" {snap['load_10000_events_with_ms']:.2f} ms with one every {snap['every']} events"
          f" ({snap['speedup']:.0f}x faster); a 1-event customer {snap['load_1_event_ms']:.2f} ms"
          f" ({snap['vs_one_event']:.2f}x)  (targets >= {TARGETS['snapshot_speedup']}x and within"
          f" {TARGETS['snapshot_vs_one_event']}x: {'met' if snap_ok else 'NOT met'});"
          f" worst case, a snapshot and {snap['every'] - 1} events after it:"
          f" {snap['load_10099_events_with_ms']:.2f} ms")
    ok = ok and snap_ok

    relay = results["outbox_relay"]
    relay["ratio_vs_raw_producer"] = relay["relay_per_second"] / relay["raw_producer_per_second"]
    relay_ok = relay["ratio_vs_raw_producer"] >= TARGETS["relay_vs_raw_producer"]
    print(f"\nOutbox relay to Kafka ({relay['events']} events, batches of 500, same broker, same messages;"
          " each relay and each raw producer a process of its own)")
    for shards, f in relay["shards"].items():
        f["ratio_vs_raw_producer"] = f["relay_per_second"] / f["raw_producer_per_second"]
        print(f"  {shards} shard{'s' if shards != '1' else ' '}: relays {f['relay_per_second']:>6.0f} events/s,"
              f" {shards} raw producer{'s' if shards != '1' else ' '} {f['raw_producer_per_second']:>6.0f} events/s:"
              f" ratio {f['ratio_vs_raw_producer']:.2f}")
    print(f"  (target at 1 shard >= {TARGETS['relay_vs_raw_producer']}: {'met' if relay_ok else 'NOT met'})")
    latency_ok = True
    for key in ("commit_to_kafka", "commit_to_kafka_sharded"):
        latency = results[key]
        target = TARGETS["commit_to_kafka_p50_ms"]
        met = latency["p50_ms"] < target
        latency_ok &= met
        print(f"  commit to consumer, {latency['shards']} shard{'s' if latency['shards'] > 1 else ''}"
              f" ({latency['events']} commands at 100/s): p50 {latency['p50_ms']:.1f} ms,"
              f" p99 {latency['p99_ms']:.1f} ms; commit to broker ack p50 {latency['commit_to_acked_p50_ms']:.1f} ms"
              f" (target p50 < {target} ms: {'met' if met else 'NOT met'})")
    ok = ok and relay_ok and latency_ok

    proj = results["projection"]
    proj["ratio_vs_raw_upserts"] = proj["function_per_second"] / proj["raw_upserts_per_second"]
    proj["signed_ratio_vs_raw_upserts"] = proj["signed_per_second"] / proj["raw_upserts_per_second"]
    proj_ok = (proj["function_per_second"] >= TARGETS["projection_per_second"]
               and proj["ratio_vs_raw_upserts"] >= TARGETS["projection_vs_raw"])
    print(f"\nProjection ({proj['events']} events, MSK-shaped batches of {proj['batch_size']})")
    print(f"  function {proj['function_per_second']:.0f} events/s, raw batched upserts of the same rows"
          f" {proj['raw_upserts_per_second']:.0f} events/s: ratio {proj['ratio_vs_raw_upserts']:.2f}"
          f" (targets >= {TARGETS['projection_per_second']} events/s and >= {TARGETS['projection_vs_raw']}:"
          f" {'met' if proj_ok else 'NOT met'})")
    print(f"  with signed messages checked (as deployed): {proj['signed_per_second']:.0f} events/s,"
          f" ratio {proj['signed_ratio_vs_raw_upserts']:.2f}")
    e2e = results["commit_to_read_model"]
    e2e_ok = e2e["p50_ms"] < TARGETS["commit_to_read_model_p50_ms"]
    print(f"  commit to read-model row ({e2e['commands']} commands at 50/s, relay + event source + function):"
          f" p50 {e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms"
          f" (target p50 < {TARGETS['commit_to_read_model_p50_ms']} ms: {'met' if e2e_ok else 'NOT met'})")
    ok = ok and proj_ok and e2e_ok

    http = results["http_api"]
    http_ok = all(http[kind]["ratio"] >= TARGETS["token_checks_vs_none"] for kind in ("read", "create"))
    print("\nHTTP API in process (chalice.test.Client), with bearer token checks and without, same run")
    for kind, label in (("read", "GET /customer/{id}"), ("create", "POST /customer")):
        f = http[kind]
        print(f"  {label:<20} {f['with_token_checks']:>7.0f} req/s with checks, {f['without']:>7.0f} without:"
              f" ratio {f['ratio']:.2f}")
    print(f"  (target >= {TARGETS['token_checks_vs_none']}: {'met' if http_ok else 'NOT met'})")
    ok = ok and http_ok

    pd = results["personal_data"]
    creations, loads = pd["creations_per_second"], pd["load_1000_events_ms"]
    pd["creations_ratio"] = creations["encrypted"] / creations["clear"]
    pd["load_ratio"] = loads["encrypted"] / loads["clear"]
    pd_ok = (pd["creations_ratio"] >= TARGETS["encrypted_creations_vs_clear"]
             and pd["load_ratio"] <= TARGETS["encrypted_load_vs_clear"]
             and pd["reads_ratio"] >= TARGETS["encrypted_reads_vs_clear"])
    print("\nPersonal data encrypted (KMS envelope, AES-256-GCM) against stored in clear, same run")
    print(f"  creations (1 writer): {creations['encrypted']:.0f}/s encrypted, {creations['clear']:.0f}/s in clear:"
          f" ratio {pd['creations_ratio']:.2f}")
    print(f"  load a 1,000-event customer: {loads['encrypted']:.1f} ms encrypted, {loads['clear']:.1f} ms in clear:"
          f" {pd['load_ratio']:.2f}x")
    reads = pd["reads_per_second"]
    pd["reads_ratio"] = reads["encrypted"] / reads["clear"]
    print(f"  GET /customer/{{id}} from the read model: {reads['encrypted']:.0f}/s sealed rows,"
          f" {reads['clear']:.0f}/s rows in clear: ratio {pd['reads_ratio']:.2f}")
    print(f"  KMS calls per 1,000 commands on a warm container: {pd['kms_calls_per_1000_commands']}")
    print(f"  (targets creations >= {TARGETS['encrypted_creations_vs_clear']}, load <="
          f" {TARGETS['encrypted_load_vs_clear']}x, reads >= {TARGETS['encrypted_reads_vs_clear']}:"
          f" {'met' if pd_ok else 'NOT met'})")
    ok = ok and pd_ok

    ok = http_load.report(results["http_load"]) and ok

    results["targets_met"] = ok
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["seconds_per_case"] = seconds
    results["rounds"] = rounds
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out = Path(__file__).parent / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
