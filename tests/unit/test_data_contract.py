"""The data contract (DESIGN.md §2): reading, normalising and validating the four contract tables."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.data import (
    CUSTOMERS,
    DECISIONS,
    LABELS,
    TABLES,
    Severity,
    ValidationReport,
    load_events,
    load_table,
    validate_tables,
)
from nextbest.data.normalize import normalise_column
from nextbest.data.schema import ColumnSpec, ColumnType
from nextbest.errors import DataContractError

UTC_US = pa.timestamp("us", tz="UTC")
EVENTS_HEADER = "customer_id,timestamp,event_type,value\n"
GOOD_EVENTS = EVENTS_HEADER + "c1,2024-01-01T00:00:00Z,page_view,1\nc2,2024-01-02T00:00:00Z,purchase,9.5\n"
DECISIONS_HEADER = "customer_id,timestamp,action,propensity,converted\n"

Writer = Callable[[Path], dict[str, Path]]


def write_csv(path: Path, text: str) -> Path:
    """Write `text` to `path` and return the path."""
    path.write_text(text)
    return path


def write_parquet(path: Path, columns: dict[str, pa.Array]) -> Path:
    """Write `columns` as a Parquet file at `path` and return the path."""
    pq.write_table(pa.table(columns), path)
    return path


def good_events(tmp: Path) -> Path:
    """An events CSV that meets the contract, for customers c1 and c2."""
    return write_csv(tmp / "events.csv", GOOD_EVENTS)


def events_csv(text: str, name: str = "events.csv") -> Writer:
    """A case that validates only an events file with content `text`."""
    return lambda tmp: {"events": write_csv(tmp / name, text)}


def events_parquet(columns: dict[str, pa.Array]) -> Writer:
    """A case that validates only an events Parquet file with `columns`."""
    return lambda tmp: {"events": write_parquet(tmp / "events.parquet", columns)}


def with_good_events(table: str, text: str) -> Writer:
    """A case that validates good events plus `table` (CSV content `text`)."""
    return lambda tmp: {"events": good_events(tmp), table: write_csv(tmp / f"{table}.csv", text)}


def binary_garbage(tmp: Path) -> dict[str, Path]:
    """An events ".csv" holding every byte value: not text at all."""
    path = tmp / "events.csv"
    path.write_bytes(bytes(range(256)) * 8)
    return {"events": path}


def parquet_renamed_csv(tmp: Path) -> dict[str, Path]:
    """A valid Parquet events file saved under a .csv name."""
    parquet = write_parquet(
        tmp / "real.parquet",
        {"customer_id": pa.array(["c1"]), "timestamp": pa.array(["2024-01-01"]), "event_type": ["x"]},
    )
    return {"events": Path(shutil.copy(parquet, tmp / "events.csv"))}


@dataclass(frozen=True)
class Broken:
    """A broken input and the one finding it must produce."""

    write: Writer
    table: str
    column: str | None
    severity: Severity
    rows: int
    mentions: str
    unusable: bool = False


def _ts(*values: str) -> pa.Array:
    """ISO timestamps as a Parquet string column."""
    return pa.array(values, pa.string())


BROKEN = [
    pytest.param(
        Broken(
            events_csv("customer_id,timestamp\nc1,2024-01-01\n"),
            "events",
            "event_type",
            Severity.ERROR,
            0,
            "missing required column",
            unusable=True,
        ),
        id="events-missing-event_type",
    ),
    pytest.param(
        Broken(
            events_csv(EVENTS_HEADER + "c1,2024-01-01,page_view,1\nc2,yesterday,page_view,2\n"),
            "events",
            "timestamp",
            Severity.ERROR,
            1,
            "row 2: 'yesterday'",
        ),
        id="events-unparsable-timestamp",
    ),
    pytest.param(
        Broken(
            events_csv(EVENTS_HEADER + ",2024-01-01,page_view,1\nc2,2024-01-01,page_view,2\n"),
            "events",
            "customer_id",
            Severity.ERROR,
            1,
            "required value is missing",
        ),
        id="events-null-customer_id-csv",
    ),
    pytest.param(
        Broken(
            events_parquet(
                {
                    "customer_id": pa.array([None, "c2"], pa.string()),
                    "timestamp": _ts("2024-01-01", "2024-01-02"),
                    "event_type": ["a", "b"],
                }
            ),
            "events",
            "customer_id",
            Severity.ERROR,
            1,
            "required value is missing",
        ),
        id="events-null-customer_id-parquet",
    ),
    pytest.param(
        Broken(
            events_csv(EVENTS_HEADER + '"",2024-01-01,page_view,1\nc2,2024-01-01,page_view,2\n'),
            "events",
            "customer_id",
            Severity.ERROR,
            1,
            "required value is missing",
        ),
        id="events-empty-customer_id-csv",
    ),
    pytest.param(
        Broken(
            events_parquet(
                {
                    "customer_id": pa.array(["c1", ""], pa.string()),
                    "timestamp": _ts("2024-01-01", "2024-01-02"),
                    "event_type": ["a", "b"],
                }
            ),
            "events",
            "customer_id",
            Severity.ERROR,
            1,
            "row 2: ''",
        ),
        id="events-empty-customer_id-parquet",
    ),
    pytest.param(
        Broken(
            events_csv(EVENTS_HEADER + "c1,2024-01-01,page_view,abc\nc2,2024-01-01,page_view,2\n"),
            "events",
            "value",
            Severity.ERROR,
            1,
            "row 1: 'abc'",
        ),
        id="events-value-text-csv",
    ),
    pytest.param(
        Broken(
            events_parquet(
                {
                    "customer_id": ["c1", "c2", "c3"],
                    "timestamp": _ts("2024-01-01", "2024-01-02", "2024-01-03"),
                    "event_type": ["a", "b", "c"],
                    "value": ["1.5", "lots", None],
                }
            ),
            "events",
            "value",
            Severity.ERROR,
            1,
            "row 2: 'lots'",
        ),
        id="events-value-text-parquet",
    ),
    *(
        pytest.param(
            Broken(
                events_csv(EVENTS_HEADER + f"c1,2024-01-01,purchase,{cell}\nc2,2024-01-01,purchase,2\n"),
                "events",
                "value",
                Severity.ERROR,
                1,
                problem,
            ),
            id=f"events-value-{cell}-csv",
        )
        for cell, problem in [
            # (A CSV's "NaN" is one of the CSV reader's spellings of an empty cell, as pandas writes it.)
            ("inf", "not a finite number"),
            ("-Infinity", "not a finite number"),
            ("1e300", "out of range (magnitude above 1e+15)"),
            ("3.5e38", "out of range"),
        ]
    ),
    *(
        pytest.param(
            Broken(
                events_parquet(
                    {
                        "customer_id": ["c1", "c2"],
                        "timestamp": _ts("2024-01-01", "2024-01-02"),
                        "event_type": ["a", "b"],
                        "value": pa.array([number, 1.0], pa.float64()),
                    }
                ),
                "events",
                "value",
                Severity.ERROR,
                1,
                problem,
            ),
            id=f"events-value-{number}-parquet",
        )
        for number, problem in [
            (float("nan"), "not a finite number"),
            (float("inf"), "not a finite number"),
            (-1e300, "out of range"),
        ]
    ),
    *(
        pytest.param(
            Broken(
                with_good_events("customers", f"customer_id,segment,tenure\nc1,gold,{cell}\nc2,gold,3\n"),
                "customers",
                "tenure",
                Severity.ERROR,
                1,
                problem,
            ),
            id=f"customers-numeric-attribute-{cell}",
        )
        for cell, problem in [
            ("1e300", "out of range"),
            ("inf", "not a finite number"),
        ]
    ),
    pytest.param(
        Broken(
            events_parquet(
                {
                    "customer_id": ["c1"],
                    "timestamp": pa.array([1_700_000_000], pa.int64()),
                    "event_type": ["page_view"],
                }
            ),
            "events",
            "timestamp",
            Severity.ERROR,
            0,
            "int64",
            unusable=True,
        ),
        id="events-integer-timestamp-parquet",
    ),
    pytest.param(
        Broken(events_csv(EVENTS_HEADER), "events", None, Severity.ERROR, 0, "empty", unusable=True),
        id="events-header-only-csv",
    ),
    pytest.param(
        Broken(
            events_parquet(
                {
                    "customer_id": pa.array([], pa.string()),
                    "timestamp": pa.array([], UTC_US),
                    "event_type": pa.array([], pa.string()),
                }
            ),
            "events",
            None,
            Severity.ERROR,
            0,
            "empty",
            unusable=True,
        ),
        id="events-zero-row-parquet",
    ),
    pytest.param(
        Broken(
            events_csv(EVENTS_HEADER + "c1,2024-01-01,page_view,1,surplus\nc2,2024-01-01,page_view,2\n"),
            "events",
            None,
            Severity.ERROR,
            1,
            "surplus",
        ),
        id="events-too-many-fields",
    ),
    pytest.param(
        Broken(binary_garbage, "events", None, Severity.ERROR, 0, "not UTF-8 text", unusable=True),
        id="events-binary-garbage-csv",
    ),
    pytest.param(
        Broken(
            events_csv(
                EVENTS_HEADER
                + "c1,2024-01-01,page_view,1\nc1,2024-01-01,page_view,1\nc1,2024-01-01,page_view,2\n"
            ),
            "events",
            None,
            Severity.ERROR,
            1,
            "duplicate rows",
        ),
        id="events-exact-duplicates",
    ),
    pytest.param(
        Broken(
            events_csv(EVENTS_HEADER + "c1,2024-01-02,page_view,1\nc1,2024-01-01,purchase,1\n"),
            "events",
            "timestamp",
            Severity.WARNING,
            1,
            "not in time order",
        ),
        id="events-out-of-order",
    ),
    pytest.param(
        Broken(
            with_good_events("customers", "customer_id,age\nc1,30\nc2,40\nc1,31\n"),
            "customers",
            "customer_id",
            Severity.ERROR,
            1,
            "row 3",
        ),
        id="customers-repeated-customer_id",
    ),
    pytest.param(
        Broken(
            with_good_events("customers", "age\n30\n"),
            "customers",
            "customer_id",
            Severity.ERROR,
            0,
            "missing required column",
            unusable=True,
        ),
        id="customers-missing-customer_id",
    ),
    pytest.param(
        Broken(
            with_good_events(
                "labels",
                "customer_id,as_of,conversion\nc1,2024-02-01,1\nc1,2024-03-01,0\nc1,2024-02-01T00:00:00Z,0\n",
            ),
            "labels",
            "customer_id, as_of",
            Severity.ERROR,
            1,
            "row 3",
        ),
        id="labels-repeated-customer_id-as_of",
    ),
    pytest.param(
        Broken(
            with_good_events("labels", "customer_id,as_of,score\nc1,2024-02-01,1\n"),
            "labels",
            None,
            Severity.ERROR,
            0,
            "conversion",
            unusable=True,
        ),
        id="labels-without-conversion-or-churn",
    ),
    pytest.param(
        Broken(
            with_good_events("decisions", DECISIONS_HEADER + "c1,2024-01-01,a,0,1\nc2,2024-01-01,a,0.5,1\n"),
            "decisions",
            "propensity",
            Severity.ERROR,
            1,
            "row 1: '0'",
        ),
        id="decisions-propensity-zero",
    ),
    pytest.param(
        Broken(
            with_good_events("decisions", DECISIONS_HEADER + "c1,2024-01-01,a,1,1\nc2,2024-01-01,a,1.5,1\n"),
            "decisions",
            "propensity",
            Severity.ERROR,
            1,
            "row 2: '1.5'",
        ),
        id="decisions-propensity-above-one",
    ),
    pytest.param(
        Broken(
            with_good_events(
                "decisions", DECISIONS_HEADER + "c1,2024-01-01,a,high,1\nc2,2024-01-01,a,.2,0\n"
            ),
            "decisions",
            "propensity",
            Severity.ERROR,
            1,
            "row 1: 'high'",
        ),
        id="decisions-propensity-text",
    ),
    pytest.param(
        Broken(
            with_good_events(
                "decisions", DECISIONS_HEADER + "c1,2024-01-01,a,0.5,2\nc2,2024-01-01,a,0.5,0\n"
            ),
            "decisions",
            "converted",
            Severity.ERROR,
            1,
            "row 1: '2'",
        ),
        id="decisions-converted-two",
    ),
    pytest.param(
        Broken(
            lambda tmp: {"events": tmp / "no" / "such.parquet"},
            "events",
            None,
            Severity.ERROR,
            0,
            "no such file",
            unusable=True,
        ),
        id="events-nonexistent-path",
    ),
    pytest.param(
        Broken(
            lambda tmp: {"events": good_events(tmp), "decisions": tmp / "missing.csv"},
            "decisions",
            None,
            Severity.ERROR,
            0,
            "missing.csv",
            unusable=True,
        ),
        id="decisions-nonexistent-path",
    ),
    pytest.param(
        Broken(
            events_csv(GOOD_EVENTS, name="events.json"),
            "events",
            None,
            Severity.ERROR,
            0,
            "unknown table format",
            unusable=True,
        ),
        id="events-unknown-suffix",
    ),
]


def load(table: str, path: Path, report: ValidationReport | None = None) -> pa.Table:
    """Load one contract table by name, through `load_events` for events."""
    if table == "events":
        return load_events(path, report).to_table()
    return load_table(path, TABLES[table], report)


@pytest.mark.parametrize("case", BROKEN)
def test_broken_input_gives_one_precise_finding(case: Broken, tmp_path: Path) -> None:
    """Each kind of broken input yields exactly one finding naming table, column, severity and rows."""
    report = validate_tables(**case.write(tmp_path))
    (finding,) = report.findings
    assert (finding.table, finding.column, finding.severity) == (case.table, case.column, case.severity)
    assert finding.rows == case.rows
    assert case.mentions in str(finding)
    assert report.to_dict()["ok"] is (case.severity is Severity.WARNING)


@pytest.mark.parametrize("case", BROKEN)
def test_loaders_raise_only_for_unusable_tables(case: Broken, tmp_path: Path) -> None:
    """`load_events`/`load_table` raise DataContractError exactly when the table cannot be used."""
    path = case.write(tmp_path)[case.table]
    if case.unusable:
        with pytest.raises(DataContractError, match=case.table):
            load(case.table, path)
    else:
        report = ValidationReport()
        table = load(case.table, path, report)
        assert table.num_rows == report.rows_read[case.table] - report.rows_rejected.get(case.table, 0)


def test_parquet_file_is_read_by_its_content_whatever_its_name(tmp_path: Path) -> None:
    """A Parquet file named .csv is recognised by its magic bytes and loads as Parquet."""
    report = validate_tables(**parquet_renamed_csv(tmp_path))
    assert report.passed()
    assert report.rows_read["events"] > 0


def test_out_of_order_events_are_sorted_on_load(tmp_path: Path) -> None:
    """Events logged out of time order load sorted by (customer, time), with a warning."""
    path = write_csv(
        tmp_path / "events.csv",
        EVENTS_HEADER
        + "c2,2024-01-03,a,1\nc1,2024-01-02,b,1\nc2,2024-01-01,c,1\nc1,2024-01-01,d,1\nc1,2024-01-05,e,1\n",
    )
    report = ValidationReport()
    log = load_events(path, report)
    table = log.to_table()
    assert table.column("customer_id").to_pylist() == ["c1", "c1", "c1", "c2", "c2"]
    assert [str(e) for e in table.column("event_type").to_pylist()] == ["d", "b", "e", "c", "a"]
    assert log.order.tolist() == [3, 1, 4, 2, 0]
    assert np.all(np.diff(log.timestamps[:3]) > 0)
    assert [f.severity for f in report.findings] == [Severity.WARNING]
    assert report.findings[0].rows == 2


# --- timestamps and identifiers ----------------------------------------------------------------------

INSTANT = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-03-01T10:00:00Z", INSTANT, id="Z"),
        pytest.param("2024-03-01T12:00:00+02:00", INSTANT, id="offset"),
        pytest.param("2024-03-01T05:00:00-05:00", INSTANT, id="negative-offset"),
        pytest.param("2024-03-01T10:00:00", INSTANT, id="naive-as-utc"),
        pytest.param("2024-03-01 10:00:00", INSTANT, id="naive-with-space"),
        pytest.param("2024-03-01T10:00:00.250Z", INSTANT + timedelta(milliseconds=250), id="fraction"),
        pytest.param("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC), id="date-only"),
    ],
)
def test_iso_strings_become_utc_instants(text: str, expected: datetime, tmp_path: Path) -> None:
    """Every ISO-8601 style in a CSV is read as the same UTC instant, stored as timestamp[us, UTC]."""
    path = write_csv(tmp_path / "events.csv", f"customer_id,timestamp,event_type\nc1,{text},a\n")
    report = ValidationReport()
    column = load_events(path, report).to_table().column("timestamp")
    assert column.type == UTC_US
    assert column.to_pylist() == [expected]
    assert report.findings == []


TIME_CELLS = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "2262-04-12T00:00:00Z",
            "2024-03-01T10:00:00.123456789Z",
            "2024-03-01t10:00:00z",
            " 2024-03-01T10:00:00+02:00",
            "2024-03-01T10:00:00+0200",
            "2024-03-01",
            "2024-03-01 10:00",
            "2024-02-30T00:00:00Z",
            "2024-03-01T24:00:00Z",
            "20240301T100000Z",
            "yesterday",
            "",
        ]
    ),
    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat(sep=" ")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(TIME_CELLS, min_size=1, max_size=8))
def test_a_time_reads_the_same_whatever_its_neighbours(cells: list[str]) -> None:
    """One parser: a cell's instant (or its rejection) does not depend on the other cells of the column,
    which decide only whether a column is read on its fast path or cell by cell. Times the timestamp type
    holds are read (year 9999 included), others are refused, in a request as in a file."""
    spec = ColumnSpec("timestamp", ColumnType.TIMESTAMP, required=False)
    together = normalise_column(pa.array(cells, pa.string()), spec)
    alone = [normalise_column(pa.array([cell], pa.string()), spec) for cell in cells]
    assert together.values.to_pylist() == [one.values.to_pylist()[0] for one in alone]
    rejected = np.zeros(len(cells), dtype=bool)
    for _, mask in together.rejections:
        rejected |= mask
    assert rejected.tolist() == [bool(one.rejections) for one in alone]


def test_mixed_aware_styles_in_one_column(tmp_path: Path) -> None:
    """Z, offsets and dates mixed in one column each keep their own meaning."""
    path = write_csv(
        tmp_path / "events.csv",
        "customer_id,timestamp,event_type\n"
        "c1,2024-03-01T10:00:00Z,a\nc2,2024-03-01T12:00:00+02:00,a\nc3,2024-03-01,a\n"
        "c4,2024-03-01T11:00:00+01:00,a\n",
    )
    report = ValidationReport()
    times = load_events(path, report).to_table().column("timestamp").to_pylist()
    assert times == [INSTANT, INSTANT, datetime(2024, 3, 1, tzinfo=UTC), INSTANT]
    assert report.findings == []


def test_naive_after_offset_in_one_column_is_utc(tmp_path: Path) -> None:
    """A naive time is taken as UTC even when an earlier cell in the column carries an offset."""
    path = write_csv(
        tmp_path / "events.csv",
        "customer_id,timestamp,event_type\nc1,2024-03-01T12:00:00+02:00,a\nc2,2024-03-01T10:00:00,a\n",
    )
    times = load_events(path).to_table().column("timestamp").to_pylist()
    assert times == [INSTANT, INSTANT]


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        pytest.param(pa.array([datetime(2024, 3, 1, 10)], pa.timestamp("ns")), INSTANT, id="ns-naive"),
        pytest.param(
            pa.array([INSTANT], pa.timestamp("ms", tz="Europe/Paris")), INSTANT, id="ms-europe-paris"
        ),
        pytest.param(pa.array([INSTANT], pa.timestamp("s", tz="+02:00")), INSTANT, id="s-fixed-offset"),
        pytest.param(
            pa.array([date(2024, 3, 1)], pa.date32()), datetime(2024, 3, 1, tzinfo=UTC), id="date32"
        ),
    ],
)
def test_parquet_time_types_become_utc_instants(column: pa.Array, expected: datetime, tmp_path: Path) -> None:
    """Parquet timestamps of any unit and zone, and dates, become timestamp[us, UTC] instants."""
    path = write_parquet(
        tmp_path / "events.parquet", {"customer_id": ["c1"], "timestamp": column, "event_type": ["a"]}
    )
    loaded = load_events(path).to_table().column("timestamp")
    assert loaded.type == UTC_US
    assert loaded.to_pylist() == [expected]


def test_integer_customer_ids_become_strings(tmp_path: Path) -> None:
    """Integer ids in Parquet become their decimal text; CSV ids keep leading zeros ("007" != "7")."""
    parquet = write_parquet(
        tmp_path / "events.parquet",
        {
            "customer_id": pa.array([12, 7], pa.int64()),
            "timestamp": _ts("2024-01-01", "2024-01-02"),
            "event_type": ["a", "b"],
        },
    )
    log = load_events(parquet)
    assert log.customer_ids.type == pa.string()
    assert log.customer_ids.to_pylist() == ["12", "7"]
    csv = write_csv(
        tmp_path / "events.csv", "customer_id,timestamp,event_type\n007,2024-01-01,a\n7,2024-01-01,b\n"
    )
    log = load_events(csv)
    assert log.customer_ids.to_pylist() == ["007", "7"]
    assert log.offsets.tolist() == [0, 1, 2]
    labels = write_csv(tmp_path / "labels.csv", "customer_id,as_of,churn\n007,2024-01-05,1\n")
    assert load_table(labels, LABELS).column("customer_id").to_pylist() == ["007"]


# --- nothing lost ----------------------------------------------------------------------------------

# One problem per bad row; `row` (an extra column, passed through) says which rows are good.
BROKEN_TABLES = {
    "events": (
        "row,customer_id,timestamp,event_type,value\n"
        "1,c1,2024-01-01T00:00:00Z,page_view,1\n"
        "2,c1,yesterday,page_view,1\n"
        "3,,2024-01-01T00:00:00Z,page_view,1\n"
        "4,c2,2024-01-02T00:00:00Z,purchase,abc\n"
        "5,c2,2024-01-02T00:00:00Z,purchase,1,surplus\n"
        "6,c2,2024-01-03T00:00:00Z,purchase,2\n"
        "6,c2,2024-01-03T00:00:00Z,purchase,2\n"
        "7,c3,2024-01-01,page_view,inf\n"
        "8,c3,2024-01-01,,1\n"
        "9,c3,2024-01-01,page_view,\n",
        {1, 6, 9},
        10,
    ),
    "customers": (
        "row,customer_id,segment\n1,c1,gold\n2,,silver\n3,c2,gold\n4,c1,bronze\n5,c3\n",
        {1, 3},
        5,
    ),
    "decisions": (
        "row,customer_id,timestamp,action,propensity,converted,churned,revenue\n"
        "1,c1,2024-01-01,email,0.5,1,0,10\n"
        "2,c1,2024-01-01,email,0,1,0,10\n"
        "3,c1,2024-01-01,email,1.5,1,0,10\n"
        "4,c1,2024-01-01,email,high,1,0,10\n"
        "5,c1,2024-01-01,email,0.5,2,0,10\n"
        "6,c1,2024-01-01,email,0.5,1,yes,10\n"
        "7,c2,2024-01-01,,0.5,1,0,10\n"
        "8,c2,2024-01-01,sms,1,0,1,\n"
        "8,c2,2024-01-01,sms,1,0,1,\n"
        "9,c2,never,sms,1,0,1,\n",
        {1, 8},
        10,
    ),
    "labels": (
        "row,customer_id,as_of,conversion,churn\n"
        "1,c1,2024-02-01,1,0\n"
        "2,c1,2024-02-01,0,0\n"
        "3,c2,2024-02-01,0.5,0\n"
        "4,c2,2024-02-30,0,0\n"
        "5,c2,2024-03-01,,1\n",
        {1, 5},
        5,
    ),
}


@pytest.mark.parametrize("table", list(BROKEN_TABLES))
def test_nothing_is_lost(table: str, tmp_path: Path) -> None:
    """rows_read == accepted + rejected, and the accepted rows are exactly the good ones."""
    text, good, rows = BROKEN_TABLES[table]
    path = write_csv(tmp_path / f"{table}.csv", text)
    report = ValidationReport()
    loaded = load(table, path, report)
    assert set(loaded.column("row").to_pylist()) == good
    assert loaded.num_rows == len(good)
    assert report.rows_read == {table: rows}
    assert report.rows_rejected == {table: rows - len(good)}
    assert sum(f.rows for f in report.errors) == rows - len(good)
    full = validate_tables(**{table: path})
    assert full.rows_read[table] == loaded.num_rows + full.rows_rejected[table]


def test_row_with_several_bad_cells_is_rejected_once(tmp_path: Path) -> None:
    """A row bad in two columns is one rejected row, though each column reports it."""
    path = write_csv(
        tmp_path / "events.csv", EVENTS_HEADER + "c1,yesterday,page_view,abc\nc2,2024-01-01,a,1\n"
    )
    report = validate_tables(events=path)
    assert [f.column for f in report.errors] == ["timestamp", "value"]
    assert report.rows_read == {"events": 2}
    assert report.rows_rejected == {"events": 1}
    assert "1 accepted, 1 rejected" in report.render()


def test_unusable_table_claims_no_accepted_rows(tmp_path: Path) -> None:
    """A table with a missing required column reports no accepted rows."""
    path = write_csv(tmp_path / "events.csv", "customer_id,timestamp\nc1,2024-01-01\n")
    report = validate_tables(events=path)
    assert report.rows_read.get("events", 0) - report.rows_rejected.get("events", 0) == 0


# --- property: grouping, ordering and duplicates -----------------------------------------------------

CUSTOMER_IDS = ["a", "b", "B", "ab", "10", "9"]


@st.composite
def event_tables(draw: st.DrawFn) -> tuple[pd.DataFrame, int]:
    """Random events in random order, with some rows repeated; returns the frame and repeats inserted."""
    base = draw(
        st.lists(
            st.tuples(
                st.sampled_from(CUSTOMER_IDS),
                st.integers(0, 12),
                st.sampled_from(["view", "buy"]),
                st.sampled_from([None, 1.0]),
            ),
            min_size=1,
            max_size=40,
        )
    )
    rows = list(base)
    inserted = draw(st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 10**6)), max_size=10))
    for source, position in inserted:
        rows.insert(position % (len(rows) + 1), base[source])
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type", "value"])
    return frame, len(inserted)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(event_tables())
def test_event_log_groups_orders_and_deduplicates(drawn: tuple[pd.DataFrame, int]) -> None:
    """Every distinct row once, sorted by (customer_id, time), ties in input order, duplicates counted."""
    frame, inserted = drawn
    table = pa.table(
        {
            "customer_id": pa.array(frame["customer_id"], pa.string()),
            "timestamp": pa.array(frame["timestamp"] * 1_000_000, pa.int64()).cast(UTC_US),
            "event_type": pa.array(frame["event_type"], pa.string()),
            "value": pa.array(frame["value"], pa.float64(), from_pandas=True),
        }
    )
    report = ValidationReport()
    log = load_events(table, report)

    duplicated = frame.duplicated(keep="first").to_numpy()
    assert int(duplicated.sum()) >= inserted
    kept = [i for i in range(len(frame)) if not duplicated[i]]
    expected = sorted(kept, key=lambda i: (frame["customer_id"][i], frame["timestamp"][i]))
    assert log.order.tolist() == expected
    assert report.rows_rejected.get("events", 0) == int(duplicated.sum())
    assert report.rows_read == {"events": len(frame)}

    ids = log.customer_ids.to_pylist()
    assert ids == sorted(set(frame["customer_id"]))
    assert log.offsets[0] == 0
    assert log.offsets[-1] == log.num_events == len(kept)
    assert np.all(np.diff(log.offsets) > 0)
    sorted_ids = log.to_table().column("customer_id").to_pylist()
    for i, customer in enumerate(ids):
        assert set(sorted_ids[log.offsets[i] : log.offsets[i + 1]]) == {customer}
    assert log.timestamps.tolist() == [int(frame["timestamp"][i]) * 1_000_000 for i in expected]

    asked = pa.array([*CUSTOMER_IDS, "nobody", None], pa.string())
    positions = [ids.index(c) if c in ids else -1 for c in asked.to_pylist()]
    assert log.index_of(asked).tolist() == positions
    with patch("nextbest.data.events.LOOKUP_LIMIT", 0):  # Arrow's lookup, as for large logs
        assert log.index_of(asked).tolist() == positions


# --- across tables -----------------------------------------------------------------------------------


def test_labels_and_decisions_for_unknown_customers_warn(tmp_path: Path) -> None:
    """Labels and decisions for customers without events are a WARNING each, naming the customers."""
    report = validate_tables(
        events=good_events(tmp_path),
        customers=write_csv(tmp_path / "customers.csv", "customer_id\nc1\nc2\n"),
        decisions=write_csv(
            tmp_path / "decisions.csv", DECISIONS_HEADER + "c1,2024-01-01,a,0.5,1\nc9,2024-01-01,a,0.5,0\n"
        ),
        labels=write_csv(
            tmp_path / "labels.csv",
            "customer_id,as_of,churn\nx7,2024-02-01,1\nc2,2024-02-01,0\nx8,2024-02-01,0\n",
        ),
    )
    assert report.errors == []
    assert report.to_dict()["ok"] is True
    found = {(f.table, f.column, f.severity, f.rows, f.examples) for f in report.findings}
    assert found == {
        ("decisions", "customer_id", Severity.WARNING, 1, ("c9",)),
        ("labels", "customer_id", Severity.WARNING, 2, ("x7", "x8")),
    }


def test_contract_specs_match_the_design() -> None:
    """Required columns per table are those of DESIGN.md §2."""
    assert TABLES["events"].required == ("customer_id", "timestamp", "event_type")
    assert CUSTOMERS.required == ("customer_id",)
    assert DECISIONS.required == ("customer_id", "timestamp", "action")
    assert LABELS.required == ("customer_id", "as_of")
