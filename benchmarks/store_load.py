"""Throughput of `nextbest store load` into the SQLite and Redis stores, beside `nextbest validate` on the
same events (the contract check alone, which every loaded event also goes through).

    python benchmarks/store_load.py [--customers 10000] [--rounds 2] [--backends sqlite,redis]

The events are `batch_scoring.synthetic_events` (100 events a customer, resampled from a simulated world),
one Parquet file. Each round validates the file, then loads it into a new, empty store of each backend
(Redis: a `redis-server` of this run, on a free loopback port, persisting nothing). Prints one JSON object
per measurement (events/s by the wall clock, and by this process's CPU time, which a shared machine's
load moves less; a Redis store's server works in a process of its own, not counted) and a summary with
the medians and the target of issue 18: `store load` at least 500,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from batch_scoring import synthetic_events
from nextbest.data import validate_tables
from nextbest.store import open_store
from nextbest.store.transfer import load_tables

TARGET_EVENTS_PER_S = 500_000


def measure(case: str, events: int, run: Callable[[], object]) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "case": case,
        "events": events,
        "seconds": round(wall, 3),
        "events_per_s": round(events / wall),
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_s": round(events / cpu),
    }


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("redis-server did not start")


def load(uri: str, events: Path, flush: bool = False) -> None:
    """Loads `events` into the store at `uri` (emptied first with `flush`: a Redis of earlier rounds)."""
    if flush:
        import redis

        with redis.Redis.from_url(uri) as client:
            client.flushall()
    with open_store(uri) as store:
        loaded = load_tables(store, events)[0]
    if loaded.accepted != loaded.read:
        raise SystemExit(f"{uri}: stored {loaded.accepted:,} of {loaded.read:,} events")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated: sqlite, redis")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        events = folder / "events.parquet"
        table = synthetic_events(args.customers)
        pq.write_table(table, events)
        server, redis_uri = start_redis(folder) if "redis" in backends else (None, "")
        try:
            for round_ in range(args.rounds):
                cases: dict[str, Callable[[], object]] = {"validate": partial(validate_tables, events=events)}
                if "sqlite" in backends:
                    cases["store_load_sqlite"] = partial(
                        load, f"sqlite:///{folder / f'store-{round_}.db'}", events
                    )
                if "redis" in backends:
                    cases["store_load_redis"] = partial(load, redis_uri, events, flush=True)
                for case, run in cases.items():
                    result = {**measure(case, table.num_rows, run), "round": round_}
                    results.append(result)
                    print(json.dumps(result), flush=True)
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    print(json.dumps({"summary": summary(results)}))
    return 0


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for case in dict.fromkeys(r["case"] for r in results):
        runs = [r for r in results if r["case"] == case]
        medians[f"{case}_events_per_s"] = round(statistics.median(r["events_per_s"] for r in runs))
        medians[f"{case}_events_per_cpu_s"] = round(statistics.median(r["events_per_cpu_s"] for r in runs))
    medians["target_events_per_s"] = TARGET_EVENTS_PER_S
    medians["sqlite_meets_target"] = medians.get("store_load_sqlite_events_per_s", 0) >= TARGET_EVENTS_PER_S
    return medians


if __name__ == "__main__":
    raise SystemExit(main())
