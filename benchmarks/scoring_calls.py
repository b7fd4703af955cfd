"""In-process cost of one scoring call, as the online service makes it: `score_records` with one request
(a tight loop, the one-client case) and with 256 requests (a micro-batch), against the network's forward
pass on the same requests (the baseline: what no amount of request handling can save).

    python benchmarks/scoring_calls.py [--customers 2000] [--repeats 7] [--hybrid-trees N]

The model has the demo architecture and catalog, untrained (`demo_model.py`), stacked with N trees per
outcome with `--hybrid-trees N` (the network-only case then includes the trees, as the scorer's logits do);
requests are simulated
customers' last 100 events with their profiles. Each figure is the median over `--repeats` timed
rounds, after a warm-up round. Prints one JSON object per case (`ms_per_call` wall-clock, `cpu_ms_per_call`,
`requests_per_cpu_s`) and a summary with each case's share of its CPU time spent outside the network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch

from demo_model import demo_scorer, long_histories
from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.journeys import requests_at_end
from nextbest.scoring import ScoringRequest, score_records
from nextbest.scoring.scorer import JourneyScorer
from nextbest.simulate import SimulationConfig, simulate

HISTORY = 100  # events per request: the demo model's window, as the load test sends
BATCH = 256
CALLS_PER_ROUND = {1: 200, BATCH: 5}


def median_seconds(call: Callable[[], object], calls: int, repeats: int) -> tuple[float, float]:
    """Median over `repeats` rounds of the mean wall-clock and CPU seconds per call of `calls` calls
    (after one warm-up). CPU time is the steadier figure on a shared machine (one scoring thread)."""
    call()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            call()
        wall.append((time.perf_counter() - start) / calls)
        cpu.append((time.process_time() - start_cpu) / calls)
    return statistics.median(wall), statistics.median(cpu)


def network_only(
    scorer: JourneyScorer, log: EventLog, customers: pa.Table, size: int
) -> Callable[[], object]:
    """The forward pass alone on `size` requests of the benchmark's customers (encoded outside the timing)."""
    long = np.flatnonzero(np.diff(log.offsets) >= HISTORY)
    requests = requests_at_end(log).take(np.resize(long, size))
    journeys = scorer.encoder.encode(log, requests, customers)
    return lambda: scorer.logits(journeys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hybrid-trees", type=int, default=0, help="stack N trees per outcome (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one service worker's share of the machine
    world = simulate(SimulationConfig(n_customers=args.customers, seed=21))
    log = load_events(world.events)
    scorer = demo_scorer(log, world.customers, args.hybrid_trees)
    bodies = long_histories(log, world.customers, HISTORY)
    records = [ScoringRequest.model_validate(body) for body in bodies]
    summary = {}
    for size, calls in CALLS_PER_ROUND.items():
        batch = (records * (size // len(records) + 1))[:size]
        seconds = {
            "score_records": median_seconds(
                lambda batch=batch: score_records(scorer, batch, "1"), calls, args.repeats
            ),
            "network_only": median_seconds(
                network_only(scorer, log, world.customers, size), calls, args.repeats
            ),
        }
        for case, (wall, cpu) in seconds.items():
            line = {"case": case, "requests": size, "ms_per_call": round(wall * 1e3, 3)}
            line["cpu_ms_per_call"] = round(cpu * 1e3, 3)
            print(json.dumps({**line, "requests_per_cpu_s": round(size / cpu, 1)}), flush=True)
        network, total = seconds["network_only"][1], seconds["score_records"][1]
        summary[f"outside_network_cpu_share_{size}"] = round(1 - network / total, 3)
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
