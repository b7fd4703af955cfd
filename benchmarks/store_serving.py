"""The service with a customer store: ingestion through POST /events and /rank by customer id.

    python benchmarks/store_serving.py [--clients 8] [--requests 200] [--backends sqlite,redis]

Real servers (`nextbest serve`, one worker) over the demo-architecture model of `serving_load.py`: one
without a store (the baseline) and one per backend (`--store sqlite:///...`, and a `redis-server` of the
run). Per backend it prints one JSON object per measurement:

- `ingest`: events/s through POST /events, batches of 1,000 events, `--clients` clients; beside it, the
  same run's `nextbest validate` rate on the same events (`validate`);
- `rank_by_id`: /rank naming the customer alone (its 100 events loaded through POST /events), one client
  (p50) and `--clients` clients (requests/s), against `rank_body` on the store-less server with the same
  100 events in the body.

Then the targets of issue 18: at least 100,000 events/s ingested; /rank by id at least the body's
throughput at `--clients` clients, p50 with one client no more than +1 ms (SQLite), within 1.2x of the
SQLite p50 with Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from nextbest.data import validate_tables
from serving_load import concurrently, load, register_demo_model, running
from store_load import start_redis

BATCH_EVENTS = 1000


def event_batches(records: list[dict[str, Any]]) -> list[bytes]:
    """The records' events (each with its customer) as POST /events bodies of `BATCH_EVENTS` events."""
    events = [{**e, "customer_id": r["customer_id"]} for r in records for e in r["events"]]
    return [
        json.dumps({"events": events[i : i + BATCH_EVENTS]}).encode()
        for i in range(0, len(events), BATCH_EVENTS)
    ]


def ingest(base: str, batches: list[bytes], clients: int) -> dict[str, float]:
    """Posts every batch once, spread over `clients` threads; events/s."""
    accepted = []
    lock = threading.Lock()

    def client(mine: list[bytes]) -> None:
        with httpx.Client(base_url=base, timeout=120, headers={"content-type": "application/json"}) as http:
            for body in mine:
                answer = http.post("/events", content=body)
                if answer.status_code != 200:
                    raise SystemExit(f"{base}/events answered {answer.status_code}: {answer.text[:300]}")
                counts = answer.json()
                with lock:
                    accepted.append(counts["accepted"] + counts["duplicates"])

    elapsed = concurrently(client, [batches[c::clients] for c in range(clients)])
    return {"events": sum(accepted), "events_per_s": sum(accepted) / elapsed}


def validate_rate(records: list[dict[str, Any]], folder: Path) -> float:
    events = [{**e, "customer_id": r["customer_id"]} for r in records for e in r["events"]]
    path = folder / "events.parquet"
    pq.write_table(pa.Table.from_pylist(events), path)
    started = time.perf_counter()
    validate_tables(events=path)
    return len(events) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="/rank requests per client")
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated: sqlite, redis")
    args = parser.parse_args(argv)
    nextbest = str(Path(sys.executable).parent / "nextbest")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as servers:
        folder = Path(scratch)
        os.chdir(folder)
        uri, records = register_demo_model(folder)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "BENTOML_DO_NOT_TRACK": "true"}
        stores = {"sqlite": f"sqlite:///{folder / 'state.db'}"}
        if "redis" in args.backends:
            redis, stores["redis"] = start_redis(folder)
            servers.callback(redis.terminate)
        bases = {
            "none": servers.enter_context(running([nextbest, "serve"], env, folder, folder / "none.log"))
        }
        for backend in args.backends.split(","):
            command = [nextbest, "serve", "--store", stores[backend]]
            log = folder / f"{backend}.log"
            bases[backend] = servers.enter_context(
                running(command, {**env, "BENTOML_HOME": str(folder / backend)}, folder, log)
            )
        batches = event_batches(records)
        results["validate"] = {"events_per_s": validate_rate(records, folder)}
        body = [json.dumps(r).encode() for r in records]
        by_id = [json.dumps({"customer_id": r["customer_id"], "as_of": r["as_of"]}).encode() for r in records]
        load(bases["none"], body, 2, 10)  # warm-up
        for backend in args.backends.split(","):
            results[f"ingest_{backend}"] = ingest(bases[backend], batches, args.clients)
            load(bases[backend], by_id, 2, 10)  # warm-up (and contacts: the limits hold from here on)
        for backend in ("none", *args.backends.split(",")):
            bodies = body if backend == "none" else by_id
            name = "rank_body" if backend == "none" else f"rank_by_id_{backend}"
            one = load(bases[backend], bodies, 1, args.requests)
            many = load(bases[backend], bodies, args.clients, args.requests)
            results[name] = {"p50_ms_one_client": one["p50_ms"], "requests_per_s": many["requests_per_s"]}
    for name, figures in results.items():
        print(json.dumps({"measurement": name, **{k: round(v, 2) for k, v in figures.items()}}))
    print(json.dumps({"measurement": "targets", **targets(results, args.backends.split(","))}))
    return 0


def targets(results: dict[str, Any], backends: list[str]) -> dict[str, Any]:
    body = results["rank_body"]
    met: dict[str, bool] = {}
    for backend in backends:
        by_id = results[f"rank_by_id_{backend}"]
        met[f"ingest_{backend}_100k"] = results[f"ingest_{backend}"]["events_per_s"] >= 100_000
        met[f"rank_by_id_{backend}_throughput"] = by_id["requests_per_s"] >= body["requests_per_s"]
    sqlite_p50 = results.get("rank_by_id_sqlite", {}).get("p50_ms_one_client")
    if sqlite_p50 is not None:
        met["rank_by_id_sqlite_p50_plus_1ms"] = sqlite_p50 <= body["p50_ms_one_client"] + 1.0
        if "rank_by_id_redis" in results:
            met["rank_by_id_redis_p50_1_2x"] = (
                results["rank_by_id_redis"]["p50_ms_one_client"] <= 1.2 * sqlite_p50
            )
    return {"met": met}


if __name__ == "__main__":
    sys.exit(main())
