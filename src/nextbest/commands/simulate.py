"""`nextbest simulate`: write a synthetic world (events, customers, decisions, truth) to develop against."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.compute as pc

from nextbest.errors import NextbestError
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate, write_world
from nextbest.simulate.client import ServiceClient
from nextbest.simulate.config import DEFAULT_START, LIVE_LEAD_DAYS, live_config

if TYPE_CHECKING:
    from nextbest.simulate.live import LiveResult

HELP = "write a synthetic world: events, customers, logged decisions and their true outcome probabilities"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the `simulate` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help=HELP,
        # argparse would show the optional mode as required, and --out as optional.
        usage="%(prog)s [-h] [--customers N] [--seed S] --out DIR [--start ISO]\n"
        "       %(prog)s live --url URL [--customers N] [--days D] [--seed S] [--first-day DATE]\n"
        "                     [--id-prefix P] [--json FILE]",
        description=(
            "Simulate customers with latent traits, their multi-channel journeys and marketing history, and "
            "randomised decisions with known propensities. Writes events.parquet, customers.parquet, "
            "decisions.parquet, truth.parquet and world.json into OUT. The same seed gives the same world. "
            "`nextbest simulate live` plays such a world against a running service instead."
        ),
    )
    parser.add_argument("--customers", type=int, default=10_000, metavar="N", help="number of customers")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    # Not required by the parser, which would then ask it of `simulate live` too.
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (created; required)")
    parser.add_argument(
        "--start",
        default=DEFAULT_START.isoformat().replace("+00:00", "Z"),
        metavar="ISO",
        help="first instant of the world, ISO 8601 date or time, UTC unless an offset is given "
        "(default %(default)s)",
    )
    parser.set_defaults(handler=run)
    modes = parser.add_subparsers(title="modes", metavar="MODE")
    _register_live(modes)


def _register_live(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    live = modes.add_parser(
        "live",
        help="play a simulated world against a running service",
        description=(
            "Play a simulated world against a running `nextbest serve --store URI`: its customers and events "
            "are posted to /customers and /events as they happen, /rank_batch is asked at each decision, the "
            "customers respond to the served action by the world's true response model, and the events that "
            "follow are posted back. Prints the true value earned per decision against a uniformly random "
            f"action and the oracle. The first decisions come after {LIVE_LEAD_DAYS} days of history; "
            "every customer is decided once. The same seed and the same answers give the same result. "
            "Uses NEXTBEST_API_KEY as the bearer token when it is set."
        ),
    )
    live.add_argument("--url", required=True, help="the service's address, e.g. http://127.0.0.1:3000")
    live.add_argument("--customers", type=int, default=1_000, metavar="N", help="number of customers")
    live.add_argument(
        "--days", type=int, default=30, metavar="D", help="days the decisions span (default 30)"
    )
    live.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    live.add_argument(
        "--first-day",
        type=_parse_day,
        metavar="DATE",
        help="the first day decisions may fall on, ISO 8601 (default "
        f"{(DEFAULT_START + timedelta(days=LIVE_LEAD_DAYS)).date().isoformat()})",
    )
    live.add_argument(
        "--id-prefix",
        default="c",
        metavar="P",
        help="what the customer ids start with (default c): worlds with distinct prefixes can be played "
        "one after another against one store",
    )
    live.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    live.set_defaults(handler=run_live)


def run_live(args: argparse.Namespace) -> int:
    """Plays a world against the service at --url and prints what it earned; returns the exit status."""
    from nextbest.simulate.live import play  # the scoring stack: loaded by the command that needs it

    _check_world_arguments(args)
    if args.days < 1:
        raise NextbestError(f"--days must be at least 1, got {args.days}")
    service = ServiceClient(args.url, os.environ.get("NEXTBEST_API_KEY") or None)
    began = time.perf_counter()
    config = live_config(
        args.customers, args.days, args.seed, first_day=args.first_day, customer_prefix=args.id_prefix
    )
    result = play(service, config)
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise NextbestError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    print(_live_summary(result, args, time.perf_counter() - began))
    return 0


def _live_summary(result: LiveResult, args: argparse.Namespace, seconds: float) -> str:
    total = result.total
    versions = ", ".join(f"{v} ({n:,})" for v, n in total.model_versions.items())
    return (
        f"Played {args.customers:,} customers over {args.days} days (seed {args.seed}) against {args.url}: "
        f"{total.decisions:,} decisions answered by model version(s) {versions}, "
        f"{result.events_posted:,} events posted, in {seconds:.1f} s.\n"
        f"True value per decision: served {total.value_per_decision:.4f}, "
        f"random {total.random_value_per_decision:.4f}, oracle {total.oracle_value_per_decision:.4f}."
    )


def _check_world_arguments(args: argparse.Namespace) -> None:
    if args.customers < 1:
        raise NextbestError(f"--customers must be at least 1, got {args.customers}")
    if args.seed < 0:
        raise NextbestError(f"--seed must be non-negative, got {args.seed}")


def run(args: argparse.Namespace) -> int:
    """Simulates, writes the world and prints a summary; returns the exit status."""
    _check_world_arguments(args)
    if args.out is None:
        raise NextbestError("--out is required (or play a world against a service: `nextbest simulate live`)")
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


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {text!r}") from exc


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
