"""The synthetic world simulator behind `nextbest simulate`.

A world is a population of customers with latent traits and observable profiles, their multi-channel
journeys and marketing history, one or two logged decisions per customer (actions drawn by a known
logging policy) with their outcomes, and the true outcome probabilities of every candidate action, so
that models, uplift estimates and off-policy evaluations can be checked against the truth. A decider
(e.g. a running service, `nextbest.simulate.live`) may choose the actions in place of the logging policy.
"""

from nextbest.simulate.actions import Served, logging_policy_probabilities, true_outcome_probabilities
from nextbest.simulate.config import ActionSpec, EffectSizes, SimulationConfig
from nextbest.simulate.output import SimulatedWorld, write_world
from nextbest.simulate.world import Decider, DecisionRound, simulate

__all__ = [
    "ActionSpec",
    "Decider",
    "DecisionRound",
    "EffectSizes",
    "Served",
    "SimulatedWorld",
    "SimulationConfig",
    "logging_policy_probabilities",
    "simulate",
    "true_outcome_probabilities",
    "write_world",
]
