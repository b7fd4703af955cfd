"""Every number of the journey report, as one JSON-ready dictionary (`summary.json`), and the files.

Keys of `summary.json` (all counts are journeys unless named otherwise):

- `overview`: customers, events, journeys, converted_journeys, conversion_rate, touch_column (the events
  column that labels a touch: `channel` unless `--touch-column` says otherwise), touch_labels (its
  distinct values), event_types, first_event, last_event, conversion_event, title.
- `paths`: `touch` (by the touch column) and `event_type`: the most frequent paths (repeats collapsed),
  each with `path`, `journeys`, `conversions`, `conversion_rate`.
- `sankey`: `nodes` (`step`, `label`) and `links` (`source`, `target`, `journeys`) of the first touches.
- `funnel`: per stage (`stage`, `journeys`, `share_of_all`, `drop_off`); stages from `--funnel` or found
  in the data (`funnel_stages`). A journey counts at a stage only after every earlier stage, in order, so
  a last stage that is the conversion counts fewer journeys than `overview.converted_journeys` (the report
  says how many converted by another route).
- `time_to_convert`: `journeys`, `quantiles_hours` (p10 … p90), `histogram` (`from_hours`, `to_hours`,
  `journeys`).
- `stalls`: `touch` and `event_type`: last touches of unconverted journeys quiet for `churn_days` (`touch`,
  `stalled_journeys`, `share_of_stalls`, `stall_rate`).
- `transitions`: between touch labels (e.g. channel to channel): `labels`, `counts` [from][to] and
  `switches` (`from`, `to`, `transitions`, `conversion_rate`); `device_transitions` likewise when the
  events have a `device` column.
- `attribution`: `markov` (`order`, `conversion_probability`, `removal_effects`, `shares`, `states`; the
  removal effect of a touch label is 1 - P(conversion with it removed) / P(conversion), exact),
  `markov_orders` (the same for every order asked for), `touch` (`first_touch`, `last_touch`, `linear`).
- with a model: `moments_of_truth` (`touch`, `mean_effect`, `touches`) and `segments` (`segment`,
  `customers`, `share`, `conversion_rate`, `churn_rate`, `typical_path`, `next_best_action`).
- `seconds`: how long each part took.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.discovery.attribution import markov_attribution, touch_attribution
from nextbest.discovery.journeys import (
    cut_journeys,
    default_stages,
    funnel,
    sankey,
    stalls,
    time_to_convert,
    top_paths,
    transitions,
)
from nextbest.discovery.report import render_report
from nextbest.errors import NextbestError
from nextbest.scoring.scorer import JourneyScorer


@dataclass(frozen=True)
class DiscoveryOptions:
    """What the report looks for (see `nextbest journeys --help`)."""

    conversion_event: str = "purchase"
    touch_column: str = "channel"
    funnel_stages: tuple[str, ...] = ()
    markov_orders: tuple[int, ...] = (1,)
    churn_days: int = 60
    segments: int = 5
    model_sample: int = 2000
    title: str = "Customer journeys"


def summarise(
    log: EventLog,
    options: DiscoveryOptions,
    scorer: JourneyScorer | None = None,
    customers: pa.Table | None = None,
) -> dict[str, Any]:
    """The report's numbers for `log` (the model-based sections only with a `scorer`)."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    if options.touch_column not in log.source.column_names:
        raise NextbestError(
            f"touch column {options.touch_column!r}: the events have no such column; they have "
            f"{', '.join(log.source.column_names)}"
        )
    journeys = cut_journeys(log, options.conversion_event)
    touch_paths = journeys.paths(options.touch_column)
    event_paths = journeys.paths("event_type")
    stages = list(options.funnel_stages) or default_stages(journeys, options.conversion_event)
    summary: dict[str, Any] = {
        "overview": _overview(log, journeys.converted.sum(), journeys.count, options),
        "paths": {"touch": top_paths(touch_paths), "event_type": top_paths(event_paths)},
        "sankey": sankey(touch_paths),
        "funnel_stages": stages,
        "funnel": funnel(journeys, stages),
        "time_to_convert": time_to_convert(journeys),
        "stalls": {
            "touch": stalls(journeys, options.touch_column, options.churn_days),
            "event_type": stalls(journeys, "event_type", options.churn_days),
        },
        "transitions": transitions(touch_paths),
    }
    if "device" in log.source.column_names:
        summary["device_transitions"] = transitions(journeys.paths("device"))
    lap("paths")
    orders = [markov_attribution(touch_paths, order).to_dict() for order in options.markov_orders]
    summary["attribution"] = {
        "markov": orders[0],
        "markov_orders": orders,
        "touch": touch_attribution(touch_paths),
    }
    lap("attribution")
    if scorer is not None:
        from nextbest.discovery.model_based import moments_of_truth, segments

        summary["moments_of_truth"] = moments_of_truth(
            scorer, journeys, customers, "event_type", min(options.model_sample, 300)
        )
        lap("moments_of_truth")
        summary["segments"] = segments(
            scorer,
            journeys,
            touch_paths,
            customers,
            options.segments,
            options.model_sample,
            options.churn_days,
        )
        lap("segments")
    summary["seconds"] = seconds
    return summary


def write_report(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Writes `out/report.html` and `out/summary.json`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    report, numbers = out / "report.html", out / "summary.json"
    report.write_text(render_report(summary), encoding="utf-8")
    numbers.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return report, numbers


def _overview(log: EventLog, converted: int, count: int, options: DiscoveryOptions) -> dict[str, Any]:
    labels, _ = log.token_codes(options.touch_column)
    event_types, _ = log.token_codes("event_type")
    times = log.timestamps
    return {
        "title": options.title,
        "customers": log.num_customers,
        "events": log.num_events,
        "journeys": count,
        "converted_journeys": int(converted),
        "conversion_rate": float(converted / count) if count else 0.0,
        "touch_column": options.touch_column,
        "touch_labels": len(labels),
        "event_types": len(event_types),
        "first_event": _iso(int(times.min())) if len(times) else None,
        "last_event": _iso(int(times.max())) if len(times) else None,
        "conversion_event": options.conversion_event,
    }


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat(timespec="seconds")
