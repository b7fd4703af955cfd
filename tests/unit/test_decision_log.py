"""The decision log: what the service appends is what `nextbest evaluate` reads back, crash or not."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from nextbest.data import load_events
from nextbest.decisioning import ActionCatalog
from nextbest.errors import DataContractError
from nextbest.journeys.labels import LabelRules
from nextbest.scoring.decision_log import (
    DecisionLogWriter,
    is_decision_log,
    read_decision_log,
    with_outcomes,
)
from nextbest.scoring.records import fallback_answer
from nextbest.scoring.schemas import RankedAction, RankResponse, ScoringRequest


def answer(customer: str, action: str | None, probability: float | None) -> RankResponse:
    ranked = (
        []
        if action is None
        else [RankedAction(action=action, rank=1, score=1.0, uplift=0.5, p_conversion=0.2, p_churn=0.1)]
    )
    return RankResponse(
        customer_id=customer,
        as_of="2026-03-01T10:00:00+00:00",
        model_version="4",
        p_conversion=0.1,
        p_churn=0.2,
        top_action=action,
        chosen_action=action,
        chosen_probability=probability,
        actions=ranked,
        suppressed=[],
    )


def request(customer: str) -> ScoringRequest:
    return ScoringRequest(customer_id=customer, events=[], as_of="2026-03-01T10:00:00Z")


def test_served_decisions_round_trip_across_rotated_files(tmp_path: Path) -> None:
    writer = DecisionLogWriter(tmp_path / "log", rotate_rows=2)
    customers = [f"c{i}" for i in range(5)]
    writer.append([request(c) for c in customers], [answer(c, "email", 0.9) for c in customers])
    writer.append([request("none")], [answer("none", None, None)])  # nothing was eligible
    writer.close()
    assert len(list((tmp_path / "log").glob("decisions-*.jsonl"))) == 3
    assert is_decision_log(tmp_path / "log")
    log = read_decision_log(tmp_path / "log")
    assert log.unreadable_lines == 0
    assert log.decisions.column("customer_id").to_pylist() == customers
    assert log.decisions.column("action").to_pylist() == ["email"] * 5
    assert log.decisions.column("propensity").to_pylist() == [0.9] * 5
    assert log.decisions.column("timestamp")[0].as_py() == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert log.decisions.column("served_p_conversion").to_pylist() == [0.2] * 5
    assert log.decisions.column("served_p_churn").to_pylist() == [0.1] * 5
    assert log.decisions.column("p_conversion").to_pylist() == [0.1] * 5
    assert (log.unserved, log.fallbacks) == (1, 0)


def test_a_line_cut_short_by_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    writer = DecisionLogWriter(tmp_path)
    writer.append([request("a"), request("b")], [answer("a", "sms", 1.0), answer("b", "sms", 1.0)])
    (path,) = tmp_path.glob("decisions-*.jsonl")
    # Without close(): every appended line must already be on disk.
    text = path.read_text()
    path.write_text(text + text.splitlines()[0][:40])
    log = read_decision_log(tmp_path)
    writer.close()
    assert log.unreadable_lines == 1
    assert log.decisions.num_rows == 2


def test_fallback_answers_are_not_decisions_of_the_model(tmp_path: Path) -> None:
    catalog = ActionCatalog.default(("email", "sms", "no_action"))
    record = ScoringRequest(customer_id="c", events=[], candidates=["sms", "no_action"], top_k=1)
    fallback = fallback_answer(record, catalog, "4", "deadline of 50 ms passed")
    assert [a.action for a in fallback.actions] == ["sms"]
    assert fallback.actions[0].score is None
    assert fallback.fallback == "deadline of 50 ms passed"
    writer = DecisionLogWriter(tmp_path)
    writer.append([record], [fallback])
    writer.close()
    log = read_decision_log(tmp_path)
    assert (log.decisions.num_rows, log.fallbacks, log.unserved) == (0, 1, 0)


def test_outcomes_are_read_off_the_following_events() -> None:
    events = pa.table(
        {
            "customer_id": ["buyer", "buyer", "quiet", "quiet", "open"],
            "timestamp": [
                "2026-01-01T00:00:00Z",
                "2026-01-10T00:00:00Z",  # buys 9 days after the decision
                "2026-01-01T00:00:00Z",
                "2026-04-01T00:00:00Z",  # silent for 90 days: churned
                "2026-05-01T00:00:00Z",
            ],
            "event_type": ["page_view", "purchase", "page_view", "page_view", "page_view"],
        }
    )
    log = load_events(events)
    decided = datetime(2026, 1, 1, 12, tzinfo=UTC)
    decisions = pa.table(
        {
            "customer_id": ["buyer", "quiet", "open"],
            "timestamp": pa.array(
                [decided, decided, datetime(2026, 4, 30, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    out = with_outcomes(decisions, log, LabelRules())
    assert out.column("converted").to_pylist() == [1.0, 0.0, None]  # "open": its window is still open
    assert out.column("churned").to_pylist()[:2] == [0.0, 1.0]


def test_an_empty_directory_is_not_a_decision_log(tmp_path: Path) -> None:
    assert not is_decision_log(tmp_path)
    with pytest.raises(DataContractError, match="no decision log files"):
        read_decision_log(tmp_path)
