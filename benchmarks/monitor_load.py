"""Time and peak memory of `nextbest monitor` on a large decision log (and, with --store, on a store).

    python benchmarks/monitor_load.py [--decisions 1000000] [--customers 20000] [--store]

A simulated world's decision moments are served once by an untrained demo-architecture model (registered,
with the input reference training saves) with a 5% control group; the answers are written to a decision
log by the service's own writer, repeated until the log holds --decisions lines. Requests are logged
without their histories, as a service with a store logs them. Then `nextbest monitor` runs in a process of
its own (with --model and --customers, so every section is computed). With --store, a SQLite store is
loaded with the world's events and profiles and serves the logged decisions (a catalog without limits,
so that each is a contact), and `nextbest monitor --store` runs on it too. Prints one JSON object per run
and a summary with the target of issue 19: a million logged decisions in under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from demo_model import demo_scorer, register
from nextbest.data import load_events
from nextbest.decisioning.catalog import ActionCatalog, ControlGroup
from nextbest.monitoring.reference import training_reference
from nextbest.scoring.decision_log import DecisionLogWriter, read_decision_log
from nextbest.scoring.records import score_records
from nextbest.scoring.schemas import ScoringRequest
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulationConfig, simulate, write_world
from nextbest.store import Candidate, Decision, open_store
from nextbest.store.transfer import load_tables

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


def fill_store(uri: str, world_dir: Path, log: Path) -> None:
    """The store of a service that served the log's decisions: the world's events and profiles, and
    every decision a contact."""
    decisions = read_decision_log(log).decisions
    catalog = ActionCatalog.default(tuple(set(decisions.column("action").to_pylist())))
    with open_store(uri) as store:
        load_tables(store, world_dir / "events.parquet", world_dir / "customers.parquet")
        for start in range(0, decisions.num_rows, WRITE_CHUNK):
            chunk = decisions.slice(start, WRITE_CHUNK).to_pylist()
            store.serve_many(
                [
                    Decision(d["customer_id"], d["timestamp"], f"d{start + i}", (Candidate(d["action"]),))
                    for i, d in enumerate(chunk)
                ],
                catalog,
            )


def timed_monitor(source: list[str], folder: Path, case: str, customers: int) -> dict[str, object]:
    """One run of `nextbest monitor` on `source` (its flags) in a process of its own."""
    out = folder / case
    command = [sys.executable, "-m", "nextbest.cli", "monitor", *source]
    command += ["--model", "models:/nextbest@champion", "--out", str(out)]
    began = time.perf_counter()
    with (folder / f"{case}.log").open("w") as printed:
        process = subprocess.Popen(command, stdout=printed, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the largest child's
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{case} failed: {(folder / f'{case}.log').read_text()}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "case": case,
        "decisions": summary["decisions"]["total"],
        "customers": customers,
        "seconds": round(seconds, 2),
        "decisions_per_s": round(summary["decisions"]["total"] / seconds),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # kB on Linux
        "alerts": [alert["name"] for alert in summary["alerts"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--store", action="store_true", help="monitor the same decisions served by a store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        world = folder / "world"
        write_log(world, args.customers, args.decisions, folder)
        tables = ["--events", str(world / "events.parquet"), "--customers", str(world / "customers.parquet")]
        log = ["--decisions", str(folder / "decisions"), *tables]
        run = timed_monitor(log, folder, "nextbest_monitor", args.customers)
        print(json.dumps(run))
        if args.store:
            uri = f"sqlite:///{folder / 'store.db'}"
            fill_store(uri, world, folder / "decisions")
            print(
                json.dumps(timed_monitor(["--store", uri], folder, "nextbest_monitor_store", args.customers))
            )
    seconds = float(run["seconds"])  # type: ignore[arg-type]
    meets = args.decisions >= 1_000_000 and seconds < TARGET_SECONDS
    target = {"target_seconds_per_million": TARGET_SECONDS, "meets_target": meets}
    print(json.dumps({"summary": {**run, **target}}))


if __name__ == "__main__":
    main()
