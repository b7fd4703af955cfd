"""Throughput and peak memory of the batch scoring job, against row-by-row pyfunc predict.

    python benchmarks/batch_scoring.py [--customers 20000] [--growth 10] [--naive 300] [--spark]

Every customer has a 100-event history (rows resampled from a simulated world, so event types, channels
and actions are realistic) and every catalog action is ranked. The model has the demo architecture and
catalog, untrained (`demo_model.py`), registered in a temporary MLflow store.

Measured, each job in its own process (so its peak memory is its own):
- the local engine (`nextbest.batch.job.run_job`, what `nextbest score` runs) on --customers customers and
  on --growth times as many: customers/s, events/s, peak resident memory;
- the naive baseline: the registered pyfunc's `predict` called once per customer, on --naive customers;
- with --spark, the Spark engine on `local[2]` (session start included).

Prints one JSON object per measurement, then a summary with the targets of issue 6: at least 5,000
customers/s (500,000 events/s) for the local engine, and flat memory as the input grows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from demo_model import demo_scorer, register
from nextbest.data import load_events
from nextbest.simulate import SimulationConfig, simulate

HISTORY = 100
TARGET_CUSTOMERS_PER_S = 5000


def synthetic_events(customers: int, seed: int = 0) -> pa.Table:
    """100 events for each of `customers` customers: a simulated world's events resampled, an hour apart
    on average."""
    world = simulate(SimulationConfig(n_customers=2000, seed=seed))
    rng = np.random.default_rng(seed)
    count = customers * HISTORY
    rows = world.events.take(pa.array(rng.integers(0, world.events.num_rows, count)))
    ids = np.repeat(np.array([f"c{i:08d}" for i in range(customers)], dtype=object), HISTORY)
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    steps = rng.integers(1, 7_200_000_000, count).reshape(customers, HISTORY).cumsum(axis=1).ravel()
    rows = rows.drop_columns(["customer_id", "timestamp"])
    rows = rows.add_column(0, "customer_id", pa.array(ids, pa.string()))
    return rows.add_column(1, "timestamp", pa.array(start + steps, pa.timestamp("us", "UTC")))


def run_worker(args: list[str]) -> dict[str, Any]:
    """Runs this script's `--worker` mode in a fresh process and returns its JSON line."""
    result = subprocess.run(
        [sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True
    )
    figures: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return figures


def worker(engine: str, events: Path, out: Path) -> None:
    """One scoring job in this process; prints its figures and this process's peak memory."""
    from nextbest.batch.buckets import DEFAULT_CHUNK_EVENTS, chunk_count
    from nextbest.batch.chunk import ScoringOptions
    from nextbest.batch.job import JobInputs, run_job
    from nextbest.scoring.memory import keep_freed_memory
    from nextbest.scoring.pyfunc import load_scorer

    began = time.perf_counter()
    scorer = load_scorer("models:/nextbest@champion")
    loaded = time.perf_counter() - began
    options = ScoringOptions(model_version="1")
    inputs = JobInputs(events)
    started, cpu_started = time.perf_counter(), time.process_time()
    if engine == "spark":
        from nextbest.batch.spark import run_spark_job

        chunks = chunk_count(events, DEFAULT_CHUNK_EVENTS)
        spark_conf = {"spark.master": "local[2]", "spark.ui.showConsoleProgress": "false"}
        run_spark_job("models:/nextbest@champion", inputs, out, options, chunks=chunks, spark_conf=spark_conf)
    else:
        keep_freed_memory()  # as `nextbest score` does
        run_job(scorer, inputs, out, options, description={})
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rows = pq.ParquetDataset(out).read(columns=["customer_id"]).num_rows
    events_read = pq.ParquetFile(events).metadata.num_rows
    peak = peak_memory_mib()
    print(
        json.dumps(
            {
                "engine": engine,
                "customers": rows,
                "events": events_read,
                "seconds": seconds,
                # This process's CPU time (all its threads): steadier than `seconds` on a shared machine.
                "cpu_seconds": cpu_seconds,
                "model_load_s": loaded,
                "customers_per_s": rows / seconds,
                "events_per_s": events_read / seconds,
                "peak_rss_mib": peak,
            }
        )
    )


def peak_memory_mib() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss
    over exec, so a worker would inherit the peak of the benchmark process that started it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def naive(folder: Path, customers: int) -> dict[str, Any]:
    """The registered pyfunc's predict, one customer per call."""
    import mlflow

    from nextbest.journeys import requests_at_end
    from nextbest.scoring.tables import records_from_tables

    log = load_events(synthetic_events(customers, seed=1))
    records = records_from_tables(log, requests_at_end(log))
    model = mlflow.pyfunc.load_model("models:/nextbest@champion")
    model.predict([records[0].model_dump()])  # warm-up
    started = time.perf_counter()
    for record in records:
        model.predict([record.model_dump()])
    seconds = time.perf_counter() - started
    return {"engine": "naive_pyfunc_per_row", "customers": customers, "customers_per_s": customers / seconds}


def report(figures: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(figures), flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--growth", type=int, default=10, help="the larger input is this many times bigger")
    parser.add_argument("--naive", type=int, default=300, help="customers scored one pyfunc call each")
    parser.add_argument("--spark", action="store_true", help="also run the Spark engine on local[2]")
    parser.add_argument("--worker", nargs=3, metavar=("ENGINE", "EVENTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, events, out = args.worker
        worker(engine, Path(events), Path(out))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.chdir(folder)  # the MLflow artifact store
        world = simulate(SimulationConfig(n_customers=2000, seed=0))
        log = load_events(world.events)
        uri = register(demo_scorer(log, world.customers), log, folder)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        results = []
        for scale in (1, args.growth):
            events = folder / f"events-{scale}x.parquet"
            pq.write_table(synthetic_events(args.customers * scale), events)
            figures = run_worker(["local", str(events), str(folder / f"scores-{scale}x")])
            results.append(report({**figures, "input_scale": scale}))
            events.unlink()
        if args.spark:
            events = folder / "events-spark.parquet"
            pq.write_table(synthetic_events(args.customers), events)
            results.append(report(run_worker(["spark", str(events), str(folder / "scores-spark")])))
        results.append(report(naive(folder, args.naive)))
    local, grown = results[0], results[1]
    baseline = results[-1]["customers_per_s"]
    summary = {
        "local_customers_per_s": local["customers_per_s"],
        "local_events_per_s": local["events_per_s"],
        # The larger run is the steady state: the first chunk's one-time costs (the first forward pass,
        # thread start-up) weigh on a small input.
        "local_customers_per_s_grown": grown["customers_per_s"],
        "speedup_vs_naive": local["customers_per_s"] / baseline,
        "peak_rss_growth": grown["peak_rss_mib"] / local["peak_rss_mib"],
        "input_growth": args.growth,
        "spark_customers_per_s": results[2]["customers_per_s"] if args.spark else None,
    }
    summary["meets_target"] = {
        "customers_per_s": local["customers_per_s"] >= TARGET_CUSTOMERS_PER_S,
        "customers_per_s_grown": grown["customers_per_s"] >= TARGET_CUSTOMERS_PER_S,
        "flat_memory": summary["peak_rss_growth"] <= 1.25,
    }
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
