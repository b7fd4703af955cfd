"""What every adapter produces (`ConvertedDataset`) and how it is written to a folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nextbest import __version__
from nextbest.errors import DataContractError, NextbestError

LABEL_COLUMNS = ("conversion", "churn")
#: How many offending line numbers an error message quotes.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ConvertedDataset:
    """A public data set converted into the contract tables (DESIGN.md §2).

    Attributes:
        name: Short name of the source data set, e.g. ``"criteo_attribution"``.
        events: One row per touchpoint, sorted by ``customer_id`` then ``timestamp``.
        labels: Point-in-time label frame: ``customer_id``, ``as_of`` and ``conversion`` and/or ``churn``.
        customers: Static profile table, or ``None`` when the source has none.
        provenance: JSON-serialisable description of the source, the protocol and the resulting counts;
            written as ``dataset.json``. Its ``notes`` (a list of strings) flag what a user must not miss,
            such as rows left without a label; the CLI summary prints them.
    """

    name: str
    events: pa.Table
    labels: pa.Table
    customers: pa.Table | None
    provenance: dict[str, Any] = field(default_factory=dict)


def read_source(path: Path) -> bytes:
    """The whole input file, or a `DataContractError` that names it when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataContractError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataContractError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise DataContractError(f"{path}: cannot read ({exc.strerror})") from None


def source_provenance(path: Path, data: bytes) -> dict[str, Any]:
    """Where the data came from, with a checksum so a conversion can be traced to one file version."""
    return {
        "path": str(path.resolve()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def positive_rates(labels: pa.Table) -> dict[str, float]:
    """Mean of each 0/1 label column present in `labels`."""
    return {
        name: float(pc.mean(labels[name]).as_py() or 0.0)
        for name in LABEL_COLUMNS
        if name in labels.schema.names
    }


def base_provenance(
    name: str, source: dict[str, Any], events: pa.Table, labels: pa.Table, customers: pa.Table | None
) -> dict[str, Any]:
    """The provenance fields every adapter reports; adapters add their protocol and license on top."""
    return {
        "dataset": name,
        "converter": f"nextbest {__version__}",
        "source": source,
        "rows": {
            "events": events.num_rows,
            "labels": labels.num_rows,
            "customers": None if customers is None else customers.num_rows,
        },
        "customers": pc.count_distinct(events["customer_id"]).as_py(),
        "positive_rate": positive_rates(labels),
    }


def write_dataset(ds: ConvertedDataset, out_dir: str | Path) -> list[Path]:
    """Write the tables as Parquet plus ``dataset.json`` into `out_dir` (created if missing).

    Existing files of the same names are replaced; other files in the folder are left alone.

    Args:
        ds: The converted data set.
        out_dir: Destination folder.

    Returns:
        The paths written, in the order events, labels, customers (if any), dataset.json.

    Raises:
        NextbestError: The folder cannot be created or written.
    """
    out = Path(out_dir)
    tables = {"events": ds.events, "labels": ds.labels}
    if ds.customers is not None:
        tables["customers"] = ds.customers
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for table_name, table in tables.items():
            target = out / f"{table_name}.parquet"
            pq.write_table(table, target)
            written.append(target)
        meta = {**ds.provenance, "files": {name: f"{name}.parquet" for name in tables}}
        target = out / "dataset.json"
        target.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        written.append(target)
    except OSError as exc:
        raise NextbestError(f"cannot write the converted data set to {out}: {exc.strerror or exc}") from None
    return written


def format_summary(ds: ConvertedDataset, written: list[Path]) -> str:
    """A few human-readable lines describing a written conversion."""
    prov = ds.provenance
    rates = ", ".join(f"{name} rate {rate:.2%}" for name, rate in prov["positive_rate"].items())
    folder = written[0].parent if written else Path()
    lines = [
        f"{ds.name}: {prov['customers']:,} customers, {ds.events.num_rows:,} events, "
        f"{ds.labels.num_rows:,} labels ({rates})",
        f"protocol: {prov['protocol']['summary']}",
        *(f"note: {note}" for note in prov.get("notes", [])),
        f"wrote {', '.join(p.name for p in written)} to {folder}",
    ]
    return "\n".join(lines)


def row_problems_error(
    path: Path,
    unit: str,
    problems: Sequence[tuple[str, npt.NDArray[np.bool_]]],
    line_numbers: npt.NDArray[np.int64],
    hint: str,
) -> DataContractError:
    """One error listing every broken rule with its count and the first few offending line numbers.

    Args:
        path: The input file.
        unit: What a row is, e.g. ``"journey"``.
        problems: (description, mask over rows) pairs; descriptions complete "N {unit}(s) ...".
        line_numbers: The 1-based line number of each row.
        hint: What a valid row looks like, appended to the message.
    """
    details = []
    for description, mask in problems:
        rows = np.flatnonzero(mask)
        examples = ", ".join(str(line_numbers[r]) for r in rows[:MAX_EXAMPLES])
        more = ", ..." if len(rows) > MAX_EXAMPLES else ""
        details.append(f"{len(rows):,} {unit}(s) {description} (line {examples}{more})")
    return DataContractError(f"{path}: " + "; ".join(details) + f"; {hint}")
