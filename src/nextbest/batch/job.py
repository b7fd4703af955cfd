"""The local batch scoring job: bounded memory, part files written atomically, resumable after a kill.

Output layout (`out` is a directory, readable as one Parquet data set):

    out/part-00000.parquet ...   one part per chunk of customers; a part exists only once complete
    out/_rejects/part-00000.parquet ...   the rows each chunk rejected, with the reason (REJECTS_SCHEMA)
    out/_rejects/partition.parquet       malformed CSV lines met while partitioning (no customer known)
    out/_job.json                what the run scores with (inputs, model version, catalog, options)
                                 and the files it writes (`nextbest.batch.claim`)
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
import os
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
from nextbest.batch.claim import claim_output, remove_files, temporary
from nextbest.data import CUSTOMERS, EVENTS, REQUESTS, Finding, TableSpec, ValidationReport
from nextbest.data.io import iter_raw_batches
from nextbest.scoring.output import output_schema
from nextbest.scoring.scorer import JourneyScorer

SUCCESS_FILE = "_SUCCESS"
WORK_DIR = "_work"
REJECTS_DIR = "_rejects"
PARTITIONED_FILE = "_PARTITIONED"


@dataclass(frozen=True)
class JobInputs:
    """What a scoring job reads: the contract tables (files or directories of Parquet part files) and
    the action catalog that replaces the model's, if any."""

    events: Path
    requests: Path | None = None
    customers: Path | None = None
    catalog: Path | None = None

    def tables(self) -> dict[str, tuple[TableSpec, Path]]:
        """The given tables by name, with their specs."""
        given = {EVENTS: self.events, REQUESTS: self.requests, CUSTOMERS: self.customers}
        return {spec.name: (spec, path) for spec, path in given.items() if path is not None}

    def paths(self) -> list[Path]:
        """Every path the job reads (its output must never overlap one)."""
        return [path for _, path in self.tables().values()] + ([self.catalog] if self.catalog else [])


def describe_job(
    description: dict[str, Any], inputs: JobInputs, options: ScoringOptions, chunks: int, engine: str
) -> dict[str, Any]:
    """What defines a job (`description`: model URI and version, catalog digest, ...): a rerun resumes
    only if it is unchanged."""
    return {
        **description,
        "engine": engine,
        "options": {"top_k": options.top_k, "explain": options.explain},
        "inputs": {name: _fingerprint(path) for name, (_, path) in inputs.tables().items()},
        "chunks": chunks,
    }


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
        JobConflictError: `out` must not be written or replaced (`nextbest.batch.claim`), e.g. it holds
            another job's output and `overwrite` is False.
        DataContractError: a table cannot be used at all.
    """
    began = time.perf_counter()
    chunks = chunk_count(inputs.events, chunk_events)
    job = describe_job(description, inputs, options, chunks, engine="local")
    claim_output(out, job, _files(inputs, chunks), inputs.paths(), overwrite=overwrite)
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
    remove_files(out, _work_files(inputs, chunks))
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
        remove_files(out, _work_files(inputs, chunks))  # a split cut short by a kill: start it again
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


def _files(inputs: JobInputs, chunks: int) -> list[str]:
    """The files (relative to `out`) a job on `inputs` in `chunks` chunks writes."""
    parts = [_part(Path(), k).as_posix() for k in range(chunks)]
    rejects = [f"{REJECTS_DIR}/{part}" for part in parts]
    partition = _partition_rejects_path(Path()).as_posix()
    return [*parts, *rejects, partition, SUCCESS_FILE, *_work_files(inputs, chunks)]


def _work_files(inputs: JobInputs, chunks: int) -> list[str]:
    work = Path(WORK_DIR)
    buckets = [bucket_path(work / name, k).as_posix() for name in inputs.tables() for k in range(chunks)]
    return [*buckets, (work / PARTITIONED_FILE).as_posix()]


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


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Writes `table` so that `path` is either absent or whole, even if the process is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, temporary(path))
    with temporary(path).open("rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary(path), path)


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
