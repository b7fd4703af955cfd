"""Throughput and peak memory of validation and journey building, beside a plain pandas implementation.

Usage:
    python benchmarks/bench_journeys.py [--events 5000000] [--baseline-events 200000] [--out DIR]

Writes a synthetic events log (time-ordered, as logs are appended, plus a shuffled copy), then runs each
case in a fresh subprocess so its peak RSS is its own. Prints one JSON object per case and a final
`summary` object; targets: 2M events/s for validation and for journey building on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TARGET_EVENTS_PER_S = 2_000_000
EVENT_TYPES = [
    "page_view",
    "product_view",
    "email_open",
    "email_click",
    "app_session",
    "add_to_cart",
    "purchase",
    "support_call",
    "complaint",
    "ad_impression",
]
CHANNELS = ["web", "app", "email", "sms", "call_center", "store", "display"]
ACTIONS = ["email_offer", "discount_10", "call_back", "push_notification", "sms_reminder"]
MAX_EVENTS = 100


def synthetic_events(num_events: int, seed: int = 0) -> pa.Table:
    """A time-ordered log: ~10 events per customer on average, heavy-tailed, over 180 days."""
    rng = np.random.default_rng(seed)
    num_customers = max(1, num_events // 10)
    weights = rng.pareto(1.5, num_customers) + 1
    customer = rng.choice(num_customers, size=num_events, p=weights / weights.sum())
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    timestamps = np.sort(start + rng.integers(0, 180 * 86_400_000_000, num_events))
    has_action = rng.random(num_events) < 0.2
    return pa.table(
        {
            "customer_id": pa.array(np.char.add("c", customer.astype("U9")).astype(object), pa.string()),
            "timestamp": pa.array(timestamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "event_type": pa.array(np.array(EVENT_TYPES, dtype=object)[rng.integers(0, 10, num_events)]),
            "channel": pa.array(np.array(CHANNELS, dtype=object)[rng.integers(0, 7, num_events)]),
            "action": pa.array(
                np.where(has_action, np.array(ACTIONS, dtype=object)[rng.integers(0, 5, num_events)], None)
            ),
            "value": pa.array(
                np.where(rng.random(num_events) < 0.05, rng.lognormal(3, 1, num_events), np.nan),
                from_pandas=True,
            ),
        }
    )


def nextbest_validate(path: Path) -> tuple[int, float]:
    """File to a validated, grouped and ordered event log (what `nextbest validate` does)."""
    from nextbest.data import validate_tables

    started = time.perf_counter()
    report = validate_tables(events=path)
    assert not report.errors, report.render()
    return report.rows_read["events"], time.perf_counter() - started


def nextbest_journeys(path: Path) -> tuple[int, float]:
    """A loaded event log to encoded journeys of every customer (vocabularies fitted, windows cut)."""
    from nextbest.data import load_events
    from nextbest.journeys import JourneyConfig, JourneyEncoder, requests_at_end

    log = load_events(path)
    started = time.perf_counter()
    encoder = JourneyEncoder.fit(log, config=JourneyConfig(max_events=MAX_EVENTS))
    journeys = encoder.encode(log, requests_at_end(log))
    assert len(journeys) == log.num_customers
    return log.num_events, time.perf_counter() - started


def nextbest_end_to_end(path: Path) -> tuple[int, float]:
    """File to encoded journeys: validation and journey building together."""
    from nextbest.data import load_events
    from nextbest.journeys import JourneyConfig, JourneyEncoder, requests_at_end

    started = time.perf_counter()
    log = load_events(path)
    journeys = JourneyEncoder.fit(log, config=JourneyConfig(max_events=MAX_EVENTS)).encode(
        log, requests_at_end(log)
    )
    assert len(journeys) == log.num_customers
    return log.num_events, time.perf_counter() - started


def nextbest_batches(path: Path) -> tuple[int, float]:
    """Padding every journey into dense [1024, L] minibatches (what a training epoch does)."""
    from nextbest.data import load_events
    from nextbest.journeys import JourneyConfig, JourneyEncoder, requests_at_end

    log = load_events(path)
    journeys = JourneyEncoder.fit(log, config=JourneyConfig(max_events=MAX_EVENTS)).encode(
        log, requests_at_end(log)
    )
    started = time.perf_counter()
    for first in range(0, len(journeys), 1024):
        journeys.batch(np.arange(first, min(first + 1024, len(journeys))))
    return log.num_events, time.perf_counter() - started


def pandas_validate(path: Path) -> tuple[int, float]:
    """The usual pandas checks: nulls, timestamp parsing, numeric values, duplicates, order."""
    started = time.perf_counter()
    frame = pd.read_parquet(path)
    assert not frame[["customer_id", "timestamp", "event_type"]].isna().any().any()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    assert not frame["timestamp"].isna().any()
    pd.to_numeric(frame["value"], errors="coerce")
    frame = frame[~frame.duplicated()]
    frame.groupby("customer_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing)
    return len(frame), time.perf_counter() - started


def pandas_journeys(path: Path) -> tuple[int, float]:
    """The straightforward pandas way: sort, group by customer, build each sequence in `apply`."""
    started = time.perf_counter()
    frame = pd.read_parquet(path).sort_values(["customer_id", "timestamp"], kind="stable")
    codes = {
        c: {t: i + 3 for i, t in enumerate(frame[c].dropna().unique())} for c in ("event_type", "channel")
    }

    def journey(group: pd.DataFrame) -> dict[str, object]:
        group = group.tail(MAX_EVENTS)
        seconds = group["timestamp"].astype("int64") // 1_000_000
        return {
            "event_type": [codes["event_type"][t] for t in group["event_type"]],
            "channel": [codes["channel"].get(c, 2) for c in group["channel"]],
            "log_gap_seconds": np.log1p(seconds.diff().fillna(0)).tolist(),
            "hour": ((seconds // 3600) % 24).tolist(),
            "log_value": np.log1p(group["value"].fillna(0)).tolist(),
        }

    journeys = frame.groupby("customer_id", sort=True).apply(journey, include_groups=False)
    assert len(journeys) > 0
    return len(frame), time.perf_counter() - started


CASES: dict[str, Callable[[Path], tuple[int, float]]] = {
    "nextbest_validate": nextbest_validate,
    "nextbest_journeys": nextbest_journeys,
    "nextbest_end_to_end": nextbest_end_to_end,
    "nextbest_batches": nextbest_batches,
    "pandas_validate": pandas_validate,
    "pandas_journeys": pandas_journeys,
}


def run_case(case: str, path: Path) -> dict[str, object]:
    """Run one case in this process and measure it (called in a fresh subprocess)."""
    events, seconds = CASES[case](path)
    return {
        "case": case,
        "input": path.name,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_subprocess(case: str, path: Path, repeat: int) -> dict[str, object]:
    """The case run `repeat` times, each in a fresh process (as a CLI run is); the median run is kept."""
    runs = []
    for _ in range(repeat):
        output = subprocess.run(
            [sys.executable, __file__, "--case", case, "--input", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    runs.sort(key=lambda run: float(run["seconds"]))
    median = runs[len(runs) // 2]
    return {**median, "runs": repeat, "best_seconds": runs[0]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=1_000_000,
        help="size of the pandas baseline's input (its apply is slow)",
    )
    parser.add_argument("--out", type=Path, help="where to write the inputs (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median is reported)")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.input)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        table = synthetic_events(args.events)
        sorted_path, shuffled_path, small_path = (
            folder / "events.parquet",
            folder / "events_shuffled.parquet",
            folder / "events_baseline.parquet",
        )
        pq.write_table(table, sorted_path)
        order = np.random.default_rng(1).permutation(table.num_rows)
        pq.write_table(table.take(pa.array(order)), shuffled_path)
        pq.write_table(table.slice(0, min(args.baseline_events, table.num_rows)), small_path)
        del table
        plan = [
            ("nextbest_validate", sorted_path, args.repeat),
            ("nextbest_validate", shuffled_path, args.repeat),
            ("nextbest_journeys", sorted_path, args.repeat),
            ("nextbest_journeys", shuffled_path, args.repeat),
            ("nextbest_end_to_end", sorted_path, args.repeat),
            ("nextbest_batches", sorted_path, args.repeat),
            ("pandas_validate", small_path, 1),
            ("pandas_journeys", small_path, 1),
        ]
        results = [run_in_subprocess(case, path, repeat) for case, path, repeat in plan]
    for result in results:
        print(json.dumps({"benchmark": "journeys", **result}))
    print(json.dumps({"benchmark": "journeys", "summary": summarise(results)}))


def summarise(results: list[dict[str, object]]) -> dict[str, object]:
    rate = {(str(r["case"]), str(r["input"])): float(r["events_per_s"]) for r in results}  # type: ignore[arg-type]
    validate = min(
        rate[("nextbest_validate", "events.parquet")], rate[("nextbest_validate", "events_shuffled.parquet")]
    )
    journeys = min(
        rate[("nextbest_journeys", "events.parquet")], rate[("nextbest_journeys", "events_shuffled.parquet")]
    )
    end_to_end = rate[("nextbest_end_to_end", "events.parquet")]
    return {
        "validate_events_per_s": round(validate),
        "end_to_end_events_per_s": round(end_to_end),
        "journeys_events_per_s": round(journeys),
        "validate_speedup_vs_pandas": round(
            validate / rate[("pandas_validate", "events_baseline.parquet")], 1
        ),
        "journeys_speedup_vs_pandas": round(
            journeys / rate[("pandas_journeys", "events_baseline.parquet")], 1
        ),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": validate >= TARGET_EVENTS_PER_S and journeys >= TARGET_EVENTS_PER_S,
    }


if __name__ == "__main__":
    main()
