"""The MLflow pyfunc model in a real (SQLite) tracking store and registry: logged, registered, loaded back
by alias, it scores exactly as the in-memory scorer; `nextbest score` uses it on contract tables."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from nextbest.cli import main
from nextbest.data import load_events
from nextbest.journeys import LabelRules, requests_at_end
from nextbest.model import TemperatureScaling
from nextbest.registry import assign_aliases
from nextbest.scoring import decide, decisions_table
from nextbest.scoring.decision_log import DecisionLogWriter, with_outcomes
from nextbest.scoring.pyfunc import load_scorer, load_version, log_model
from nextbest.scoring.records import score_records
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulationConfig, simulate, write_world
from tests.integration.conftest import registered_world
from tests.unit.test_scoring import make_scorer
from tests.unit.test_stacking import make_hybrid

pytestmark = pytest.mark.integration


def test_logged_model_loads_by_alias_and_scores_like_the_scorer(
    registry: mlflow.MlflowClient, tmp_path: Path
) -> None:
    world = simulate(SimulationConfig(n_customers=120, seed=5))
    log = load_events(world.events)
    scorer = make_scorer(log, world.customers)
    records = records_from_tables(log, requests_at_end(log).slice(0, 25), world.customers)
    with mlflow.start_run() as run:
        scorer.metadata["run_id"] = run.info.run_id
        info = log_model(scorer, records[:1], registered_model_name="nextbest")
    assert assign_aliases(registry, "nextbest", str(info.registered_model_version)) == [
        "challenger",
        "champion",
    ]

    loaded = mlflow.pyfunc.load_model("models:/nextbest@champion")
    signature = loaded.metadata.signature
    assert signature is not None
    assert "events" in str(signature.inputs)
    answers = loaded.predict([r.model_dump() for r in records], params={"model_version": "1"})
    expected = score_records(scorer, records, "1")
    assert [a.model_dump() for a in answers] == [e.model_dump() for e in expected]

    restored, version = load_version("models:/nextbest@champion")
    assert version == "1"
    assert load_version(info.model_uri)[1] == run.info.run_id
    requests = requests_at_end(log)
    np.testing.assert_array_equal(
        restored.score(log, requests).action_p_conversion, scorer.score(log, requests).action_p_conversion
    )

    second = log_model(scorer, records[:1], registered_model_name="nextbest")
    assert assign_aliases(registry, "nextbest", str(second.registered_model_version)) == ["challenger"]
    assert str(registry.get_model_version_by_alias("nextbest", "champion").version) == "1"


def test_a_logged_hybrid_loads_with_its_trees_and_scores_like_the_scorer(
    registry: mlflow.MlflowClient, tmp_path: Path
) -> None:
    """The hybrid travels in the same pyfunc: trees and blends come back, and online records and batch
    tables score exactly as the in-memory hybrid."""
    world = simulate(SimulationConfig(n_customers=120, seed=5))
    log = load_events(world.events)
    hybrid = make_hybrid(log, world.customers)
    records = records_from_tables(log, requests_at_end(log).slice(0, 25), world.customers)
    with mlflow.start_run():
        info = log_model(hybrid, records[:1], registered_model_name="nextbest")
    restored = load_scorer(f"models:/nextbest/{info.registered_model_version}")
    assert restored.stacking is not None
    assert restored.stacking.blends == (hybrid.stacking.blends if hybrid.stacking else {})
    answers = mlflow.pyfunc.load_model(info.model_uri).predict(
        [r.model_dump() for r in records], params={"model_version": "1"}
    )
    assert [a.model_dump() for a in answers] == [e.model_dump() for e in score_records(hybrid, records, "1")]
    requests = requests_at_end(log)
    np.testing.assert_array_equal(
        restored.score(log, requests, world.customers).action_p_conversion,
        hybrid.score(log, requests, world.customers).action_p_conversion,
    )


def test_score_command_writes_the_batch_output(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, log, scorer = registered_world(registry, tmp_path, n_customers=80, seed=6)
    out = tmp_path / "scores" / "scores.parquet"
    args = [
        "score",
        "--model",
        "models:/nextbest@champion",
        "--events",
        str(tmp_path / "world" / "events.parquet"),
    ]
    customers = ["--customers", str(tmp_path / "world" / "customers.parquet")]
    assert main([*args, *customers, "--out", str(out), "--top-k", "2"]) == 0
    assert "Scored 80 requests" in capsys.readouterr().out
    written = pq.read_table(out)
    expected = decisions_table(decide(scorer, log, requests_at_end(log), world.customers), "1", 2)
    assert written.column_names == expected.column_names
    assert written.column("customer_id").equals(expected.column("customer_id"))
    assert written.column("model_version").to_pylist() == ["1"] * 80
    np.testing.assert_allclose(written.column("p_conversion"), expected.column("p_conversion"), rtol=1e-6)
    assert written.column("actions").to_pylist()[0][0]["action"] == expected.column("top_action")[0].as_py()
    explained = tmp_path / "explained.parquet"
    assert main([*args, *customers, "--out", str(explained), "--explain", "2"]) == 0
    evidence = pq.read_table(explained).column("evidence").to_pylist()
    assert all(len(events) == 2 for events in evidence)  # every simulated customer has events


BAD_RULES = {
    "profile.segment > 5": "`profile.segment` is a text and `5` a number",
    "profile.no_such_attr == 1": "`profile.no_such_attr`: unknown profile name",
    "(" * 40 + "true" + ")" * 40: "rules nest at most 20 deep",
}


def test_score_with_a_bad_catalog_fails_before_writing_anything(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule that cannot work against the model fails at once, naming the entry, instead of at scoring
    time in some chunk (a partial output) or by suppressing its action for everyone."""
    registered_world(registry, tmp_path, n_customers=30, seed=2)
    catalog = tmp_path / "what-if.yaml"
    out = tmp_path / "scores"
    args = ["score", "--model", "models:/nextbest@champion", "--catalog", str(catalog), "--out", str(out)]
    args += ["--events", str(tmp_path / "world" / "events.parquet")]
    args += ["--customers", str(tmp_path / "world" / "customers.parquet")]
    for rule, message in BAD_RULES.items():
        catalog.write_text(f"actions:\n  - {{id: no_action}}\n  - {{id: call_back, eligible_if: '{rule}'}}\n")
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"{catalog}: actions[1] (call_back): eligible_if: " in err
        assert message in err
        assert "Traceback" not in err
        assert not out.exists()


def test_score_command_with_a_missing_model_is_a_message(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_world(simulate(SimulationConfig(n_customers=10, seed=1)), tmp_path / "w")
    args = [
        "score",
        "--model",
        "models:/nextbest@champion",
        "--events",
        str(tmp_path / "w" / "events.parquet"),
    ]
    assert main([*args, "--out", str(tmp_path / "o.parquet")]) == 1
    err = capsys.readouterr().err
    assert "models:/nextbest@champion is not in the registry at sqlite:" in err
    assert "Traceback" not in err


def test_evaluate_command_reports_every_policy_against_the_truth(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, _, scorer = registered_world(registry, tmp_path, n_customers=150, seed=9)
    folder = tmp_path / "world"
    args = ["evaluate", "--model", "models:/nextbest@champion", "--events", str(folder / "events.parquet")]
    args += [
        "--customers",
        str(folder / "customers.parquet"),
        "--decisions",
        str(folder / "decisions.parquet"),
    ]
    args += [
        "--truth",
        str(folder / "truth.parquet"),
        "--resamples",
        "50",
        "--json",
        str(tmp_path / "e.json"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "of the random-to-oracle gap" in out
    report = json.loads((tmp_path / "e.json").read_text())
    in_catalog = sum(a in scorer.actions for a in world.decisions.column("action").to_pylist())
    assert report["decisions"] == in_catalog
    assert report["skipped"]["action not in the catalog"] == world.decisions.num_rows - in_catalog
    assert {"learned", "random", "logging", "always no_action"} <= set(report["estimates"])
    for policy in ("learned", "random", "oracle", "logging"):
        assert np.isfinite(report["true_values"][policy])
    assert report["true_values"]["oracle"] >= report["true_values"]["learned"]
    assert report["true_values"]["oracle ignoring rules"] >= report["true_values"]["oracle"]
    for estimates in report["estimates"].values():
        for estimate in estimates.values():
            assert estimate["low"] <= estimate["value"] <= estimate["high"]
    runs = registry.search_runs([registry.get_experiment_by_name("nextbest-evaluation").experiment_id])
    assert "policy/learned/dr/value" in runs[0].data.metrics


def test_evaluate_reads_a_decision_log_with_outcomes_from_the_events(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the service logged is evaluated like a decisions table: the served action and its
    probability are the log, each outcome is read off the events after the decision."""
    world, log, scorer = registered_world(registry, tmp_path, n_customers=150, seed=10)
    decided = world.decisions.slice(0, 60)
    requests = pa.table({"customer_id": decided.column("customer_id"), "as_of": decided.column("timestamp")})
    records = records_from_tables(log, requests, world.customers)
    writer = DecisionLogWriter(tmp_path / "decision-log", rotate_rows=25)
    writer.append(records, score_records(scorer, records, "1"))
    writer.close()
    folder = tmp_path / "world"
    args = ["evaluate", "--model", "models:/nextbest@champion", "--events", str(folder / "events.parquet")]
    args += ["--customers", str(folder / "customers.parquet"), "--decisions", str(tmp_path / "decision-log")]
    args += ["--resamples", "20", "--json", str(tmp_path / "log.json"), "--no-mlflow"]
    assert main(args) == 0
    report = json.loads((tmp_path / "log.json").read_text())
    skipped = report["skipped"]["missing propensity or outcome"]  # outcome windows still open
    assert report["decisions"] + skipped + report["skipped"]["action not in the catalog"] == 60
    assert report["decisions"] > 0
    learned = report["estimates"]["learned"]["ips"]
    logged = report["estimates"]["logging"]["on-policy"]
    # Exploration is off, so the logging policy is the learned one: IPS reproduces its on-policy mean.
    assert learned["value"] == pytest.approx(logged["value"])


def test_promote_moves_the_champion_only_when_the_challenger_is_not_worse(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = simulate(SimulationConfig(n_customers=200, seed=10))
    write_world(world, tmp_path / "world")
    log = load_events(world.events)
    example = records_from_tables(log, requests_at_end(log).slice(0, 1))
    scorer = make_scorer(log, world.customers)
    miscalibrated = make_scorer(log, world.customers)
    miscalibrated.calibrators["action_conversion"] = TemperatureScaling(temperature=1.0, bias=6.0)
    folder = tmp_path / "world"
    args = [
        "promote",
        "--events",
        str(folder / "events.parquet"),
        "--customers",
        str(folder / "customers.parquet"),
    ]
    args += ["--decisions", str(folder / "decisions.parquet"), "--resamples", "100"]

    for candidate, expected_status, verdict in ((scorer, 0, "Promoted"), (miscalibrated, 3, "Refused")):
        with mlflow.start_run():
            info = log_model(candidate, example, "nextbest")
        assign_aliases(registry, "nextbest", str(info.registered_model_version))
        if info.registered_model_version == 1:
            # The first version is champion and challenger at once: nothing to compare.
            assert main(args) == 0
            assert "already the champion" in capsys.readouterr().out
            with mlflow.start_run():
                info = log_model(candidate, example, "nextbest")
            assign_aliases(registry, "nextbest", str(info.registered_model_version))
        champion_before = registry.get_model_version_by_alias("nextbest", "champion").version
        assert main(args) == expected_status
        out = capsys.readouterr().out
        assert verdict in out
        assert "calibration error" in out
        assert "policy value (DR)" in out
        champion_after = registry.get_model_version_by_alias("nextbest", "champion").version
        if verdict == "Promoted":
            assert str(champion_after) == str(info.registered_model_version)
        else:
            assert champion_after == champion_before


def test_a_log_without_exploration_is_said_to_value_no_other_policy_and_promotes_nothing(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every propensity 1: `evaluate` names why its estimates of other policies are NaN or biased, and
    `promote` refuses even a challenger that decides exactly as the champion does."""
    world, log, scorer = registered_world(registry, tmp_path, n_customers=150, seed=11)
    deterministic = world.decisions.set_column(
        world.decisions.schema.get_field_index("propensity"),
        "propensity",
        pa.array(np.ones(world.decisions.num_rows)),
    )
    pq.write_table(deterministic, tmp_path / "deterministic.parquet")
    folder = tmp_path / "world"
    tables = ["--events", str(folder / "events.parquet"), "--customers", str(folder / "customers.parquet")]
    tables += ["--decisions", str(tmp_path / "deterministic.parquet"), "--resamples", "20"]
    evaluate = ["evaluate", "--model", "models:/nextbest@champion", *tables, "--no-mlflow"]
    assert main([*evaluate, "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    reason = "no logged decision has a propensity below 1: the logging policy never explored"
    assert "This log cannot value learned, random, always email_offer" in out
    assert reason in out
    assert json.loads((tmp_path / "e.json").read_text())["unsupported"]["learned"].startswith(reason)

    with mlflow.start_run():
        info = log_model(scorer, records_from_tables(log, requests_at_end(log).slice(0, 1)), "nextbest")
    assign_aliases(registry, "nextbest", str(info.registered_model_version))
    assert main(["promote", *tables]) == 3
    out = capsys.readouterr().out
    assert f"This log cannot value champion, challenger: {reason}" in out
    assert "Refused: nextbest@champion stays at version 1." in out
    assert str(registry.get_model_version_by_alias("nextbest", "champion").version) == "1"


def test_promote_reads_outcomes_off_the_events_when_the_decisions_have_none(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store's export has no outcome columns: promote reads them off the events by the label rules, and
    judges as it does on the same decisions with the world's own outcomes (which follow those rules)."""
    world, log, _ = registered_world(registry, tmp_path, n_customers=150, seed=12)
    miscalibrated = make_scorer(log, world.customers)
    miscalibrated.calibrators["action_conversion"] = TemperatureScaling(temperature=1.0, bias=6.0)
    with mlflow.start_run():
        info = log_model(
            miscalibrated, records_from_tables(log, requests_at_end(log).slice(0, 1)), "nextbest"
        )
    assign_aliases(registry, "nextbest", str(info.registered_model_version))
    # The events end 20 days before the last decision: the latest decisions' windows are still open.
    end = pc.subtract(pc.max(world.decisions["timestamp"]), pa.scalar(20 * 86_400_000_000, pa.duration("us")))
    events = world.events.filter(pc.less(world.events["timestamp"], end))
    pq.write_table(events, tmp_path / "events.parquet")
    bare = world.decisions.drop_columns(["converted", "churned"])
    known = with_outcomes(bare, load_events(events), LabelRules())
    closed = pc.and_(pc.is_valid(known["converted"]), pc.is_valid(known["churned"]))
    decided = known.filter(closed).column("converted").to_pylist()
    assert decided == world.decisions.filter(closed).column("converted").to_pylist()  # the rules agree
    pq.write_table(bare, tmp_path / "bare.parquet")
    pq.write_table(known.filter(closed), tmp_path / "closed.parquet")
    tables = ["--events", str(tmp_path / "events.parquet")]
    tables += ["--customers", str(tmp_path / "world" / "customers.parquet"), "--resamples", "50"]
    printed = {}
    for name in ("bare", "closed"):
        assert main(["promote", *tables, "--decisions", str(tmp_path / f"{name}.parquet")]) == 3
        printed[name] = capsys.readouterr().out
    still_open = world.decisions.num_rows - known.filter(closed).num_rows
    assert still_open > 0
    left_out, *figures = printed["bare"].splitlines()
    total = world.decisions.num_rows
    assert left_out == f"decisions: {still_open:,} of {total:,} left out, their outcome window still open"
    assert figures == printed["closed"].splitlines()
