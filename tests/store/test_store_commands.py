"""`nextbest store load` and `nextbest store export` on both backends (a load and an export give back the
tables loaded), and the SQLite store's durability: a writer killed with SIGKILL loses nothing it was
told was stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextbest.cli import main
from nextbest.data import CUSTOMERS, DECISIONS, load_events, load_table
from nextbest.decisioning import ActionCatalog
from nextbest.simulate import SimulationConfig, simulate
from nextbest.store import Candidate, open_store

CONTRACT_EVENTS = ["customer_id", "timestamp", "event_type", "channel", "action", "value"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("world")
    simulated = simulate(SimulationConfig(n_customers=80, seed=5))
    pq.write_table(simulated.events, folder / "events.parquet")
    pq.write_table(simulated.customers, folder / "customers.parquet")
    return folder


def sorted_rows(table: pa.Table) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=repr)


def test_load_then_export_gives_back_the_tables(
    store_uri: str, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, customers = world / "events.parquet", world / "customers.parquet"
    assert (
        main(["store", "load", "--store", store_uri, "--events", str(events), "--customers", str(customers)])
        == 0
    )
    assert "0 rejected" in capsys.readouterr().out
    catalog = ActionCatalog.from_dict({"actions": [{"id": "email_offer", "channel": "email"}]})
    with open_store(store_uri) as store:
        served = store.serve(
            "c1", datetime(2030, 1, 1, tzinfo=UTC), "d-1", [Candidate("email_offer", 0.25)], catalog
        )
    out = tmp_path / "export"
    assert main(["store", "export", "--store", store_uri, "--out", str(out)]) == 0

    original = load_events(events).to_table().select(CONTRACT_EVENTS)
    exported = load_events(out / "events.parquet").to_table().select(CONTRACT_EVENTS)
    assert sorted_rows(exported) == sorted_rows(original)
    assert sorted_rows(load_table(out / "customers.parquet", CUSTOMERS)) == sorted_rows(
        load_table(customers, CUSTOMERS)
    )
    decisions = load_table(out / "decisions.parquet", DECISIONS).to_pylist()
    assert [(d["customer_id"], d["action"], d["propensity"], d["decision_id"]) for d in decisions] == [
        ("c1", served.action, 0.25, "d-1")
    ]
    # A rerun of the same export replaces its own files; a load rerun stores nothing twice.
    assert main(["store", "export", "--store", store_uri, "--out", str(out)]) == 0
    assert main(["store", "load", "--store", store_uri, "--events", str(events)]) == 0
    assert f"{original.num_rows:,} already stored" in capsys.readouterr().out


def test_export_never_replaces_what_it_did_not_write(
    tmp_path: Path, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["store", "load", "--store", uri, "--events", str(world / "events.parquet")]) == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.parquet").write_text("someone else's")
    assert main(["store", "export", "--store", uri, "--out", str(out), "--overwrite"]) == 1
    assert "does not hold a nextbest store export output" in capsys.readouterr().err
    assert (out / "events.parquet").read_text() == "someone else's"
    assert main(["store", "export", "--store", uri, "--out", str(tmp_path)]) == 1  # holds the store itself


def test_load_names_bad_rows_by_file_row_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "customer_id,timestamp,event_type,value,campaign\n"
        "c1,2026-11-19T08:00:00Z,page_view,,x\n"
        "c1,someday,page_view,,x\n"
        "c2,2026-11-19T08:00:00Z,purchase,lots,x\n"
    )
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["store", "load", "--store", uri, "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "1 stored" in out
    assert "2 rejected" in out
    assert "row 2: timestamp" in out
    assert "row 3: value" in out
    assert "columns the store does not keep: campaign" in out


def test_no_store_given_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NEXTBEST_STORE", raising=False)
    assert main(["store", "export", "--out", "x"]) == 1
    assert "--store" in capsys.readouterr().err


WRITER = textwrap.dedent(
    """
    import sys
    from nextbest.store import open_store

    store = open_store(sys.argv[1])
    for batch in range(10_000):
        rows = [
            {"customer_id": f"c{i % 50}", "timestamp": f"2026-11-{1 + i % 28:02d}T08:00:00Z",
             "event_type": "page_view", "event_id": f"e{batch}-{i}"}
            for i in range(50)
        ]
        store.append_events(rows)
        print(batch, flush=True)  # acknowledged: append_events returned
    """
)


def test_a_killed_writer_loses_no_acknowledged_event(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    with subprocess.Popen([sys.executable, "-c", WRITER, uri], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        acknowledged = -1
        for line in child.stdout:
            acknowledged = int(line)
            if acknowledged >= 30:
                break
        os.kill(child.pid, signal.SIGKILL)
    assert acknowledged >= 30
    with open_store(uri, max_events=10**6) as store:
        stored = (
            store.histories([f"c{i}" for i in range(50)], [2**62] * 50).events.column("event_id").to_pylist()
        )
    assert len(stored) == len(set(stored))
    expected = {f"e{batch}-{i}" for batch in range(acknowledged + 1) for i in range(50)}
    assert expected <= set(stored)
