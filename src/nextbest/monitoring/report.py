"""The monitoring report: one self-contained HTML page (inline SVG and CSS, no script, nothing fetched),
drawn from `summary.json`'s numbers, beside the file itself; the journey report's style and tables."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nextbest.discovery.report import PALETTE, STYLE, section, table
from nextbest.monitoring.sources import SKIPPED

CHART_WIDTH, CHART_HEIGHT, MARGIN = 900, 220, 48


def write_report(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Writes `out/report.html` and `out/summary.json` (NaN written as null); returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    page, numbers = out / "report.html", out / "summary.json"
    page.write_text(render_report(summary), encoding="utf-8")
    numbers.write_text(json.dumps(_finite(summary), indent=1), encoding="utf-8")
    return page, numbers


def _finite(value: Any) -> Any:
    """`value` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def render_report(summary: dict[str, Any]) -> str:
    """The HTML page of a monitoring `summary` (see `nextbest.monitoring.monitor`)."""
    decisions, outcomes = summary["decisions"], summary["outcomes"]
    sections = [
        "<h1>Decision monitoring</h1>",
        _alerts(summary["alerts"]),
        section("Decisions", _skipped_caption(decisions), _decisions_chart(decisions)),
        section(
            "Outcomes", _outcomes_caption(outcomes), _outcomes_chart(outcomes) + _outcomes_table(outcomes)
        ),
        section(
            "Lift against the control group", _lift_caption(summary["lift"]), _lift_table(summary["lift"])
        ),
        section(
            "Calibration",
            _calibration_caption(summary["calibration"]),
            _calibration_table(summary["calibration"]),
        ),
        section(
            "Drift of the model's inputs", _drift_caption(summary["drift"]), _drift_table(summary["drift"])
        ),
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Decision monitoring</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def _alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "<p><b>No alert.</b></p>"
    rows = [(a["severity"], a["name"], a["message"]) for a in alerts]
    return f"<h2>Alerts ({len(alerts)})</h2>" + table(("severity", "alert", "message"), rows)


def _skipped_caption(decisions: dict[str, Any]) -> str:
    control = "unknown" if decisions["control"] is None else f"{decisions['control']:,}"
    caption = f"{decisions['total']:,} decisions served ({control} to the control group), per day and action."
    if decisions["skipped"]:
        counts = ", ".join(f"{n:,} {SKIPPED[kind]}" for kind, n in decisions["skipped"].items())
        caption += f" Not counted: {counts}."
    if decisions["not_recorded"]:
        caption += " Not recorded: " + "; ".join(decisions["not_recorded"].values()) + "."
    return caption


def _decisions_chart(decisions: dict[str, Any]) -> str:
    days = [row["day"] for row in decisions["by_day"]]
    series = {
        action: [float(row["by_action"][action]) for row in decisions["by_day"]]
        for action in decisions["by_action"]
    }
    return _line_chart(days, series, "decisions per day")


def _outcomes_caption(outcomes: dict[str, Any]) -> str:
    still_open = outcomes["open"]
    return (
        f"Realised rates over decisions whose outcome window has closed: a {outcomes['conversion_event']} "
        f"within {outcomes['conversion_horizon_days']:g} days, no activity for "
        f"{outcomes['churn_inactivity_days']:g} days. Still open: {still_open['conversion']:,} decisions "
        f"for conversion, {still_open['churn']:,} for churn. The chart: the conversion rate per week."
    )


def _outcomes_chart(outcomes: dict[str, Any]) -> str:
    weeks = outcomes["by_week"]
    return _line_chart(
        [w["start"] for w in weeks], {"conversion rate": [w["conversion_rate"] for w in weeks]}, "per week"
    )


def _outcomes_table(outcomes: dict[str, Any]) -> str:
    rows = [
        (r["action"], f"{r['decisions']:,}", *_rate_cells(r))
        for r in [*outcomes["by_action"], {"action": "all", **outcomes["overall"]}]
    ]
    header = ("action", "decisions", "closed (conv.)", "conversion rate", "closed (churn)", "churn rate")
    return table(header, rows, numeric=(1, 2, 3, 4, 5))


def _rate_cells(rates: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        f"{rates['conversion_closed']:,}",
        _percent(rates["conversion_rate"]),
        f"{rates['churn_closed']:,}",
        _percent(rates["churn_rate"]),
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2%}"


def _lift_caption(lift: dict[str, Any]) -> str:
    if not lift["available"]:
        return f"Not measured: {lift['reason']}."
    return (
        "The policy's realised rates minus the control group's (a random eligible action), with "
        f"{lift['level']:.0%} bootstrap intervals over customers."
    )


def _lift_table(lift: dict[str, Any]) -> str:
    if "policy" not in lift:  # the groups are not known
        return ""
    rows: list[Sequence[str]] = [
        (group, f"{lift[group]['decisions']:,}", *_rate_cells(lift[group])) for group in ("policy", "control")
    ]
    header = ("group", "decisions", "closed (conv.)", "conversion rate", "closed (churn)", "churn rate")
    body = table(header, rows, numeric=(1, 2, 3, 4, 5))
    if lift["available"]:
        differences = [
            (outcome, *(_signed(lift[f"{outcome}_rate_difference"][k]) for k in ("value", "low", "high")))
            for outcome in ("conversion", "churn")
        ]
        body += table(("rate", "policy minus control", "low", "high"), differences, numeric=(1, 2, 3))
    return body


def _signed(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.2%}"


def _calibration_caption(calibration: dict[str, Any]) -> str:
    if not calibration["available"]:
        return f"Not measured: {calibration['message']}."
    if not calibration["decisions"]:
        return "No closed decision with a served probability yet."
    return (
        f"The served action's P(conversion) against what happened, over {calibration['decisions']:,} closed "
        f"decisions ({calibration['without_probability']:,} closed ones without a served probability): "
        f"{_percent(calibration['mean_predicted'])} predicted, {_percent(calibration['observed_rate'])} "
        f"observed, expected calibration error {calibration['expected_calibration_error']:.3f}."
    )


def _calibration_table(calibration: dict[str, Any]) -> str:
    if not calibration["available"]:
        return ""
    rows = [
        (
            f"({b['low']:.1f}, {b['high']:.1f}]",
            f"{b['decisions']:,}",
            _percent(b["mean_predicted"]),
            _percent(b["observed_rate"]),
        )
        for b in calibration["bins"]
    ]
    return table(("P(conversion)", "decisions", "mean predicted", "observed"), rows, numeric=(1, 2, 3))


def _drift_caption(drift: dict[str, Any]) -> str:
    if not drift["available"]:
        return f"Not measured: {drift['message']}"
    limits = drift["thresholds"]
    return (
        f"Each input's population stability index (PSI) against the model's training reference "
        f"({drift['reference_requests']:,} requests), over {drift['decisions_read']:,} decisions. Shifted: "
        f"PSI ≥ {limits['shifted']}; drifted (alerts): PSI ≥ {limits['drifted']}; both only when a "
        f"chi-square test rejects equal distributions at {limits['alpha']}."
    )


def _drift_table(drift: dict[str, Any]) -> str:
    rows = [
        (
            name,
            entry["status"],
            "n/a" if entry.get("psi") is None else f"{entry['psi']:.3f}",
            "n/a" if "p_value" not in entry else f"{entry['p_value']:.2g}",
        )
        for name, entry in drift["inputs"].items()
    ]
    return table(("input", "status", "PSI", "p-value"), rows, numeric=(2, 3)) if rows else ""


def _line_chart(labels: list[str], series: Mapping[str, Sequence[float | None]], unit: str) -> str:
    """Lines over time (x: the labels, evenly spaced), a legend and the y range."""
    values = [v for line in series.values() for v in line if v is not None]
    if not labels or not values:
        return "<p>Nothing to show.</p>"
    top = max(values) or 1.0
    step = (CHART_WIDTH - 2 * MARGIN) / max(len(labels) - 1, 1)

    def point(i: int, value: float) -> str:
        return (
            f"{MARGIN + i * step:.1f},{CHART_HEIGHT - MARGIN - (CHART_HEIGHT - 2 * MARGIN) * value / top:.1f}"
        )

    lines, legend = [], []
    for k, (name, line) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = " ".join(point(i, v) for i, v in enumerate(line) if v is not None)
        lines.append(
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{points}'>"
            f"<title>{html.escape(name)}</title></polyline>"
        )
        legend.append(f"<tspan fill='{colour}'>■ {html.escape(name)} </tspan>")
    axis = (
        f"<text x='{MARGIN}' y='{CHART_HEIGHT - MARGIN + 16}'>{html.escape(labels[0])}</text>"
        f"<text x='{CHART_WIDTH - MARGIN}' y='{CHART_HEIGHT - MARGIN + 16}' text-anchor='end'>"
        f"{html.escape(labels[-1])}</text>"
        f"<text x='4' y='{MARGIN - 6}'>{top:.4g} {html.escape(unit)}</text>"
        f"<line x1='{MARGIN}' y1='{CHART_HEIGHT - MARGIN}' x2='{CHART_WIDTH - MARGIN}' "
        f"y2='{CHART_HEIGHT - MARGIN}' stroke='#999'/>"
        f"<text x='{MARGIN}' y='{CHART_HEIGHT - 8}'>{''.join(legend)}</text>"
    )
    return f"<svg width='{CHART_WIDTH}' height='{CHART_HEIGHT}' role='img'>{''.join(lines)}{axis}</svg>"
