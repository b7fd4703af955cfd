"""The decision log: every served decision, appended durably, and read back as a decisions table.

The service writes one JSON line per decision (the request, the ranked actions, the served action and
the probability it was served with, the model version, the time) to rotating files in a directory.
Each line is flushed to the operating system as it is written, so a decision survives the process
being killed, not only a clean shutdown; a line cut short by a crash is skipped (and counted) on read.
`nextbest evaluate --decisions DIR` reads the directory: the served actions and their probabilities are
exactly what off-policy evaluation needs, and the outcomes come from the events that followed.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.data.schema import UTC_US
from nextbest.errors import DataContractError
from nextbest.journeys.labels import LabelRules, labels_from_rules
from nextbest.scoring.schemas import AnyScoringRequest, RankResponse

FILE_PATTERN = "decisions-*.jsonl"
# The decisions table read back from a log (see `read_decision_log`).
LOG_COLUMNS = {
    "customer_id": pa.string(),
    "timestamp": UTC_US,
    "action": pa.string(),
    "propensity": pa.float64(),
    "model_version": pa.string(),
    "control": pa.bool_(),
    "served_p_conversion": pa.float64(),
    "served_p_churn": pa.float64(),
    "p_conversion": pa.float64(),
}


class DecisionLogWriter:
    """Appends served decisions to `directory`, starting a new file every `rotate_rows` decisions.

    Thread-safe. Files are named `decisions-<UTC start>-<pid>-<sequence>.jsonl`, so several processes
    (service workers) can share one directory without writing to the same file.
    """

    def __init__(self, directory: str | Path, rotate_rows: int = 100_000) -> None:
        if rotate_rows < 1:
            raise ValueError(f"rotate_rows must be at least 1, got {rotate_rows}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_rows = rotate_rows
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._rows = 0
        self._sequence = 0
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    def append(self, requests: Sequence[AnyScoringRequest], answers: Sequence[RankResponse]) -> None:
        """Logs each request with its answer (same order)."""
        logged_at = datetime.now(UTC).isoformat()
        lines = [
            json.dumps(
                {
                    "logged_at": logged_at,
                    **answer.model_dump(mode="json"),
                    "request": request.model_dump(mode="json", exclude_none=True),
                }
            )
            for request, answer in zip(requests, answers, strict=True)
        ]
        with self._lock:
            for line in lines:
                handle = self._current()
                handle.write(line + "\n")
                self._rows += 1
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Flushes and closes the current file (called on shutdown)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def _current(self) -> TextIO:
        if self._file is not None and self._rows >= self.rotate_rows:
            self._file.close()
            self._file = None
        if self._file is None:
            self._sequence += 1
            self._rows = 0
            name = f"decisions-{self._started}-{os.getpid()}-{self._sequence:05d}.jsonl"
            self._file = (self.directory / name).open("a", encoding="utf-8")
        return self._file


@dataclass(frozen=True)
class DecisionLog:
    """A decision log read back: the decisions table and what was not read into it.

    Attributes:
        decisions: the model's served decisions (see `read_decision_log`).
        unreadable_lines: lines that are not JSON (cut short by a crash).
        fallbacks: answers the model did not rank (a deadline passed): no model chose them.
        unserved: answers that served nothing (no eligible action).
    """

    decisions: pa.Table
    unreadable_lines: int
    fallbacks: int = 0
    unserved: int = 0


def is_decision_log(path: str | Path) -> bool:
    """Whether `path` is a directory holding decision log files."""
    folder = Path(path)
    return folder.is_dir() and any(folder.glob(FILE_PATTERN))


def read_decision_log(directory: str | Path) -> DecisionLog:
    """The served decisions as a decisions table: `customer_id`, `timestamp` (the request's as_of),
    `action` (the served one), `propensity` (its serving probability), `model_version`, `control` (the
    customer was in the catalog's control group), `served_p_conversion` and `served_p_churn` (the model's
    probabilities for the served action) and `p_conversion` (the answer's, with no action: the model's
    score of the customer). Fallback answers and requests with nothing served are left out, and counted:
    no model chose them.

    Raises:
        DataContractError: the directory holds no decision log files.
    """
    files = sorted(Path(directory).glob(FILE_PATTERN))
    if not files:
        raise DataContractError(f"{directory}: no decision log files ({FILE_PATTERN})")
    # One tuple of the kept fields per decision, not the parsed line: a request's history is most of a
    # line, and keeping a million of them would take gigabytes.
    rows: list[tuple[Any, ...]] = []
    unreadable = fallbacks = unserved = 0
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    unreadable += 1  # a line cut short when the process was killed mid-write
                    continue
                if record.get("fallback"):
                    fallbacks += 1
                elif record.get("chosen_action") is None:
                    unserved += 1
                else:
                    rows.append(_kept_fields(record))
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(LOG_COLUMNS)
    table = pa.table(
        {
            name: pa.array(values, kind)
            for (name, kind), values in zip(LOG_COLUMNS.items(), columns, strict=True)
        }
    )
    return DecisionLog(table, unreadable, fallbacks, unserved)


def _kept_fields(record: dict[str, Any]) -> tuple[Any, ...]:
    """The values of `LOG_COLUMNS` in a decision's log record."""
    chosen = record["chosen_action"]
    # The served action's ranked entry; none when top_k cut it from the answer.
    served: dict[str, Any] = next((a for a in record.get("actions", ()) if a.get("action") == chosen), {})
    return (
        record["customer_id"],
        datetime.fromisoformat(record["as_of"]),
        chosen,
        record["chosen_probability"],
        record["model_version"],
        record.get("control", False),  # logs written before control groups existed served none
        served.get("p_conversion"),
        served.get("p_churn"),
        record.get("p_conversion"),
    )


def with_outcomes(decisions: pa.Table, log: EventLog, rules: LabelRules) -> pa.Table:
    """`decisions` with `converted` and `churned` read off the events that followed each one (null while
    its outcome window is still open)."""
    ids = decisions.column("customer_id").combine_chunks()
    as_of = np.asarray(decisions.column("timestamp").combine_chunks().cast(pa.int64()), dtype=np.int64)
    labels = labels_from_rules(log, log.index_of(ids), as_of, rules)
    for column, outcome in (("converted", "conversion"), ("churned", "churn")):
        decisions = decisions.append_column(column, pa.array(labels[outcome], pa.float64(), from_pandas=True))
    return decisions
