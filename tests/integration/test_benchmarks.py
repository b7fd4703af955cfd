"""The benchmark scripts run end to end and print the machine-readable figures they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT


def run_benchmark(script: str, *args: str, cwd: Path | None = None) -> list[dict[str, Any]]:
    """The JSON lines a benchmark script prints (its measurements, then its summary)."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


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


def test_open_bandit_estimate_of_bts_covers_its_achieved_click_rate(shared_data: Path) -> None:
    """On the real Open Bandit logs, the off-policy estimates of BTS from the random log are intervals
    that contain the click rate BTS achieved in its own log."""
    script = REPO_ROOT / "benchmarks" / "open_bandit_ope.py"
    result = subprocess.run(
        [sys.executable, str(script), "--data-dir", str(shared_data), "--resamples", "300"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = {line["estimator"]: line for line in map(json.loads, result.stdout.splitlines())}
    achieved = lines["bts_on_policy"]["value"]
    assert achieved == pytest.approx(0.0042)
    for estimator in ("ips", "snips", "dr"):
        assert lines[estimator]["low"] <= achieved <= lines[estimator]["high"], estimator
    assert "estimated from the random log" in result.stderr


@pytest.mark.slow
def test_batch_scoring_benchmark_prints_engines_and_summary(tmp_path: Path) -> None:
    lines = run_benchmark(
        "batch_scoring.py", "--customers", "300", "--growth", "2", "--naive", "10", cwd=tmp_path
    )
    engines = [line.get("engine") for line in lines[:-1]]
    assert engines == ["local", "local", "naive_pyfunc_per_row"]
    assert [line["customers"] for line in lines[:2]] == [300, 600]
    summary = lines[-1]["summary"]
    assert summary["local_customers_per_s"] > 0
    assert summary["peak_rss_growth"] > 0
    assert {"customers_per_s", "customers_per_s_grown", "flat_memory"} == summary["meets_target"].keys()


@pytest.mark.slow
def test_journey_report_benchmark_prints_cases_and_summary(tmp_path: Path) -> None:
    lines = run_benchmark("journey_report.py", "--customers", "300", "--criteo-dir", str(tmp_path / "none"))
    cases = [line.get("case") for line in lines[:-1]]
    assert cases == ["simulated", "simulated_with_model", "pandas_top_paths", "nextbest_top_paths"]
    summary = lines[-1]["summary"]
    assert set(summary["seconds_per_million_events"]) == {"simulated", "simulated_with_model"}
    assert summary["top_paths_speedup_vs_pandas"] > 0


@pytest.mark.slow
def test_scoring_calls_benchmark_prints_cases_and_summary() -> None:
    lines = run_benchmark("scoring_calls.py", "--customers", "300", "--repeats", "1")
    cases = [(line["case"], line["requests"]) for line in lines[:-1]]
    assert cases == [(c, n) for n in (1, 256) for c in ("score_records", "network_only")]
    assert all(line["cpu_ms_per_call"] > 0 for line in lines[:-1])
    assert set(lines[-1]["summary"]) == {"outside_network_cpu_share_1", "outside_network_cpu_share_256"}


@pytest.mark.slow
def test_rejects_benchmark_prints_both_inputs_and_summary(tmp_path: Path) -> None:
    lines = run_benchmark("rejects_scoring.py", "--customers", "300", "--rounds", "1", cwd=tmp_path)
    assert [(line["input"], line["customers"]) for line in lines[:-1]] == [("clean", 300), ("dirty", 300)]
    summary = lines[-1]["summary"]
    assert summary["duplicate_rows"] == 45_000  # 1.5 repeats per clean row, every one rejected
    assert summary["duplicate_share"] == pytest.approx(0.6)
    assert summary["median_ratio"] > 0
    assert summary["median_cpu_ratio"] > 0
    assert isinstance(summary["meets_target"], bool)


@pytest.mark.slow
def test_sequence_vs_trees_benchmark_prints_runs_and_pooled_summary(shared_data: Path) -> None:
    scale = ["--sample-customers", "300", "--max-epochs", "1", "--seeds", "2"]
    lines = run_benchmark(
        "sequence_vs_trees.py", "--dataset", "cdnow", "--ablation", "--data-dir", str(shared_data), *scale
    )
    runs = [(line["variant"], line["seed"], line["head"]) for line in lines[:-1]]
    assert runs == [(variant, seed, "churn") for variant in ("original", "shuffled") for seed in (0, 1)]
    for line in lines[:-1]:
        assert line["roc_auc_diff"].keys() == {"hybrid", "sequence"}  # cdnow.yaml exports the hybrid
        for model, diff in line["roc_auc_diff"].items():
            assert diff["low"] <= diff["value"] <= diff["high"]
            expected = line["roc_auc"][model] - line["roc_auc"]["gbt"]
            assert diff["value"] == pytest.approx(expected, abs=2e-4)
    summary = lines[-1]["summary"]["cdnow"]
    assert summary["original"]["seeds"] == summary["shuffled"]["seeds"] == 2
    pooled = summary["original"]["log_loss_diff"]["hybrid"]
    assert pooled["low"] <= pooled["value"] <= pooled["high"]
    assert summary["auc_lost_to_shuffling"].keys() == {"hybrid", "sequence", "gbt"}
    assert set(summary["auc_lost_to_shuffling"]["sequence"]) == {"mean", "min", "max"}


@pytest.mark.slow
def test_policy_snips_benchmark_prints_policies_comparisons_and_summary(tmp_path: Path) -> None:
    scale = ["--customers", "1500", "--holdout-customers", "800", "--epochs", "1", "--resamples", "50"]
    lines = run_benchmark("policy_snips.py", *scale, "--out", str(tmp_path / "run"), cwd=tmp_path)
    policies = [line["policy"] for line in lines if "policy" in line]
    singles = [f"always {a}" for a in ("email_offer", "discount_10", "call_back")]
    singles += [f"always {a}" for a in ("push_notification", "sms_reminder", "no_action")]
    assert policies == ["learned", *singles, "gbt t-learner"]
    comparisons = [line for line in lines if "comparison" in line]
    assert [c["comparison"] for c in comparisons] == [
        "learned - best single action",
        "learned - gbt t-learner",
    ]
    for line in comparisons:
        d = line["snips_difference"]
        assert d["low"] <= d["value"] <= d["high"]
    summary = lines[-1]["summary"]
    assert summary["best_single_action"].startswith("always ")
    assert isinstance(summary["learned_at_least_both"], bool)


@pytest.mark.slow
def test_store_load_benchmark_prints_each_backend_beside_validate() -> None:
    lines = run_benchmark("store_load.py", "--customers", "300", "--rounds", "1")
    cases = {line["case"] for line in lines if "case" in line}
    assert cases == {"validate", "store_load_sqlite", "store_load_redis"}
    summary = lines[-1]["summary"]
    assert summary["store_load_sqlite_events_per_s"] > 0
    assert {"validate_events_per_s", "store_load_redis_events_per_s", "sqlite_meets_target"} <= summary.keys()


@pytest.mark.slow
def test_monitor_benchmark_prints_its_run_and_summary() -> None:
    lines = run_benchmark("monitor_load.py", "--decisions", "20000", "--customers", "300")
    run, summary = lines[0], lines[-1]["summary"]
    assert run["case"] == "nextbest_monitor"
    assert run["decisions"] == 20_000
    assert run["seconds"] > 0
    assert run["peak_rss_mb"] > 0
    assert summary["meets_target"] is False  # a target for a million decisions, not twenty thousand


@pytest.mark.slow
def test_store_serving_benchmark_prints_ingestion_ranks_and_targets() -> None:
    lines = run_benchmark("store_serving.py", "--requests", "5", "--clients", "2", "--backends", "sqlite")
    measured = {line["measurement"]: line for line in lines}
    assert measured["ingest_sqlite"]["events"] > 0
    assert measured["ingest_sqlite"]["events_per_s"] > 0
    assert measured["validate"]["events_per_s"] > 0
    for name in ("rank_body", "rank_by_id_sqlite"):
        assert measured[name]["p50_ms_one_client"] > 0
        assert measured[name]["requests_per_s"] > 0
    assert set(measured["targets"]["met"]) == {
        "ingest_sqlite_100k",
        "rank_by_id_sqlite_throughput",
        "rank_by_id_sqlite_p50_plus_1ms",
    }


@pytest.mark.slow
def test_store_memory_benchmark_prints_readings_and_summary() -> None:
    lines = run_benchmark("store_memory.py", "--customers", "100", "--events", "20000")
    readings, summary = lines[:-1], lines[-1]["summary"]
    assert [r["events"] for r in readings] == [2000 * (i + 1) for i in range(10)]
    assert all(r["rss_mb"] > 0 and r["events_per_s"] > 0 for r in readings)
    assert isinstance(summary["rss_growth_after_cap"], float)
    assert isinstance(summary["meets_target"], bool)


@pytest.mark.slow
def test_the_learning_loop_benchmark_runs_the_loop_and_prints_its_targets() -> None:
    """A small loop (real servers, training, promotion, monitor): every step reports, and the targets
    are judged; at this size the figures say nothing, so only their presence and consistency is checked."""
    lines = run_benchmark(
        "learning_loop.py", "--seed-customers", "300", "--customers", "400", "--days", "5", "--epochs", "1"
    )
    by_name = {line["measurement"]: line for line in lines}
    assert {
        "train_world",
        "period_1",
        "train_loop",
        "promote",
        "period_2",
        "period_2_pinned",
        "monitor",
    } <= set(by_name)
    assert by_name["period_1"]["model_versions"] == {"1": 400}
    assert by_name["period_2_pinned"]["model_versions"] == {"1": 400}
    expected = "2" if by_name["promote"]["promoted"] else "1"
    assert by_name["period_2"]["model_versions"] == {expected: 400}
    targets = by_name["targets"]
    assert set(targets["met"]) == {
        "promoted",
        "value_rises",
        "lift_excludes_zero",
        "rates_match_truth",
        "under_15_minutes",
    }
    rise = targets["value_rise_paired_by_day"]
    assert rise["low"] <= rise["value"] <= rise["high"]
    assert rise["days"] == 5
