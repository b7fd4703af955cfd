"""The synthetic world: determinism, contract schemas, label consistency, truth and logging policy."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.cli import main
from nextbest.errors import NextbestError
from nextbest.simulate import (
    EffectSizes,
    SimulatedWorld,
    SimulationConfig,
    logging_policy_probabilities,
    simulate,
    true_outcome_probabilities,
    write_world,
)
from nextbest.simulate.config import ActionSpec
from nextbest.simulate.history import HistoryAggregates
from nextbest.simulate.population import AGE_BANDS, DEVICES, REGIONS, SEGMENTS, LatentTraits, Profiles

ACTIONS = ("email_offer", "discount_10", "call_back", "push_notification", "sms_reminder", "no_action")
TS = pa.timestamp("us", tz="UTC")
H, D = pd.Timedelta(days=30), pd.Timedelta(days=60)


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(SimulationConfig(n_customers=1500, seed=11))


@pytest.fixture(scope="module")
def frames(world: SimulatedWorld) -> dict[str, pd.DataFrame]:
    return {name: getattr(world, name).to_pandas() for name in ("events", "customers", "decisions", "truth")}


def _truth_matrix(truth: pd.DataFrame, column: str) -> pd.DataFrame:
    return truth.pivot_table(index=["customer_id", "as_of"], columns="action", values=column)[list(ACTIONS)]


def _profiles(customers: pd.DataFrame) -> Profiles:
    def codes(column: str, vocabulary: tuple[str, ...]) -> np.ndarray:
        return customers[column].map({v: i for i, v in enumerate(vocabulary)}).to_numpy(np.int64)

    return Profiles(
        segment=codes("segment", SEGMENTS),
        region=codes("region", REGIONS),
        age_band=codes("age_band", AGE_BANDS),
        device=codes("device_preference", DEVICES),
        email_opt_in=customers["email_opt_in"].to_numpy() == 1,
        tenure_days=customers["tenure_days"].to_numpy(np.int64),
    )


def _windows(events: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """Per decision: purchases in [as_of, as_of + H] and events in (as_of, as_of + D]."""
    joined = events.merge(
        decisions[["customer_id", "timestamp"]], on="customer_id", suffixes=("", "_decision")
    )
    delay = joined["timestamp"] - joined["timestamp_decision"]
    in_horizon = (delay >= pd.Timedelta(0)) & (delay <= H) & (joined["event_type"] == "purchase")
    in_churn_window = (delay > pd.Timedelta(0)) & (delay <= D)
    keys = [joined["customer_id"], joined["timestamp_decision"]]
    purchases = in_horizon.groupby(keys).sum().rename("purchases")
    value = joined["value"].where(in_horizon, 0.0).groupby(keys).sum().rename("value")
    active = in_churn_window.groupby(keys).sum().rename("events_after")
    index = pd.MultiIndex.from_frame(decisions[["customer_id", "timestamp"]])
    return pd.concat([purchases, value, active], axis=1).reindex(index).fillna(0.0)


class TestDeterminism:
    def test_same_seed_gives_identical_tables(self) -> None:
        config = SimulationConfig(n_customers=400, seed=3)
        first, second = simulate(config), simulate(config)
        for name in ("events", "customers", "decisions", "truth"):
            assert getattr(first, name).equals(getattr(second, name)), name
        assert first.metadata == second.metadata

    def test_different_seeds_differ(self) -> None:
        first = simulate(SimulationConfig(n_customers=400, seed=3))
        second = simulate(SimulationConfig(n_customers=400, seed=4))
        assert not first.events.equals(second.events)
        assert not first.decisions.equals(second.decisions)


class TestSchema:
    def test_written_files_have_the_contract_types(self, world: SimulatedWorld, tmp_path: Path) -> None:
        write_world(world, tmp_path / "w")
        events = pq.read_table(tmp_path / "w" / "events.parquet")
        assert events.schema.names == ["customer_id", "timestamp", "event_type", "channel", "action", "value"]
        assert [f.type for f in events.schema] == [
            pa.string(),
            TS,
            pa.string(),
            pa.string(),
            pa.string(),
            pa.float64(),
        ]
        decisions = pq.read_table(tmp_path / "w" / "decisions.parquet")
        assert dict(zip(decisions.schema.names, decisions.schema.types, strict=True)) == {
            "customer_id": pa.string(),
            "timestamp": TS,
            "action": pa.string(),
            "propensity": pa.float64(),
            "converted": pa.int8(),
            "churned": pa.int8(),
            "revenue": pa.float64(),
        }
        truth = pq.read_table(tmp_path / "w" / "truth.parquet")
        assert dict(zip(truth.schema.names, truth.schema.types, strict=True)) == {
            "customer_id": pa.string(),
            "as_of": TS,
            "action": pa.string(),
            "p_conversion": pa.float64(),
            "p_churn": pa.float64(),
        }
        customers = pq.read_table(tmp_path / "w" / "customers.parquet")
        assert customers.schema.field("customer_id").type == pa.string()
        assert {"segment", "region", "age_band", "device_preference", "email_opt_in", "tenure_days"} <= set(
            customers.schema.names
        )
        assert customers.schema.field("signup_date").type == pa.date32()  # a date, so it reads as tenure
        others = [
            t
            for name, t in zip(customers.schema.names, customers.schema.types, strict=True)
            if name != "signup_date"
        ]
        assert all(pa.types.is_string(t) or pa.types.is_integer(t) for t in others)

    def test_world_json_describes_the_world(self, world: SimulatedWorld, tmp_path: Path) -> None:
        meta = json.loads((write_world(world, tmp_path) / "world.json").read_text())
        assert meta["seed"] == 11
        assert meta["n_customers"] == 1500
        assert meta["start"] == "2026-01-01T00:00:00Z"
        assert pd.Timestamp(meta["observation_end"]) - pd.Timestamp(meta["start"]) > pd.Timedelta(days=240)
        assert (meta["horizon_days"], meta["churn_inactivity_days"]) == (30, 60)
        assert [a["id"] for a in meta["actions"]] == list(ACTIONS)
        assert meta["actions"][-1]["channel"] is None
        assert meta["description"]

    def test_customers_have_zero_padded_ids_and_no_latent_traits(
        self, frames: dict[str, pd.DataFrame]
    ) -> None:
        customers = frames["customers"]
        assert customers["customer_id"].iloc[0] == "c000001"
        assert customers["customer_id"].is_monotonic_increasing
        assert len(customers) == 1500
        assert not {"intent", "price_sensitivity", "dissatisfaction"} & set(customers.columns)
        assert set(customers["segment"]) == set(SEGMENTS)

    def test_write_world_reports_unwritable_folder(self, world: SimulatedWorld, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        with pytest.raises(NextbestError, match="cannot write"):
            write_world(world, blocker / "world")


class TestEvents:
    def test_sorted_and_inside_the_observation_window(
        self, world: SimulatedWorld, frames: dict[str, pd.DataFrame]
    ) -> None:
        events = frames["events"]
        order = events.sort_values(["customer_id", "timestamp"], kind="stable")
        assert order.index.equals(events.index)
        end = pd.Timestamp(world.metadata["observation_end"])
        assert events["timestamp"].min() >= pd.Timestamp("2026-01-01", tz="UTC")
        assert events["timestamp"].max() < end
        assert frames["decisions"]["timestamp"].max() + max(H, D) <= end

    def test_volume_and_variety(self, frames: dict[str, pd.DataFrame]) -> None:
        events = frames["events"]
        per_customer = events.groupby("customer_id").size()
        assert 20 <= per_customer.mean() <= 100
        assert per_customer.min() <= 3
        assert per_customer.max() >= 200
        expected = {"page_view", "product_view", "ad_impression", "email_open", "email_click", "app_session"}
        expected |= {
            "add_to_cart",
            "purchase",
            "support_call",
            "complaint",
            "review",
            "referral",
            "unsubscribe",
        }
        expected |= {"email_sent", "push_sent", "offer_shown"}
        assert expected <= set(events["event_type"])
        assert {"web", "app", "email", "sms", "call_center", "store", "display"} == set(
            events["channel"].dropna()
        )

    def test_values_only_on_purchases(self, frames: dict[str, pd.DataFrame]) -> None:
        events = frames["events"]
        purchases = events["event_type"] == "purchase"
        assert events.loc[purchases, "value"].gt(0).all()
        assert events.loc[~purchases, "value"].isna().all()

    def test_marketing_contacts_carry_their_action(self, frames: dict[str, pd.DataFrame]) -> None:
        events = frames["events"]
        sends = events[events["event_type"].isin(["email_sent", "push_sent", "sms_sent", "offer_shown"])]
        assert sends["action"].notna().all()
        assert events.loc[events["event_type"] == "page_view", "action"].isna().all()

    def test_time_of_day_and_weekday_structure(self, frames: dict[str, pd.DataFrame]) -> None:
        events = frames["events"]
        visits = events[events["event_type"].isin(["page_view", "app_session", "store_visit"])]
        assert visits["timestamp"].dt.hour.between(2, 5).mean() < 0.05
        stores = events.loc[events["event_type"] == "store_visit", "timestamp"].dt.dayofweek
        assert (stores == 5).mean() > 1.15 * stores.between(0, 3).mean() / 4  # Saturday shopping
        calls = events.loc[events["event_type"] == "support_call", "timestamp"].dt.dayofweek
        assert (calls >= 5).mean() < 0.6 * 2 / 7  # the call centre is quiet at weekends


class TestDecisions:
    def test_truth_has_every_action_at_every_decision(self, frames: dict[str, pd.DataFrame]) -> None:
        decisions, truth = frames["decisions"], frames["truth"]
        assert len(truth) == len(ACTIONS) * len(decisions)
        per_decision = truth.groupby(["customer_id", "as_of"])["action"].apply(frozenset)
        assert (per_decision == frozenset(ACTIONS)).all()
        keys = decisions.set_index(["customer_id", "timestamp"]).index
        assert set(keys) == set(per_decision.index)
        assert truth["p_conversion"].between(0, 1, inclusive="neither").all()
        assert truth["p_churn"].between(0, 1, inclusive="neither").all()
        assert (truth["p_conversion"] + truth["p_churn"] <= 1.0).all()

    def test_one_or_two_decisions_per_customer(self, frames: dict[str, pd.DataFrame]) -> None:
        decisions = frames["decisions"]
        counts = decisions.groupby("customer_id").size()
        assert len(counts) == 1500
        assert counts.max() == 2
        assert (counts == 2).mean() > 0.1
        first = decisions.groupby("customer_id").nth(0).set_index("customer_id")
        second = decisions.groupby("customer_id").nth(1).set_index("customer_id")
        assert (first.loc[second.index, "churned"] == 0).all()
        assert ((second["timestamp"] - first.loc[second.index, "timestamp"]) > H).all()

    def test_logged_propensities_match_the_logging_policy(self, frames: dict[str, pd.DataFrame]) -> None:
        decisions = frames["decisions"]
        customers = frames["customers"].set_index("customer_id").loc[decisions["customer_id"]].reset_index()
        policy = logging_policy_probabilities(_profiles(customers), ACTIONS)
        chosen = decisions["action"].map({a: i for i, a in enumerate(ACTIONS)}).to_numpy()
        np.testing.assert_allclose(decisions["propensity"], policy[np.arange(len(decisions)), chosen])
        assert decisions["propensity"].min() >= 0.05
        assert decisions["propensity"].std() > 0.01  # non-uniform
        assert set(decisions["action"]) == set(ACTIONS)

    def test_outcomes_follow_the_label_rules(self, frames: dict[str, pd.DataFrame]) -> None:
        decisions = frames["decisions"]
        windows = _windows(frames["events"], decisions)
        converted = decisions["converted"].to_numpy() == 1
        churned = decisions["churned"].to_numpy() == 1
        np.testing.assert_array_equal(windows["purchases"].to_numpy() > 0, converted)
        np.testing.assert_array_equal(windows["events_after"].to_numpy() == 0, churned)
        assert not (converted & churned).any()
        np.testing.assert_allclose(windows["value"].to_numpy(), decisions["revenue"].to_numpy())
        assert 0.05 <= converted.mean() <= 0.25
        assert 0.10 <= churned.mean() <= 0.30

    def test_decision_touchpoints_are_logged_at_as_of(self, frames: dict[str, pd.DataFrame]) -> None:
        decisions = frames["decisions"]
        touches = frames["events"].merge(
            decisions, on=["customer_id", "timestamp", "action"], how="inner", suffixes=("", "_decision")
        )
        touched = decisions[decisions["action"] != "no_action"]
        assert len(touches.drop_duplicates(["customer_id", "timestamp"])) == len(touched)
        channels = touches.groupby("action")["channel"].agg(set).to_dict()
        assert channels["call_back"] == {"call_center"}
        assert channels["push_notification"] == {"app"}
        assert channels["sms_reminder"] == {"sms"}

    def test_realised_outcomes_agree_with_the_truth(self, frames: dict[str, pd.DataFrame]) -> None:
        decisions = frames["decisions"]
        truth = frames["truth"].rename(columns={"as_of": "timestamp"})
        logged = decisions.merge(truth, on=["customer_id", "timestamp", "action"])
        n = len(logged)
        assert abs(logged["converted"].mean() - logged["p_conversion"].mean()) < 4 * np.sqrt(0.25 / n)
        assert abs(logged["churned"].mean() - logged["p_churn"].mean()) < 4 * np.sqrt(0.25 / n)


class TestTruth:
    def test_best_action_varies_and_beats_random(self, frames: dict[str, pd.DataFrame]) -> None:
        conversion = _truth_matrix(frames["truth"], "p_conversion")
        best_share = conversion.idxmax(axis=1).value_counts(normalize=True)
        assert (best_share > 0.05).sum() >= 4
        random, oracle = conversion.mean(axis=1).mean(), conversion.max(axis=1).mean()
        assert oracle - random > 0.04
        assert oracle > 1.5 * random

    def test_email_offer_fatigue_in_the_world(self, frames: dict[str, pd.DataFrame]) -> None:
        events, decisions = frames["events"], frames["decisions"]
        sent = events[events["event_type"] == "email_sent"].merge(
            decisions[["customer_id", "timestamp"]], on="customer_id", suffixes=("", "_decision")
        )
        age = sent["timestamp_decision"] - sent["timestamp"]
        recent = sent[(age > pd.Timedelta(0)) & (age <= pd.Timedelta(days=14))]
        emails = recent.groupby(["customer_id", "timestamp_decision"]).size()
        conversion = _truth_matrix(frames["truth"], "p_conversion")
        uplift = conversion["email_offer"] - conversion["no_action"]
        counts = emails.reindex(uplift.index, fill_value=0)
        assert uplift[counts >= 6].mean() < 0 < uplift[counts.between(1, 3)].mean()

    @settings(max_examples=30, deadline=None)
    @given(
        emails=st.lists(st.integers(0, 20), min_size=2, max_size=2, unique=True),
        open_rate=st.floats(0.0, 1.0),
        clicks=st.integers(0, 10),
    )
    def test_email_offer_worsens_with_recent_emails(
        self, emails: list[int], open_rate: float, clicks: int
    ) -> None:
        few, many = sorted(emails)
        history = _history(emails_14d=np.array([few, many], float), open_rate=open_rate, clicks=clicks)
        conversion, churn = true_outcome_probabilities(
            _traits(2), _profile_rows(2), history, ACTIONS, EffectSizes()
        )
        uplift = conversion[:, 0] - conversion[:, -1]
        assert uplift[1] <= uplift[0] + 1e-12
        assert churn[1, 0] >= churn[0, 0] - 1e-12
        if many >= 10:
            assert conversion[1, 0] < conversion[1, -1]
            assert churn[1, 0] > churn[1, -1]

    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 50), st.integers(0, 2**32 - 1))
    def test_probabilities_are_consistent(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        history = _history(
            emails_14d=rng.integers(0, 15, n).astype(float), open_rate=float(rng.random()), clicks=3, n=n
        )
        conversion, churn = true_outcome_probabilities(
            _traits(n, rng), _profile_rows(n, rng), history, ACTIONS, EffectSizes()
        )
        assert conversion.shape == churn.shape == (n, len(ACTIONS))
        assert ((conversion > 0) & (churn > 0) & (conversion + churn < 1)).all()

    def test_targeted_effects(self) -> None:
        base = _history(emails_14d=np.zeros(2), open_rate=0.3, clicks=1)
        sensitive = replace(_traits(2), price_sensitivity=np.array([0.1, 0.95]))
        conversion, _ = true_outcome_probabilities(sensitive, _profile_rows(2), base, ACTIONS, EffectSizes())
        discount_uplift = conversion[:, 1] - conversion[:, -1]
        assert discount_uplift[1] > discount_uplift[0] + 0.05
        troubled = replace(base, service_contacts_30d=np.array([0.0, 3.0]))
        _, churn = true_outcome_probabilities(_traits(2), _profile_rows(2), troubled, ACTIONS, EffectSizes())
        call_effect = churn[:, 2] - churn[:, -1]
        assert call_effect[1] < -0.05 < 0 < call_effect[0]
        app = replace(base, app_sessions_30d=np.array([0.0, 6.0]))
        conversion, _ = true_outcome_probabilities(_traits(2), _profile_rows(2), app, ACTIONS, EffectSizes())
        push_uplift = conversion[:, 3] - conversion[:, -1]
        assert push_uplift[1] > 0.05
        assert push_uplift[0] < 0.01

    def test_intent_coupling_separates_converters_from_persuadables(self) -> None:
        correlations = []
        for coupling in (0.0, -1.5):
            effects = EffectSizes(persuadability_intent_coupling=coupling)
            conversion = _truth_matrix(
                simulate(SimulationConfig(600, seed=2, effects=effects)).truth.to_pandas(), "p_conversion"
            )
            uplift = conversion.drop(columns="no_action").max(axis=1) - conversion["no_action"]
            correlations.append(np.corrcoef(conversion["no_action"], uplift)[0, 1])
        assert correlations[1] < correlations[0] - 0.2


class TestLoggingPolicy:
    @settings(max_examples=50, deadline=None)
    @given(
        rows=st.lists(
            st.tuples(
                st.integers(0, 2), st.integers(0, 4), st.integers(0, 5), st.integers(0, 2), st.booleans()
            ),
            min_size=1,
            max_size=30,
        ),
        floor=st.floats(0.0, 0.15),
        temperature=st.floats(0.2, 5.0),
    )
    def test_rows_are_distributions_above_the_floor(
        self, rows: list[tuple[int, int, int, int, bool]], floor: float, temperature: float
    ) -> None:
        columns = list(zip(*rows, strict=True))
        profiles = Profiles(
            segment=np.array(columns[0]),
            region=np.array(columns[1]),
            age_band=np.array(columns[2]),
            device=np.array(columns[3]),
            email_opt_in=np.array(columns[4]),
            tenure_days=np.full(len(rows), 100),
        )
        probs = logging_policy_probabilities(profiles, ACTIONS, floor, temperature)
        assert probs.shape == (len(rows), len(ACTIONS))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        assert (probs >= floor - 1e-12).all()

    def test_policy_depends_on_the_profile(self) -> None:
        profiles = Profiles(
            segment=np.array([0, 2]),
            region=np.array([0, 0]),
            age_band=np.array([0, 4]),
            device=np.array([0, 2]),
            email_opt_in=np.array([True, False]),
            tenure_days=np.array([10, 1000]),
        )
        probs = logging_policy_probabilities(profiles, ACTIONS)
        assert probs[0, 3] > probs[1, 3]  # push to app users
        assert probs[1, 2] > probs[0, 2]  # call_back to gold


class TestConfig:
    def test_rejects_bad_settings(self) -> None:
        with pytest.raises(NextbestError, match="n_customers"):
            SimulationConfig(n_customers=0)
        with pytest.raises(NextbestError, match="true effect model"):
            SimulationConfig(
                actions=(ActionSpec("teleport", None, None), ActionSpec("no_action", None, None))
            )
        with pytest.raises(NextbestError, match="span_days"):
            SimulationConfig(span_days=200)

    def test_subset_of_actions(self) -> None:
        actions = tuple(a for a in SimulationConfig().actions if a.id in {"call_back", "no_action"})
        world = simulate(SimulationConfig(n_customers=200, seed=1, actions=actions))
        assert set(world.truth.column("action").to_pylist()) == {"call_back", "no_action"}
        assert set(world.decisions.column("action").to_pylist()) <= {"call_back", "no_action"}


class TestCli:
    def test_simulate_command_writes_a_world(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "world"
        assert (
            main(
                ["simulate", "--customers", "300", "--seed", "5", "--out", str(out), "--start", "2025-06-01"]
            )
            == 0
        )
        for name in ("events", "customers", "decisions", "truth"):
            assert (out / f"{name}.parquet").is_file()
        meta = json.loads((out / "world.json").read_text())
        assert meta["start"] == "2025-06-01T00:00:00Z"
        assert meta["n_customers"] == 300
        summary = capsys.readouterr().out
        assert "300 customers" in summary
        assert "conversion" in summary
        events = pq.read_table(out / "events.parquet")
        assert events.column("timestamp").to_pandas().min() >= pd.Timestamp("2025-06-01", tz="UTC")

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (["--customers", "0"], "--customers must be at least 1"),
            (["--customers", "10", "--start", "someday"], "--start must be an ISO 8601"),
        ],
    )
    def test_bad_arguments_are_reported(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
    ) -> None:
        assert main(["simulate", "--out", str(tmp_path / "w"), *extra]) == 1
        assert message in capsys.readouterr().err

    def test_unwritable_output_is_reported(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        assert main(["simulate", "--customers", "20", "--out", str(blocker / "w")]) == 1
        assert "cannot write" in capsys.readouterr().err


@pytest.mark.slow
def test_100k_customers_in_under_a_minute(tmp_path: Path) -> None:
    began = time.perf_counter()
    world = simulate(SimulationConfig(n_customers=100_000, seed=1))
    write_world(world, tmp_path)
    assert time.perf_counter() - began < 60
    assert 20 <= world.events.num_rows / 100_000 <= 80


def _traits(n: int, rng: np.random.Generator | None = None) -> LatentTraits:
    def draw() -> np.ndarray:
        return np.zeros(n) if rng is None else rng.standard_normal(n)

    return LatentTraits(
        intent=draw(),
        engagement=draw(),
        price_sensitivity=np.full(n, 0.5) if rng is None else rng.random(n),
        app_affinity=draw(),
        email_affinity=draw(),
        dissatisfaction=draw(),
    )


def _profile_rows(n: int, rng: np.random.Generator | None = None) -> Profiles:
    def codes(k: int) -> np.ndarray:
        return np.zeros(n, np.int64) if rng is None else rng.integers(0, k, n)

    return Profiles(
        segment=codes(3),
        region=codes(5),
        age_band=codes(6),
        device=codes(3),
        email_opt_in=np.ones(n, np.bool_),
        tenure_days=np.full(n, 400),
    )


def _history(
    emails_14d: np.ndarray, open_rate: float, clicks: int, n: int | None = None
) -> HistoryAggregates:
    size = emails_14d.size if n is None else n

    def full(x: float) -> np.ndarray:
        return np.full(size, float(x))

    return HistoryAggregates(
        events_30d=full(10),
        days_since_active=full(5),
        emails_14d=emails_14d,
        email_open_rate_60d=full(open_rate),
        email_clicks_60d=full(clicks),
        discount_clicks=full(0),
        app_sessions_30d=full(0),
        service_contacts_30d=full(0),
        abandoned_cart=full(0),
        product_views_14d=full(2),
        purchases=full(1),
        unsubscribed=full(0),
    )
