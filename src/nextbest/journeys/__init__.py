"""Journeys: per-customer, time-ordered touchpoint sequences at point-in-time cutoffs, ready for a model."""

from nextbest.journeys.encoder import EncodedJourneys, EventFeatures, JourneyConfig, JourneyEncoder
from nextbest.journeys.labels import LabelRules, labels_from_frame, labels_from_rules
from nextbest.journeys.profile import ProfileEncoder
from nextbest.journeys.requests import ResolvedRequests, requests_at_cutoffs, requests_at_end
from nextbest.journeys.vocab import Vocabulary
from nextbest.journeys.windows import Windows, history_windows

__all__ = [
    "EncodedJourneys",
    "EventFeatures",
    "JourneyConfig",
    "JourneyEncoder",
    "LabelRules",
    "ProfileEncoder",
    "ResolvedRequests",
    "Vocabulary",
    "Windows",
    "history_windows",
    "labels_from_frame",
    "labels_from_rules",
    "requests_at_cutoffs",
    "requests_at_end",
]
