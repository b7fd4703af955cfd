"""The real-data adapters (`nextbest convert criteo|cdnow`) on the shared data sets and on broken inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from nextbest.adapters import ConvertedDataset, read_cdnow, read_criteo, write_dataset
from nextbest.adapters.criteo import TIME_ORIGIN
from nextbest.cli import main
from nextbest.errors import NextbestError

TS = pa.timestamp("us", tz="UTC")
EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("timestamp", TS),
        ("event_type", pa.string()),
        ("channel", pa.string()),
        ("action", pa.string()),
        ("value", pa.float64()),
    ]
)
CUTOFF = datetime(1997, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def criteo_file(shared_data: Path) -> Path:
    return shared_data / "criteo_attribution" / "train_journeys.jsonl"


@pytest.fixture(scope="module")
def cdnow_file(shared_data: Path) -> Path:
    return shared_data / "cdnow" / "CDNOW_master.txt"


@pytest.fixture(scope="module")
def criteo(criteo_file: Path) -> ConvertedDataset:
    return read_criteo(criteo_file)


@pytest.fixture(scope="module")
def cdnow(cdnow_file: Path) -> ConvertedDataset:
    return read_cdnow(cdnow_file)


def _at(seconds: int) -> datetime:
    return TIME_ORIGIN + timedelta(seconds=seconds)


def _events_of(ds: ConvertedDataset, customer_id: str) -> pd.DataFrame:
    rows: pd.DataFrame = ds.events.filter(pc.equal(ds.events["customer_id"], customer_id)).to_pandas()
    return rows


def _label_of(ds: ConvertedDataset, customer_id: str) -> dict[str, object]:
    rows = ds.labels.filter(pc.equal(ds.labels["customer_id"], customer_id)).to_pylist()
    assert len(rows) == 1
    row: dict[str, object] = rows[0]
    return row


def _assert_sorted_by_customer_then_time(events: pa.Table) -> None:
    ids = events["customer_id"].to_numpy(zero_copy_only=False)
    ts = events["timestamp"].cast(pa.int64()).to_numpy()
    assert (ids[1:] >= ids[:-1]).all()
    same = ids[1:] == ids[:-1]
    assert (ts[1:][same] >= ts[:-1][same]).all()


# --- Criteo, full file ---------------------------------------------------------------------------------


def test_criteo_schemas(criteo: ConvertedDataset) -> None:
    assert criteo.events.schema == EVENTS_SCHEMA
    assert criteo.labels.schema == pa.schema(
        [("customer_id", pa.string()), ("as_of", TS), ("conversion", pa.int8())]
    )
    assert criteo.customers is not None
    assert criteo.customers.schema == pa.schema([("customer_id", pa.string()), ("user_id", pa.int64())])


def test_criteo_counts_match_the_source(criteo: ConvertedDataset, criteo_file: Path) -> None:
    journeys = [json.loads(line) for line in criteo_file.read_text().splitlines() if line.strip()]
    touchpoints = sum(len(j["campaigns"]) for j in journeys)
    purchases = sum(j["conversion"] for j in journeys)
    assert len(journeys) == 164_647
    customers = criteo.customers
    assert customers is not None
    assert criteo.labels.num_rows == customers.num_rows == len(journeys)
    assert pc.count_distinct(criteo.labels["customer_id"]).as_py() == len(journeys)
    assert pc.count_distinct(customers["user_id"]).as_py() == 157_332
    assert criteo.events.num_rows == touchpoints + purchases == 643_987 + 16_400
    counts = pc.value_counts(criteo.events["event_type"]).to_pylist()
    assert {c["values"]: c["counts"] for c in counts} == {"ad_impression": touchpoints, "purchase": purchases}
    rate = pc.mean(criteo.labels["conversion"]).as_py()
    assert rate == pytest.approx(0.0996, abs=5e-5)
    assert criteo.provenance["positive_rate"]["conversion"] == rate


def test_criteo_as_of_follows_every_touch_and_the_purchase_sits_at_as_of(criteo: ConvertedDataset) -> None:
    events = criteo.events.to_pandas()
    labels = criteo.labels.to_pandas().set_index("customer_id")
    touches = events[events["event_type"] == "ad_impression"]
    last_touch = touches.groupby("customer_id")["timestamp"].max()
    assert (labels["as_of"] - last_touch.reindex(labels.index) == pd.Timedelta(seconds=1)).all()
    purchases = events[events["event_type"] == "purchase"].set_index("customer_id")
    assert purchases.index.is_unique
    assert set(purchases.index) == set(labels.index[labels["conversion"] == 1])
    assert (purchases["timestamp"] == labels["as_of"].reindex(purchases.index)).all()
    assert purchases["channel"].isna().all()
    assert purchases["action"].isna().all()


def test_criteo_events_sorted_and_mapped(criteo: ConvertedDataset) -> None:
    _assert_sorted_by_customer_then_time(criteo.events)
    touches = criteo.events.filter(pc.equal(criteo.events["event_type"], "ad_impression"))
    assert pc.unique(touches["channel"]).to_pylist() == ["display"]
    assert sorted(pc.unique(touches["action"]).to_pylist()) == [f"campaign_{i}" for i in range(10)]
    assert criteo.events["value"].null_count == criteo.events.num_rows


def test_criteo_source_timestamps_are_sorted_within_journeys(criteo: ConvertedDataset) -> None:
    assert criteo.provenance["timestamps_sorted_within_journeys"] is True
    assert criteo.provenance["tied_timestamps_within_journeys"] == 26


def test_criteo_hand_checked_journeys(criteo: ConvertedDataset) -> None:
    # Line 1: {"user": 0, "campaigns": [8, 8, 8, 8], "timestamps": [2, 41449, 216892, 254153],
    # "conversion": 0}
    first = _events_of(criteo, "u0-j0")
    assert first["action"].tolist() == ["campaign_8"] * 4
    assert first["timestamp"].tolist() == [_at(s) for s in (2, 41449, 216892, 254153)]
    assert _label_of(criteo, "u0-j0") == {"customer_id": "u0-j0", "as_of": _at(254154), "conversion": 0}
    # User 10 has two journeys: an unconverted one on line 11 and a converted one later in the file.
    assert _label_of(criteo, "u10-j0")["conversion"] == 0
    second = _events_of(criteo, "u10-j1")
    assert second["event_type"].iloc[-1] == "purchase"
    assert second["timestamp"].iloc[0] == _at(316830)
    assert _label_of(criteo, "u10-j1")["conversion"] == 1


def test_criteo_limit_keeps_a_prefix_with_the_same_ids(criteo: ConvertedDataset, criteo_file: Path) -> None:
    small = read_criteo(criteo_file, limit=500)
    assert small.labels.num_rows == 500
    kept = small.labels["customer_id"]
    assert small.events.equals(criteo.events.filter(pc.is_in(criteo.events["customer_id"], value_set=kept)))
    assert small.labels.equals(criteo.labels.filter(pc.is_in(criteo.labels["customer_id"], value_set=kept)))
    # The file lists the unconverted journeys first, so a short prefix has no positive.
    assert small.provenance["positive_rate"]["conversion"] == 0.0
    assert small.provenance["limit"] == 500
    assert "hold no conversion" in small.provenance["notes"][0]


def test_criteo_cli_writes_the_tables(
    criteo_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "criteo"
    assert main(["convert", "criteo", "--input", str(criteo_file), "--out", str(out), "--limit", "200"]) == 0
    assert "200 customers" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "customers.parquet",
        "dataset.json",
        "events.parquet",
        "labels.parquet",
    ]
    assert pq.read_schema(out / "events.parquet").field("timestamp").type == TS
    assert pq.read_table(out / "labels.parquet").num_rows == 200
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["dataset"] == "criteo_attribution"
    assert meta["source"]["path"] == str(criteo_file.resolve())
    assert meta["rows"]["labels"] == meta["customers"] == 200
    assert "CC BY-NC-SA 4.0" in meta["license"]
    assert meta["protocol"]["time_origin"] == "2017-01-01T00:00:00Z"


# --- Criteo, small files -------------------------------------------------------------------------------


def _journey(user: int, campaigns: list[int], timestamps: list[int], conversion: int) -> str:
    return json.dumps(
        {"user": user, "campaigns": campaigns, "timestamps": timestamps, "conversion": conversion}
    )


def test_criteo_unsorted_touches_repeat_users_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "journeys.jsonl"
    lines = [_journey(7, [1, 2, 3], [50, 10, 10], 1), "", _journey(3, [0], [5], 0), _journey(7, [4], [1], 0)]
    path.write_text("\n".join(lines) + "\n")
    ds = read_criteo(path)
    assert ds.labels.to_pylist() == [
        {"customer_id": "u3-j0", "as_of": _at(6), "conversion": 0},
        {"customer_id": "u7-j0", "as_of": _at(51), "conversion": 1},
        {"customer_id": "u7-j1", "as_of": _at(2), "conversion": 0},
    ]
    first = _events_of(ds, "u7-j0")
    # Sorted by time; the two touches at 10 s keep their file order; the purchase follows the latest touch.
    assert first["action"].tolist() == ["campaign_2", "campaign_3", "campaign_1", None]
    assert first["timestamp"].tolist() == [_at(10), _at(10), _at(50), _at(51)]
    assert ds.provenance["timestamps_sorted_within_journeys"] is False


# --- CDNOW, full file ----------------------------------------------------------------------------------


def test_cdnow_schemas(cdnow: ConvertedDataset) -> None:
    extra = [pa.field("quantity", pa.int64()), pa.field("source_line", pa.int64())]
    assert cdnow.events.schema == pa.schema([*EVENTS_SCHEMA, *extra])
    assert cdnow.labels.schema == pa.schema(
        [("customer_id", pa.string()), ("as_of", TS), ("churn", pa.int8()), ("conversion", pa.int8())]
    )
    assert cdnow.customers is None


def test_cdnow_counts_and_holdout_rates(cdnow: ConvertedDataset) -> None:
    assert cdnow.events.num_rows == 69_659
    assert pc.count_distinct(cdnow.events["customer_id"]).as_py() == 23_570
    assert pc.unique(cdnow.events["event_type"]).to_pylist() == ["purchase"]
    assert pc.unique(cdnow.events["channel"]).to_pylist() == ["web"]
    assert cdnow.events["action"].null_count == cdnow.events.num_rows
    assert pc.sum(cdnow.events["quantity"]).as_py() == 167_881
    assert pc.sum(cdnow.events["value"]).as_py() == pytest.approx(2_500_315.63)
    # Every customer of the Q1-1997 cohort bought before the cutoff, so every one gets a label.
    assert cdnow.labels.num_rows == 23_570
    assert cdnow.provenance["customers_without_calibration_purchase"] == 0
    assert cdnow.provenance["notes"] == []
    assert pc.unique(cdnow.labels["as_of"]).to_pylist() == [CUTOFF]
    assert pc.sum(cdnow.labels["conversion"]).as_py() == 7_058
    assert pc.sum(cdnow.labels["churn"]).as_py() == 16_512  # holdout churn rate 70.06%
    assert cdnow.provenance["positive_rate"]["churn"] == pytest.approx(0.7006, abs=5e-5)
    assert cdnow.provenance["same_day_repeat_lines"] == 2_068
    # 255 lines repeat an earlier line exactly; source_line keeps them distinct events.
    frame = cdnow.events.to_pandas()
    assert frame.drop(columns="source_line").duplicated().sum() == 255
    assert not frame.duplicated().any()
    _assert_sorted_by_customer_then_time(cdnow.events)


def test_cdnow_hand_checked_customers(cdnow: ConvertedDataset) -> None:
    # 00011: three purchases in 1997 before October and one on 1998-02-20 -> a repeat buyer.
    eleven = _events_of(cdnow, "00011")
    assert eleven["timestamp"].dt.strftime("%Y%m%d").tolist() == [
        "19970101",
        "19970128",
        "19970317",
        "19980220",
    ]
    assert eleven["value"].tolist() == [13.49, 19.30, 12.77, 12.99]
    assert eleven["quantity"].tolist() == [1, 1, 1, 1]
    assert _label_of(cdnow, "00011") == {"customer_id": "00011", "as_of": CUTOFF, "churn": 0, "conversion": 1}
    # 00016: four purchases, the last on 1997-09-10 -> churned in the holdout.
    assert len(_events_of(cdnow, "00016")) == 4
    assert _label_of(cdnow, "00016")["churn"] == 1
    # 00002: two lines on the same day stay two events, in file order.
    two = _events_of(cdnow, "00002")
    assert two["value"].tolist() == [12.00, 77.00]
    assert two["quantity"].tolist() == [1, 5]
    assert two["timestamp"].nunique() == 1
    assert two["source_line"].tolist() == [3, 4]


def test_cdnow_cli_writes_the_tables(
    cdnow_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", "cdnow", "--input", str(cdnow_file), "--out", str(tmp_path)]) == 0
    assert "churn rate 70.06%" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "events.parquet", "labels.parquet"]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["protocol"]["as_of"] == "1997-10-01T00:00:00Z"
    assert meta["protocol"]["holdout"] == ["1997-10-01T00:00:00Z", "1998-07-01T00:00:00Z"]
    assert meta["rows"] == {"events": 69_659, "labels": 23_570, "customers": None}
    assert pq.read_table(tmp_path / "labels.parquet").schema.field("as_of").type == TS


# --- CDNOW, small files --------------------------------------------------------------------------------


def test_cdnow_windows_are_half_open(tmp_path: Path) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970930  1   10.00\n"  # last calibration day
        " 00001 19971001  1   10.00\n"  # first holdout day -> repeat purchase
        " 00002 19970301  1   10.00\n"
        " 00002 19980701  1   10.00\n"  # the day after the holdout -> still churned
        " 00003 19971105  2   30.00\n"  # no purchase before the cutoff -> no label
    )
    ds = read_cdnow(path)
    assert ds.labels.select(["customer_id", "churn", "conversion"]).to_pylist() == [
        {"customer_id": "00001", "churn": 0, "conversion": 1},
        {"customer_id": "00002", "churn": 1, "conversion": 0},
    ]
    assert ds.events.num_rows == 5
    assert ds.provenance["customers_without_calibration_purchase"] == 1
    assert ds.provenance["notes"] == [
        "1 customer(s) bought nothing before 1997-10-01T00:00:00Z and have no label row"
    ]


def test_write_dataset_reports_an_unwritable_folder(cdnow: ConvertedDataset, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NextbestError, match="cannot write"):
        write_dataset(cdnow, blocker / "out")


# --- malformed input through the CLI -------------------------------------------------------------------


def _run_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dataset: str, content: str | bytes
) -> tuple[int, str]:
    path = tmp_path / "input.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    status = main(["convert", dataset, "--input", str(path), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()
    return status, captured.err


GOOD = _journey(1, [1, 2], [5, 6], 0)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [GOOD, '{"user": 2, "timestamps": [1], "conversion": 1}'],
            'lack the field "campaigns" (or it is null) (line 2)',
        ),
        (
            [GOOD, "", _journey(2, [1, 2], [1], 1)],
            '"campaigns" and "timestamps" of different lengths (line 3)',
        ),
        ([GOOD, _journey(2, [], [], 0)], "have no touchpoint (line 2)"),
        ([_journey(2, [1], [1], 3)], '"conversion" other than 0 or 1 (line 1)'),
        (
            [GOOD, GOOD, '{"user": 2, "campaigns": "abc", "timestamps": [1], "conversion": 1}'],
            'line 3: "campaigns" is a string, expected an array',
        ),
        ([GOOD, '{"user": 2, "campaigns": [1,'], "line 2: JSON parse error"),
        (
            ['{"user": 1, "campaigns": [1], "timestamps": [1.5], "conversion": 0}'],
            "line 1: 1.5 is not an integer",
        ),
        ([], "no journeys, the file is empty"),
    ],
)
def test_criteo_malformed_input_is_a_clear_error(
    lines: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _run_cli(capsys, tmp_path, "criteo", "\n".join(lines) + "\n" if lines else "")
    assert status == 1
    assert "input.txt" in err
    assert expected in err


CDNOW_HEADER = " customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (CDNOW_HEADER + " 00002 19971301  1   12.00\n", "a date that is not a valid YYYYMMDD (line 3)"),
        (CDNOW_HEADER + "\n 00002 1997010  1   12.00\n", "a date that is not a valid YYYYMMDD (line 4)"),
        (
            CDNOW_HEADER + " 00002 19970102  x   12.00\n",
            "number_of_cds that is not a whole number >= 0 (line 3)",
        ),
        (CDNOW_HEADER + " 00002 19970102  1   twelve\n", "dollar_value that is not a finite number (line 3)"),
        (CDNOW_HEADER + " 00002 19970102  1\n", "fewer than 4 fields (line 3)"),
        (CDNOW_HEADER + " 00002 19970102  1  12.00  7\n", "Expected 4 fields in line 3, saw 5"),
        (CDNOW_HEADER.encode() + b" \xff 19970102 1 12.00\n", "line 3: not UTF-8 text"),
        ("", "no purchases"),
    ],
)
def test_cdnow_malformed_input_is_a_clear_error(
    content: str | bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _run_cli(capsys, tmp_path, "cdnow", content)
    assert status == 1
    assert "input.txt" in err
    assert expected in err


@pytest.mark.parametrize("dataset", ["criteo", "cdnow"])
def test_missing_input_file(dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.txt"
    assert main(["convert", dataset, "--input", str(missing), "--out", str(tmp_path / "out")]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err


def test_limit_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "criteo", "--input", "x", "--out", str(tmp_path), "--limit", "0"])
    assert exit_info.value.code == 2
    assert "--limit: must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 1"):
        read_criteo(tmp_path / "x", limit=0)
