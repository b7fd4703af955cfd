"""`nextbest score` as a real process: killed midway (SIGKILL, SIGTERM), then run again, its output holds
every request exactly once and equals an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from nextbest.journeys import requests_at_end
from nextbest.scoring import decide, decisions_table
from tests.integration.conftest import registered_world

pytestmark = pytest.mark.integration


def wait_for_parts(out: Path, process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Returns once the run has finished at least one chunk (and is still running)."""
    deadline = time.monotonic() + timeout
    while not any(out.glob("part-*.parquet")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no chunk finished in time"
        time.sleep(0.01)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_an_interrupted_run_resumes_with_every_request_exactly_once(
    registry: mlflow.MlflowClient, tmp_path: Path, stop: signal.Signals
) -> None:
    world, log, scorer = registered_world(registry, tmp_path, n_customers=600, seed=3)
    out = tmp_path / "scores"
    command = [sys.executable, "-m", "nextbest.cli", "score", "--model", "models:/nextbest@champion"]
    command += ["--events", str(tmp_path / "world" / "events.parquet")]
    command += ["--customers", str(tmp_path / "world" / "customers.parquet")]
    command += ["--out", str(out), "--chunk-events", "500"]  # about 60 chunks
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}

    process = subprocess.Popen(command, env=env, cwd=tmp_path, text=True, stderr=subprocess.PIPE)
    wait_for_parts(out, process)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    chunks = len(list((out / "_work" / "events").glob("bucket-*.parquet")))
    done = len(list(out.glob("part-*.parquet")))
    assert 0 < done < chunks, "the run was not stopped midway"
    assert not (out / "_SUCCESS").exists()
    if stop == signal.SIGTERM:
        assert process.returncode == 130
        assert "run the same command again to resume" in stderr
    else:
        assert process.returncode == -signal.SIGKILL

    resumed = subprocess.run(command, env=env, cwd=tmp_path, text=True, capture_output=True, check=True)
    assert f"Resumed: {done} of " in resumed.stdout
    written = pq.read_table(out).sort_by([("customer_id", "ascending")])
    ids = written.column("customer_id").to_pylist()
    assert len(ids) == len(set(ids)) == 600  # each request exactly once
    expected = decisions_table(decide(scorer, log, requests_at_end(log), world.customers), "1")
    assert ids == expected.column("customer_id").to_pylist()
    assert written.column("top_action").equals(expected.column("top_action"))
    np.testing.assert_allclose(written.column("p_churn"), expected.column("p_churn"), rtol=1e-5)
    assert not list(out.glob(".*.tmp"))  # no temporary part left behind
