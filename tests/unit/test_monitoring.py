"""The monitor's statistics, the training reference of the model's inputs, and `monitor` on simulated worlds
served by a real scorer: drift is found where the world changed and nowhere else."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextbest.cli import main
from nextbest.data import load_events
from nextbest.decisioning.catalog import ActionCatalog, ControlGroup
from nextbest.monitoring.monitor import MonitorOptions, monitor
from nextbest.monitoring.reference import Binning, InputReference, model_inputs, training_reference
from nextbest.monitoring.sources import ServedDecisions
from nextbest.monitoring.stats import (
    DriftThresholds,
    calibration_in_the_large,
    homogeneity_p_value,
    proportion_drop_p_value,
    psi,
    rate_differences,
    reliability_bins,
)
from nextbest.scoring.decision_log import DecisionLogWriter, read_decision_log
from nextbest.scoring.records import fallback_answer, score_records
from nextbest.scoring.schemas import RankedAction, RankResponse, ScoringRequest
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate
from tests.unit.test_scoring import SAVED_SCORER, make_scorer

counts = st.lists(st.integers(0, 1000), min_size=2, max_size=12).filter(lambda c: sum(c) > 0)


@given(counts, st.integers(1, 50))
def test_psi_of_equal_proportions_is_zero(histogram: list[int], scale: int) -> None:
    assert psi(np.array(histogram), np.array(histogram) * scale) == pytest.approx(0.0, abs=1e-12)


@given(st.data())
def test_psi_is_non_negative_and_the_p_value_a_probability(data: st.DataObject) -> None:
    reference = data.draw(counts)
    current = data.draw(st.lists(st.integers(0, 1000), min_size=len(reference), max_size=len(reference)))
    if sum(current) == 0:
        current[0] = 1
    assert psi(np.array(reference), np.array(current)) >= 0
    assert 0.0 <= homogeneity_p_value(np.array(reference), np.array(current)) <= 1.0


def test_the_status_needs_both_a_large_shift_and_a_significant_one() -> None:
    thresholds = DriftThresholds()
    # A trivial shift between two million observations is significant, but too small to matter.
    reference = np.array([500_000, 500_000])
    trivial = np.array([510_000, 490_000])
    assert homogeneity_p_value(reference, trivial) < 0.001
    assert (
        thresholds.status(psi(reference, trivial), homogeneity_p_value(reference, trivial), 10**6) == "stable"
    )
    # 68% against a half in 200 draws: a real shift, of some size.
    reference = np.array([5000, 5000])
    large = np.array([135, 65])
    assert thresholds.status(psi(reference, large), homogeneity_p_value(reference, large), 200) == "shifted"
    small = np.array([7, 3])  # the same proportions in 10 draws prove nothing
    assert thresholds.status(psi(reference, small), homogeneity_p_value(reference, small), 10) == "too few"
    assert thresholds.status(psi(reference, small), homogeneity_p_value(reference, small), 100) == "stable"
    gone = np.array([190, 10])
    assert thresholds.status(psi(reference, gone), homogeneity_p_value(reference, gone), 200) == "drifted"


def test_the_rate_difference_is_exact_and_its_interval_covers_it() -> None:
    # Ten customers of each group, two decisions each: policy converts 60%, control 30%.
    policy = (np.r_[np.full(6, 2.0), np.zeros(4), np.zeros(10)], np.r_[np.full(10, 2.0), np.zeros(10)])
    control = (np.r_[np.zeros(10), np.full(3, 2.0), np.zeros(7)], np.r_[np.zeros(10), np.full(10, 2.0)])
    empty = (np.zeros(20), np.zeros(20))
    estimate, swapped, missing = rate_differences(
        [(policy, control), (control, policy), (policy, empty)], resamples=500
    )
    assert estimate.value == pytest.approx(0.3)
    assert estimate.low < 0.3 < estimate.high
    assert swapped.value == pytest.approx(-0.3)
    assert (swapped.low, swapped.high) == pytest.approx((-estimate.high, -estimate.low))  # the same resamples
    assert np.isnan(missing.value)


def test_a_significant_fall_is_told_from_noise() -> None:
    assert proportion_drop_p_value((200, 1000), (100, 1000)) < 1e-6
    assert proportion_drop_p_value((20, 100), (18, 100)) > 0.1
    assert proportion_drop_p_value((0, 10), (0, 10)) == 1.0


def test_reliability_bins_and_calibration_in_the_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(float)
    bins = reliability_bins(p, y, bins=10)
    assert sum(b["decisions"] for b in bins) == p.size
    assert all(abs(b["mean_predicted"] - b["observed_rate"]) < 0.03 for b in bins)
    ratio, p_value = calibration_in_the_large(p, y)
    assert ratio == pytest.approx(1.0, abs=0.03)
    assert p_value > 0.001
    ratio, p_value = calibration_in_the_large(p / 2, y)
    assert ratio == pytest.approx(2.0, abs=0.1)
    assert p_value < 1e-9


def test_binning_keeps_missing_and_unseen_values_apart() -> None:
    categorical = Binning.fit({"web": 10, "app": 5, None: 2})
    assert categorical.labels() == ["web", "app", "(other)", "(missing)"]
    assert categorical.counts({"app": 1, "store": 4, None: 3}).tolist() == [0, 1, 4, 3]
    numeric = Binning.fit(np.arange(100, dtype=float))
    counted = numeric.counts(np.array([-5.0, 50.0, 1000.0, np.nan]))
    assert counted.sum() == 4
    assert counted[0] == 1
    assert counted[-2] == 1
    assert counted[-1] == 1
    assert Binning.from_dict(numeric.to_dict()) == numeric


def test_history_inputs_are_read_as_the_model_reads_them() -> None:
    events = pa.table(
        {
            "customer_id": ["a", "a", "a", "b", "b"],
            "timestamp": [
                "2026-01-01T00:00:00Z",
                "2026-01-01T02:00:00Z",
                "2026-01-01T05:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
            ],
            "event_type": ["page_view", "purchase", "page_view", "page_view", "email_open"],
            "channel": ["web", "web", "app", None, "email"],
        }
    )
    log = load_events(events)
    as_of = pa.array([datetime(2026, 1, 3, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC"))
    requests = pa.table({"customer_id": ["a", "b"], "as_of": as_of})
    inputs = model_inputs(log, requests, max_events=2)
    assert inputs["history_length"].tolist() == [3.0, 2.0]  # every event before as_of
    assert inputs["gap_hours"].tolist() == [3.0, 24.0]  # within the last 2 events of each
    assert inputs["event_type"] == {"purchase": 1, "page_view": 2, "email_open": 1}
    assert inputs["channel"] == {"web": 1, "app": 1, None: 1, "email": 1}


# --- on simulated worlds, served by a (small, untrained) scorer -------------------------------------------

WORLD_SIZE = 500
CONTROL = ControlGroup(share=0.2)  # the control group that `serve` serves


@pytest.fixture(scope="module")
def scorer() -> JourneyScorer:
    return scorer_with_reference()


def scorer_with_reference() -> JourneyScorer:
    """A scorer with the reference training saves, fitted on its own world's decision moments."""
    world = simulate(SimulationConfig(n_customers=WORLD_SIZE, seed=1))
    log = load_events(world.events)
    scorer = make_scorer(log, world.customers)
    scorer.reference = training_reference(scorer, log, decision_moments(world), world.customers)
    return scorer


def decision_moments(world: SimulatedWorld) -> pa.Table:
    return pa.table(
        {"customer_id": world.decisions.column("customer_id"), "as_of": world.decisions.column("timestamp")}
    )


def serve(scorer: JourneyScorer, world: SimulatedWorld, events: pa.Table, folder: Path) -> Path:
    """The decision log of `scorer` serving the world's decision moments, a fifth to a control group."""
    log = load_events(events)
    records = records_from_tables(log, decision_moments(world), world.customers)
    catalog = dataclasses.replace(scorer.action_catalog, control=CONTROL)
    writer = DecisionLogWriter(folder)
    writer.append(records, score_records(scorer, records, "1", catalog))
    writer.close()
    return folder


def logged(folder: Path) -> ServedDecisions:
    return ServedDecisions.from_log(read_decision_log(folder))


def web_moved_to_app(events: pa.Table, share: float, seed: int) -> pa.Table:
    """The events with `share` of the web touches moved to the app (the site closed in favour of it)."""
    channel = np.asarray(events.column("channel").to_numpy(zero_copy_only=False), dtype=object)
    moved = (channel == "web") & (np.random.default_rng(seed).uniform(size=len(channel)) < share)
    channel[moved] = "app"
    return events.set_column(events.column_names.index("channel"), "channel", pa.array(channel, pa.string()))


def drifted_inputs(summary: dict[str, object]) -> set[str]:
    alerts = summary["alerts"]
    assert isinstance(alerts, list)
    return {alert["input"] for alert in alerts if alert["name"] == "input_drift"}


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_changed_channel_mix_raises_drift_on_the_channels_alone(
    scorer: JourneyScorer, tmp_path: Path, seed: int
) -> None:
    world = simulate(SimulationConfig(n_customers=WORLD_SIZE, seed=seed))
    assert scorer.reference is not None
    options = MonitorOptions(resamples=100)
    summaries = {}
    for name, events in (("same", world.events), ("changed", web_moved_to_app(world.events, 0.8, seed))):
        served = logged(serve(scorer, world, events, tmp_path / name))
        summaries[name] = monitor(served, load_events(events), scorer.reference, world.customers, options)
    assert drifted_inputs(summaries["same"]) == set()
    assert drifted_inputs(summaries["changed"]) == {"channel"}
    statuses = {n: e["status"] for n, e in summaries["same"]["drift"]["inputs"].items()}
    assert set(statuses.values()) <= {"stable", "shifted"}
    assert len(statuses) == len(scorer.reference.bins)


# What e-mail pressure moves: the e-mails are a share of every history. The profiles stay as they were.
HISTORY_INPUTS = {"event_type", "channel", "history_length", "gap_hours"}


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_changed_email_pressure_raises_drift_on_the_history_inputs_alone(
    scorer: JourneyScorer, tmp_path: Path, seed: int
) -> None:
    """The reference stands for the world before the change (where the model was trained), the served
    world for the one after: the same world, its e-mail campaigns stopped, or sent ten times as often.

    Measured over seeds 2 to 7: stopping them removes the e-mail events from every history (PSI above 1
    on the event-type and channel mix) and lengthens the gaps (0.34 to 0.40), while the history length
    falls by a PSI of 0.20 to 0.33, either side of the drifted threshold. Ten times as many saturate
    (only opted-in customers are mailed, and heavily mailed ones unsubscribe: the simulator's fatigue):
    each history input moves by a PSI of 0.18 to 0.48, the number of events most. So every history
    input is at least shifted, the largest moves alert, and nothing else moves: the profiles are the
    same customers', and this untrained scorer's score barely reads the e-mails (PSI at most 0.06).
    """
    config = SimulationConfig(n_customers=WORLD_SIZE, seed=seed)
    assert scorer.reference is not None
    options = MonitorOptions(resamples=100)
    summaries = {}
    for name, rate in (("same", config.email_rate), ("stopped", 0.0), ("tenfold", 10 * config.email_rate)):
        world = simulate(dataclasses.replace(config, email_rate=rate))
        served = logged(serve(scorer, world, world.events, tmp_path / name))
        summaries[name] = monitor(
            served, load_events(world.events), scorer.reference, world.customers, options
        )
    assert drifted_inputs(summaries["same"]) == set()
    for name in ("stopped", "tenfold"):
        statuses = {n: e["status"] for n, e in summaries[name]["drift"]["inputs"].items()}
        assert {statuses.pop(n) for n in HISTORY_INPUTS} <= {"shifted", "drifted"}
        assert set(statuses.values()) == {"stable"}
        assert drifted_inputs(summaries[name]) <= HISTORY_INPUTS
    assert {"event_type", "channel", "gap_hours"} <= drifted_inputs(summaries["stopped"])
    assert "history_length" in drifted_inputs(summaries["tenfold"])


def test_outcomes_lift_and_what_was_skipped(scorer: JourneyScorer, tmp_path: Path) -> None:
    world = simulate(SimulationConfig(n_customers=WORLD_SIZE, seed=4))
    folder = serve(scorer, world, world.events, tmp_path / "log")
    (path,) = folder.glob("decisions-*.jsonl")
    with path.open("a") as handle:
        handle.write('{"customer_id": "cut sh')  # a line cut short by a crash
    # Events that end 10 days after the median decision: later decisions are still open.
    as_of = sorted(world.decisions.column("timestamp").to_pylist())
    end = pa.scalar(as_of[len(as_of) // 2] + timedelta(days=10), pa.timestamp("us", tz="UTC"))
    events = world.events.filter(pc.less(world.events.column("timestamp"), end))
    summary = monitor(logged(folder), load_events(events), "no model given", None)
    decisions, outcomes, lift = summary["decisions"], summary["outcomes"], summary["lift"]
    assert decisions["total"] == world.decisions.num_rows
    assert decisions["skipped"]["unreadable_lines"] == 1
    assert sum(decisions["by_action"].values()) == sum(d["decisions"] for d in decisions["by_day"])
    closed = outcomes["overall"]["conversion_closed"]
    assert outcomes["open"]["conversion"] + closed == decisions["total"]
    assert 0 < outcomes["open"]["conversion"] < decisions["total"]
    assert lift["available"]
    assert lift["control"]["decisions"] == decisions["control"] > 0
    difference = lift["conversion_rate_difference"]
    assert difference["low"] <= difference["value"] <= difference["high"]
    assert summary["calibration"]["decisions"] == closed
    assert summary["drift"] == {"available": False, "message": "no model given", "inputs": {}}


def test_the_reference_travels_with_the_scorer(scorer: JourneyScorer, tmp_path: Path) -> None:
    restored = JourneyScorer.load(scorer.save(tmp_path / "scorer"))
    assert restored.reference is not None
    assert scorer.reference is not None
    assert restored.reference.to_dict() == scorer.reference.to_dict()
    assert InputReference.from_dict(scorer.reference.to_dict()).bins == scorer.reference.bins
    assert JourneyScorer.load(SAVED_SCORER).reference is None  # saved before references existed


def test_a_week_on_week_fall_and_a_silence_alert(tmp_path: Path) -> None:
    """200 decisions a week for two weeks, 30% then 10% converting a day later (served P(conversion) 0.2,
    right on average), then nothing but one customer's visit 60 days on."""
    start = datetime(2026, 3, 2, tzinfo=UTC)
    times = [start + timedelta(days=i % 7 + 7 * (i >= 200), hours=1) for i in range(400)]
    converts = [(i % 10) < (3 if i < 200 else 1) for i in range(400)]
    ids = [f"c{i}" for i in range(400)]
    rows = [(c, t - timedelta(hours=1), "page_view") for c, t in zip(ids, times, strict=True)]
    rows += [
        (c, t + timedelta(days=1), "purchase") for c, t, y in zip(ids, times, converts, strict=True) if y
    ]
    rows.append(("late", start + timedelta(days=90), "page_view"))
    customer, timestamp, event_type = zip(*rows, strict=True)
    events = load_events(
        pa.table({"customer_id": customer, "timestamp": timestamp, "event_type": event_type})
    )
    writer = DecisionLogWriter(tmp_path)
    for customer_id, time in zip(ids, times, strict=True):
        served = RankedAction(action="email", rank=1, score=1.0, uplift=0.1, p_conversion=0.2, p_churn=0.1)
        answer = RankResponse(
            customer_id=customer_id,
            as_of=time.isoformat(),
            model_version="1",
            p_conversion=0.1,
            p_churn=0.1,
            chosen_action="email",
            chosen_probability=1.0,
            actions=[served],
            suppressed=[],
        )
        writer.append([ScoringRequest(customer_id=customer_id, events=[])], [answer])
    writer.close()
    summary = monitor(logged(tmp_path), events, "no model", None, MonitorOptions(resamples=50))
    fired = {alert["name"]: alert for alert in summary["alerts"]}
    assert set(fired) == {"success_rate_falling", "no_responses"}
    assert "fell 67% week on week" in fired["success_rate_falling"]["message"]
    assert fired["no_responses"]["severity"] == "critical"
    assert not summary["lift"]["available"]  # no control group served
    assert summary["calibration"]["observed_over_expected"] == pytest.approx(1.0)


def test_a_log_without_served_decisions_is_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,event_type\nc,2026-01-01T00:00:00Z,page_view\n")
    args = ["monitor", "--events", str(events), "--out", str(tmp_path / "out")]
    assert main([*args, "--decisions", str(tmp_path)]) == 1
    assert "no decision log files" in capsys.readouterr().err
    record = ScoringRequest(customer_id="c", events=[])
    writer = DecisionLogWriter(tmp_path / "log")
    writer.append([record], [fallback_answer(record, ActionCatalog.default(("email",)), "1", "deadline")])
    writer.close()
    assert main([*args, "--decisions", str(tmp_path / "log")]) == 1
    assert "no decision the model served (0 unreadable log lines, 1 fallback" in capsys.readouterr().err


def test_dates_sent_as_text_drift_as_dates_and_a_changed_kind_is_said_not_raised(
    scorer: JourneyScorer, tmp_path: Path
) -> None:
    """A store keeps a profile's sign-up date as the text JSON carried: it is read as the date the model
    was trained on. An attribute that arrives as another kind than at training is not measured, and says
    why."""
    world = simulate(SimulationConfig(n_customers=WORLD_SIZE, seed=5))
    served, events = logged(serve(scorer, world, world.events, tmp_path / "log")), load_events(world.events)
    customers = world.customers

    def as_text(name: str) -> pa.Table:
        index = customers.column_names.index(name)
        return customers.set_column(index, name, pc.cast(customers.column(name), pa.string()))

    options = MonitorOptions(resamples=20)
    inputs = [
        monitor(served, events, scorer.reference, table, options)["drift"]["inputs"]
        for table in (customers, as_text("signup_date"), as_text("tenure_days"))
    ]
    assert inputs[1]["profile.signup_date"] == inputs[0]["profile.signup_date"]
    assert inputs[0]["profile.signup_date"]["status"] != "not measured"
    assert inputs[2]["profile.tenure_days"] == {
        "status": "not measured",
        "reason": "numbers at training, categories here: its kind changed",
    }
