"""`nextbest simulate`: write a synthetic world (events, customers, decisions, truth) to develop against."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc

from nextbest.errors import NextbestError
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate, write_world
from nextbest.simulate.config import DEFAULT_START

HELP = "write a synthetic world: events, customers, logged decisions and their true outcome probabilities"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the `simulate` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help=HELP,
        description=(
            "Simulate customers with latent traits, their multi-channel journeys and marketing history, and "
            "randomised decisions with known propensities. Writes events.parquet, customers.parquet, "
            "decisions.parquet, truth.parquet and world.json into OUT. The same seed gives the same world."
        ),
    )
    parser.add_argument("--customers", type=int, default=10_000, metavar="N", help="number of customers")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--start",
        default=DEFAULT_START.isoformat().replace("+00:00", "Z"),
        metavar="ISO",
        help="first instant of the world, ISO 8601 date or time, UTC unless an offset is given "
        "(default %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Simulates, writes the world and prints a summary; returns the exit status."""
    if args.customers < 1:
        raise NextbestError(f"--customers must be at least 1, got {args.customers}")
    if args.seed < 0:
        raise NextbestError(f"--seed must be non-negative, got {args.seed}")
    config = SimulationConfig(n_customers=args.customers, seed=args.seed, start=_parse_start(args.start))
    began = time.perf_counter()
    world = simulate(config)
    folder = write_world(world, args.out)
    print(_summary(world, folder, time.perf_counter() - began))
    return 0


def _parse_start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text)
    except ValueError as exc:
        raise NextbestError(f"--start must be an ISO 8601 date or time, got {text!r}") from exc
    return start if start.tzinfo is not None else start.replace(tzinfo=UTC)


def _summary(world: SimulatedWorld, folder: Path, seconds: float) -> str:
    config, decisions = world.config, world.decisions
    n_events, n_decisions = world.events.num_rows, decisions.num_rows
    conversion = pc.mean(decisions["converted"]).as_py() or 0.0
    churn = pc.mean(decisions["churned"]).as_py() or 0.0
    return (
        f"Simulated {config.n_customers:,} customers (seed {config.seed}) with {n_events:,} events "
        f"({n_events / config.n_customers:.1f} per customer) and {n_decisions:,} decisions over "
        f"{len(config.actions)} actions: conversion {conversion:.1%} within {config.horizon_days} days, "
        f"churn {churn:.1%} ({config.churn_inactivity_days} days of silence). "
        f"Wrote {folder} in {seconds:.1f} s."
    )
