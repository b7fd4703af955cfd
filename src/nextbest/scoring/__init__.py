"""Scoring: the deployable model (network, encoder, actions, calibrators), its MLflow pyfunc, and ranking."""

from nextbest.scoring.output import OUTPUT_SCHEMA, rank_actions, scores_table
from nextbest.scoring.records import RankedAction, RequestEvent, ScoredRequest, ScoringRequest, score_records
from nextbest.scoring.scorer import HEAD_OUTPUTS, JourneyScorer, Scores

__all__ = [
    "HEAD_OUTPUTS",
    "OUTPUT_SCHEMA",
    "JourneyScorer",
    "RankedAction",
    "RequestEvent",
    "ScoredRequest",
    "Scores",
    "ScoringRequest",
    "rank_actions",
    "score_records",
    "scores_table",
]
