"""The benchmark scripts run end to end and print the machine-readable figures they promise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_journeys_benchmark_prints_cases_and_summary() -> None:
    script = REPO_ROOT / "benchmarks" / "bench_journeys.py"
    result = subprocess.run(
        [sys.executable, str(script), "--events", "20000", "--baseline-events", "2000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    cases = {(line["case"], line["input"]) for line in lines if "case" in line}
    assert ("nextbest_validate", "events_shuffled.parquet") in cases
    assert ("pandas_journeys", "events_baseline.parquet") in cases
    summary = lines[-1]["summary"]
    assert summary["validate_events_per_s"] > 0
    assert summary["journeys_events_per_s"] > 0
    assert {"validate_speedup_vs_pandas", "journeys_speedup_vs_pandas", "meets_target"} <= summary.keys()
