"""`make bench`: print the figures as a table and write bench/results.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import write_side
from bench.database import bench_database

TARGETS = {"raw_sql": 0.85, "eventsourcing": {"1": 1.3, "4": 2.5}}


def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "2"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    with bench_database() as url:
        results = write_side.run(url, seconds, rounds)

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
