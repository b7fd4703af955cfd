"""Where MLflow runs and registered models live: `MLFLOW_TRACKING_URI`, else the embedded default store
(SQLite in the working directory, artifacts beside it), the same for training and for every scorer."""

from __future__ import annotations

import os

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The model a service or job uses unless told otherwise: the registry's current champion.
DEFAULT_MODEL_URI = "models:/nextbest@champion"


def tracking_uri() -> str:
    """The tracking (and registry) URI nextbest uses."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
