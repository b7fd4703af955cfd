"""`nextbest score --overwrite`, in process: it never removes an input, a plain file, or a file the job did
not write, and an unreadable input is a message (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from nextbest.cli import main
from tests.integration.conftest import registered_world

pytestmark = pytest.mark.integration


@pytest.fixture
def world(registry: mlflow.MlflowClient, tmp_path: Path) -> Path:
    """A simulated world's tables (tmp_path/world) and a model for it registered as nextbest@champion."""
    registered_world(registry, tmp_path, n_customers=40, seed=5)
    return tmp_path / "world"


def score(world: Path, out: Path, *extra: str, events: Path | None = None) -> list[str]:
    return [
        "score",
        "--model",
        "models:/nextbest@champion",
        "--events",
        str(events or world / "events.parquet"),
        "--customers",
        str(world / "customers.parquet"),
        "--out",
        str(out),
        *extra,
    ]


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "out",
    ["customers.parquet", "events.parquet", ".", "events.parquet/scores"],
    ids=["is-the-customers", "is-the-events", "holds-the-inputs", "inside-an-input"],
)
def test_overwrite_never_removes_an_input(world: Path, out: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = contents(world)
    assert main(score(world, world / out, "--overwrite")) == 1
    assert "never writes over its input" in capsys.readouterr().err
    assert contents(world) == before


def test_overwrite_never_removes_a_plain_file(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "scores.parquet"
    plain.write_text("a report someone keeps here")
    assert main(score(world, plain, "--overwrite")) == 1
    assert "never replaces a file" in capsys.readouterr().err
    assert plain.read_text() == "a report someone keeps here"


def test_overwrite_removes_only_what_the_job_wrote(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores"
    assert main(score(world, out, "--chunk-events", "500")) == 0
    record = json.loads((out / "_job.json").read_text())
    assert record["writer"] == "nextbest score"
    assert {"part-00000.parquet", "_SUCCESS"} <= set(record["files"])

    # Files the job did not write stop a replacement before anything is removed.
    (out / "notes.txt").write_text("mine")
    (out / "_rejects" / "reviewed.csv").write_text("mine too")
    written = contents(out)
    assert main(score(world, out, "--overwrite", "--top-k", "1")) == 1
    err = capsys.readouterr().err
    assert "did not write: _rejects/reviewed.csv, notes.txt; " in err
    assert contents(out) == written

    # Without them, the job's own files are replaced.
    (out / "notes.txt").unlink()
    (out / "_rejects" / "reviewed.csv").unlink()
    assert main(score(world, out, "--overwrite", "--top-k", "1")) == 0
    assert json.loads((out / "_job.json").read_text())["options"]["top_k"] == 1
    assert pq.read_table(out).num_rows == 40


def test_a_job_record_that_nextbest_did_not_write_is_no_licence_to_replace(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores"
    out.mkdir()
    (out / "_job.json").write_text("{}")
    (out / "part-00000.parquet").write_text("someone else's")
    assert main(score(world, out, "--overwrite")) == 1
    assert "does not hold a nextbest score output" in capsys.readouterr().err
    assert (out / "part-00000.parquet").read_text() == "someone else's"


def test_a_truncated_parquet_input_is_a_message_as_validate_words_it(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.parquet"
    whole = (world / "events.parquet").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    assert main(["validate", "--events", str(cut)]) == 1
    worded = f"events table {cut}: cannot be read: "
    assert worded in capsys.readouterr().out
    assert main(score(world, tmp_path / "scores", events=cut)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nextbest: error: {worded}")
    assert "Traceback" not in err
    assert not (tmp_path / "scores").exists()
