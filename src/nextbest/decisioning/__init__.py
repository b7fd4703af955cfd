"""Decisioning: the action catalog, the rule language, contact policies and the ranking of actions."""

from nextbest.decisioning.catalog import ActionCatalog, CatalogAction, CatalogError, ContactLimit
from nextbest.decisioning.expressions import HistoryQuery, Rule, RuleColumns, RuleError, parse_rule
from nextbest.decisioning.history import history_values
from nextbest.decisioning.policy import (
    Ranking,
    contact_queries,
    contact_suppressions,
    history_queries,
    rank,
)

__all__ = [
    "ActionCatalog",
    "CatalogAction",
    "CatalogError",
    "ContactLimit",
    "HistoryQuery",
    "Ranking",
    "Rule",
    "RuleColumns",
    "RuleError",
    "contact_queries",
    "contact_suppressions",
    "history_queries",
    "history_values",
    "parse_rule",
    "rank",
]
