"""Time and peak memory of `nextbest monitor` on a large decision log.

    python benchmarks/monitor_load.py [--decisions 1000000] [--customers 20000]

A simulated world's decision moments are served once by an untrained demo-architecture model (registered,
with the input reference training saves) with a 5% control group; the answers are written to a decision
log by the service's own writer, repeated until the log holds --decisions lines. Requests are logged
without their histories, as a service with a store logs them. Then `nextbest monitor` runs in a process of
its own (with --model and --customers, so every section is computed). Prints one JSON object for the run
and a summary with the target of issue 19: a million logged decisions in under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from demo_model import demo_scorer, register
from nextbest.data import load_events
from nextbest.decisioning.catalog import ControlGroup
from nextbest.monitoring.reference import training_reference
from nextbest.scoring.decision_log import DecisionLogWriter
from nextbest.scoring.records import score_records
from nextbest.scoring.schemas import ScoringRequest
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulationConfig, simulate, write_world

TARGET_SECONDS = 60.0
WRITE_CHUNK = 50_000


def write_log(world_dir: Path, customers: int, decisions: int, folder: Path) -> None:
    """The decision log of `decisions` lines, and the registered model, under `folder`."""
    world = simulate(SimulationConfig(n_customers=customers, seed=11))
    write_world(world, world_dir)
    log = load_events(world.events)
    moments = pa.table(
        {"customer_id": world.decisions.column("customer_id"), "as_of": world.decisions.column("timestamp")}
    )
    scorer = demo_scorer(log, world.customers)
    scorer.reference = training_reference(scorer, log, moments, world.customers)
    os.environ["MLFLOW_TRACKING_URI"] = register(scorer, log, folder)
    records = records_from_tables(log, moments, world.customers)
    catalog = dataclasses.replace(scorer.action_catalog, control=ControlGroup(share=0.05))
    answers = score_records(scorer, records, "1", catalog)
    logged = [ScoringRequest(customer_id=r.customer_id, as_of=r.as_of, events=[]) for r in records]
    writer = DecisionLogWriter(folder / "decisions", rotate_rows=250_000)
    for start in range(0, decisions, WRITE_CHUNK):
        rows = [i % len(logged) for i in range(start, min(start + WRITE_CHUNK, decisions))]
        writer.append([logged[i] for i in rows], [answers[i] for i in rows])
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_log(folder / "world", args.customers, args.decisions, folder)
        command = [sys.executable, "-m", "nextbest.cli", "monitor", "--decisions", str(folder / "decisions")]
        command += ["--events", str(folder / "world" / "events.parquet")]
        command += ["--customers", str(folder / "world" / "customers.parquet")]
        command += ["--model", "models:/nextbest@champion", "--out", str(folder / "monitor")]
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        summary = json.loads((folder / "monitor" / "summary.json").read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    run = {
        "case": "nextbest_monitor",
        "decisions": summary["decisions"]["total"],
        "customers": args.customers,
        "seconds": round(seconds, 2),
        "decisions_per_s": round(summary["decisions"]["total"] / seconds),
        "peak_rss_mb": round(peak_mb),
        "alerts": [alert["name"] for alert in summary["alerts"]],
    }
    print(json.dumps(run))
    meets = args.decisions >= 1_000_000 and seconds < TARGET_SECONDS
    target = {"target_seconds_per_million": TARGET_SECONDS, "meets_target": meets}
    print(json.dumps({"summary": {**run, **target}}))


if __name__ == "__main__":
    main()
