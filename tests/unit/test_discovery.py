"""Journey discovery: journeys cut at conversions, paths, funnel, stalls, transitions, Sankey flows, the
summary's documented keys and the HTML report."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextbest.cli import main
from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.discovery import summary as summary_module
from nextbest.discovery.journeys import (
    cut_journeys,
    funnel,
    sankey,
    stalls,
    time_to_convert,
    top_paths,
    transitions,
)
from nextbest.discovery.model_based import kmeans
from nextbest.discovery.report import duration, render_report
from nextbest.discovery.summary import DiscoveryOptions, summarise, write_report
from nextbest.simulate import SimulationConfig, simulate, write_world

# customer, hours after the start, event type, channel
TOY = [
    ("a", 0, "page_view", "web"),
    ("a", 1, "page_view", "web"),
    ("a", 2, "add_to_cart", "web"),
    ("a", 5, "purchase", "web"),
    ("a", 30, "email_open", "email"),
    ("b", 0, "email_open", "email"),
    ("b", 3, "page_view", "web"),
    ("b", 4, "purchase", "web"),
    ("c", 0, "add_to_cart", "app"),
    ("c", 1, "page_view", "app"),
    ("d", 0, "purchase", "store"),
]


def toy_log() -> EventLog:
    start = int(np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64))
    columns = list(zip(*TOY, strict=True))
    return load_events(
        pa.table(
            {
                "customer_id": list(columns[0]),
                "timestamp": pa.array(
                    [start + h * 3_600_000_000 for h in columns[1]], pa.timestamp("us", "UTC")
                ),
                "event_type": list(columns[2]),
                "channel": list(columns[3]),
            }
        )
    )


def test_a_conversion_ends_a_journey_and_the_next_starts_after_it() -> None:
    journeys = cut_journeys(toy_log(), "purchase")
    # a: [page_view, page_view, add_to_cart] → purchase, then [email_open]; b: [email_open, page_view] →
    # purchase; c: [add_to_cart, page_view]; d: [] → purchase.
    assert journeys.converted.tolist() == [True, False, True, False, True]
    assert np.diff(journeys.offsets).tolist() == [3, 1, 2, 2, 0]
    names, codes = journeys.labels("event_type")
    a1, a2, b = ["page_view", "page_view", "add_to_cart"], ["email_open"], ["email_open", "page_view"]
    assert [names[code] for code in codes] == [*a1, *a2, *b, "add_to_cart", "page_view"]
    paths = journeys.paths("channel")
    assert [paths.names[c] for c in paths.codes] == [
        "web",
        "email",
        "email",
        "web",
        "app",
    ]  # repeats collapsed


def test_top_paths_count_journeys_and_conversions() -> None:
    paths = cut_journeys(toy_log(), "purchase").paths("channel")
    found = {" > ".join(p["path"]): (p["journeys"], p["conversions"]) for p in top_paths(paths)}
    assert found == {"web": (1, 1), "email": (1, 0), "email > web": (1, 1), "app": (1, 0), "": (1, 1)}


def test_the_funnel_counts_stages_reached_in_order() -> None:
    journeys = cut_journeys(toy_log(), "purchase")
    stages = funnel(journeys, ["page_view", "add_to_cart", "purchase"])
    # page_view: a1, b, c; then add_to_cart after it: a1 only (c's came before its page view); purchase: a1.
    assert [s["journeys"] for s in stages] == [3, 1, 1]
    assert stages[1]["drop_off"] == pytest.approx(2 / 3)
    assert stages[0]["share_of_all"] == pytest.approx(3 / 5)


def test_time_to_convert_runs_from_the_first_touch_to_the_conversion() -> None:
    figures = time_to_convert(cut_journeys(toy_log(), "purchase"))
    assert figures["journeys"] == 2  # d converted without a touch before
    assert figures["quantiles_hours"]["p50"] == pytest.approx(4.5)  # a: 5 h, b: 4 h
    assert sum(row["journeys"] for row in figures["histogram"]) == 2


def test_stalls_are_the_last_touches_of_unconverted_journeys_that_went_quiet() -> None:
    journeys = cut_journeys(toy_log(), "purchase")
    found = {row["touch"]: row for row in stalls(journeys, "event_type", quiet_days=0)}
    assert found["email_open"]["stalled_journeys"] == 1
    assert found["email_open"]["stall_rate"] == pytest.approx(1 / 2)  # a's second journey; not b's
    assert found["page_view"]["stall_rate"] == pytest.approx(1 / 3)  # c, of a1, b and c
    # The log ends at hour 30: a day of quiet leaves a's last journey (hour 30) in progress, not c (hour 1).
    quiet = {row["touch"]: row for row in stalls(journeys, "event_type", quiet_days=1)}
    assert set(quiet) == {"page_view"}
    assert quiet["page_view"]["stall_rate"] == pytest.approx(1 / 3)


def test_transitions_count_consecutive_touches_within_journeys() -> None:
    paths = cut_journeys(toy_log(), "purchase").paths("channel", collapse_repeats=False)
    found = transitions(paths)
    labels = found["labels"]
    counts = np.array(found["counts"])
    assert counts[labels.index("web"), labels.index("web")] == 2  # a's two web → web steps
    assert counts[labels.index("email"), labels.index("web")] == 1
    assert counts.sum() == 8 - 5 + 1  # touches minus journeys with touches
    switch = next(s for s in found["switches"] if (s["from"], s["to"]) == ("email", "web"))
    assert switch["conversion_rate"] == 1.0


def test_sankey_flows_are_conserved() -> None:
    log = load_events(simulate(SimulationConfig(n_customers=300, seed=2)).events)
    journeys = cut_journeys(log, "purchase")
    paths = journeys.paths("channel")
    flows = sankey(paths, steps=4, top=3)
    nodes, links = flows["nodes"], flows["links"]
    inflow = np.zeros(len(nodes))
    outflow = np.zeros(len(nodes))
    for link in links:
        outflow[link["source"]] += link["journeys"]
        inflow[link["target"]] += link["journeys"]
        assert nodes[link["target"]]["step"] == nodes[link["source"]]["step"] + 1
    with_touch = int((np.diff(paths.offsets) > 0).sum())
    first = [i for i, n in enumerate(nodes) if n["step"] == 0]
    assert outflow[first].sum() == with_touch
    ends = [i for i, n in enumerate(nodes) if n["label"] in ("converted", "not converted")]
    assert inflow[ends].sum() == with_touch  # every journey ends once
    middle = [i for i in range(len(nodes)) if i not in ends and i not in first]
    np.testing.assert_array_equal(inflow[middle], outflow[middle])
    assert sum(1 for n in nodes if n["step"] == 1 and n["label"] not in ("converted", "not converted")) <= 4


def test_kmeans_separates_clear_clusters_deterministically() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (50, 3)), rng.normal(5, 0.1, (50, 3))])
    first, again = kmeans(points, 2, seed=1), kmeans(points, 2, seed=1)
    np.testing.assert_array_equal(first, again)
    assert len(set(first[:50])) == len(set(first[50:])) == 1
    assert first[0] != first[-1]


def documented_keys() -> set[str]:
    """The top-level keys that the summary module's docstring documents."""
    doc = summary_module.__doc__ or ""
    return {line.split("`")[1] for line in doc.splitlines() if line.startswith("- `")}


def test_the_summary_has_every_documented_key_and_no_nan(tmp_path: Path) -> None:
    log = load_events(simulate(SimulationConfig(n_customers=400, seed=3)).events)
    summary = summarise(log, DiscoveryOptions(markov_orders=(1, 2)))
    assert documented_keys() - {"with a model: `moments_of_truth`"} <= summary.keys() | {"device_transitions"}
    assert {"overview", "paths", "sankey", "funnel", "attribution", "seconds"} <= summary.keys()
    assert [m["order"] for m in summary["attribution"]["markov_orders"]] == [1, 2]
    text = json.dumps(summary, allow_nan=False)  # raises on NaN or infinity
    assert not math.isnan(summary["overview"]["conversion_rate"])
    page, numbers = write_report(summary, tmp_path / "report")
    assert json.loads(numbers.read_text()) == json.loads(text)
    assert_well_formed(page.read_text())


class _Checker(HTMLParser):
    VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "rect", "path"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open, f"</{tag}> closes nothing"
        assert self.open[-1] == tag, f"</{tag}> closes <{self.open[-1]}>"
        self.open.pop()


def assert_well_formed(page: str) -> None:
    checker = _Checker()
    checker.feed(page)
    assert checker.open == []
    assert {"svg", "table", "h2"} <= checker.seen
    assert "<script" not in page  # self-contained: nothing runs, nothing is fetched
    assert "http" not in page


def test_labels_are_escaped_in_the_report() -> None:
    log = toy_log()
    hostile = log.source.set_column(3, "channel", pa.array(["<script>x</script>"] * log.source.num_rows))
    summary = summarise(load_events(hostile), DiscoveryOptions())
    page = render_report(summary)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_journeys_command_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_world(simulate(SimulationConfig(n_customers=200, seed=4)), tmp_path / "world")
    out = tmp_path / "report"
    args = ["journeys", "--events", str(tmp_path / "world" / "events.parquet"), "--out", str(out)]
    assert main([*args, "--funnel", "page_view, add_to_cart ,purchase", "--markov-order", "2"]) == 0
    assert "journeys of 200 customers" in capsys.readouterr().out
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["funnel_stages"] == ["page_view", "add_to_cart", "purchase"]
    assert summary["attribution"]["markov"]["order"] == 2
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert main([*args, "--markov-order", "0"]) == 1
    assert "--markov-order must be at least 1" in capsys.readouterr().err
    assert main([*args, "--touch-column", "device"]) == 1
    assert "touch column 'device': the events have no such column" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("hours", "shown"),
    [
        (0.0, "0 min"),
        (0.25, "15 min"),
        (0.999, "1 h"),
        (1.0, "1 h"),
        (5.21, "5.2 h"),
        (24.0, "24 h"),
        (47.9, "47.9 h"),
        (72.0, "3 days"),
        (60.0, "2.5 days"),
        (1512.47, "63 days"),
        (4092.6, "171 days"),
    ],
)
def test_durations_read_as_people_say_them(hours: float, shown: str) -> None:
    assert duration(hours) == shown


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_a_duration_has_one_unit_and_at_most_one_decimal(hours: float) -> None:
    assert re.fullmatch(r"\d+(\.\d)? (min|h|days)", duration(hours))


def test_the_time_to_convert_is_shown_in_human_durations() -> None:
    page = render_report(summarise(toy_log(), DiscoveryOptions()))
    assert "median 4.5 h" in page  # a: 5 h, b: 4 h
    assert "under 1 h" in page  # the histogram's first and last bins
    assert "over 90 days" in page
    assert not re.search(r"\d\.\d{2,} h", page)


def test_the_funnel_says_why_its_last_stage_is_not_the_conversion_rate() -> None:
    summary = summarise(toy_log(), DiscoveryOptions(funnel_stages=("page_view", "add_to_cart", "purchase")))
    # 3 of 5 journeys converted (a1, b, d); only a1 went page_view -> add_to_cart -> purchase.
    assert summary["overview"]["conversion_rate"] == pytest.approx(3 / 5)
    assert summary["funnel"][-1]["share_of_all"] == pytest.approx(1 / 5)
    page = render_report(summary)
    assert "3 journeys converted in all (60.0%" in page
    assert "2 of them by another route" in page
    unfinished = summarise(toy_log(), DiscoveryOptions(funnel_stages=("page_view", "add_to_cart")))
    assert "by another route" not in render_report(unfinished)  # a funnel that does not end in conversion
