"""The local batch scoring job: bounded memory, part files written atomically, resumable after a kill.

Output layout (`out` is a directory, readable as one Parquet data set):

    out/part-00000.parquet ...   one part per chunk of customers; a part exists only once complete
    out/_rejects/part-00000.parquet ...   the rows each chunk rejected, with the reason (REJECTS_SCHEMA)
    out/_rejects/partition.parquet       malformed CSV lines met while partitioning (no customer known)
    out/_job.json                what the run scores with (inputs, model version, catalog, options)
    out/_SUCCESS                 written last
    out/_work/                   the inputs split into chunks while the job runs (removed at the end)

Readers of Parquet data sets (pyarrow, pandas, Spark) skip names starting with "_" or ".".

A chunk is a hash bucket of customers (`nextbest.batch.buckets`). An input larger than one chunk is first
split into per-chunk files in one streaming pass, so memory is bounded by the chunk size, not the input.
Each part is written to a hidden temporary file and renamed into place, so a part is either whole or
absent; a rerun of the same job skips the chunks whose part exists, and every request lands in exactly
one part (or, if rejected, in exactly one rejects part).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nextbest.batch.buckets import DEFAULT_CHUNK_EVENTS, BucketWriter, bucket_path, chunk_count
from nextbest.batch.chunk import REJECTS_SCHEMA, ScoredChunk, ScoringOptions, rejects_table, score_chunk
from nextbest.data import CUSTOMERS, EVENTS, REQUESTS, Finding, TableSpec, ValidationReport
from nextbest.data.io import iter_raw_batches
from nextbest.errors import NextbestError
from nextbest.scoring.output import output_schema
from nextbest.scoring.scorer import JourneyScorer

JOB_FILE = "_job.json"
SUCCESS_FILE = "_SUCCESS"
WORK_DIR = "_work"
REJECTS_DIR = "_rejects"
PARTITIONED_FILE = "_PARTITIONED"
JOB_FORMAT = 1


class JobConflictError(NextbestError):
    """The output directory holds something this job must not resume or replace."""


@dataclass(frozen=True)
class JobInputs:
    """The contract tables of a scoring job (files or directories of Parquet part files)."""

    events: Path
    requests: Path | None = None
    customers: Path | None = None

    def tables(self) -> dict[str, tuple[TableSpec, Path]]:
        """The given tables by name, with their specs."""
        given = {EVENTS: self.events, REQUESTS: self.requests, CUSTOMERS: self.customers}
        return {spec.name: (spec, path) for spec, path in given.items() if path is not None}


@dataclass(frozen=True)
class JobSummary:
    """What a run did. `requests`, `events` and `rejected` count this run's chunks only."""

    out: Path
    chunks: int
    skipped_chunks: int
    requests: int
    events: int
    rejected: int
    seconds: float
    findings: tuple[Finding, ...]

    def render(self) -> str:
        rate = self.requests / max(self.seconds, 1e-9)
        lines = [
            f"Scored {self.requests:,} requests from {self.events:,} events in {self.seconds:.1f} s "
            f"({rate:,.0f} customers/s, {self.events / max(self.seconds, 1e-9):,.0f} events/s); "
            f"wrote {self.out}.",
        ]
        if self.skipped_chunks:
            lines.append(f"Resumed: {self.skipped_chunks} of {self.chunks} chunks were already done.")
        rejects = self.out / REJECTS_DIR
        lines.append(f"Rejected {self.rejected:,} rows" + (f" (see {rejects}):" if self.rejected else "."))
        lines += [f"  {finding}" for finding in self.findings]
        return "\n".join(lines)


def run_job(
    scorer: JourneyScorer,
    inputs: JobInputs,
    out: Path,
    options: ScoringOptions,
    *,
    description: dict[str, Any],
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    overwrite: bool = False,
    progress: bool = False,
) -> JobSummary:
    """Scores `inputs` into the directory `out` (layout in the module docstring), resuming an
    interrupted run of the same job.

    Args:
        description: what else defines the job (model URI and version, catalog digest, ...): a rerun
            resumes only if it and the inputs are unchanged.
        chunk_events: about how many events a chunk holds; memory grows with it, not with the input.

    Raises:
        JobConflictError: `out` holds another job's output (or other files) and `overwrite` is False.
        DataContractError: a table cannot be used at all.
    """
    began = time.perf_counter()
    chunks = chunk_count(inputs.events, chunk_events)
    job = {
        "format": JOB_FORMAT,
        **description,
        "options": {"top_k": options.top_k, "explain": options.explain},
        "inputs": {name: _fingerprint(path) for name, (_, path) in inputs.tables().items()},
        "chunks": chunks,
    }
    claim_output(out, job, overwrite)
    if (out / SUCCESS_FILE).exists():
        return JobSummary(out, chunks, chunks, 0, 0, 0, time.perf_counter() - began, ())
    findings: list[Finding] = []
    sources = _chunk_sources(inputs, out, chunks, findings) if chunks > 1 else [_whole(inputs)]
    done = {k for k in range(chunks) if _part(out, k).exists()}
    requests = events = rejected = 0
    with (
        _terminate_as_interrupt(),
        # One chunk: a bar over its model batches instead of a bar that jumps from 0 to 1.
        tqdm(
            total=chunks, initial=len(done), unit="chunk", desc="scoring", disable=not progress or chunks == 1
        ) as bar,
    ):
        for k in range(chunks):
            if k in done:
                continue
            scored = _score_sources(scorer, sources[k], replace(options, progress=progress and chunks == 1))
            _write_atomically(scored.rejects, _part(out / REJECTS_DIR, k))
            _write_atomically(scored.decisions, _part(out, k))  # last: the part marks the chunk done
            requests += scored.decisions.num_rows
            events += scored.events
            rejected += scored.rejects.num_rows
            findings += scored.report.findings
            bar.set_postfix(customers_per_s=f"{requests / (time.perf_counter() - began):,.0f}")
            bar.update()
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    (out / SUCCESS_FILE).touch()
    rejected += _partition_rejects(out)
    seconds = time.perf_counter() - began
    return JobSummary(out, chunks, len(done), requests, events, rejected, seconds, tuple(findings))


@dataclass(frozen=True)
class _Sources:
    """One chunk's tables; None where the chunk has no rows of a table."""

    events: Path | None
    requests: Path | None
    customers: Path | None
    requests_given: bool


def _whole(inputs: JobInputs) -> _Sources:
    return _Sources(inputs.events, inputs.requests, inputs.customers, inputs.requests is not None)


def _score_sources(scorer: JourneyScorer, sources: _Sources, options: ScoringOptions) -> ScoredChunk:
    if sources.requests_given and sources.requests is None:  # no request falls in this chunk
        empty = output_schema(explained=options.explain > 0).empty_table()
        return ScoredChunk(empty, REJECTS_SCHEMA.empty_table(), 0, ValidationReport())
    return score_chunk(scorer, sources.events, sources.requests, sources.customers, options)


def _chunk_sources(inputs: JobInputs, out: Path, chunks: int, findings: list[Finding]) -> list[_Sources]:
    """Splits the inputs into `chunks` per-chunk files under out/_work (once: a rerun finds them)."""
    work = out / WORK_DIR
    if not (work / PARTITIONED_FILE).exists():
        shutil.rmtree(work, ignore_errors=True)  # a split cut short by a kill: start it again
        report = ValidationReport(keep_rejected_rows=True)
        for name, (spec, path) in inputs.tables().items():
            writer = BucketWriter(work / name, chunks)
            try:
                writer.write_all(iter_raw_batches(path, spec, report))
            finally:
                writer.close()
        rejects = [rejects_table(r) for r in report.rejected_rows]
        _write_atomically(
            pa.concat_tables([REJECTS_SCHEMA.empty_table(), *rejects]), _partition_rejects_path(out)
        )
        findings += report.findings
        (work / PARTITIONED_FILE).touch()

    def bucket(name: str, k: int) -> Path | None:
        path = bucket_path(work / name, k)
        return path if path.exists() else None

    return [
        _Sources(
            bucket(EVENTS.name, k),
            bucket(REQUESTS.name, k),
            bucket(CUSTOMERS.name, k),
            inputs.requests is not None,
        )
        for k in range(chunks)
    ]


def _partition_rejects_path(out: Path) -> Path:
    return out / REJECTS_DIR / "partition.parquet"


def _partition_rejects(out: Path) -> int:
    path = _partition_rejects_path(out)
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


def _part(directory: Path, chunk: int) -> Path:
    return directory / f"part-{chunk:05d}.parquet"


def _fingerprint(path: Path) -> dict[str, Any]:
    """Identifies an input's content cheaply: its path, total size and latest modification time."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = [f.stat() for f in files if f.exists()]
    return {
        "path": str(path.resolve()),
        "bytes": sum(s.st_size for s in stats),
        "modified_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (e.g. the catalog a job ranks with)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def claim_output(out: Path, job: dict[str, Any], overwrite: bool, resumable: bool = True) -> None:
    """Makes `out` this job's: new, the same job's (resumed, or restarted if not `resumable`), or replaced
    (`overwrite`, and only ever a job's output).

    Raises:
        JobConflictError: `out` holds another job's output (or other files) and `overwrite` is False,
            or holds something other than a job's output.
    """
    if out.exists():
        previous = _previous_job(out)
        if out.is_dir() and previous is None and any(out.iterdir()):
            raise JobConflictError(
                f"{out} is a directory that does not hold a nextbest score output; refusing to "
                + ("delete it" if overwrite else "write into it")
                + ": choose another --out"
            )
        if out.is_file() and not overwrite:
            raise JobConflictError(
                f"{out} already exists and is not a nextbest score output directory; pass --overwrite "
                "to replace it, or choose another --out"
            )
        if previous is not None and previous != job and not overwrite:
            changed = ", ".join(_differences(previous, job))
            raise JobConflictError(
                f"{out} holds another scoring job (changed: {changed}); pass --overwrite to replace "
                "it, or choose another --out"
            )
        if overwrite or not resumable or previous != job:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    record_job(out, job)


def record_job(out: Path, job: dict[str, Any]) -> None:
    """Writes what `out` was scored with (`_job.json`), unless it is there already."""
    if not (out / JOB_FILE).exists():
        _write_text_atomically(json.dumps(job, indent=2, sort_keys=True), out / JOB_FILE)


def _previous_job(out: Path) -> dict[str, Any] | None:
    path = out / JOB_FILE
    if not out.is_dir() or not path.exists():
        return None
    try:
        job: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return job


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key} {a!r} → {b!r}")
    return changed


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Writes `table` so that `path` is either absent or whole, even if the process is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    with temporary.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _write_text_atomically(text: str, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: between writes, resumable."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
