"""Shared fixtures: where the real public data sets live (read in place, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# A config run cut to one epoch of two batches, logging every step: enough to exercise what surrounds it.
SHORT_TRAINING = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.log_every_n_steps=1",
]


def shared_data_dir() -> Path:
    """`../shared/data` beside the repository, or `NEXTBEST_SHARED_DATA` when set."""
    return Path(os.environ.get("NEXTBEST_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path} (set NEXTBEST_SHARED_DATA)")
    return path
