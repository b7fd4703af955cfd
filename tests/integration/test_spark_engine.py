"""The Spark engine scores like the local one, whatever the chunk a customer lands in: the same decisions
(to float32 precision) and the same rejects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from nextbest.batch.chunk import ScoringOptions, score_chunk
from nextbest.batch.job import JobInputs
from nextbest.batch.spark import run_spark_job
from nextbest.cli import main
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys import requests_at_end
from nextbest.scoring.pyfunc import load_scorer
from tests.integration.conftest import registered_world

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "models:/nextbest@champion"
BAD = "bad-timestamp customer"
# The network computes in float32: which requests share a batch, and how many threads run it, move a
# probability by about 1e-7 and a score (value times probability) by about 1e-5 (so does the local
# engine's chunk size); names, ranks and suppressions must be exact.
CLOSE = 1e-5  # relative and absolute
SPARK = {"spark.master": "local[2]", "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
CATALOG = {
    "churn_cost": 15.0,
    "contact_events": ["email_sent", "sms_sent", "push_sent", "outbound_call"],
    "contact_caps": [{"max": 4, "days": 7}],
    "context": {"store_open": "number"},  # a column of the requests table
    "actions": [
        {"id": "email_offer", "value": 40.0, "cost": 0.2, "eligible_if": "profile.email_opt_in == 1"},
        {
            "id": "discount_10",
            "value": 36.0,
            "eligible_if": 'context.store_open == 1 and days_since(event_type="purchase") > 14',
            "cooldown_days": 30,
        },
        {
            "id": "call_back",
            "value": 40.0,
            "cost": 4.0,
            "eligible_if": 'profile.segment in ["gold", "silver"]',
        },
        {"id": "no_action", "value": 40.0},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def _stop_spark() -> Iterator[None]:
    yield
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def test_spark_job_scores_and_rejects_like_the_local_engine(
    registry: mlflow.MlflowClient, tmp_path: Path
) -> None:
    world, log, _ = registered_world(registry, tmp_path, n_customers=60, seed=12)
    inputs = _inputs(world.events, world.customers, requests_at_end(log), tmp_path)
    options = ScoringOptions(model_version="1", catalog=ActionCatalog.from_dict(CATALOG), top_k=3)

    local = score_chunk(load_scorer(MODEL), inputs.events, inputs.requests, inputs.customers, options)
    out = tmp_path / "scores"
    summary = run_spark_job(MODEL, inputs, out, options, chunks=3, spark_conf=SPARK)

    decisions, rejects = pq.read_table(out), pq.read_table(out / "_rejects")
    assert (summary.requests, summary.rejected) == (decisions.num_rows, rejects.num_rows)
    assert decisions.num_rows == 2 * world.customers.num_rows + 1  # the bad customer's request is not scored
    _assert_same_decisions(decisions, local.decisions)
    assert _rows(rejects) == _rows(local.rejects)
    assert BAD not in decisions.column("customer_id").to_pylist()
    rejected = {(r["table"], r["customer_id"]) for r in rejects.to_pylist()}
    repeated = world.customers.column("customer_id")[1].as_py()
    assert {("events", BAD), ("requests", BAD), ("customers", repeated)} <= rejected


def test_spark_job_without_requests_scores_every_customer_after_its_last_event(
    registry: mlflow.MlflowClient, tmp_path: Path
) -> None:
    """No requests and no profiles (the other side of every cogroup is empty), with evidence."""
    world, _, _ = registered_world(registry, tmp_path, n_customers=40, seed=13)
    events = tmp_path / "world" / "events.parquet"
    options = ScoringOptions(model_version="1", explain=2)

    local = score_chunk(load_scorer(MODEL), events, None, None, options)
    run_spark_job(MODEL, JobInputs(events), tmp_path / "scores", options, chunks=4, spark_conf=SPARK)

    decisions = pq.read_table(tmp_path / "scores")
    assert decisions.num_rows == world.customers.num_rows
    _assert_same_decisions(decisions, local.decisions)
    order = [("customer_id", "ascending")]
    got, expected = (t.sort_by(order).column("evidence").to_pylist() for t in (decisions, local.decisions))
    for a, b in zip(got, expected, strict=True):
        assert [e["timestamp"] for e in a] == [e["timestamp"] for e in b]
        np.testing.assert_allclose([e["weight"] for e in a], [e["weight"] for e in b], rtol=CLOSE, atol=CLOSE)
    assert pq.read_table(tmp_path / "scores" / "_rejects").num_rows == local.rejects.num_rows == 0


def _inputs(events: pa.Table, customers: pa.Table, at_end: pa.Table, tmp_path: Path) -> JobInputs:
    """Events as CSV, with a customer whose second event has a bad timestamp, a repeated row and "NA";
    customers as two Parquet parts; requests at the end of each history and a week before it, plus one
    for a customer nobody knows, with a context column."""
    first = customers.column("customer_id")[0]
    bad = events.filter(pc.equal(events.column("customer_id"), first)).slice(0, 2)
    bad = bad.set_column(0, "customer_id", pa.array([BAD] * 2))
    events = pa.concat_tables([events, events.slice(5, 1), bad])
    text = pc.cast(events.column("timestamp"), pa.string()).to_pylist()
    text[-1] = "not a time"
    events = events.set_column(1, "timestamp", pa.array(text))
    channels = events.column("channel").to_pylist()
    channels[0] = "NA"  # missing, as pyarrow reads CSV
    pcsv.write_csv(events.set_column(3, "channel", pa.array(channels)), tmp_path / "events.csv")

    # The second part repeats a customer of the first with another profile: the first row is kept.
    (tmp_path / "customers").mkdir()
    original = customers.slice(1, 1)
    segment = "bronze" if original.column("segment")[0].as_py() == "gold" else "gold"
    repeated = original.set_column(1, "segment", pa.array([segment]))
    pq.write_table(customers.slice(0, 30), tmp_path / "customers" / "part-0.parquet")
    later = pa.concat_tables([customers.slice(30), repeated])
    pq.write_table(later, tmp_path / "customers" / "part-1.parquet")

    week = pa.scalar(timedelta(days=7), pa.duration("us"))
    earlier = at_end.set_column(1, "as_of", pc.subtract(at_end.column("as_of"), week))
    extra = pa.table({"customer_id": [BAD, "nobody"], "as_of": at_end.column("as_of").take([0, 1])})
    requests = pa.concat_tables([at_end, earlier, extra.cast(at_end.schema)])
    open_ = np.arange(requests.num_rows) % 2
    pq.write_table(requests.append_column("store_open", pa.array(open_)), tmp_path / "requests.parquet")
    return JobInputs(tmp_path / "events.csv", tmp_path / "requests.parquet", tmp_path / "customers")


def _assert_same_decisions(spark: pa.Table, local: pa.Table) -> None:
    order = [("customer_id", "ascending"), ("as_of", "ascending")]
    spark, local = spark.sort_by(order), local.sort_by(order)
    assert spark.schema == local.schema
    assert spark.num_rows == local.num_rows
    for name in ("customer_id", "as_of", "model_version", "top_action", "chosen_action", "suppressed"):
        assert spark.column(name).to_pylist() == local.column(name).to_pylist(), name
    for name in ("p_conversion", "p_churn", "chosen_probability"):
        np.testing.assert_allclose(spark.column(name), local.column(name), rtol=CLOSE, atol=CLOSE)
    for got, expected in zip(
        spark.column("actions").to_pylist(), local.column("actions").to_pylist(), strict=True
    ):
        assert [(a["action"], a["rank"]) for a in got] == [(a["action"], a["rank"]) for a in expected]
        for a, b in zip(got, expected, strict=True):
            values = ("score", "uplift", "p_conversion", "p_churn")
            np.testing.assert_allclose([a[v] for v in values], [b[v] for v in values], rtol=CLOSE, atol=CLOSE)


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted(tuple(row.values()) for row in table.to_pylist())


def test_score_command_runs_the_spark_engine(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, _, _ = registered_world(registry, tmp_path, n_customers=30, seed=14)
    out = tmp_path / "scores"
    base = ["score", "--model", MODEL, "--events", str(tmp_path / "world" / "events.parquet")]
    base += ["--engine", "spark", "--chunk-events", "400"]
    base += [f"--spark-conf={key}={value}" for key, value in SPARK.items()]
    command = [*base, "--out", str(out)]
    for _ in range(2):  # a rerun of the same job starts over (Spark does not resume)
        assert main(command) == 0
        assert "Scored 30 requests on Spark" in capsys.readouterr().out
        assert pq.read_table(out).num_rows == world.customers.num_rows
        assert json.loads((out / "_job.json").read_text())["model_version"] == "1"
    (out / "notes.txt").write_text("mine")  # Spark's own overwrite mode would delete it
    assert main([*command, "--overwrite"]) == 1
    assert "did not write: notes.txt;" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    assert list(out.glob("part-*.parquet"))  # nothing removed
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main([*base, "--out", str(foreign), "--overwrite"]) == 1
    assert "does not hold a nextbest score output" in capsys.readouterr().err
    assert (foreign / "keep.txt").exists()
