"""Scoring: the deployable model (network, encoder, actions, calibrators, catalog), its MLflow pyfunc,
scoring records (the online request shape) and the ranked output."""

from nextbest.scoring.decide import Decisions, decide
from nextbest.scoring.output import OUTPUT_SCHEMA, decision_rows, decisions_table
from nextbest.scoring.records import (
    RankedAction,
    RequestEvent,
    ScoredRequest,
    ScoringRequest,
    SuppressedAction,
    score_records,
)
from nextbest.scoring.scorer import JourneyScorer, Scores

__all__ = [
    "OUTPUT_SCHEMA",
    "Decisions",
    "JourneyScorer",
    "RankedAction",
    "RequestEvent",
    "ScoredRequest",
    "Scores",
    "ScoringRequest",
    "SuppressedAction",
    "decide",
    "decision_rows",
    "decisions_table",
    "score_records",
]
