"""The simulated world as contract tables, and writing it to a folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nextbest import __version__
from nextbest.errors import NextbestError
from nextbest.simulate.actions import Decisions
from nextbest.simulate.config import SimulationConfig
from nextbest.simulate.events import EventArrays
from nextbest.simulate.population import Population

TIMESTAMP = pa.timestamp("us", tz="UTC")

STORY = (
    "Customers have latent intent, engagement, price sensitivity, app and email affinity and "
    "dissatisfaction; their profile (segment, region, age band, device, email opt-in, tenure) is correlated "
    "with these traits. Each journey is a Markov chain over lifecycle stages (awareness, consideration, "
    "evaluation, purchase, post-purchase, advocacy, or drift towards churn and dormancy) whose sessions on "
    "web, app, store and call centre produce page views, product views, ad impressions, carts, purchases, "
    "support calls, complaints, reviews and referrals at engagement-dependent gaps, with time-of-day and "
    "day-of-week patterns. Email, push and SMS campaigns run throughout; opens fall and unsubscribes rise "
    "with recent email volume. At one or two decision times per customer a logging policy (softmax over "
    "profile rules with a probability floor) picks an action; churn and conversion are drawn from the true "
    "probabilities in truth.parquet, which depend on the traits and on the observable history before the "
    "decision: discount_10 works on price-sensitive customers, call_back on customers with recent service "
    "issues, push_notification on app users, sms_reminder on abandoned carts, and email_offer on engaged "
    "readers but it backfires under contact fatigue (many emails in the last 14 days). Events after a "
    "decision follow its outcome: churners fall silent, converters buy once within the horizon."
)


@dataclass(frozen=True)
class SimulatedWorld:
    """A simulated world as Arrow tables, ready for `write_world`.

    Attributes:
        config: The configuration it was simulated from.
        events: One row per touchpoint, sorted by customer_id and timestamp.
        customers: One row per customer: id and profile attributes (no latent traits).
        decisions: One row per decision: logged action, propensity and observed outcomes.
        truth: One row per decision and candidate action: the true outcome probabilities.
        metadata: The contents of `world.json`.
    """

    config: SimulationConfig
    events: pa.Table
    customers: pa.Table
    decisions: pa.Table
    truth: pa.Table
    metadata: dict[str, Any]


def build_world(
    config: SimulationConfig, population: Population, events: EventArrays, decisions: Decisions
) -> SimulatedWorld:
    """Turns the simulator's arrays (events already sorted) into the contract tables."""
    ids = population.customer_ids
    order = np.lexsort((decisions.as_of, decisions.customer))
    decision_table, truth_table = _decision_tables(config, ids, decisions, order)
    return SimulatedWorld(
        config=config,
        events=events.to_table(ids, config.start),
        customers=population.profiles.to_table(ids, config.start),
        decisions=decision_table,
        truth=truth_table,
        metadata=_metadata(config, len(events), decisions.customer.size),
    )


def _decision_tables(
    config: SimulationConfig, ids: pa.Array, decisions: Decisions, order: np.ndarray[Any, np.dtype[np.intp]]
) -> tuple[pa.Table, pa.Table]:
    start_us = int(config.start.timestamp()) * 1_000_000
    customer_ids = ids.take(pa.array(decisions.customer[order]))
    as_of = pa.array(decisions.as_of[order] * 1_000_000 + start_us, TIMESTAMP)
    actions = pa.array(config.action_ids, pa.string())
    decision_table = pa.table(
        {
            "customer_id": customer_ids,
            "timestamp": as_of,
            "action": actions.take(pa.array(decisions.action[order])),
            "propensity": pa.array(decisions.propensity[order]),
            "converted": pa.array(decisions.converted[order].astype(np.int8)),
            "churned": pa.array(decisions.churned[order].astype(np.int8)),
            "revenue": pa.array(decisions.revenue[order]),
        }
    )
    k = len(config.actions)
    repeat = pa.array(np.repeat(np.arange(len(order)), k))
    truth_table = pa.table(
        {
            "customer_id": customer_ids.take(repeat),
            "as_of": as_of.take(repeat),
            "action": actions.take(pa.array(np.tile(np.arange(k), len(order)))),
            "p_conversion": pa.array(decisions.p_conversion[order].ravel()),
            "p_churn": pa.array(decisions.p_churn[order].ravel()),
        }
    )
    return decision_table, truth_table


def _metadata(config: SimulationConfig, n_events: int, n_decisions: int) -> dict[str, Any]:
    end = config.start.timestamp() + config.span_days * 86_400
    return {
        "generator": f"nextbest {__version__} simulate",
        "seed": config.seed,
        "n_customers": config.n_customers,
        "n_events": n_events,
        "n_decisions": n_decisions,
        "start": config.start.isoformat().replace("+00:00", "Z"),
        "observation_end": _iso(end),
        "horizon_days": config.horizon_days,
        "churn_inactivity_days": config.churn_inactivity_days,
        "conversion_event_type": "purchase",
        "actions": [asdict(a) for a in config.actions],
        "logging_policy": {"floor": config.logging_floor, "temperature": config.logging_temperature},
        "effects": asdict(config.effects),
        "description": STORY,
    }


def _iso(epoch_seconds: float) -> str:
    return str(np.datetime64(int(epoch_seconds), "s")) + "Z"


def write_world(world: SimulatedWorld, out_dir: str | Path) -> Path:
    """Writes events, customers, decisions and truth as Parquet, and `world.json`, into `out_dir`.

    Args:
        world: The world to write.
        out_dir: Target folder; created when missing, existing files are replaced.

    Returns:
        The folder written to.

    Raises:
        NextbestError: The folder cannot be created or written.
    """
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("events", "customers", "decisions", "truth"):
            pq.write_table(getattr(world, name), folder / f"{name}.parquet")
        (folder / "world.json").write_text(json.dumps(world.metadata, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise NextbestError(f"cannot write the simulated world to {folder}: {exc.strerror or exc}") from exc
    return folder
