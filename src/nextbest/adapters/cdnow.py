"""CDNOW purchase histories -> contract tables (`nextbest convert cdnow`).

Source: ``cdnow/CDNOW_master.txt``, Bruce Hardie's public CDNOW data set (as shipped with the
``lifetimes`` package): 69,659 purchases of the 23,570 customers who first bought at CDNOW in the first
quarter of 1997, through 1998-06-30. Whitespace-separated columns, an optional header line::

    customer_id  date(YYYYMMDD)  number_of_cds  dollar_value

Mapping:

* **events** -- every line is one row: ``customer_id`` as written in the file (a string; the zero padding
  of ``"00001"`` is kept, so string order is numeric order), ``timestamp`` = the date at 00:00 UTC (the
  file has no time of day), ``event_type = "purchase"``, ``channel = "web"`` (CDNOW was an online store),
  ``action`` null, ``value = dollar_value`` and two extra columns: ``quantity = number_of_cds`` and
  ``source_line``, the 1-based line of the file the purchase comes from.
  The file has 2,068 lines that repeat a customer's purchase day (3,842 lines share a day with another):
  they are separate records in the source and stay separate events with the same timestamp, in file
  order. 255 of them repeat an earlier line exactly (same customer, day, quantity and amount);
  ``source_line`` keeps them distinct, so loaders that drop rows identical in every column keep them.
  Lines worth $0.00 (80) are kept as they are.
* **labels** -- the classic calibration/holdout protocol of Fader, Hardie & Lee (2005), "Counting your
  customers the easy way: an alternative to the Pareto/NBD model" (Marketing Science 24(2); they use a
  1/10 sample of this cohort): 39 weeks (273 days) of calibration from 1997-01-01, so
  ``as_of = 1997-10-01T00:00:00Z``, then a 39-week holdout ``[as_of, 1998-07-01)``.
  ``conversion = 1`` if the customer bought again in the holdout, ``churn = 1 - conversion`` (int8).
  Only customers with a purchase before ``as_of`` get a label row; in this cohort all of them do.
  The events table keeps the holdout purchases: features must be built strictly before ``as_of``.

There is no customers table. License: the data set is Bruce Hardie's public CDNOW sample, distributed in
the data folder of the ``lifetimes`` package (MIT code).
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.adapters._output import (
    ConvertedDataset,
    base_provenance,
    read_source,
    row_problems_error,
    source_provenance,
)
from nextbest.data.schema import UTC_US
from nextbest.errors import DataContractError

NAME = "cdnow"
CALIBRATION_START = datetime(1997, 1, 1, tzinfo=UTC)
#: 39 weeks, both for calibration and for holdout.
WINDOW = timedelta(days=273)
CUTOFF = CALIBRATION_START + WINDOW
HOLDOUT_END = CUTOFF + WINDOW
LICENSE = (
    "Bruce Hardie's public CDNOW data set, from the data folder of the lifetimes package (MIT code); "
    "see brucehardie.com/datasets."
)
PROTOCOL_SUMMARY = (
    "Fader, Hardie & Lee (2005): 39-week calibration from 1997-01-01, as_of 1997-10-01, "
    "39-week holdout to 1998-06-30; churn = no purchase in the holdout, conversion = 1 - churn"
)

_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")
_HINT = "each line must be `customer_id date(YYYYMMDD) number_of_cds dollar_value`, separated by whitespace"

BoolArray = npt.NDArray[np.bool_]


def read_cdnow(path: str | Path) -> ConvertedDataset:
    """Convert the CDNOW master file into the contract tables.

    Args:
        path: The whitespace-separated file (``CDNOW_master.txt``).

    Returns:
        Events (purchases), labels (``churn`` and ``conversion`` as of 1997-10-01) and provenance; no
        customers table.

    Raises:
        DataContractError: The file is missing or a line is malformed (wrong number of fields, a bad
            date, quantity or amount); the message names the lines.
    """
    src = Path(path)
    data = read_source(src)
    rows = _parse(src, data)
    _validate(src, rows)
    return _convert(src, data, rows)


def _parse(path: Path, data: bytes) -> pd.DataFrame:
    """All lines as strings; blank lines are kept as empty rows so that row i is line i + 1."""
    try:
        rows = pd.read_csv(
            io.StringIO(_decode(path, data)),
            sep=r"\s+",
            header=None,
            names=list(_COLUMNS),
            dtype=str,
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise DataContractError(f"{path}: no purchases, the file is empty; {_HINT}") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected \d+ fields in line \d+, saw \d+", str(exc))
        detail = found.group(0) if found else str(exc).strip()
        raise DataContractError(f"{path}: {detail}; {_HINT}") from None
    rows.index = pd.RangeIndex(1, len(rows) + 1, name="line")
    blank = rows.isna().all(axis=1)
    header = rows.eq(list(_COLUMNS)).all(axis=1) & (rows.index == rows.index[~blank].min())
    rows = rows[~blank & ~header]
    if rows.empty:
        raise DataContractError(f"{path}: no purchases; {_HINT}")
    return rows


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataContractError(f"{path}, line {line}: not UTF-8 text ({exc.reason})") from None


def _validate(path: Path, rows: pd.DataFrame) -> None:
    problems = [(description, np.asarray(mask, dtype=bool)) for description, mask in _problems(rows)]
    problems = [(description, mask) for description, mask in problems if mask.any()]
    if problems:
        line_numbers = np.asarray(rows.index, dtype=np.int64)
        raise row_problems_error(path, "line", problems, line_numbers, _HINT)


def _problems(rows: pd.DataFrame) -> list[tuple[str, pd.Series[bool]]]:
    missing = rows.isna().any(axis=1)
    date = rows["date"].fillna("")
    bad_date = ~date.str.fullmatch(r"\d{8}") | pd.to_datetime(date, format="%Y%m%d", errors="coerce").isna()
    quantity = rows["number_of_cds"].fillna("")
    amount = pd.to_numeric(rows["dollar_value"], errors="coerce")
    return [
        ("have fewer than 4 fields", missing),
        ("have a date that is not a valid YYYYMMDD", bad_date & ~missing),
        ("have a number_of_cds that is not a whole number >= 0", ~quantity.str.fullmatch(r"\d+") & ~missing),
        ("have a dollar_value that is not a finite number", ~np.isfinite(amount) & ~missing),
    ]


def _convert(path: Path, data: bytes, rows: pd.DataFrame) -> ConvertedDataset:
    n = len(rows)
    dates = pd.to_datetime(rows["date"], format="%Y%m%d").dt.tz_localize(UTC)
    events = pa.table(
        {
            "customer_id": pa.array(rows["customer_id"].to_numpy(), pa.string()),
            "timestamp": pa.array(dates, UTC_US),
            "event_type": pa.repeat(pa.scalar("purchase", pa.string()), n),
            "channel": pa.repeat(pa.scalar("web", pa.string()), n),
            "action": pa.nulls(n, pa.string()),
            "value": pa.array(rows["dollar_value"].astype(np.float64).to_numpy(), pa.float64()),
            "quantity": pa.array(rows["number_of_cds"].astype(np.int64).to_numpy(), pa.int64()),
            "source_line": pa.array(np.asarray(rows.index, dtype=np.int64)),
        }
    )
    # The sort is stable, so purchases of the same day keep their order in the file.
    events = events.sort_by([("customer_id", "ascending"), ("timestamp", "ascending")])
    labels, unlabelled = _labels(events)
    provenance = base_provenance(NAME, source_provenance(path, data), events, labels, None)
    provenance.update(_details(rows, unlabelled))
    return ConvertedDataset(NAME, events, labels, None, provenance)


def _labels(events: pa.Table) -> tuple[pa.Table, int]:
    """The holdout label frame, and how many customers it leaves out (no purchase before the cutoff)."""
    cutoff = pa.scalar(CUTOFF, UTC_US)
    holdout_end = pa.scalar(HOLDOUT_END, UTC_US)
    ts = events["timestamp"]
    calibrated = pc.unique(events.filter(pc.less(ts, cutoff))["customer_id"])
    in_holdout = pc.and_(pc.greater_equal(ts, cutoff), pc.less(ts, holdout_end))
    repeat_buyers = pc.unique(events.filter(in_holdout)["customer_id"])
    conversion = pc.cast(pc.is_in(calibrated, value_set=repeat_buyers), pa.int8())
    labels = pa.table(
        {
            "customer_id": calibrated,
            "as_of": pa.repeat(cutoff, len(calibrated)),
            "churn": pc.subtract(pa.scalar(1, pa.int8()), conversion),
            "conversion": conversion,
        }
    ).sort_by("customer_id")
    unlabelled = pc.count_distinct(events["customer_id"]).as_py() - len(calibrated)
    return labels, unlabelled


def _details(rows: pd.DataFrame, unlabelled: int) -> dict[str, Any]:
    return {
        "purchases": len(rows),
        "same_day_repeat_lines": int(rows.duplicated(["customer_id", "date"]).sum()),
        "customers_without_calibration_purchase": unlabelled,
        "notes": [f"{unlabelled:,} customer(s) bought nothing before {_iso(CUTOFF)} and have no label row"]
        if unlabelled
        else [],
        "protocol": {
            "summary": PROTOCOL_SUMMARY,
            "calibration": [_iso(CALIBRATION_START), _iso(CUTOFF)],
            "as_of": _iso(CUTOFF),
            "holdout": [_iso(CUTOFF), _iso(HOLDOUT_END)],
            "windows": "half-open [start, end), 273 days (39 weeks) each",
            "labels": "customers with a purchase before as_of; conversion = repeat purchase in the holdout, "
            "churn = 1 - conversion",
            "events": 'each line -> purchase, channel "web", value = dollar_value, quantity = number_of_cds, '
            "source_line = line number, timestamp = date 00:00 UTC; same-day lines kept as separate events",
            "reference": "Fader, Hardie & Lee (2005), Counting your customers the easy way: an alternative "
            "to the Pareto/NBD model, Marketing Science 24(2)",
        },
        "license": LICENSE,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
