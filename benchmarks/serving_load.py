"""Load test of the online service against a model-free BentoML service that parses the same payload.

    python benchmarks/serving_load.py [--requests 400] [--clients 8] [--batch 500]

Both servers run as real processes (`nextbest serve`, `bentoml serve`) on this machine. The model has the
demo architecture (`configs/demo.yaml`: 2-layer, 64-wide transformer, six actions) and the demo catalog,
untrained (speed does not depend on the weights), registered in a temporary MLflow store. Requests are
simulated customers' last 100 events, with every catalog action a candidate.

Prints one JSON object per measurement (p50/p99 latency in ms, requests/s) and the targets of issue 5:
at 8 clients at least 0.6x the model-free throughput and at most 1.5x its p99; with one client at most
5 ms added to its p50; /rank_batch at least 3,000 customers/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import torch

from nextbest.data import load_events
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys import JourneyEncoder, requests_at_end
from nextbest.model import JourneyNetwork, ModelConfig
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.records import records_from_tables
from nextbest.scoring.scorer import JourneyScorer
from nextbest.simulate import SimulationConfig, simulate

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
HISTORY = 100


def register_demo_model(folder: Path) -> tuple[str, list[dict[str, Any]]]:
    """An untrained demo-architecture model registered as nextbest@champion, and request bodies."""
    world = simulate(SimulationConfig(n_customers=3000, seed=21))
    log = load_events(world.events)
    encoder = JourneyEncoder.fit(log, world.customers)
    catalog = ActionCatalog.from_yaml(REPO_ROOT / "configs" / "catalogs" / "demo.yaml")
    config = ModelConfig(
        **encoder.network_sizes(), num_actions=len(catalog.ids), d_model=64, n_layers=2, n_heads=4
    )
    torch.manual_seed(0)
    scorer = JourneyScorer(JourneyNetwork(config), encoder, catalog.ids, catalog=catalog)
    long = np.flatnonzero(np.diff(log.offsets) >= HISTORY)
    requests = requests_at_end(log).take(long)
    records = records_from_tables(log, requests, world.customers, max_events=HISTORY)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = log_model(scorer, records[:1], registered_model_name="nextbest")
    mlflow.MlflowClient(uri).set_registered_model_alias(
        "nextbest", "champion", str(info.registered_model_version)
    )
    return uri, [r.model_dump(exclude_none=True) for r in records]


@contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    """Starts a server on a free port and yields its base URL once /readyz answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{command[0]} did not start:\n{log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            yield base
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def load(base: str, bodies: list[bytes], clients: int, per_client: int) -> dict[str, float]:
    """`clients` threads each sending `per_client` /rank requests back to back; latency quantiles in ms."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        mine = []
        with httpx.Client(base_url=base, timeout=60, headers={"content-type": "application/json"}) as http:
            for i in range(per_client):
                started = time.perf_counter()
                answer = http.post("/rank", content=bodies[(offset + i) % len(bodies)])
                mine.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise SystemExit(f"{base}/rank answered {answer.status_code}: {answer.text[:300]}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(c * per_client,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(ms) / elapsed,
    }


def rank_batch_throughput(base: str, bodies: list[dict[str, Any]], batch: int, rounds: int) -> float:
    payload = json.dumps({"requests": (bodies * (batch // len(bodies) + 1))[:batch]}).encode()
    with httpx.Client(base_url=base, timeout=120, headers={"content-type": "application/json"}) as http:
        http.post("/rank_batch", content=payload)  # warm-up
        started = time.perf_counter()
        for _ in range(rounds):
            answer = http.post("/rank_batch", content=payload)
            if answer.status_code != 200:
                raise SystemExit(f"/rank_batch answered {answer.status_code}: {answer.text[:300]}")
        return batch * rounds / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per client and server")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500, help="customers per /rank_batch call")
    args = parser.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.chdir(folder)
        uri, records = register_demo_model(folder)
        bodies = [json.dumps(r).encode() for r in records]
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "BENTOML_DO_NOT_TRACK": "true"}
        results: dict[str, dict[str, float]] = {}
        baseline_env = {**env, "BENTOML_HOME": str(folder / "bentoml-free"), "PYTHONPATH": str(HERE)}
        free = [str(bin_dir / "bentoml"), "serve", "model_free_service:ModelFreeService"]
        with running(free, baseline_env, HERE, folder / "free.log") as base:
            load(base, bodies, 2, 20)  # warm-up
            results["model_free_1"] = load(base, bodies, 1, args.requests)
            results["model_free_n"] = load(base, bodies, args.clients, args.requests // args.clients * 2)
        served_env = {**env, "BENTOML_HOME": str(folder / "bentoml")}
        with running([str(bin_dir / "nextbest"), "serve"], served_env, folder, folder / "serve.log") as base:
            load(base, bodies, 2, 20)
            results["rank_1"] = load(base, bodies, 1, args.requests)
            results["rank_n"] = load(base, bodies, args.clients, args.requests // args.clients * 2)
            batch_rate = rank_batch_throughput(base, records, args.batch, rounds=5)
    for name, figures in results.items():
        clients = 1 if name.endswith("_1") else args.clients
        print(json.dumps({"measurement": name, "clients": clients, "history_events": HISTORY, **figures}))
    print(json.dumps({"measurement": "rank_batch", "batch": args.batch, "customers_per_s": batch_rate}))
    targets = {
        "throughput_ratio": results["rank_n"]["requests_per_s"] / results["model_free_n"]["requests_per_s"],
        "p99_ratio": results["rank_n"]["p99_ms"] / results["model_free_n"]["p99_ms"],
        "p50_added_ms_one_client": results["rank_1"]["p50_ms"] - results["model_free_1"]["p50_ms"],
        "rank_batch_customers_per_s": batch_rate,
    }
    met = {
        "throughput_ratio": targets["throughput_ratio"] >= 0.6,
        "p99_ratio": targets["p99_ratio"] <= 1.5,
        "p50_added_ms_one_client": targets["p50_added_ms_one_client"] <= 5.0,
        "rank_batch_customers_per_s": batch_rate >= 3000,
    }
    print(json.dumps({"measurement": "targets", **targets, "met": met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
