"""The learning loop, end to end: serve, export, retrain, promote, serve again. Do the decisions get better?

    python benchmarks/learning_loop.py [--seed-customers 2000] [--customers 20000] [--days 30]

1. A champion: the demo config trained on a simulated world of `--seed-customers` customers (decisions logged
   by the world's randomised policy), its catalog the demo one with a `--control` share as control group.
2. `nextbest serve --store sqlite:///... --reload-seconds 2`; period 1: `nextbest simulate live` plays
   `--customers` new customers over `--days` days against it.
3. `nextbest store export`; a challenger trained on the seed world and the export together, its period-1
   customers but a held-out fifth (by customer); `nextbest promote` on that fifth's decisions.
4. The service follows its alias; period 2 plays `--customers` further customers over the next `--days`
   days. The same period-2 world is also played against a second service pinned to the first champion,
   over a store of its own: the same customers at the same moments, so the two differ only by the model.
5. `nextbest monitor --store --model` over the service's store (both periods).

Prints one JSON line per step, then the targets of issue 19: the true value per decision rises (period 2
against the pinned champion, paired by day, 95% interval above zero), the monitor's lift against control
excludes zero, the realised conversion and churn rates of each served action hold its true mean rates
within their 95% intervals, and the whole loop takes under 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from scipy import stats

from nextbest.simulate.config import DEFAULT_START, LIVE_LEAD_DAYS
from serving_load import running

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 15 * 60
RELOAD_SECONDS = 2
Z95 = 1.959963984540054
# The contract's columns: what the seed world and the export have in common.
COLUMNS = {
    "events": ["customer_id", "timestamp", "event_type", "channel", "action", "value"],
    "decisions": ["customer_id", "timestamp", "action", "propensity"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-customers", type=int, default=2_000)
    parser.add_argument("--customers", type=int, default=20_000, help="live customers per period")
    parser.add_argument("--days", type=int, default=30, help="days per period")
    parser.add_argument("--control", type=float, default=0.05, help="control group share")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of both models")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        results = Loop(Path(scratch), args).run()
    results["seconds"] = time.perf_counter() - began
    print(json.dumps({"measurement": "targets", **targets(results)}))
    return 0


class Loop:
    """The loop's steps in a scratch folder; each prints its figures as one JSON line."""

    def __init__(self, folder: Path, args: argparse.Namespace) -> None:
        self.folder = folder
        self.args = args
        self.nextbest = str(Path(sys.executable).parent / "nextbest")
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "BENTOML_DO_NOT_TRACK": "true",
        }
        self.first_day = (DEFAULT_START + timedelta(days=LIVE_LEAD_DAYS)).date()

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        catalog = self.catalog()
        self.command(
            "simulate", "--customers", str(self.args.seed_customers), "--seed", "0", "--out", "world"
        )
        results["champion"] = self.train("world", catalog)
        with ExitStack() as servers:
            served = self.serve(servers, "state", "--reload-seconds", str(RELOAD_SECONDS))
            pinned = self.serve(servers, "pinned", "--model", "models:/nextbest/1")
            results["period_1"] = self.play(served, "period_1", "c", self.first_day)
            self.command("store", "export", "--store", self.store("state"), "--out", "export")
            held_out = self.training_tables()
            results["challenger"] = self.train("loop", catalog)
            results["promote"] = self.promote(held_out)
            results["reload_seconds"] = (
                self.wait_for_version(served, "2") if results["promote"]["promoted"] else None
            )
            second = self.first_day + timedelta(days=self.args.days)
            results["period_2"] = self.play(served, "period_2", "p", second)
            results["period_2_pinned"] = self.play(pinned, "period_2_pinned", "p", second)
        results["monitor"] = self.monitor()
        return results

    def command(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Runs `nextbest ARGUMENTS` in the folder; exit status 3 (promote refused) is an answer too."""
        done = subprocess.run(
            [self.nextbest, *arguments], cwd=self.folder, env=self.env, capture_output=True, text=True
        )
        if done.returncode not in (0, 3):
            output = f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
            raise SystemExit(f"nextbest {' '.join(arguments)} failed ({done.returncode}):\n{output}")
        return done

    def store(self, name: str) -> str:
        return f"sqlite:///{self.folder / f'{name}.db'}"

    def catalog(self) -> Path:
        """The demo catalog with the control group."""
        catalog = yaml.safe_load((REPO / "configs" / "catalogs" / "demo.yaml").read_text())
        catalog["control"] = {"share": self.args.control}
        path = self.folder / "catalog.yaml"
        path.write_text(yaml.safe_dump(catalog))
        return path

    def train(self, data: str, catalog: Path) -> dict[str, Any]:
        started = time.perf_counter()
        tables = [
            f"--data.{t}={self.folder / data / f'{t}.parquet'}" for t in ("events", "customers", "decisions")
        ]
        self.command(
            "train", "--config", str(REPO / "configs" / "demo.yaml"), *tables,
            f"--trainer.max_epochs={self.args.epochs}", "--export.baselines=[]",
            f"--export.catalog={catalog}",
        )  # fmt: skip
        figures = {"data": data, "seconds": time.perf_counter() - started}
        print(json.dumps({"measurement": f"train_{data}", **figures}))
        return figures

    def serve(self, servers: ExitStack, name: str, *options: str) -> str:
        command = [self.nextbest, "serve", "--store", self.store(name), *options]
        env = {**self.env, "BENTOML_HOME": str(self.folder / f"bentoml-{name}")}
        return servers.enter_context(running(command, env, self.folder, self.folder / f"{name}.log"))

    def play(self, base: str, name: str, prefix: str, first_day: date) -> dict[str, Any]:
        started = time.perf_counter()
        self.command(
            "simulate", "live", "--url", base, "--customers", str(self.args.customers), "--days",
            str(self.args.days), "--seed", str(self.args.seed + (prefix != "c")), "--id-prefix", prefix,
            "--first-day", first_day.isoformat(), "--json", f"{name}.json",
        )  # fmt: skip
        figures: dict[str, Any] = json.loads((self.folder / f"{name}.json").read_text())
        summary = {k: figures[k] for k in ("decisions", "value_per_decision", "random_value_per_decision",
                                           "oracle_value_per_decision", "model_versions")}  # fmt: skip
        print(json.dumps({"measurement": name, **summary, "seconds": time.perf_counter() - started}))
        return figures

    def training_tables(self) -> Path:
        """The seed world and the export, but a fifth of the period-1 customers, as the challenger's
        tables (folder `loop`); that fifth's decisions and the events as promote's held-out log (folder
        `held_out`)."""
        export, world = self.folder / "export", self.folder / "world"
        decisions = pq.read_table(export / "decisions.parquet")
        held = _fifth(decisions.column("customer_id"))
        (self.folder / "loop").mkdir()
        (self.folder / "held_out").mkdir()
        events = pq.read_table(export / "events.parquet").select(COLUMNS["events"])
        tables = {
            "events": [pq.read_table(world / "events.parquet").select(COLUMNS["events"]), events],
            "decisions": [
                pq.read_table(world / "decisions.parquet").select(COLUMNS["decisions"]),
                decisions.filter(pc.invert(held)).select(COLUMNS["decisions"]),
            ],
            "customers": [
                pq.read_table(world / "customers.parquet"),
                pq.read_table(export / "customers.parquet"),
            ],
        }
        for name, parts in tables.items():
            schema = parts[0].schema
            pq.write_table(
                pa.concat_tables([p.select(schema.names).cast(schema) for p in parts]),
                self.folder / "loop" / f"{name}.parquet",
            )
        pq.write_table(decisions.filter(held), self.folder / "held_out" / "decisions.parquet")
        pq.write_table(events, self.folder / "held_out" / "events.parquet")
        pq.write_table(
            pq.read_table(export / "customers.parquet"), self.folder / "held_out" / "customers.parquet"
        )
        return self.folder / "held_out"

    def promote(self, held_out: Path) -> dict[str, Any]:
        done = self.command(
            "promote", *(f"--{t}={held_out / f'{t}.parquet'}" for t in ("events", "customers", "decisions"))
        )
        figures = {"promoted": done.returncode == 0, "printed": done.stdout.strip().splitlines()}
        print(json.dumps({"measurement": "promote", **figures}))
        return figures

    def wait_for_version(self, base: str, version: str) -> float:
        """Seconds until the service's metadata names `version`."""
        started = time.perf_counter()
        while httpx.get(f"{base}/metadata", timeout=10).json().get("model_version") != version:
            if time.perf_counter() - started > 120:
                raise SystemExit(f"{base} did not reload version {version} within 120 s")
            time.sleep(0.2)
        return time.perf_counter() - started

    def monitor(self) -> dict[str, Any]:
        self.command(
            "monitor",
            "--store",
            self.store("state"),
            "--model",
            "models:/nextbest@champion",
            "--out",
            "monitor",
        )
        summary: dict[str, Any] = json.loads((self.folder / "monitor" / "summary.json").read_text())
        lift = summary["lift"]
        figures = {
            "lift": {k: lift.get(k) for k in ("conversion_rate_difference", "churn_rate_difference")},
            "by_action": summary["outcomes"]["by_action"],
            "open": summary["outcomes"]["open"],
        }
        print(json.dumps({"measurement": "monitor", **figures}))
        return figures


def _fifth(customer_id: pa.ChunkedArray) -> pa.Array:
    """A stable fifth of the customers: those whose id's CRC-32 is 0 mod 5."""
    return pa.array([zlib.crc32(c.encode()) % 5 == 0 for c in customer_id.to_pylist()])


def paired_days(live: dict[str, Any], pinned: dict[str, Any]) -> dict[str, float]:
    """Mean over days of period 2's true value per decision minus the pinned champion's on the same
    customers, with a 95% t-interval over the days (each day's customers are the same in both)."""
    ours = {d["day"]: d for d in live["days"]}
    theirs = {d["day"]: d for d in pinned["days"]}
    days = sorted(ours)
    differences = np.array([ours[d]["value_per_decision"] - theirs[d]["value_per_decision"] for d in days])
    weights = np.array([ours[d]["decisions"] for d in days], dtype=float)
    mean = float(np.average(differences, weights=weights))
    spread = math.sqrt(float(np.average((differences - mean) ** 2, weights=weights)) / (len(days) - 1))
    half = float(stats.t.ppf(0.975, len(days) - 1)) * spread
    return {"value": mean, "low": mean - half, "high": mean + half, "days": len(days)}


def rates_within_truth(by_action: list[dict[str, Any]], periods: list[dict[str, Any]]) -> dict[str, Any]:
    """Per served action: the monitor's realised conversion and churn rates, their 95% intervals, and the
    mean true rates of the same decisions (both periods, weighted by decisions)."""
    truth: dict[str, dict[str, float]] = {}
    for period in periods:
        for action, t in period["served_truth"].items():
            entry = truth.setdefault(action, {"decisions": 0, "p_conversion": 0.0, "p_churn": 0.0})
            for k in ("p_conversion", "p_churn"):
                entry[k] += t[k] * t["decisions"]
            entry["decisions"] += t["decisions"]
    checks = {}
    for row in by_action:
        if row["action"] not in truth or not row["conversion_closed"]:
            continue
        true = truth[row["action"]]
        checks[row["action"]] = {
            outcome: _within(
                row[f"{outcome}_rate"], row[f"{outcome}_closed"], true[f"p_{outcome}"] / true["decisions"]
            )
            for outcome in ("conversion", "churn")
        }
    return checks


def _within(rate: float, n: int, true: float) -> dict[str, Any]:
    """The realised `rate` of `n` decisions, its 95% Wilson interval, and whether it holds `true`."""
    centre = (rate + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(rate * (1 - rate) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    low, high = centre - half, centre + half
    return {"realised": rate, "low": low, "high": high, "true": true, "within": low <= true <= high}


def targets(results: dict[str, Any]) -> dict[str, Any]:
    rises = paired_days(results["period_2"], results["period_2_pinned"])
    lift = results["monitor"]["lift"]["conversion_rate_difference"] or {}
    rates = rates_within_truth(results["monitor"]["by_action"], [results["period_1"], results["period_2"]])
    within = [c["within"] for checks in rates.values() for c in checks.values()]
    return {
        "value_rise_paired_by_day": rises,
        "conversion_lift_vs_control": lift,
        "rates_within_truth": rates,
        "reload_seconds": results["reload_seconds"],
        "seconds": results["seconds"],
        "met": {
            "promoted": results["promote"]["promoted"],
            "value_rises": rises["low"] > 0,
            "lift_excludes_zero": bool(lift) and (lift["low"] > 0 or lift["high"] < 0),
            "rates_match_truth": f"{sum(within)} of {len(within)}",
            "under_15_minutes": results["seconds"] < TARGET_SECONDS,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
