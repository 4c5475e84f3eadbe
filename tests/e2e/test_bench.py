"""`make bench` as a developer runs it, in its quick mode: every benchmark
runs through the deployed wiring to its end, prints each figure beside its
target and writes the figures (what they are is for `make bench` itself)."""

import json

from tests.support.stack import PROJECT, clean_environment, make_command


def test_make_bench_in_its_quick_mode_runs_every_benchmark_and_writes_the_figures(tmp_path):
    import subprocess

    results = tmp_path / "results.json"
    ran = subprocess.run(make_command("bench"), cwd=PROJECT, capture_output=True, text=True, timeout=600,
                         env={**clean_environment(), "BENCH_QUICK": "1", "BENCH_RESULTS": str(results)})
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    figures = json.loads(results.read_text())
    assert figures["quick"] is True and isinstance(figures["targets_met"], bool)
    for measured in ("creations_per_second", "snapshots", "outbox_relay", "commit_to_kafka", "commit_to_kafka_sharded",
                     "commit_to_kafka_during_backfill", "backfill", "projection", "commit_to_read_model", "http_api",
                     "personal_data", "http_load"):
        assert measured in figures, measured
    assert figures["projection"]["deployed_per_second"] > 0 and figures["outbox_relay"]["relay_per_second"] > 0
    assert figures["backfill"]["backfill_per_second"] > 0
    assert figures["commit_to_kafka_during_backfill"]["backfill_sent"] > 0
    verdicts = [line for line in ran.stdout.splitlines() if line.rstrip(")").endswith(("met", "NOT met"))]
    assert len(verdicts) >= 11, ran.stdout


def test_bench_scale_in_its_quick_mode_measures_an_empty_store_and_a_grown_one(tmp_path):
    import subprocess
    import sys

    results = tmp_path / "scale.json"
    ran = subprocess.run([sys.executable, "-m", "bench.scale"], cwd=PROJECT, capture_output=True, text=True,
                         timeout=300, env={**clean_environment(), "BENCH_QUICK": "1", "BENCH_RESULTS": str(results)})
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    figures = json.loads(results.read_text())
    assert figures["added_events"] == figures["stored_events"] == 20_000
    assert figures["quick"] is True and figures["machine"]["cpus"] > 0 and figures["measured_at"]
    for state in ("empty", "full"):
        assert all(rate > 0 for rate in figures[state]["creations_per_second"].values())
        assert figures[state]["load_ms"] > 0
    assert "filling the store: 20,000/20,000 events (100%)" in ran.stderr  # its progress, a line per step in a pipe
    verdicts = [line for line in ran.stdout.splitlines() if line.rstrip(")").endswith(("met", "NOT met"))]
    assert len(verdicts) == 3, ran.stdout
