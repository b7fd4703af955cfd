"""Time to build the journey discovery report for about 1M events, against a pandas baseline.

    python benchmarks/journey_report.py [--customers 18000] [--criteo-dir DIR]

Inputs: a simulated world of --customers customers (about 55 events each, so 18,000 make about 1M
events) and, when the Criteo journeys are found (`../shared/data`), their 660k events by campaign.

Measured in this process: the report without a model (paths, Sankey, funnel, stalls, transitions,
first-order Markov attribution, touch attribution, HTML and JSON), and with the untrained demo-architecture
model (moments of truth on 300 customers, segments of 2,000). The baseline is what a pandas user would
write for the same most frequent paths: groupby, apply a join per journey, value_counts.

Prints one JSON object per measurement and a summary with the target of issue 7: 1M events in at most
60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from demo_model import REPO_ROOT, demo_scorer
from nextbest.adapters.criteo import read_criteo
from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.discovery.journeys import cut_journeys, top_paths
from nextbest.discovery.summary import DiscoveryOptions, summarise, write_report
from nextbest.simulate import SimulationConfig, simulate

TARGET_SECONDS_PER_MILLION = 60.0


def timed_report(name: str, log: EventLog, options: DiscoveryOptions, **model: Any) -> dict[str, Any]:
    started = time.perf_counter()
    summary = summarise(log, options, **model)
    with tempfile.TemporaryDirectory() as folder:
        write_report(summary, Path(folder))
    seconds = time.perf_counter() - started
    return {
        "case": name,
        "events": log.num_events,
        "seconds": seconds,
        "events_per_s": log.num_events / seconds,
        "parts": summary["seconds"],
    }


def pandas_top_paths(log: EventLog) -> dict[str, Any]:
    """The baseline: the same top paths (journeys cut at purchases, channel repeats collapsed) the way a
    pandas user would write them: shift, cumsum, groupby-apply a join, value_counts."""
    frame = log.to_table().select(["customer_id", "event_type", "channel"]).to_pandas()
    started = time.perf_counter()
    frame["channel"] = frame["channel"].astype(object).fillna("(none)")
    bought = frame["event_type"] == "purchase"
    new_customer = frame["customer_id"] != frame["customer_id"].shift()
    frame["journey"] = (new_customer | bought.shift(fill_value=False)).cumsum()
    touches = frame[~bought]
    repeat = (touches["channel"] == touches["channel"].shift()) & (
        touches["journey"] == touches["journey"].shift()
    )
    paths = touches[~repeat].groupby("journey")["channel"].apply(" > ".join)
    paths.value_counts().head(20)
    seconds = time.perf_counter() - started
    return {"case": "pandas_top_paths", "events": len(frame), "seconds": seconds}


def nextbest_top_paths(log: EventLog) -> dict[str, Any]:
    started = time.perf_counter()
    top_paths(cut_journeys(log, "purchase").paths("channel"))
    seconds = time.perf_counter() - started
    return {"case": "nextbest_top_paths", "events": log.num_events, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=18_000)
    parser.add_argument(
        "--criteo-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "criteo_attribution"
    )
    args = parser.parse_args(argv)
    world = simulate(SimulationConfig(n_customers=args.customers, seed=5))
    log = load_events(world.events)
    results = [timed_report("simulated", log, DiscoveryOptions())]
    print(json.dumps(results[-1]), flush=True)
    scorer = demo_scorer(log, world.customers)
    results.append(
        timed_report(
            "simulated_with_model", log, DiscoveryOptions(), scorer=scorer, customers=world.customers
        )
    )
    print(json.dumps(results[-1]), flush=True)
    criteo = args.criteo_dir / "train_journeys.jsonl"
    if criteo.exists():
        criteo_log = load_events(read_criteo(criteo).events)
        results.append(
            timed_report("criteo_by_campaign", criteo_log, DiscoveryOptions(touch_column="action"))
        )
        print(json.dumps(results[-1]), flush=True)
    baseline, ours = pandas_top_paths(log), nextbest_top_paths(log)
    print(json.dumps(baseline), flush=True)
    print(json.dumps(ours), flush=True)
    per_million = {r["case"]: r["seconds"] * 1_000_000 / r["events"] for r in results}
    summary = {
        "seconds_per_million_events": per_million,
        "top_paths_speedup_vs_pandas": baseline["seconds"] / ours["seconds"],
        "meets_target": all(s <= TARGET_SECONDS_PER_MILLION for s in per_million.values()),
    }
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
