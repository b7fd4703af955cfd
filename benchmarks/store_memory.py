"""The server's memory while its store fills past the retention cap: is it flat once the cap is reached?

    python benchmarks/store_memory.py [--customers 10000] [--events 2000000] [--cap 100]

A real server (`nextbest serve --store sqlite:///...`, one worker, the demo-architecture model of
`serving_load.py`) with `NEXTBEST_STORE_MAX_EVENTS=--cap` takes `--events` page views spread evenly over
`--customers` customers through POST /events (batches of 1,000, 8 clients), so that every customer
reaches the cap halfway. After each tenth of the events it prints the resident memory of the server's
processes (JSON), then the target of issue 18: RSS within 10% between the cap being reached and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from serving_load import register_demo_model, running
from store_serving import ingest

BATCH_EVENTS = 1000
STEPS = 10
START = datetime(2025, 1, 1, tzinfo=UTC)


def batch(start: int, customers: int) -> bytes:
    """Events `start` .. `start + BATCH_EVENTS`: event i is customer i mod `customers`'s, a second later
    than event i - 1."""
    events = [
        {"customer_id": f"m{i % customers}", "timestamp": (START + timedelta(seconds=i)).isoformat(),
         "channel": "web", "event_type": "page_view", "event_id": f"e{i}"}
        for i in range(start, start + BATCH_EVENTS)
    ]  # fmt: skip
    return json.dumps({"events": events}).encode()


def server_rss_mb() -> float:
    """Resident memory of every process this script started (the server's arbiter and worker)."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # it exited meanwhile
            total += child.memory_info().rss
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--cap", type=int, default=100, help="events kept per customer")
    args = parser.parse_args(argv)
    nextbest = str(Path(sys.executable).parent / "nextbest")
    step = max(BATCH_EVENTS, args.events // STEPS // BATCH_EVENTS * BATCH_EVENTS)
    readings = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.chdir(folder)
        uri, _ = register_demo_model(folder)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "BENTOML_DO_NOT_TRACK": "true",
            "BENTOML_HOME": str(folder / "bentoml"),
            "NEXTBEST_STORE_MAX_EVENTS": str(args.cap),
        }
        command = [nextbest, "serve", "--store", f"sqlite:///{folder / 'state.db'}"]
        with running(command, env, folder, folder / "serve.log") as base:
            for start in range(0, args.events, step):
                bodies = [batch(s, args.customers) for s in range(start, start + step, BATCH_EVENTS)]
                rate = ingest(base, bodies, 8)["events_per_s"]
                reading = {"events": start + step, "rss_mb": round(server_rss_mb(), 1)}
                readings.append({**reading, "events_per_s": round(rate)})
                print(json.dumps(readings[-1]), flush=True)
    capped = [r["rss_mb"] for r in readings if r["events"] >= args.customers * args.cap]
    growth = capped[-1] / capped[0] - 1 if capped else None
    summary = {"rss_growth_after_cap": None if growth is None else round(growth, 3)}
    summary["meets_target"] = growth is not None and abs(growth) <= 0.10
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
