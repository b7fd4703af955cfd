"""`nextbest monitor --store` on both backends: a store that served the decisions of a decision log, and
holds the events that followed, gives the log's numbers wherever both record the facts, and says what
it does not record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from nextbest.cli import main
from nextbest.data import ValidationReport, load_events
from nextbest.decisioning import ActionCatalog
from nextbest.monitoring.monitor import MonitorOptions, monitor
from nextbest.monitoring.sources import CONTROL_NOT_RECORDED, STORE_NOT_RECORDED, read_store
from nextbest.scoring.decision_log import read_decision_log
from nextbest.scoring.scorer import JourneyScorer
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate
from nextbest.store import Candidate, Decision, open_store
from tests.unit.test_monitoring import CONTROL, logged, scorer_with_reference, serve

OPTIONS = MonitorOptions(resamples=50)


@pytest.fixture(scope="module")
def scorer() -> JourneyScorer:
    return scorer_with_reference()


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(SimulationConfig(n_customers=200, seed=6))


def served_into_store(store_uri: str, log: Path, events: pa.Table, customers: pa.Table) -> None:
    """The store of a service that served the log's decisions (each a contact: no limit holds one back)
    and was then sent every event and profile."""
    decisions = read_decision_log(log).decisions.to_pylist()
    catalog = ActionCatalog.default(tuple({d["action"] for d in decisions}))
    with open_store(store_uri) as store:
        served = store.serve_many(
            [
                Decision(
                    d["customer_id"], d["timestamp"], f"d{i}", (Candidate(d["action"], d["propensity"]),)
                )
                for i, d in enumerate(decisions)
            ],
            catalog,
        )
        assert [s.action for s in served] == [d["action"] for d in decisions]
        assert store.append_events(events).rejected == ()
        assert store.upsert_profiles(customers).rejected == ()


def test_a_store_gives_the_logs_numbers_where_both_record_them(
    store_uri: str, scorer: JourneyScorer, world: SimulatedWorld, tmp_path: Path
) -> None:
    log = serve(scorer, world, world.events, tmp_path / "log")
    served_into_store(store_uri, log, world.events, world.customers)
    assert scorer.reference is not None
    from_log = monitor(logged(log), load_events(world.events), scorer.reference, world.customers, OPTIONS)
    stored = read_store(store_uri, CONTROL, ValidationReport())
    from_store = monitor(stored.decisions, stored.events, scorer.reference, stored.customers, OPTIONS)

    for key in ("total", "control", "by_action", "by_day"):
        assert from_store["decisions"][key] == from_log["decisions"][key]
    assert from_store["decisions"]["not_recorded"] == STORE_NOT_RECORDED
    assert from_store["outcomes"] == from_log["outcomes"]
    assert from_store["lift"] == from_log["lift"]  # control membership recomputed as the service assigns it
    assert from_store["calibration"] == {
        "available": False,
        "message": STORE_NOT_RECORDED["served_p_conversion"],
    }
    score = {"status": "not measured", "reason": STORE_NOT_RECORDED["p_conversion"]}
    assert from_store["drift"]["inputs"] == {**from_log["drift"]["inputs"], "score": score}


def summary_of(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_the_command_reads_a_store_and_says_what_it_does_not_record(
    store_uri: str,
    scorer: JourneyScorer,
    world: SimulatedWorld,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = serve(scorer, world, world.events, tmp_path / "log")
    served_into_store(store_uri, log, world.events, world.customers)
    assert main(["monitor", "--store", store_uri, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"{world.decisions.num_rows:,} decisions (unknown control)" in printed
    summary = summary_of(tmp_path / "out")
    assert summary["decisions"]["total"] == world.decisions.num_rows
    assert summary["decisions"]["control"] is None
    assert summary["decisions"]["model_versions"] == {}
    assert summary["lift"] == {"level": 0.95, "available": False, "reason": CONTROL_NOT_RECORDED}
    assert not summary["calibration"]["available"]
    assert "calibration_off" not in {alert["name"] for alert in summary["alerts"]}
    assert (tmp_path / "out" / "report.html").read_text().count("Not measured") >= 2


def test_a_store_without_contacts_or_events_is_a_message(
    store_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["monitor", "--store", store_uri, "--out", str(tmp_path / "out")]
    assert main(args) == 1
    assert f"the store {store_uri} holds no served contact: nothing to monitor" in capsys.readouterr().err
    catalog = ActionCatalog.default(("email_offer",))
    with open_store(store_uri) as store:
        store.serve("c1", datetime(2026, 3, 1, tzinfo=UTC), "d-1", [Candidate("email_offer")], catalog)
    assert main(args) == 1
    assert f"the store {store_uri} holds no event: nothing to monitor" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "one of the arguments --decisions --store is required"),
        (
            ["--decisions", "log", "--store", "sqlite:///s.db"],
            "--store: not allowed with argument --decisions",
        ),
    ],
)
def test_decisions_come_from_a_log_or_a_store(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", *flags, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--decisions", "log"], "--decisions needs --events PATH"),
        (["--store", "sqlite:///s.db", "--customers", "c.csv"], "--store reads the store's own"),
        (["--store", "sqlite:///s.db", "--events", "e.csv"], "--store reads the store's own"),
    ],
)
def test_a_log_comes_with_its_events_and_a_store_holds_its_own(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", *flags, "--out", str(tmp_path / "out")]) == 1
    assert message in capsys.readouterr().err
