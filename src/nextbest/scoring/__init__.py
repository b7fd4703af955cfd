"""Scoring: the deployable model (network, encoder, actions, calibrators, catalog), its MLflow pyfunc,
scoring records (the online request and answer shapes) and the ranked output."""

from nextbest.scoring.decide import Decisions, decide
from nextbest.scoring.output import OUTPUT_SCHEMA, decision_rows, decisions_table
from nextbest.scoring.records import score_records
from nextbest.scoring.schemas import (
    RankedAction,
    RankResponse,
    RequestEvent,
    ScoreResponse,
    ScoringRequest,
    SuppressedAction,
)
from nextbest.scoring.scorer import JourneyScorer, Scores

__all__ = [
    "OUTPUT_SCHEMA",
    "Decisions",
    "JourneyScorer",
    "RankResponse",
    "RankedAction",
    "RequestEvent",
    "ScoreResponse",
    "Scores",
    "ScoringRequest",
    "SuppressedAction",
    "decide",
    "decision_rows",
    "decisions_table",
    "score_records",
]
