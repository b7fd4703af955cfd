"""The MLflow pyfunc model: one artifact that carries a `JourneyScorer` to every place that scores.

The model is logged "from code" (MLflow runs `mlflow_model.py`, which imports this module), so loading
it unpickles nothing; the scorer itself is plain tensors and JSON. Its `predict` takes `ScoringRequest`
records (validated by MLflow against the type hints, which also give the model's signature); bulk
callers score contract tables through `scorer` directly, the same object.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from nextbest import __version__
from nextbest.errors import NextbestError
from nextbest.registry import RegisteredModelUri, reads_tracking_store, resolved_version, tracking_uri_for
from nextbest.scoring.records import score_records
from nextbest.scoring.schemas import RankResponse, ScoringRequest
from nextbest.scoring.scorer import JourneyScorer

# Profile values are text or numbers, a union MLflow validates as Any, logging a warning every time the
# model loads; `ProfileEncoder.records_table` checks them against the profile's columns instead.
logging.getLogger("mlflow.types.type_hints").setLevel(logging.ERROR)

ARTIFACT_KEY = "scorer"
MODEL_NAME = "model"  # the model's name within its run
_ENTRY_FILE = Path(__file__).with_name("mlflow_model.py")


class ModelLoadError(NextbestError):
    """A model URI that does not lead to a loadable nextbest model."""


class NextbestModel(PythonModel):
    """Scores and ranks the next best actions of `ScoringRequest` records."""

    scorer: JourneyScorer

    def load_context(self, context: PythonModelContext) -> None:
        self.scorer = JourneyScorer.load(context.artifacts[ARTIFACT_KEY])

    # MLflow 3 calls a `predict` without `context` as such; the base class still declares the old form.
    def predict(  # type: ignore[override]
        self, model_input: list[ScoringRequest], params: dict[str, Any] | None = None
    ) -> list[RankResponse]:
        """Ranked actions per record.

        Args:
            params: `model_version` names the model in the answers (default: its training run id).
        """
        version = (params or {}).get("model_version") or self.scorer.metadata.get("run_id", "")
        return score_records(self.scorer, model_input, str(version))


def log_model(
    scorer: JourneyScorer, input_example: list[ScoringRequest], registered_model_name: str | None = None
) -> ModelInfo:
    """Logs `scorer` as a pyfunc model to the active MLflow run (and registers it under a name, if given).

    The example's answer, computed by loading the logged model, becomes the output example, so the
    model is known to load and score before anything is registered.
    """
    with tempfile.TemporaryDirectory() as tmp:
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(_ENTRY_FILE),
            artifacts={ARTIFACT_KEY: str(scorer.save(Path(tmp) / ARTIFACT_KEY))},
            # With its params, so that the signature declares `model_version` (else MLflow drops it).
            input_example=(
                [record.model_dump(exclude_none=True) for record in input_example],
                {"model_version": ""},
            ),
            # The scorer needs nextbest itself, which pins everything else it needs.
            pip_requirements=[f"nextbest=={__version__}"],
            registered_model_name=registered_model_name,
        )


def load_scorer(model_uri: str) -> JourneyScorer:
    """The scorer inside the nextbest pyfunc model at `model_uri` (any MLflow model URI; a registry or run
    URI from a tracking store that exists)."""
    store = tracking_uri_for(model_uri)
    mlflow.set_tracking_uri(store)
    try:
        python_model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except (MlflowException, OSError) as exc:
        where = f" from the tracking store {store}" if reads_tracking_store(model_uri) else ""
        raise ModelLoadError(f"cannot load the model {model_uri}{where}: {exc}") from exc
    except (RuntimeError, KeyError, ValueError) as exc:  # weights or description of another layout
        raise ModelLoadError(
            f"cannot load the model {model_uri}: it was saved by an incompatible version of nextbest "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); retrain or export it again"
        ) from exc
    if not isinstance(python_model, NextbestModel):
        raise ModelLoadError(f"{model_uri} is not a nextbest model (it holds {type(python_model).__name__})")
    return python_model.scorer


def load_version(model_uri: str) -> tuple[JourneyScorer, str]:
    """The scorer at `model_uri` and its version, read as one: the registry version that a
    `models:/name@alias` or `models:/name/N` URI names (an alias resolved once, and the version it names
    loaded, so a promotion in between cannot pair one version's model with another's number); for any
    other URI, the model's training run id."""
    version = resolved_version(model_uri)
    registered = RegisteredModelUri.parse(model_uri)
    pinned = f"models:/{registered.name}/{version}" if registered is not None and version else model_uri
    scorer = load_scorer(pinned)
    return scorer, version or str(scorer.metadata.get("run_id", ""))
