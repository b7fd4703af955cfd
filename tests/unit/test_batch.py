"""The chunked batch job: hash buckets, chunk scoring with rejects, part files, resuming, conflicts."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.batch.buckets import bucket_of
from nextbest.batch.chunk import REJECTS_SCHEMA, ScoringOptions, rejects_table, score_chunk
from nextbest.batch.claim import JobConflictError
from nextbest.batch.job import JobInputs, run_job
from nextbest.data import ValidationReport, load_events
from nextbest.data.report import json_objects
from nextbest.journeys import requests_at_end
from nextbest.scoring import decide, decisions_table
from nextbest.scoring.scorer import JourneyScorer
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate, write_world
from tests.unit.test_scoring import make_scorer

T = TypeVar("T")
OPTIONS = ScoringOptions(model_version="1")
JOB = {"model": "models:/nextbest@champion", "model_version": "1"}


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(SimulationConfig(n_customers=150, seed=11))


@pytest.fixture(scope="module")
def scorer(world: SimulatedWorld) -> JourneyScorer:
    return make_scorer(load_events(world.events), world.customers)


@pytest.fixture
def inputs(world: SimulatedWorld, tmp_path: Path) -> JobInputs:
    write_world(world, tmp_path / "world")
    return JobInputs(
        tmp_path / "world" / "events.parquet", customers=tmp_path / "world" / "customers.parquet"
    )


def by_request(table: pa.Table) -> pa.Table:
    return table.sort_by([("customer_id", "ascending"), ("as_of", "ascending")])


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    actual, expected = by_request(actual), by_request(expected)
    exact = ["customer_id", "as_of", "top_action", "chosen_action", "suppressed"]
    assert actual.select(exact).equals(expected.select(exact))
    ranked = [[a["action"] for a in row] for row in actual.column("actions").to_pylist()]
    assert ranked == [[a["action"] for a in row] for row in expected.column("actions").to_pylist()]
    # Chunks batch requests differently, and a batch pads to its longest history: float sums may differ
    # in the last bits.
    np.testing.assert_allclose(actual.column("p_conversion"), expected.column("p_conversion"), rtol=1e-5)


@given(st.lists(st.text(max_size=12), min_size=1, max_size=40), st.integers(1, 50), st.integers(0, 39))
def test_a_customer_gets_the_same_bucket_however_its_id_is_stored(
    ids: list[str], buckets: int, cut: int
) -> None:
    plain = bucket_of(pa.array(ids), buckets)
    assert ((plain >= 0) & (plain < buckets)).all()
    cut = min(cut, len(ids))
    sliced = np.concatenate(
        [bucket_of(pa.array(ids).slice(0, cut), buckets), bucket_of(pa.array(ids).slice(cut), buckets)]
    )
    np.testing.assert_array_equal(sliced, plain)
    np.testing.assert_array_equal(bucket_of(pa.array(ids).dictionary_encode(), buckets), plain)
    np.testing.assert_array_equal(
        bucket_of(pa.chunked_array([ids[:cut], ids[cut:]], pa.string()), buckets), plain
    )


def test_integer_ids_share_buckets_with_their_text_and_buckets_are_balanced() -> None:
    np.testing.assert_array_equal(
        bucket_of(pa.array([7, 42, 1000]), 13), bucket_of(pa.array(["7", "42", "1000"]), 13)
    )
    counts = np.bincount(bucket_of(pa.array([f"c{i}" for i in range(20_000)]), 8), minlength=8)
    assert counts.min() > 0.9 * 20_000 / 8  # a hash of the text, not of its length or first byte


def test_many_chunks_give_the_rows_of_one(inputs: JobInputs, scorer: JourneyScorer, tmp_path: Path) -> None:
    one = run_job(scorer, inputs, tmp_path / "one", OPTIONS, description=JOB)
    many = run_job(scorer, inputs, tmp_path / "many", OPTIONS, description=JOB, chunk_events=1_000)
    assert one.chunks == 1
    assert many.chunks > 4
    assert one.requests == many.requests == 150
    parts = sorted((tmp_path / "many").glob("part-*.parquet"))
    assert len(parts) == many.chunks
    assert_same_rows(pq.read_table(tmp_path / "many"), pq.read_table(tmp_path / "one"))
    log = load_events(inputs.events)
    customers = pq.read_table(inputs.customers)
    expected = decisions_table(decide(scorer, log, requests_at_end(log), customers), "1")
    assert_same_rows(pq.read_table(tmp_path / "one"), expected)
    assert (tmp_path / "many" / "_SUCCESS").exists()
    assert not (tmp_path / "many" / "_work").exists()  # the split inputs are removed at the end


def test_a_rerun_scores_only_the_chunks_whose_part_is_missing(
    inputs: JobInputs, scorer: JourneyScorer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_job(scorer, inputs, out, OPTIONS, description=JOB, chunk_events=1_000)
    complete = pq.read_table(out)
    # What a kill leaves: the last parts missing, a half-written temporary file, no _SUCCESS.
    missing = sorted(out.glob("part-*.parquet"))[-3:]
    for part in missing:
        part.unlink()
    (out / f".{missing[0].name}.tmp").write_bytes(b"PAR1 cut short")
    (out / "_SUCCESS").unlink()
    rerun = run_job(scorer, inputs, out, OPTIONS, description=JOB, chunk_events=1_000)
    assert rerun.skipped_chunks == first.chunks - 3
    assert rerun.requests == sum(pq.read_metadata(p).num_rows for p in missing)
    resumed = pq.read_table(out)
    assert resumed.num_rows == 150
    assert len(set(resumed.column("customer_id").to_pylist())) == 150  # each request exactly once
    assert_same_rows(resumed, complete)
    again = run_job(scorer, inputs, out, OPTIONS, description=JOB, chunk_events=1_000)
    assert again.requests == 0
    assert again.skipped_chunks == first.chunks


def test_a_different_job_never_resumes_into_another_output(
    inputs: JobInputs, scorer: JourneyScorer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_job(scorer, inputs, out, OPTIONS, description=JOB)
    with pytest.raises(JobConflictError, match=r"model_version '1' → '2'.*--overwrite"):
        run_job(scorer, inputs, out, OPTIONS, description={**JOB, "model_version": "2"})
    replaced = run_job(
        scorer, inputs, out, OPTIONS, description={**JOB, "model_version": "2"}, overwrite=True
    )
    assert replaced.requests == 150
    assert json.loads((out / "_job.json").read_text())["model_version"] == "2"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(JobConflictError, match="mine"):
            run_job(scorer, inputs, other, OPTIONS, description=JOB, overwrite=overwrite)
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_customer_with_a_bad_event_goes_to_the_rejects_and_the_rest_finish(
    world: SimulatedWorld, scorer: JourneyScorer, tmp_path: Path
) -> None:
    events = world.events.cast(world.events.schema.set(1, pa.field("timestamp", pa.string())))
    texts = events.column("timestamp").to_pylist()
    bad_customer = events.column("customer_id")[5].as_py()
    texts[5] = "yesterday"
    events = events.set_column(1, "timestamp", pa.array(texts))
    (tmp_path / "world").mkdir()
    pcsv.write_csv(events, tmp_path / "world" / "events.csv")
    inputs = JobInputs(tmp_path / "world" / "events.csv")
    for chunk_events in (10_000_000, 1_000):
        out = tmp_path / f"out-{chunk_events}"
        summary = run_job(scorer, inputs, out, OPTIONS, description=JOB, chunk_events=chunk_events)
        scored = pq.read_table(out).column("customer_id").to_pylist()
        assert bad_customer not in scored
        assert len(scored) == 149
        rejects = pq.read_table(out / "_rejects")
        assert rejects.schema.equals(REJECTS_SCHEMA)
        assert summary.rejected == rejects.num_rows == 2
        rows = {r["table"]: r for r in rejects.to_pylist()}
        assert rows["events"]["customer_id"] == bad_customer
        assert rows["events"]["column"] == "timestamp"
        assert "unparsable timestamp" in rows["events"]["problem"]
        assert json.loads(rows["events"]["row"])["timestamp"] == "yesterday"
        assert rows["requests"]["customer_id"] == bad_customer
        assert rows["requests"]["problem"].startswith("not scored: 1 of the customer's events rows")


def test_malformed_csv_lines_met_while_splitting_are_rejected_once(
    world: SimulatedWorld, scorer: JourneyScorer, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    pcsv.write_csv(world.events.select(["customer_id", "timestamp", "event_type"]), path)
    with path.open("a") as file:
        file.write('"c-broken","2026-01-01T00:00:00Z","page_view","extra field"\n')
    out = tmp_path / "out"
    summary = run_job(scorer, JobInputs(path), out, OPTIONS, description=JOB, chunk_events=1_000)
    rejects = pq.read_table(out / "_rejects").to_pylist()
    assert summary.rejected == len(rejects) == 1
    assert rejects[0]["problem"] == "malformed CSV lines"
    assert "extra field" in rejects[0]["row"]
    assert pq.read_table(out).num_rows == 150


def test_given_requests_are_each_scored_once_whatever_the_chunking(
    world: SimulatedWorld, inputs: JobInputs, scorer: JourneyScorer, tmp_path: Path
) -> None:
    log = load_events(world.events)
    requests = requests_at_end(log).slice(0, 7)  # most chunks get no request at all
    pq.write_table(requests, tmp_path / "requests.parquet")
    asked = JobInputs(inputs.events, tmp_path / "requests.parquet", inputs.customers)
    summary = run_job(scorer, asked, tmp_path / "out", OPTIONS, description=JOB, chunk_events=1_000)
    written = pq.read_table(tmp_path / "out")
    assert summary.requests == written.num_rows == 7
    expected = decisions_table(decide(scorer, log, requests, world.customers), "1")
    assert_same_rows(written, expected)


def test_a_chunk_without_events_scores_its_customers_from_their_profile(
    world: SimulatedWorld, scorer: JourneyScorer
) -> None:
    requests = pa.table({"customer_id": ["nobody"], "as_of": pa.array([0], pa.timestamp("us", "UTC"))})
    chunk = score_chunk(scorer, None, requests, world.customers, OPTIONS)
    assert chunk.decisions.column("customer_id").to_pylist() == ["nobody"]
    assert chunk.events == 0
    assert chunk.rejects.num_rows == 0


def cpu_seconds(work: Callable[[], T]) -> tuple[float, T]:
    """The least CPU time of three runs of `work` (CPU, not wall: other processes share the machine)."""
    best = math.inf
    for _ in range(3):
        began = time.process_time()
        result = work()
        best = min(best, time.process_time() - began)
    return best, result


def test_writing_rejected_rows_costs_about_what_loading_them_does(world: SimulatedWorld) -> None:
    """Issue 16: duplicate rows made `nextbest score` ten times slower, all in writing their rejects (each
    row turned into Python objects and a JSON text): 14x the cost of loading them."""
    events = world.events.take(pa.array(np.repeat(np.arange(world.events.num_rows), 3)))

    def load() -> ValidationReport:
        report = ValidationReport(keep_rejected_rows=True)
        load_events(events, report)
        return report

    loading, report = cpu_seconds(load)
    (duplicates,) = report.rejected_rows
    writing, rejects = cpu_seconds(lambda: rejects_table(duplicates))
    assert rejects.num_rows == 2 * world.events.num_rows  # every repeat written out
    assert writing < 4 * loading


CELLS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "text": (pa.string(), st.text()),
    "category": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(["web", 'say "hi"', "a\\b\n"])),
    "count": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "value": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "flag": (pa.bool_(), st.booleans()),
    "at": (
        pa.timestamp("us", "UTC"),
        st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)),
    ),
    "items": (pa.list_(pa.int32()), st.lists(st.integers(-5, 5), max_size=3)),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({name: st.none() | values for name, (_, values) in CELLS.items()})))
def test_a_rejected_row_is_written_as_the_json_of_its_cells(rows: list[dict[str, Any]]) -> None:
    schema = pa.schema([(name, kind) for name, (kind, _) in CELLS.items()])
    table = pa.Table.from_pylist(rows, schema)
    for text, row in zip(json_objects(table).to_pylist(), rows, strict=True):
        read = json.loads(text)
        assert read.keys() == row.keys()
        for name, cell in row.items():
            if isinstance(cell, float) and math.isnan(cell):
                assert math.isnan(read[name])
            elif isinstance(cell, datetime):
                assert datetime.fromisoformat(read[name]) == cell
            else:
                assert read[name] == cell, name
