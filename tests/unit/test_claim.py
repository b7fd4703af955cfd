"""The output directory rules of `nextbest.batch.claim`: what a job may write into and replace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nextbest.batch.claim import JOB_FILE, JobConflictError, claim_output, record_job, written_files

JOB = {"model": "m", "chunks": 2}
FILES = ["part-00000.parquet", "_rejects/part-00000.parquet", "_SUCCESS"]


def written(out: Path, files: list[str] = FILES) -> Path:
    """`out` as a job leaves it: its record and its files."""
    claim_output(out, JOB, files, [], overwrite=False)
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("written by the job")
    return out


def test_a_replacement_removes_the_recorded_files_their_temporaries_and_nothing_else(tmp_path: Path) -> None:
    out = written(tmp_path / "out")
    (out / ".part-00000.parquet.tmp").write_text("cut short by a kill")
    claim_output(out, {**JOB, "chunks": 1}, ["part-00000.parquet"], [], overwrite=True)
    assert written_files(out) == []
    assert json.loads((out / JOB_FILE).read_text())["files"] == ["part-00000.parquet"]


def test_a_foreign_file_stops_a_replacement_before_anything_is_removed(tmp_path: Path) -> None:
    out = written(tmp_path / "out")
    for k in range(7):
        (out / "_rejects" / f"notes-{k}.txt").write_text("mine")
    (out / "link").symlink_to(tmp_path)  # a link is an entry of its own: never followed, never removed
    before = sorted(written_files(out))
    with pytest.raises(JobConflictError, match=r"did not write: _rejects/notes-0.txt, .* and 3 more;"):
        claim_output(out, JOB, FILES, [], overwrite=True)
    assert sorted(written_files(out)) == before
    assert (tmp_path / "out").is_dir()


def test_another_job_is_replaced_only_when_asked_and_the_same_job_resumes(tmp_path: Path) -> None:
    out = written(tmp_path / "out")
    with pytest.raises(JobConflictError, match="changed: chunks 2 → 3"):
        claim_output(out, {**JOB, "chunks": 3}, FILES, [], overwrite=False)
    claim_output(out, JOB, FILES, [], overwrite=False)  # resumed: its files stay
    assert sorted(written_files(out)) == sorted(FILES)
    claim_output(out, JOB, FILES, [], overwrite=False, resumable=False)  # restarted: they go
    assert written_files(out) == []


@pytest.mark.parametrize(
    "record",
    ["{}", "not json", json.dumps({**JOB, "format": 1}), json.dumps({**JOB, "writer": "nextbest score"})],
)
def test_a_record_nextbest_did_not_write_is_no_licence(tmp_path: Path, record: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / JOB_FILE).write_text(record)
    (out / "part-00000.parquet").write_text("someone else's")
    with pytest.raises(JobConflictError, match="does not hold a nextbest score output"):
        claim_output(out, JOB, FILES, [], overwrite=True)
    assert (out / "part-00000.parquet").read_text() == "someone else's"


def test_a_record_listing_paths_outside_its_directory_removes_nothing_there(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("keep")
    record_job(out, JOB, ["../precious.txt", str(tmp_path / "precious.txt")])
    claim_output(out, JOB, FILES, [], overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("out", ["data/events.parquet", "data", "data/events.parquet/x", "catalog.yaml"])
def test_the_output_is_never_an_input_or_around_one(
    tmp_path: Path, out: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "events.parquet").write_text("events")
    (tmp_path / "catalog.yaml").write_text("actions: []")
    (tmp_path / "data-link").symlink_to(tmp_path / "data")
    inputs = [Path("data-link/events.parquet"), tmp_path / "catalog.yaml"]
    with pytest.raises(JobConflictError, match="never writes over its input"):
        claim_output(Path(out), JOB, FILES, inputs, overwrite=True)
    assert (tmp_path / "data" / "events.parquet").read_text() == "events"
    assert (tmp_path / "catalog.yaml").read_text() == "actions: []"


def test_the_output_is_never_a_file(tmp_path: Path) -> None:
    (tmp_path / "scores.parquet").write_text("a file")
    with pytest.raises(JobConflictError, match="never replaces a file"):
        claim_output(tmp_path / "scores.parquet", JOB, FILES, [], overwrite=True)
    assert (tmp_path / "scores.parquet").read_text() == "a file"
