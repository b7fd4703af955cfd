"""`nextbest monitor`'s numbers: from served decisions (a decision log, or a store's contacts) and the
events that followed, what was served, what it did, how the policy compares with the control group,
whether the served probabilities hold, how far the model's inputs have moved since training, and the
alerts that follow.

Outcomes are delayed: a decision counts towards conversion (churn) only once its whole conversion
(churn) window lies inside the events. Counting the early ones too would bias the rates upwards, as a
conversion is known as soon as it happens but a non-conversion only when the window closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY
from nextbest.data.text import equals_mask
from nextbest.errors import NextbestError
from nextbest.journeys.labels import LabelRules
from nextbest.model.calibration import expected_calibration_error
from nextbest.monitoring.reference import (
    SCORE,
    Binning,
    InputReference,
    Observations,
    model_inputs,
    sample_rows,
    with_trained_kinds,
)
from nextbest.monitoring.sources import SKIPPED, ServedDecisions
from nextbest.monitoring.stats import (
    DriftThresholds,
    calibration_in_the_large,
    homogeneity_p_value,
    proportion_drop_p_value,
    psi,
    rate_differences,
    reliability_bins,
)
from nextbest.scoring.decision_log import with_outcomes

LEVEL = 0.95
WEEK_DAYS = 7
NO_PROFILES = "no customer profiles (--customers, or with --store the store's)"


@dataclass(frozen=True)
class MonitorOptions:
    """How `monitor` reads outcomes and when it alerts.

    Attributes:
        rules: how conversion and churn are read off the events after a decision (the training's rules).
        quiet_days: no conversion event for this many days before the end of the events alerts.
        drift: when an input's shift is reported and alerts.
        calibration_bins: equal-width bins of the reliability table.
        calibration_tolerance: observed over expected conversions off by more than this share alerts,
            when the difference is also significant at `alpha`.
        success_drop: a relative fall of the conversion rate from one week to the next that alerts, when
            also significant at `alpha`.
        alpha: significance level of the week-on-week and calibration tests.
        min_decisions: fewer closed decisions than this in a week (or in all) are too few to alert on.
        resamples: bootstrap resamples of the lift's interval.
        sample: the most decisions whose inputs are read for drift (a seeded sample beyond).
        seed: seed of the bootstrap and of the drift sample.
    """

    rules: LabelRules = field(default_factory=LabelRules)
    quiet_days: float = 7.0
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    calibration_bins: int = 10
    calibration_tolerance: float = 0.2
    success_drop: float = 0.1
    alpha: float = 0.001
    min_decisions: int = 100
    resamples: int = 1000
    sample: int = 200_000
    seed: int = 0


@dataclass(frozen=True)
class Served:
    """The served decisions as arrays, outcomes known only where their window has closed (else NaN)."""

    customer: np.ndarray  # [N] int64 code of each decision's customer (the bootstrap's unit)
    day: np.ndarray  # [N] int64 days since the Unix epoch
    action: np.ndarray  # [N] int64 index into `actions`
    actions: list[str]
    control: np.ndarray  # [N] bool
    converted: np.ndarray  # [N] float64, NaN while open
    churned: np.ndarray  # [N] float64, NaN while open
    served_p_conversion: np.ndarray  # [N] float64, NaN where the answer did not carry it

    @classmethod
    def read(cls, decisions: pa.Table, events: EventLog, rules: LabelRules) -> Served:
        observed = with_outcomes(decisions, events, rules)
        as_of = np.asarray(decisions.column("timestamp").combine_chunks().cast(pa.int64()), dtype=np.int64)
        until = int(events.timestamps.max()) + 1 if events.num_events else 0
        actions, action = np.unique(_strings(decisions, "action"), return_inverse=True)
        _, customer = np.unique(_strings(decisions, "customer_id"), return_inverse=True)
        return cls(
            customer=customer.astype(np.int64),
            day=as_of // MICROS_PER_DAY,
            action=action.astype(np.int64),
            actions=[str(a) for a in actions],
            control=np.asarray(decisions.column("control").combine_chunks().fill_null(False), dtype=bool),
            converted=_closed(_floats(observed, "converted"), as_of, rules.conversion_horizon_days, until),
            churned=_closed(_floats(observed, "churned"), as_of, rules.churn_inactivity_days, until),
            served_p_conversion=_floats(decisions, "served_p_conversion"),
        )


def _strings(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).combine_chunks().to_numpy(zero_copy_only=False), dtype=object)


def _floats(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks().cast(pa.float64()).fill_null(np.nan)
    return np.asarray(values, dtype=np.float64)


def _closed(outcome: np.ndarray, as_of: np.ndarray, days: float, until: int) -> np.ndarray:
    """`outcome` where the decision's window of `days` ended inside the events, else NaN."""
    return np.where(as_of + int(days * MICROS_PER_DAY) <= until, outcome, np.nan)


def monitor(
    served: ServedDecisions,
    events: EventLog,
    reference: InputReference | str,
    customers: pa.Table | None = None,
    options: MonitorOptions | None = None,
) -> dict[str, Any]:
    """The monitoring summary of served decisions (`summary.json`'s content).

    Args:
        served: the served decisions, from a decision log or a store.
        events: the events, those after the decisions included (outcomes are read off them).
        reference: the model's training reference, or why there is none (the drift section says it).
        customers: the customers table, for the profile inputs' drift.
        options: how outcomes are read and when alerts fire.

    Raises:
        NextbestError: no decision the model served.
    """
    options = options or MonitorOptions()
    if served.table.num_rows == 0:
        skipped = ", ".join(f"{n:,} {SKIPPED[kind]}" for kind, n in served.skipped.items())
        raise NextbestError("no decision the model served" + (f" ({skipped})" if skipped else ""))
    arrays = Served.read(served.table, events, options.rules)
    summary: dict[str, Any] = {
        "decisions": decision_mix(arrays, served),
        "outcomes": outcomes(arrays, options),
        "lift": lift(arrays, options, served.not_recorded.get("control")),
        "calibration": calibration(arrays, options.calibration_bins, served.not_recorded),
        "drift": drift(served, events, reference, customers, options),
    }
    summary["alerts"] = alerts(summary, arrays, events, options)
    return summary


def decision_mix(served: Served, source: ServedDecisions) -> dict[str, Any]:
    """How many decisions each action got, in all and per day, what the source held that is not a
    decision of the model, and what it does not record."""
    days, day_index = np.unique(served.day, return_inverse=True)
    width = len(served.actions)
    grid = np.bincount(day_index * width + served.action, minlength=len(days) * width).reshape(-1, width)
    counted = pc.value_counts(source.table.column("model_version").drop_null())
    versions = zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    return {
        "total": len(served.day),
        "control": None if "control" in source.not_recorded else int(served.control.sum()),
        "by_action": dict(zip(served.actions, grid.sum(axis=0).tolist(), strict=True)),
        "by_day": [
            {
                "day": _date(day),
                "decisions": int(row.sum()),
                "by_action": dict(zip(served.actions, row.tolist(), strict=True)),
            }
            for day, row in zip(days, grid, strict=True)
        ],
        "model_versions": dict(sorted(versions)),
        "skipped": source.skipped,
        "not_recorded": source.not_recorded,
    }


def _date(day: int | np.integer[Any]) -> str:
    return datetime.fromtimestamp(int(day) * 86_400, UTC).date().isoformat()


def outcomes(served: Served, options: MonitorOptions) -> dict[str, Any]:
    """Realised conversion and churn per action, and per day and week, over the decisions whose window
    has closed; how many are still open."""
    by_action = [
        {"action": name, **_rates(served, served.action == a)} for a, name in enumerate(served.actions)
    ]
    return {
        "conversion_event": options.rules.conversion_event,
        "conversion_horizon_days": options.rules.conversion_horizon_days,
        "churn_inactivity_days": options.rules.churn_inactivity_days,
        "open": {
            "conversion": int(np.isnan(served.converted).sum()),
            "churn": int(np.isnan(served.churned).sum()),
        },
        "overall": _rates(served, np.ones(len(served.day), dtype=bool)),
        "by_action": by_action,
        "by_day": _conversion_series(served, served.day),
        "by_week": _conversion_series(served, _week(served)),
    }


def _rates(served: Served, rows: np.ndarray) -> dict[str, Any]:
    converted, churned = served.converted[rows], served.churned[rows]
    known_conversion, known_churn = ~np.isnan(converted), ~np.isnan(churned)
    return {
        "decisions": int(rows.sum()),
        "conversion_closed": int(known_conversion.sum()),
        "conversions": int(np.nansum(converted)),
        "conversion_rate": _mean(converted[known_conversion]),
        "churn_closed": int(known_churn.sum()),
        "churned": int(np.nansum(churned)),
        "churn_rate": _mean(churned[known_churn]),
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _week(served: Served) -> np.ndarray:
    """Each decision's week, counted back in whole weeks from the last day with a closed decision (so
    that the latest week is a full one)."""
    closed = ~np.isnan(served.converted)
    last = served.day[closed].max() if closed.any() else served.day.max()
    return last - (last - served.day) // WEEK_DAYS * WEEK_DAYS - (WEEK_DAYS - 1)


def _conversion_series(served: Served, period: np.ndarray) -> list[dict[str, Any]]:
    """Per period (its first day), the closed decisions and their conversion rate."""
    closed = ~np.isnan(served.converted)
    starts, index = np.unique(period[closed], return_inverse=True)
    trials = np.bincount(index, minlength=len(starts))
    successes = np.bincount(index, weights=served.converted[closed], minlength=len(starts))
    return [
        {"start": _date(s), "closed": int(n), "conversions": int(k), "conversion_rate": float(k / n)}
        for s, n, k in zip(starts, trials, successes, strict=True)
    ]


def lift(served: Served, options: MonitorOptions, unknown: str | None = None) -> dict[str, Any]:
    """The policy's conversion and churn rates minus the control group's, with 95% bootstrap intervals
    over customers (a customer's decisions move together); `unknown`: why control-group membership is
    not known, when it is not."""
    if unknown is not None:
        return {"level": LEVEL, "available": False, "reason": unknown}
    groups = {"policy": ~served.control, "control": served.control}
    result: dict[str, Any] = {
        "level": LEVEL,
        **{name: _rates(served, rows) for name, rows in groups.items()},
    }
    if not served.control.any():
        result["available"] = False
        result["reason"] = "no decision was served to a control group (catalog `control: {share: ...}`)"
        return result
    result["available"] = True
    outcomes = {"conversion": served.converted, "churn": served.churned}
    pairs = [
        (
            _per_customer(served.customer, values, groups["policy"]),
            _per_customer(served.customer, values, groups["control"]),
        )
        for values in outcomes.values()
    ]
    estimates = rate_differences(pairs, resamples=options.resamples, level=LEVEL, seed=options.seed)
    for outcome, estimate in zip(outcomes, estimates, strict=True):
        result[f"{outcome}_rate_difference"] = estimate.to_dict()
    return result


def _per_customer(
    customer: np.ndarray, outcome: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(successes, closed decisions) per customer among `rows`."""
    closed = rows & ~np.isnan(outcome)
    units = int(customer.max()) + 1
    trials = np.bincount(customer[closed], minlength=units)
    successes = np.bincount(customer[closed], weights=outcome[closed], minlength=units)
    return successes, trials


def calibration(served: Served, bins: int, not_recorded: Mapping[str, str]) -> dict[str, Any]:
    """The served action's P(conversion) against the closed decisions' conversions, where the source
    records it."""
    if "served_p_conversion" in not_recorded:
        return {"available": False, "message": not_recorded["served_p_conversion"]}
    known = ~np.isnan(served.converted)
    with_probability = known & ~np.isnan(served.served_p_conversion)
    p, y = served.served_p_conversion[with_probability], served.converted[with_probability]
    ratio, p_value = calibration_in_the_large(p, y)
    return {
        "available": True,
        "decisions": int(with_probability.sum()),
        "without_probability": int((known & ~with_probability).sum()),
        "mean_predicted": _mean(p),
        "observed_rate": _mean(y),
        "observed_over_expected": None if np.isnan(ratio) else ratio,
        "p_value": p_value,
        "expected_calibration_error": None if not len(y) else expected_calibration_error(p, y, bins),
        "bins": reliability_bins(p, y, bins),
    }


def drift(
    served: ServedDecisions,
    events: EventLog,
    reference: InputReference | str,
    customers: pa.Table | None,
    options: MonitorOptions,
) -> dict[str, Any]:
    """Each model input's PSI against the training reference, its test p-value and status."""
    if isinstance(reference, str):
        return {"available": False, "message": reference, "inputs": {}}
    requests = served.table.select(["customer_id", "timestamp", "p_conversion"]).rename_columns(
        ["customer_id", "as_of", "p_conversion"]
    )
    sample = sample_rows(requests, options.sample, options.seed)
    score_unknown = served.not_recorded.get("p_conversion")
    scores = None if score_unknown else _floats(sample, "p_conversion")
    if customers is not None:
        customers = with_trained_kinds(customers, reference)
    current = model_inputs(events, sample, reference.max_events, customers, scores)
    # Only the score and profile inputs can be absent: histories are always read.
    reasons = {SCORE: score_unknown} if score_unknown else {}
    no_profile = NO_PROFILES if customers is None else "not an attribute of the customers' profiles"
    inputs = {
        name: _input_drift(
            binning, reference.counts[name], current.get(name), options.drift, reasons.get(name, no_profile)
        )
        for name, binning in reference.bins.items()
    }
    return {
        "available": True,
        "reference_requests": reference.requests,
        "decisions_read": sample.num_rows,
        "thresholds": vars(options.drift),
        "inputs": inputs,
    }


def _input_drift(
    binning: Binning,
    reference: np.ndarray,
    observed: Observations | None,
    thresholds: DriftThresholds,
    absent: str,
) -> dict[str, Any]:
    if observed is None:
        return {"status": "not measured", "reason": absent}
    if (binning.categories is None) == isinstance(observed, dict):
        kinds = ("numbers", "categories") if binning.categories is None else ("categories", "numbers")
        return {
            "status": "not measured",
            "reason": "{} at training, {} here: its kind changed".format(*kinds),
        }
    current = binning.counts(observed)
    value = psi(reference, current) if current.sum() else float("nan")
    p_value = homogeneity_p_value(reference, current)
    return {
        "psi": None if np.isnan(value) else value,
        "p_value": p_value,
        "status": thresholds.status(value, p_value, int(current.sum())),
        "bins": [
            {"bin": label, "reference": int(r), "current": int(c)}
            for label, r, c in zip(binning.labels(), reference, current, strict=True)
        ],
    }


def alerts(
    summary: dict[str, Any], served: Served, events: EventLog, options: MonitorOptions
) -> list[dict[str, Any]]:
    """The alerts that fire (`name`, `severity`, `message`; drift alerts name their `input`)."""
    fired = [
        *_no_responses(events, served, options),
        *_success_falling(summary["outcomes"]["by_week"], options),
        *_calibration_off(summary["calibration"], options),
    ]
    for name, entry in summary["drift"]["inputs"].items():
        if entry["status"] == "drifted":
            fired.append(
                {
                    "name": "input_drift",
                    "severity": "warning",
                    "input": name,
                    "message": f"{name} has drifted from training: PSI {entry['psi']:.3f} "
                    f"(p = {entry['p_value']:.2g})",
                }
            )
    return fired


def _no_responses(events: EventLog, served: Served, options: MonitorOptions) -> list[dict[str, Any]]:
    """No conversion event for `quiet_days` before the end of the events (or of the decisions)."""
    event = options.rules.conversion_event
    end = int(served.day.max() + 1) * MICROS_PER_DAY
    if events.num_events:
        end = max(end, int(events.timestamps.max()))
    is_conversion = np.zeros(0, dtype=bool)
    if events.num_events:
        is_conversion = events.sorted_values(equals_mask(events.source.column("event_type"), event))
    if not is_conversion.any():
        message = f"no {event} event at all in the events"
    else:
        quiet = (end - int(events.timestamps[is_conversion].max())) / MICROS_PER_DAY
        if quiet < options.quiet_days:
            return []
        message = f"no {event} event for {quiet:.1f} days before the end of the events"
    return [{"name": "no_responses", "severity": "critical", "message": message}]


def _success_falling(weeks: list[dict[str, Any]], options: MonitorOptions) -> list[dict[str, Any]]:
    """The latest full week's conversion rate fell from the week before by `success_drop` or more,
    significantly."""
    if len(weeks) < 2:
        return []
    before, after = weeks[-2], weeks[-1]
    if min(before["closed"], after["closed"]) < options.min_decisions or before["conversion_rate"] == 0:
        return []
    fall = 1 - after["conversion_rate"] / before["conversion_rate"]
    p_value = proportion_drop_p_value(
        (before["conversions"], before["closed"]), (after["conversions"], after["closed"])
    )
    if fall < options.success_drop or p_value >= options.alpha:
        return []
    message = (
        f"conversion rate fell {fall:.0%} week on week: {before['conversion_rate']:.2%} in the week of "
        f"{before['start']}, {after['conversion_rate']:.2%} in the week of {after['start']} "
        f"(p = {p_value:.2g})"
    )
    return [{"name": "success_rate_falling", "severity": "warning", "message": message}]


def _calibration_off(entry: dict[str, Any], options: MonitorOptions) -> list[dict[str, Any]]:
    """Observed conversions off the served probabilities' expectation by `calibration_tolerance` or more,
    significantly."""
    if not entry["available"]:
        return []
    ratio = entry["observed_over_expected"]
    if entry["decisions"] < options.min_decisions or ratio is None:
        return []
    if abs(ratio - 1) < options.calibration_tolerance or entry["p_value"] >= options.alpha:
        return []
    message = (
        f"served P(conversion) is off: {entry['observed_rate']:.2%} converted against "
        f"{entry['mean_predicted']:.2%} predicted ({ratio:.2f}x, p = {entry['p_value']:.2g}, over "
        f"{entry['decisions']:,} closed decisions)"
    )
    return [{"name": "calibration_off", "severity": "warning", "message": message}]
