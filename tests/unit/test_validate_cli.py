"""`nextbest validate`, run in-process: exit status, the printed report, --strict, --json and --help."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextbest.cli import main

EVENTS = (
    "customer_id,timestamp,event_type,channel,value\n"
    "c1,2024-01-01T09:00:00Z,page_view,web,\n"
    "c1,2024-01-02T09:00:00+01:00,purchase,web,19.90\n"
    "c2,2024-01-03,email_open,email,\n"
)
CUSTOMERS = "customer_id,segment,age\nc1,gold,41\nc2,silver,29\n"
DECISIONS = (
    "customer_id,timestamp,action,propensity,converted,churned,revenue\nc1,2024-01-01,email,0.25,1,0,19.9\n"
)
LABELS = "customer_id,as_of,conversion,churn\nc1,2024-01-05,1,0\nc2,2024-01-05,0,1\n"

Run = Callable[..., tuple[int, str, str]]


def write(path: Path, text: str) -> Path:
    """Write `text` to `path` and return the path."""
    path.write_text(text)
    return path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `nextbest validate ARGS` in-process; returns (exit status, stdout, stderr)."""

    def _run(*args: str | Path) -> tuple[int, str, str]:
        rc = main(["validate", *(str(a) for a in args)])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return _run


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Path]:
    """All four contract tables, meeting the contract (events as CSV, the others too)."""
    return {
        "events": write(tmp_path / "events.csv", EVENTS),
        "customers": write(tmp_path / "customers.csv", CUSTOMERS),
        "decisions": write(tmp_path / "decisions.csv", DECISIONS),
        "labels": write(tmp_path / "labels.csv", LABELS),
    }


def options(tables: dict[str, Path]) -> list[str | Path]:
    """Command-line options naming each table: --events PATH --customers PATH ..."""
    return [item for name, path in tables.items() for item in (f"--{name}", path)]


def test_good_tables_pass(run: Run, good: dict[str, Path]) -> None:
    """Tables meeting the contract exit 0, with a summary line per table and the all-clear message."""
    rc, out, err = run(*options(good))
    assert rc == 0
    assert "all tables meet the data contract" in out
    assert "events: 3 rows read, 3 accepted, 0 rejected" in out
    for table in ("customers: 2", "decisions: 1", "labels: 2"):
        assert table in out
    assert err == ""


def test_good_parquet_directory_passes(run: Run, tmp_path: Path) -> None:
    """A directory of Parquet part files is one events table."""
    folder = tmp_path / "events"
    folder.mkdir()
    for part, customer in enumerate(["c1", "c2"]):
        pq.write_table(
            pa.table({"customer_id": [customer], "timestamp": ["2024-01-01"], "event_type": ["a"]}),
            folder / f"part-{part}.parquet",
        )
    rc, out, _ = run("--events", folder)
    assert rc == 0
    assert "events: 2 rows read, 2 accepted, 0 rejected" in out


def undecodable(tmp: Path) -> Path:
    """An events ".csv" holding every byte value."""
    path = tmp / "events.csv"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def integer_timestamps(tmp: Path) -> Path:
    """Events in Parquet whose timestamp column is int64 (no unit: unusable)."""
    path = tmp / "events.parquet"
    pq.write_table(
        pa.table({"customer_id": ["c1"], "timestamp": pa.array([1], pa.int64()), "event_type": ["a"]}), path
    )
    return path


def csv(name: str, text: str) -> Callable[[Path], Path]:
    """A writer of a CSV file `name` with content `text`."""
    return lambda tmp: write(tmp / name, text)


# (table option, writer of the broken file, what the output must name)
BROKEN = [
    pytest.param(
        "events",
        csv("e.csv", "customer_id,timestamp\nc1,2024-01-01\n"),
        "events.event_type",
        id="missing-column",
    ),
    pytest.param(
        "events",
        csv("e.csv", "customer_id,timestamp,event_type\nc1,soon,a\n"),
        "events.timestamp",
        id="bad-time",
    ),
    pytest.param(
        "events",
        csv("e.csv", "customer_id,timestamp,event_type\n,2024-01-01,a\n"),
        "events.customer_id",
        id="no-id",
    ),
    pytest.param(
        "events",
        csv("e.csv", "customer_id,timestamp,event_type,value\nc1,2024-01-01,a,ten\n"),
        "events.value",
        id="text-value",
    ),
    pytest.param("events", integer_timestamps, "events.timestamp", id="integer-timestamp"),
    pytest.param(
        "events", csv("e.csv", "customer_id,timestamp,event_type\n"), "events: table is empty", id="empty"
    ),
    pytest.param(
        "events",
        csv("e.csv", "customer_id,timestamp,event_type\nc1,2024-01-01,a,b\n"),
        "events: malformed",
        id="too-many-fields",
    ),
    pytest.param(
        "events",
        undecodable,
        "events: ",
        id="binary-garbage",
    ),
    pytest.param("events", lambda tmp: tmp / "absent.csv", "no such file", id="missing-file"),
    pytest.param("events", csv("e.xlsx", "customer_id\n"), "unknown table format", id="unknown-suffix"),
    pytest.param(
        "customers", csv("c.csv", "customer_id\nc1\nc1\n"), "customers.customer_id", id="repeated-customer"
    ),
    pytest.param(
        "decisions",
        csv("d.csv", "customer_id,timestamp,action,propensity\nc1,2024-01-01,a,1.5\n"),
        "decisions.propensity",
        id="propensity-above-one",
    ),
    pytest.param(
        "decisions",
        csv("d.csv", "customer_id,timestamp,action,converted\nc1,2024-01-01,a,2\n"),
        "decisions.converted",
        id="converted-two",
    ),
    pytest.param(
        "labels",
        csv("l.csv", "customer_id,as_of\nc1,2024-01-05\n"),
        "labels: needs a `conversion`",
        id="no-outcome",
    ),
    pytest.param(
        "labels",
        csv("l.csv", "customer_id,as_of,churn\nc1,2024-01-05,1\nc1,2024-01-05,0\n"),
        "labels.customer_id, as_of",
        id="repeated-label",
    ),
]


@pytest.mark.parametrize(("table", "write_broken", "names"), BROKEN)
def test_broken_table_fails_with_a_message(
    run: Run,
    good: dict[str, Path],
    tmp_path: Path,
    table: str,
    write_broken: Callable[[Path], Path],
    names: str,
) -> None:
    """A broken table (the others good) exits 1, naming table and column in an error line, no traceback."""
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    tables = {**good, table: write_broken(broken_dir)}
    rc, out, err = run(*options(tables))
    assert rc == 1
    error_lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert error_lines
    assert all(line.startswith(f"error: {table}") for line in error_lines)
    assert names in out
    assert "all tables meet the data contract" not in out
    assert "Traceback" not in out + err


@pytest.fixture
def out_of_order(tmp_path: Path) -> Path:
    """Events for c1 logged newest first: usable (sorted on load) but worth a warning."""
    return write(
        tmp_path / "events.csv",
        "customer_id,timestamp,event_type\nc1,2024-01-02,purchase\nc1,2024-01-01,page_view\n",
    )


def test_warning_passes_unless_strict(run: Run, out_of_order: Path) -> None:
    """Out-of-order events are a warning: exit 0 normally, exit 1 with --strict; same report either way."""
    rc, out, _ = run("--events", out_of_order)
    assert rc == 0
    assert "warning: events.timestamp: events are not in time order" in out
    strict_rc, strict_out, strict_err = run("--events", out_of_order, "--strict")
    assert strict_rc == 1
    assert strict_out == out
    assert "Traceback" not in strict_out + strict_err


def test_strict_passes_clean_tables(run: Run, good: dict[str, Path]) -> None:
    """--strict alone does not fail tables without findings."""
    rc, _, _ = run(*options(good), "--strict")
    assert rc == 0


def test_json_report(run: Run, good: dict[str, Path], tmp_path: Path) -> None:
    """--json FILE writes ok=false, the row counts and every finding with table, column, rows, examples."""
    events = write(
        tmp_path / "bad.csv",
        "customer_id,timestamp,event_type,value\nc1,2024-01-01,a,1\nc1,later,a,1\nc2,2024-01-01,b,x\n",
    )
    report_path = tmp_path / "report.json"
    rc, out, _ = run(*options({**good, "events": events}), "--json", report_path)
    assert rc == 1
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert report["rows_read"]["events"] == 3
    assert report["rows_rejected"]["events"] == 2
    assert {(f["table"], f["column"], f["severity"], f["rows"]) for f in report["findings"]} == {
        ("events", "timestamp", "error", 1),
        ("events", "value", "error", 1),
        ("customers", "customer_id", "warning", 1),  # c2's only event was rejected
        ("labels", "customer_id", "warning", 1),
    }
    examples = {f["column"]: f["examples"] for f in report["findings"]}
    assert examples["timestamp"] == ["row 2: 'later'"]
    assert examples["value"] == ["row 3: 'x'"]
    for finding in report["findings"]:
        assert f"{finding['severity']}: {finding['table']}.{finding['column']}: {finding['problem']}" in out


def test_json_report_of_good_tables(run: Run, good: dict[str, Path], tmp_path: Path) -> None:
    """A clean run writes ok=true and no findings."""
    report_path = tmp_path / "report.json"
    rc, _, _ = run(*options(good), "--json", report_path)
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert report["findings"] == []
    assert report["rows_rejected"] == {}


def test_json_into_missing_directory_creates_it(run: Run, good: dict[str, Path], tmp_path: Path) -> None:
    """Missing folders on the --json path are created."""
    rc, _, _ = run("--events", good["events"], "--json", tmp_path / "no" / "report.json")
    assert rc == 0
    assert (tmp_path / "no" / "report.json").is_file()


def test_unwritable_json_path_is_a_message(run: Run, good: dict[str, Path], tmp_path: Path) -> None:
    """A --json path that cannot be written is reported as an error, not a traceback."""
    (tmp_path / "file").write_text("")
    rc, _, err = run("--events", good["events"], "--json", tmp_path / "file" / "report.json")
    assert rc == 1
    assert "report.json" in err
    assert "Traceback" not in err


def test_help_mentions_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`nextbest validate --help` documents every option and the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--events", "--customers", "--decisions", "--labels", "--strict", "--json"):
        assert option in out
    assert "Exit status" in out


def test_events_are_required(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without --events the command is a usage error (exit 2) naming the option."""
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--labels", str(tmp_path / "labels.csv")])
    assert exit_info.value.code == 2
    assert "--events" in capsys.readouterr().err
