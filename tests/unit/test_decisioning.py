"""Decisioning: the rule language, the history aggregates it reads, catalogs and their validation, and the
ranking's promise that eligibility rules and contact limits are never broken."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nextbest.data import load_events
from nextbest.decisioning import (
    ActionCatalog,
    CatalogError,
    HistoryQuery,
    RuleColumns,
    RuleError,
    history_queries,
    history_values,
    parse_rule,
    rank,
)
from nextbest.decisioning.policy import control_members, draw, request_uniforms, serving_probabilities
from nextbest.journeys.profile import ProfileEncoder

START = datetime(2026, 1, 1, tzinfo=UTC)
COUNT_EMAILS_7D = HistoryQuery("count", 7.0, (("channel", ("email",)),))
DAYS_SINCE_PURCHASE = HistoryQuery("days_since", None, (("event_type", ("purchase",)),))


def columns(**history: Any) -> RuleColumns:
    """Three requests with a profile, a context and two history aggregates."""
    return RuleColumns(
        3,
        profile={
            "segment": np.array(["gold", None, "bronze"], dtype=object),
            "age": np.array([30.0, np.nan, 61.0]),
            "vip": np.array(["true", "false", None], dtype=object),  # booleans read as texts
        },
        context={"channel": np.array(["web", "app", "web"], dtype=object)},
        history={
            COUNT_EMAILS_7D: np.array([0.0, 2.0, 5.0]),
            DAYS_SINCE_PURCHASE: np.array([3.0, np.inf, 40.0]),
            **history,
        },
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('profile.segment == "gold"', [True, False, False]),
        ('profile.segment != "gold"', [False, True, True]),  # missing != anything
        ("profile.age >= 30", [True, False, True]),
        ("profile.age < 40 or profile.age > 60", [True, False, True]),
        ('profile.segment in ["gold", "silver"]', [True, False, False]),
        ('profile.segment not in ["gold"]', [False, True, True]),
        ('profile.vip == "true"', [True, False, False]),
        ('context.channel == "web" and not profile.age > 50', [True, False, False]),
        ('count(days=7, channel="email") < 2', [True, False, False]),
        ('days_since(event_type="purchase") > 30', [False, True, True]),
        ('profile.unknown_attribute == "x"', [False, False, False]),
        ('(profile.age > 50 or context.channel == "app") and true', [False, True, True]),
    ],
)
def test_rules_evaluate_column_wise_with_missing_values_false(rule: str, expected: list[bool]) -> None:
    assert parse_rule(rule).evaluate(columns()).tolist() == expected


VALUE = re.escape("a value (profile.<attribute>, context.<key>, count(...), days_since(...), a number")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        # Syntax: what was expected, where, and what came instead.
        ('__import__("os").system("true")', f"expected {VALUE}.*got '__import__' at position 0"),
        ("profile.age >", f"the rule ends where {VALUE}.* at position 13 in 'profile.age >'"),
        ("profile.age == 1 and", "the rule ends where a value .* at position 20"),
        ("profile.age > 3 3", "expected `and`, `or` or the end of the rule, got '3' at position 16"),
        ("profile.age = 3", "got '=' \\(comparisons are ==, !=, <, <=, >, >=\\) at position 12"),
        ("profile.age @ 3", "cannot read '@ 3' at position 11"),
        ("profile.", "the rule ends where an attribute name after profile. was expected at position 8"),
        ("(profile.age > 3", "the rule ends where `\\)` was expected at position 16"),
        ('count(channel="email") > 1', "count\\(\\) needs days=<a number above 0, at most 36,600> at pos"),
        ("count(days=100000) > 1", "at most 36,600"),
        ("count(days=3, days=4) > 1", "count\\(\\) is given days twice at position 14"),
        ("count(days=profile) > 1", "expected a number, a quoted text, true or false, got 'profile' at pos"),
        (f"count(days={'9' * 400}) > 1", "the number 9{20}... is out of range at position 11"),
        ('count(days=7, colour="red") > 1', "count\\(\\) takes .* got colour at position 0"),
        ("days_since(event_type=3) > 1", "must be a quoted text or a list of them"),
        ("segment == 1", "got 'segment' at position 0"),
        ("", "non-empty"),
        ("profile.age in [profile.x]", "expected a number, a quoted text, true or false, got 'profile' at"),
        # Bounds: no text exhausts the parser (a raw RecursionError before).
        ("(" * 21 + "true" + ")" * 21, "rules nest at most 20 deep .* at position 20"),
        ("not " * 21 + "true", "rules nest at most 20 deep .* at position 80"),
        ("(" * 5000 + "true", "a rule is at most 2,000 characters long; this one has 5,004"),
        # Types the text alone shows: a rule is a condition, comparisons compare like with like.
        ("5", "`5`: a number is not a condition.* at position 0"),
        ("profile.age", "`profile.age`: a value is not a condition; compare it"),
        ('count(days=7) and profile.x == "a"', "`count\\(days=7\\)`: a number is not a condition"),
        ("not context.store_open", "`context.store_open`: a value is not a condition.* at position 4"),
        ('count(days=7) == "x"', '`count\\(days=7\\)` is a number and `"x"` a text: compare like'),
        ('profile.x in [1, "a"]', "the list mixes a number and a text"),
        ("profile.x in [true]", "`profile.x` is a value; the list holds a condition"),
        ("profile.x == true", "`profile.x` is a value and `true` a condition"),
        ("(count(days=1) > 1) < true", "`\\(count\\(days=1\\) > 1\\) < true`: true and false have no order"),
    ],
)
def test_bad_rules_are_errors_that_say_what_was_expected_and_where(rule: str, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("[", r"\[")) as error:
        parse_rule(rule)
    assert "None" not in str(error.value)


TOKENS = ["profile.age", "context.x", "count(days=7)", 'days_since(event_type="a")', "(", ")", "and", "or"]
TOKENS += ["not", "in", "[", "]", ",", "==", "<", ">=", "!=", "1", "-2.5", '"t"', "true", "false", "=", "."]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join))
def test_any_text_parses_or_is_a_rule_error_and_a_rule_evaluates_to_a_condition(text: str) -> None:
    try:
        rule = parse_rule(text)
    except RuleError:
        return
    missing = RuleColumns(
        2,
        profile={},
        context={},
        history={q: np.array([0.0, np.inf]) for q in rule.history_queries},
    )
    assert rule.evaluate(missing).dtype == np.bool_


def events(rows: list[tuple[str, float, str, str | None]]) -> pa.Table:
    """Events from (customer, days after START, event_type, channel)."""
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": pa.array([START + timedelta(days=r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
            "event_type": [r[2] for r in rows],
            "channel": pa.array([r[3] for r in rows], pa.string()),
            "action": pa.array(
                [f"act_{r[2]}" if r[2].endswith("_sent") else None for r in rows], pa.string()
            ),
        }
    )


EVENT_TYPES = ("email_sent", "sms_sent", "purchase", "page_view")
CHANNELS = ("email", "sms", "web", None)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"), st.floats(0, 60), st.sampled_from(EVENT_TYPES), st.sampled_from(CHANNELS)
        ),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.tuples(st.sampled_from("abcz"), st.floats(0, 70)), min_size=1, max_size=10),
    st.floats(0.5, 30),
)
def test_history_values_equal_a_brute_force_count(
    rows: list[tuple[str, float, str, str | None]], requests: list[tuple[str, float]], days: float
) -> None:
    # The data contract keeps an exact duplicate event once: the same row to the microsecond (days apart
    # by less than that are the same instant).
    rows = list({(c, START + timedelta(days=d), e, ch): (c, d, e, ch) for c, d, e, ch in rows}.values())
    table = events(rows)
    log = load_events(table)
    instants = table.column("timestamp").to_pylist()
    as_of = [START + timedelta(days=d) for _, d in requests]
    micros = np.array([int(t.timestamp() * 1e6) for t in as_of])
    queries = [
        HistoryQuery("count", days, (("channel", ("email", "sms")),)),
        HistoryQuery("count", days, (("event_type", ("purchase",)), ("channel", ("web",)))),
        HistoryQuery("days_since", None, (("event_type", ("email_sent", "purchase")),)),
    ]
    index = log.index_of(pa.array([c for c, _ in requests]))
    values = history_values(log, index, micros, queries)
    with patch("nextbest.data.text.LOOKUP_LIMIT", 0):  # Arrow's lookup, as for large dictionaries
        assert history_values(log, index, micros, queries).keys() == values.keys()
        for query, found in history_values(log, index, micros, queries).items():
            np.testing.assert_array_equal(found, values[query])
    for i, ((customer, _), cutoff) in enumerate(zip(requests, as_of, strict=True)):
        mine = [(t, r) for t, r in zip(instants, rows, strict=True) if r[0] == customer and t < cutoff]
        window = [r for t, r in mine if t >= cutoff - timedelta(days=days)]
        assert values[queries[0]][i] == sum(r[3] in ("email", "sms") for r in window)
        assert values[queries[1]][i] == sum(r[2] == "purchase" and r[3] == "web" for r in window)
        matches = [t for t, r in mine if r[2] in ("email_sent", "purchase")]
        expected = (cutoff - max(matches)) / timedelta(days=1) if matches else np.inf
        assert values[queries[2]][i] == pytest.approx(expected, abs=1e-6)


MODEL_ACTIONS = ("email_offer", "sms_reminder", "call_back", "no_action")


def catalog_dict(**overrides: Any) -> dict[str, Any]:
    return {
        "churn_cost": 10.0,
        "contact_caps": [{"max": 3, "days": 7}],
        "actions": [
            {
                "id": "email_offer",
                "channel": "email",
                "value": 40,
                "cost": 0.5,
                "limits": [{"max": 1, "days": 7}],
            },
            {"id": "sms_reminder", "channel": "sms", "value": 40, "cooldown_days": 10},
            {
                "id": "call_back",
                "channel": "call_center",
                "value": 60,
                "cost": 4,
                "eligible_if": 'profile.segment == "gold"',
            },
            {"id": "no_action", "value": 40},
        ],
        **overrides,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actions": [{"id": "teleport"}]}, "actions[0] (teleport): unknown action"),
        (
            {"actions": [{"id": "call_back", "eligible_if": "profile.x >"}]},
            "actions[0] (call_back): eligible_if",
        ),
        ({"actions": [{"id": "email_offer", "limits": [{"max": -1, "days": 7}]}]}, "limits[0]: max must be"),
        ({"actions": [{"id": "email_offer", "limits": [{"max": 1, "days": 0}]}]}, "limits[0]: days must be"),
        (
            {"actions": [{"id": "email_offer", "value": "lots"}]},
            "actions[0] (email_offer): value must be a finite number, got lots",
        ),
        (
            {"actions": [{"id": "email_offer", "colour": "red"}]},
            "actions[0] (email_offer): unknown key(s) colour",
        ),
        (
            {"actions": [{"id": "email_offer"}, {"id": "email_offer"}]},
            "actions[1] (email_offer): the id is listed twice",
        ),
        ({"actions": [{"id": "email_offer", "weight": -1}]}, "weight must be at least 0"),
        ({"actions": [{"value": 3}]}, "actions[0]: `id` must be"),
        ({"actions": []}, "non-empty list"),
        ({"churn_cost": -5}, "churn_cost must be at least 0"),
        ({"contact_caps": [{"max": 2}]}, "contact_caps[0]: days is required"),
        ({"budget": 3}, "unknown key(s) budget"),
    ],
)
def test_bad_catalogs_name_the_entry(change: dict[str, Any], message: str) -> None:
    with pytest.raises(
        CatalogError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        ActionCatalog.from_dict(catalog_dict(**change), source="test.yaml").check_actions(MODEL_ACTIONS)


# A model's profile: what its encoder learned from these columns (text, number, time, and a boolean,
# which the encoder reads as a category).
MODEL_PROFILE = ProfileEncoder.fit(
    pa.table(
        {
            "customer_id": ["a", "b"],
            "segment": ["gold", "silver"],
            "age": [30, 61],
            "signup": pa.array([START, START], pa.timestamp("us", tz="UTC")),
            "vip": [True, False],
        }
    )
)


def with_rule(rule: str, **overrides: Any) -> dict[str, Any]:
    """The test catalog with `rule` as call_back's eligibility (actions[2])."""
    data = catalog_dict(**overrides)
    data["actions"][2]["eligible_if"] = rule
    return data


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        (
            with_rule("profile.segment > 5"),
            "actions[2] (call_back): eligible_if: `profile.segment > 5`: `profile.segment` is a text and `5` "
            "a number: compare like with like at position 0 in 'profile.segment > 5'",
        ),
        (
            with_rule("profile.no_such_attr == 1"),
            "actions[2] (call_back): eligible_if: `profile.no_such_attr`: unknown profile name; the known "
            "ones are age, segment, signup, vip",
        ),
        (
            with_rule("profile.signup > 30"),
            "actions[2] (call_back): eligible_if: `profile.signup > 30`: `profile.signup` is a time",
        ),
        (
            with_rule("profile.vip == 1"),  # booleans are categories: "true" and "false"
            "actions[2] (call_back): eligible_if: `profile.vip == 1`: `profile.vip` is a text and `1`",
        ),
        (
            with_rule('count(days=2) > 1 and profile.age in ["old"]'),
            'actions[2] (call_back): eligible_if: `profile.age in ["old"]`: `profile.age` is a number; '
            "the list holds a text at position 22",
        ),
        (
            with_rule("profile.segment == 1", profile={"segment": "number"}),
            "profile: segment is declared a number, but the model reads it as a text",
        ),
    ],
)
def test_rules_that_do_not_fit_the_model_name_the_entry(catalog: dict[str, Any], message: str) -> None:
    parsed = ActionCatalog.from_dict(catalog, source="test.yaml")  # the catalog alone cannot tell
    with pytest.raises(CatalogError, match=re.escape(f"test.yaml: {message}")):
        parsed.check_model(MODEL_ACTIONS, MODEL_PROFILE)


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        (
            with_rule('context.channel == "web"'),
            "actions[2] (call_back): eligible_if: `context.channel`: unknown context name; the known ones "
            "are (none)",
        ),
        (
            with_rule("context.store_open == 1", context={"store_open": "text"}),
            "actions[2] (call_back): eligible_if: `context.store_open == 1`: `context.store_open` is a text",
        ),
        (
            with_rule('profile.tier == "a"', profile={"tier": "number"}),
            'actions[2] (call_back): eligible_if: `profile.tier == "a"`: `profile.tier` is a number',
        ),
        (
            with_rule("context.x == 1", context={"x": "boolean"}),
            "context: x: the type must be number or text",
        ),
        (with_rule("context.x == 1", context=["x"]), "context: expected a mapping of names to their types"),
        (with_rule("5"), "actions[2] (call_back): eligible_if: `5`: a number is not a condition"),
        (
            with_rule("(" * 30 + "true" + ")" * 30),
            "actions[2] (call_back): eligible_if: rules nest at most 20 deep",
        ),
        (
            with_rule('profile.segment == "gold"', contact_caps=[{"max": 1, "days": 1e300}]),
            "contact_caps[0]: days must be at most 36,600, got 1e+300",
        ),
        (
            {"actions": [{"id": "email_offer", "value": float("nan")}]},
            "actions[0] (email_offer): value must be a finite number, got nan",
        ),
        (
            {"actions": [{"id": "email_offer", "cost": 10**400}]},
            "actions[0] (email_offer): cost must be a finite number, got 1000000",
        ),
    ],
)
def test_rules_and_declarations_that_cannot_work_fail_on_reading(
    catalog: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogError, match=re.escape(f"test.yaml: {message}")):
        ActionCatalog.from_dict(catalog, source="test.yaml")


def test_declared_names_are_read_with_their_types_and_round_trip() -> None:
    data = with_rule(
        'context.store_open == 1 and profile.tier in ["a", "b"] and profile.vip == "true"',
        context={"store_open": "number"},
        profile={"tier": "text", "age": "number"},
    )
    catalog = ActionCatalog.from_dict(data)
    catalog.check_model(MODEL_ACTIONS, MODEL_PROFILE)
    assert ActionCatalog.from_dict(catalog.to_dict()) == catalog
    assert catalog.to_dict()["context"] == {"store_open": "number"}


def test_catalog_round_trips_and_reads_yaml(tmp_path: Any) -> None:
    catalog = ActionCatalog.from_dict(catalog_dict())
    assert ActionCatalog.from_dict(catalog.to_dict()) == catalog
    path = tmp_path / "catalog.yaml"
    path.write_text("actions:\n  - {id: email_offer, value: 3}\n")
    assert ActionCatalog.from_yaml(path).actions[0].value == 3.0
    path.write_text("actions: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        ActionCatalog.from_yaml(path)


def test_expected_value_uplift_and_reasons() -> None:
    catalog = ActionCatalog.from_dict(catalog_dict())
    p_conv = np.array([[0.10, 0.08, 0.20, 0.05]])
    p_churn = np.array([[0.30, 0.20, 0.10, 0.40]])
    context = RuleColumns(
        1,
        {"segment": np.array(["silver"], dtype=object)},
        {},
        # No contacts ever: counts are 0 and the days since the last one infinite.
        {q: np.array([np.inf if q.function == "days_since" else 0.0]) for q in history_queries(catalog)},
    )
    no_action = MODEL_ACTIONS.index("no_action")
    baseline = p_conv[:, no_action], p_churn[:, no_action]
    ranking = rank(catalog, MODEL_ACTIONS, p_conv, p_churn, *baseline, context)
    expected = [
        40 * 0.10 - 10 * 0.30 - 0.5,
        40 * 0.08 - 10 * 0.20,
        60 * 0.20 - 10 * 0.10 - 4,
        40 * 0.05 - 10 * 0.40,
    ]
    np.testing.assert_allclose(ranking.expected_value[0], expected)
    # Uplift is over the no-action figures (the model's no_action column, 0.05, 0.40), at each action's value.
    np.testing.assert_allclose(ranking.uplift[0, 0], expected[0] - (40 * 0.05 - 10 * 0.40))
    assert ranking.reasons[0].tolist() == [None, None, 'not eligible: profile.segment == "gold"', None]
    assert [ranking.actions[k] for k in ranking.order[0]][:3] == ["sms_reminder", "email_offer", "no_action"]


def contact_log_and_requests(
    seed: int,
) -> tuple[Any, np.ndarray, np.ndarray, list[list[tuple[float, str, str]]]]:
    """Random contact histories (event type, channel, action) for 30 customers, requested at day 30."""
    rng = np.random.default_rng(seed)
    kinds = [
        ("email_sent", "email", "email_offer"),
        ("sms_sent", "sms", "sms_reminder"),
        ("purchase", "web", None),
    ]
    rows, histories = [], []
    for c in range(30):
        history = []
        for _ in range(rng.integers(0, 12)):
            kind = kinds[rng.integers(0, 3)]
            day = float(rng.uniform(0, 30))
            history.append((day, *kind))
            rows.append((f"c{c}", day, *kind))
        histories.append(history)
    rows.append(("filler", 0.0, "page_view", "web", None))
    table = pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": pa.array([START + timedelta(days=r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
            "event_type": [r[2] for r in rows],
            "channel": [r[3] for r in rows],
            "action": pa.array([r[4] for r in rows], pa.string()),
        }
    )
    log = load_events(table)
    index = log.index_of(pa.array([f"c{c}" for c in range(30)]))
    as_of = np.full(30, int((START + timedelta(days=30)).timestamp() * 1e6))
    return log, index, as_of, histories


def contacts(
    history: list[tuple[float, str, str, str | None]], within: float, channel: str | None = None
) -> int:
    """Contacts (not purchases) in the last `within` days before day 30, on `channel` if given."""
    return sum(
        30 - day <= within and (channel is None or ch == channel)
        for day, kind, ch, _ in history
        if kind != "purchase"
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(0, 3),
    st.floats(1, 20),
    st.integers(0, 4),
    st.floats(1, 15),
    st.integers(1, 6),
)
def test_eligible_actions_never_break_limits_cooldowns_or_caps(
    seed: int, email_max: int, email_days: float, cap_max: int, cap_days: float, cooldown: int
) -> None:
    log, index, as_of, histories = contact_log_and_requests(seed)
    catalog = ActionCatalog.from_dict(
        {
            "contact_events": ["email_sent", "sms_sent"],
            "contact_caps": [{"max": cap_max, "days": cap_days}],
            "actions": [
                {"id": "email_offer", "channel": "email", "limits": [{"max": email_max, "days": email_days}]},
                {"id": "sms_reminder", "channel": "sms", "cooldown_days": cooldown},
                {"id": "no_action"},
            ],
        }
    )
    rng = np.random.default_rng(seed)
    p = rng.random((30, 3))
    columns_ = RuleColumns(30, {}, {}, history_values(log, index, as_of, history_queries(catalog)))
    ranking = rank(
        catalog, ("email_offer", "sms_reminder", "no_action"), p, p / 2, p[:, 2], p[:, 2], columns_
    )
    for c, history in enumerate(histories):
        allowed = dict(zip(ranking.actions, ranking.eligible[c], strict=True))
        assert allowed["no_action"]  # no channel: neither limits nor caps apply
        if allowed["email_offer"]:
            assert contacts(history, email_days, "email") < email_max
            assert contacts(history, cap_days) < cap_max
        if allowed["sms_reminder"]:
            sms_days = [day for day, _, _, action in history if action == "sms_reminder"]
            assert not sms_days or 30 - max(sms_days) >= cooldown
            assert contacts(history, cap_days) < cap_max
        ranked = [ranking.actions[k] for k in ranking.order[c]]
        eligible_first = [allowed[a] for a in ranked]
        assert eligible_first == sorted(eligible_first, reverse=True)


def exploration_ranking(expected: np.ndarray, eligible: np.ndarray) -> Any:
    catalog = ActionCatalog.default(("a", "b", "c"))
    ranking = rank(
        catalog,
        catalog.ids,
        expected,
        np.zeros_like(expected),
        expected[:, 0],
        expected[:, 0],
        RuleColumns(len(expected), {}, {}, {}),
        candidates=eligible,
    )
    return ranking


@pytest.mark.parametrize(
    ("exploration", "expected"),
    [
        ({"policy": "off"}, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
        ({"policy": "epsilon", "epsilon": 0.3}, [[0.15, 0.85, 0.0], [0.0, 0.0, 0.0], [0.8, 0.1, 0.1]]),
    ],
)
def test_serving_probabilities_cover_only_eligible_actions(
    exploration: dict[str, Any], expected: list[list[float]]
) -> None:
    values = np.array([[0.2, 0.5, 0.9], [0.1, 0.2, 0.3], [0.9, 0.5, 0.1]])
    eligible = np.array([[True, True, False], [False, False, False], [True, True, True]])
    catalog = ActionCatalog.from_dict({"actions": [{"id": "a"}], "exploration": exploration})
    ranking = exploration_ranking(values, eligible)
    probabilities = serving_probabilities(ranking, catalog.exploration, np.zeros(3, bool))
    np.testing.assert_allclose(probabilities, expected)
    in_control = np.array([True, True, False])  # served any eligible action alike, whatever the exploration
    probabilities = serving_probabilities(ranking, catalog.exploration, in_control)
    np.testing.assert_allclose(probabilities, [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], expected[2]])


def test_softmax_follows_expected_value_and_draws_follow_probabilities() -> None:
    values = np.tile([[1.0, 2.0, 3.0]], (20_000, 1))
    catalog = ActionCatalog.from_dict(
        {"actions": [{"id": "a"}], "exploration": {"policy": "softmax", "temperature": 1}}
    )
    probabilities = serving_probabilities(
        exploration_ranking(values, np.ones_like(values, bool)), catalog.exploration, np.zeros(20_000, bool)
    )
    np.testing.assert_allclose(probabilities[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    uniforms = request_uniforms([f"c{i}" for i in range(20_000)], np.zeros(20_000, np.int64), seed=1)
    assert uniforms.min() >= 0.0
    assert uniforms.max() < 1.0
    chosen = draw(probabilities, uniforms)
    np.testing.assert_allclose(np.bincount(chosen, minlength=3) / 20_000, probabilities[0], atol=0.015)
    np.testing.assert_array_equal(
        uniforms, request_uniforms([f"c{i}" for i in range(20_000)], np.zeros(20_000, np.int64), 1)
    )
    assert draw(np.zeros((1, 3)), np.array([0.5])).tolist() == [-1]


@pytest.mark.parametrize(
    ("exploration", "message"),
    [
        ({"policy": "thompson"}, "policy must be one of"),
        ({"policy": "epsilon", "epsilon": 1.5}, "epsilon must be at most 1"),
        ({"policy": "softmax", "temperature": 0}, "temperature must be positive"),
        ({"policy": "off", "seed": "x"}, "seed must be a whole number"),
    ],
)
def test_bad_exploration_settings_are_named(exploration: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=f"exploration: {message}"):
        ActionCatalog.from_dict({"actions": [{"id": "a"}], "exploration": exploration})


def test_the_control_group_is_a_stable_seeded_share_of_customers() -> None:
    ids = pa.array([f"c{i}" for i in range(20_000)])
    control = ActionCatalog.from_dict({"actions": [{"id": "a"}], "control": {"share": 0.05}}).control
    members = control_members(ids, control)
    assert 0.045 < members.mean() < 0.055
    np.testing.assert_array_equal(members, control_members(ids.slice(0, 20_000), control))
    reseeded = control_members(ids, dataclasses.replace(control, seed=1))
    assert 0.045 < reseeded.mean() < 0.055
    assert (members & reseeded).mean() < 0.01  # another seed, another group
    assert not control_members(ids, dataclasses.replace(control, share=0.0)).any()
    assert control_members(ids, dataclasses.replace(control, share=1.0)).all()


@pytest.mark.parametrize(
    ("control", "message"),
    [
        ({"share": 1.5}, "share must be at most 1"),
        ({"share": -0.1}, "share must be at least 0"),
        ({"share": "5%"}, "share must be a finite number"),
        ({"share": 0.1, "seed": 1.5}, "seed must be a whole number"),
        ({"fraction": 0.1}, "fraction"),
    ],
)
def test_bad_control_group_settings_are_named(control: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=f"control: .*{message}"):
        ActionCatalog.from_dict({"actions": [{"id": "a"}], "control": control})


ANY_SCORE = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 3.5e38, 0.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, (n, 4), elements=ANY_SCORE),
            arrays(np.float64, (n, 4), elements=ANY_SCORE),
            arrays(np.bool_, (n, 4)),
            arrays(np.float64, n, elements=st.floats(0.0, 1.0, exclude_max=True)),
        )
    ),
    st.sampled_from(
        [
            {"policy": "off"},
            {"policy": "epsilon", "epsilon": 0.3},
            {"policy": "softmax", "temperature": 0.01},
            {"policy": "softmax", "temperature": 5.0},
        ]
    ),
)
def test_no_suppressed_action_is_ever_ranked_or_served(
    drawn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], exploration: dict[str, Any]
) -> None:
    """Whatever the model's scores (NaN, ±Infinity, huge), suppressed actions are listed after every
    eligible one, never top, never served, and have probability exactly 0; rows sum to 1 (or 0)."""
    conversion, churn, eligible, uniforms = drawn
    catalog = ActionCatalog.from_dict(
        {
            "churn_cost": 2.0,
            "actions": [{"id": a, "value": 3.0, "cost": 0.5} for a in ("a", "b", "c", "d")],
            "exploration": exploration,
        }
    )
    columns = RuleColumns(len(conversion), {}, {}, {})
    with np.errstate(invalid="ignore", over="ignore"):  # the scores themselves are NaN and inf
        ranking = rank(
            catalog, catalog.ids, conversion, churn, conversion[:, 0], churn[:, 0], columns, eligible
        )
    in_control = uniforms < 0.2  # any rows: control must not open a way to a suppressed action either
    probabilities = serving_probabilities(ranking, catalog.exploration, in_control)
    chosen = draw(probabilities, uniforms)
    rows = np.arange(len(eligible))
    has_any = eligible.any(axis=1)
    in_order = np.take_along_axis(eligible, ranking.order, axis=1)
    assert (np.diff(in_order.astype(int), axis=1) <= 0).all()  # eligible ones first
    listed_nan = np.take_along_axis(np.isnan(ranking.expected_value), ranking.order, axis=1) & in_order
    assert (np.diff(listed_nan.astype(int), axis=1)[in_order[:, 1:]] >= 0).all()  # NaN last of those
    assert np.array_equal(ranking.top >= 0, has_any)
    assert eligible[rows, ranking.top][has_any].all()
    assert (probabilities[~eligible] == 0.0).all()
    assert np.isfinite(probabilities).all()
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), has_any.astype(float))
    assert np.array_equal(chosen >= 0, has_any)
    assert (probabilities[rows, chosen][has_any] > 0).all()
    assert eligible[rows, chosen][has_any].all()
