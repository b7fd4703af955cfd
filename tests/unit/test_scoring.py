"""The scorer, the batch output table and scoring records: save/load, online equals batch, ranking, errors."""

from __future__ import annotations

import itertools
import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, get_args, get_origin

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import BaseModel

from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.data.schema import UTC_US
from nextbest.decisioning import ActionCatalog, CatalogError, RuleColumns, rank
from nextbest.errors import DataContractError
from nextbest.journeys import JourneyConfig, JourneyEncoder, requests_at_end
from nextbest.model import JourneyNetwork, ModelConfig, TemperatureScaling
from nextbest.scoring import (
    OUTPUT_SCHEMA,
    JourneyScorer,
    ScoringRequest,
    decide,
    decision_rows,
    decisions_table,
    score_records,
)
from nextbest.scoring.output import output_schema
from nextbest.scoring.records import probability_records
from nextbest.scoring.schemas import RankResponse, ServedScoringRequest
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(SimulationConfig(n_customers=150, seed=4))


@pytest.fixture(scope="module")
def log(world: SimulatedWorld) -> EventLog:
    return load_events(world.events)


def make_scorer(log: EventLog, customers: pa.Table, seed: int = 0) -> JourneyScorer:
    """An untrained but deterministic scorer with non-trivial calibrators on two heads."""
    encoder = JourneyEncoder.fit(log, customers)
    actions = ("email_offer", "discount_10", "call_back", "no_action")
    config = ModelConfig(
        **encoder.network_sizes(),
        num_actions=len(actions),
        max_events=32,
        d_model=16,
        n_heads=2,
    )
    torch.manual_seed(seed)
    calibrators = {
        "conversion": TemperatureScaling(temperature=2.0, bias=-1.0),
        "action_conversion": TemperatureScaling(temperature=0.5, bias=-2.0),
    }
    return JourneyScorer(JourneyNetwork(config), encoder, actions, calibrators, {"run_id": "r1"})


@pytest.fixture(scope="module")
def scorer(log: EventLog, world: SimulatedWorld) -> JourneyScorer:
    return make_scorer(log, world.customers)


def test_save_and_load_give_the_same_scores(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld, tmp_path: Path
) -> None:
    requests = requests_at_end(log)
    before = scorer.score(log, requests, world.customers)
    restored = JourneyScorer.load(scorer.save(tmp_path / "scorer"))
    after = restored.score(log, requests, world.customers)
    assert restored.actions == scorer.actions
    assert restored.metadata == {"run_id": "r1"}
    for name in ("p_conversion", "p_churn", "action_p_conversion", "action_p_churn"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name))


# A scorer saved by the code of before the model heads were declared in one place (`nextbest.model.HEADS`):
# its weights, scorer.json and the scores it gave then on `saved_scorer_inputs()`.
SAVED_SCORER = Path(__file__).parents[1] / "fixtures" / "saved_scorer"


def saved_scorer_inputs() -> tuple[EventLog, pa.Table, pa.Table]:
    """The events, profiles and requests the saved scorer was fitted and scored on."""

    def days(values: list[int]) -> pa.Array:
        return pa.array([v * 86_400_000_000 for v in values], pa.int64()).cast(pa.timestamp("us", "UTC"))

    events = pa.table(
        {
            "customer_id": ["a", "a", "a", "b", "b", "c"],
            "timestamp": days([1, 2, 5, 1, 3, 4]),
            "event_type": ["page_view", "email_open", "purchase", "page_view", "support_call", "page_view"],
            "channel": ["web", "email", "web", "app", "call_center", None],
            "action": [None, "email_offer", None, None, None, None],
            "value": [None, None, 42.0, None, None, None],
        }
    )
    customers = pa.table(
        {"customer_id": ["a", "b", "d"], "segment": ["gold", "silver", "gold"], "age": [31, 58, 22]}
    )
    requests = pa.table({"customer_id": ["a", "a", "b", "c", "d"], "as_of": days([4, 6, 6, 6, 6])})
    return load_events(events), customers, requests


def test_a_scorer_saved_before_the_heads_moved_loads_and_scores_as_it_did() -> None:
    """scorer.json keeps its format: calibrators by head name, the network's weights by module name."""
    log, customers, requests = saved_scorer_inputs()
    scores = JourneyScorer.load(SAVED_SCORER).score(log, requests, customers)
    expected = json.loads((SAVED_SCORER / "expected_scores.json").read_text())
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(scores, name), values, rtol=1e-6, err_msg=name)


def test_calibrators_shape_the_probabilities(scorer: JourneyScorer, log: EventLog) -> None:
    requests = requests_at_end(log)
    journeys = scorer.encoder.encode(log, requests)
    logits = scorer.logits(journeys)
    probabilities = scorer.probabilities(logits)
    expected = 1.0 / (1.0 + np.exp(-(logits["action_conversion"] / 0.5 - 2.0)))
    np.testing.assert_allclose(probabilities["action_conversion"], expected, rtol=1e-6)
    np.testing.assert_allclose(probabilities["churn"], 1.0 / (1.0 + np.exp(-logits["churn"])), rtol=1e-6)
    assert probabilities["action_churn"].shape == (len(requests), len(scorer.actions))


def test_records_score_exactly_as_the_tables(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld
) -> None:
    """The online path (records) and the batch path (tables) give the same scores and rankings."""
    decisions = world.decisions.slice(0, 40)
    requests = pa.table(
        {"customer_id": decisions.column("customer_id"), "as_of": decisions.column("timestamp")}
    )
    batch = decisions_table(decide(scorer, log, requests, world.customers), "7")
    online = score_records(scorer, records_from_tables(log, requests, world.customers), "7")
    for row, answer in zip(batch.to_pylist(), online, strict=True):
        assert answer.customer_id == row["customer_id"]
        assert answer.as_of == row["as_of"].isoformat()
        assert answer.model_version == "7"
        assert answer.p_conversion == pytest.approx(row["p_conversion"], rel=1e-5)
        assert answer.p_churn == pytest.approx(row["p_churn"], rel=1e-5)
        assert [a.action for a in answer.actions] == [a["action"] for a in row["actions"]]
        assert answer.top_action == row["top_action"]


def test_the_control_group_and_the_exploration_draw_are_the_customers_online_as_in_batch(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld
) -> None:
    """Both hash the customer id (and the draw its as_of): a record is served as the same request is in
    batch, wherever it stands in the call (online, the records are keyed by their position)."""
    catalog = ActionCatalog.from_dict(
        {
            "actions": [{"id": action} for action in scorer.actions],
            "exploration": {"policy": "epsilon", "epsilon": 0.5},
            "control": {"share": 0.3},
        }
    )
    decisions = world.decisions.slice(0, 60)
    requests = pa.table(
        {"customer_id": decisions.column("customer_id"), "as_of": decisions.column("timestamp")}
    )
    batch = decisions_table(decide(scorer, log, requests, world.customers, catalog=catalog), "7").to_pylist()
    records = records_from_tables(log, requests, world.customers)
    backwards = score_records(scorer, records[::-1], "7", catalog)[::-1]
    for answers in (score_records(scorer, records, "7", catalog), backwards):
        assert [a.control for a in answers] == [row["control"] for row in batch]
        assert [a.chosen_action for a in answers] == [row["chosen_action"] for row in batch]
    assert 0 < sum(row["control"] for row in batch) < len(batch)


def test_rules_read_a_boolean_attribute_alike_online_and_in_batch(
    log: EventLog, world: SimulatedWorld
) -> None:
    """The encoder reads a boolean profile column as the categories "true" and "false", and so do rules,
    from a table as from a record (the batch path read Python booleans, equal to no text)."""
    customers = world.customers.append_column(
        "vip", pa.array([i % 3 == 0 for i in range(world.customers.num_rows)])
    )
    scorer = make_scorer(log, customers)
    catalog = ActionCatalog.from_dict(
        {"actions": [{"id": "call_back", "eligible_if": 'profile.vip == "true"'}, {"id": "no_action"}]}
    )
    requests = requests_at_end(log).slice(0, 30)
    batch = decisions_table(decide(scorer, log, requests, customers, catalog=catalog), "1").to_pylist()
    online = score_records(scorer, records_from_tables(log, requests, customers), "1", catalog)
    ids, flags = customers.column("customer_id").to_pylist(), customers.column("vip").to_pylist()
    vip = dict(zip(ids, flags, strict=True))
    for row, answer in zip(batch, online, strict=True):
        suppressed = {s["action"] for s in row["suppressed"]}
        assert ("call_back" not in suppressed) == vip[row["customer_id"]]
        assert {s.action for s in answer.suppressed} == suppressed


def test_a_context_value_of_another_type_than_declared_is_a_data_error_online_and_in_batch(
    scorer: JourneyScorer, log: EventLog
) -> None:
    """A request's context is checked against the catalog's declaration, a 400 online (it was a
    RuleError, "cannot compare 'yes' > 0.0", at ranking time: a 500) and an error before ranking in batch."""
    catalog = ActionCatalog.from_dict(
        {
            "context": {"store_open": "number"},
            "actions": [{"id": "call_back", "eligible_if": "context.store_open > 0"}, {"id": "no_action"}],
        }
    )
    (record,) = records_from_tables(log, requests_at_end(log).slice(0, 1))
    message = "context.store_open must be a number, as the catalog declares it; got texts"
    with pytest.raises(DataContractError, match=message):
        score_records(scorer, [record.model_copy(update={"context": {"store_open": "yes"}})], "1", catalog)
    requests = requests_at_end(log).slice(0, 2)
    with pytest.raises(DataContractError, match=message):
        decide(scorer, log, requests.append_column("store_open", pa.array(["yes", "no"])), catalog=catalog)
    opened = requests.append_column("store_open", pa.array([1, 0]))
    assert decide(scorer, log, opened, catalog=catalog).ranking.eligible[:, 0].tolist() == [True, False]


def test_a_catalog_is_checked_against_the_model_it_is_packaged_or_loaded_with(
    scorer: JourneyScorer, tmp_path: Path
) -> None:
    """Packaging (a scorer built with a catalog) and start-up (a scorer loaded) both refuse a catalog whose
    rules read what the model does not know, naming the entry: such a rule suppressed its action for
    everyone, or failed at scoring time."""
    bad = ActionCatalog.from_dict(
        {"actions": [{"id": "no_action"}, {"id": "call_back", "eligible_if": "profile.segment > 5"}]},
        source="catalog.yaml",
    )
    message = r"catalog.yaml: actions\[1\] \(call_back\): eligible_if: `profile.segment > 5`: .* is a text"
    with pytest.raises(CatalogError, match=message):
        JourneyScorer(scorer.network, scorer.encoder, scorer.actions, catalog=bad)
    with pytest.raises(CatalogError, match=message):
        scorer.check_catalog(bad)
    saved = scorer.save(tmp_path / "scorer")
    description = json.loads((saved / "scorer.json").read_text())
    description["catalog"] = {"actions": [{"id": "call_back", "eligible_if": "profile.no_such_attr == 1"}]}
    (saved / "scorer.json").write_text(json.dumps(description))
    with pytest.raises(CatalogError, match=r"actions\[0\] \(call_back\).*unknown profile name; the known"):
        JourneyScorer.load(saved)


def test_the_service_request_type_has_the_same_schema_and_scores_the_same(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld
) -> None:
    """`ServedScoringRequest` (events as plain dicts, for the service) is `ScoringRequest` in other clothes:
    the same JSON schema (but for the name of its event definition, for defaults, which a TypedDict
    has none of, and for its events being optional: a service with a store has them) and the same
    answers."""

    def comparable(schema: Any) -> Any:
        if isinstance(schema, dict):
            return {k: comparable(v) for k, v in schema.items() if k not in ("default", "events", "required")}
        return schema

    served = json.loads(json.dumps(ServedScoringRequest.model_json_schema()))
    assert comparable(served) == comparable(ScoringRequest.model_json_schema())
    assert served["required"] == ["customer_id"]
    assert ScoringRequest.model_json_schema()["required"] == ["customer_id", "events"]
    requests = requests_at_end(log).slice(0, 30)
    records = records_from_tables(log, requests, world.customers)
    as_served = [
        ServedScoringRequest.model_validate_json(r.model_dump_json(exclude_none=True)) for r in records
    ]
    assert isinstance(as_served[0].events[0], dict)
    assert score_records(scorer, as_served, "1") == score_records(scorer, records, "1")


def test_only_events_before_as_of_count(scorer: JourneyScorer, log: EventLog, world: SimulatedWorld) -> None:
    (record,) = records_from_tables(log, requests_at_end(log).slice(0, 1), world.customers)
    assert record.as_of is not None
    later = record.events[-1].model_copy(
        update={"timestamp": "2099-01-01T00:00:00Z", "event_type": "complaint"}
    )
    with_future = record.model_copy(update={"events": [*record.events, later]})
    (plain,), (future,) = score_records(scorer, [record], "1"), score_records(scorer, [with_future], "1")
    assert future.p_conversion == plain.p_conversion
    assert future.actions == plain.actions


def test_output_table_ranks_actions_best_first(scorer: JourneyScorer, log: EventLog) -> None:
    decisions = decide(scorer, log, requests_at_end(log))
    scores = decisions.scores
    table = decisions_table(decisions, "3", top_k=2)
    assert table.schema == OUTPUT_SCHEMA
    assert table.num_rows == len(scores)
    for row in table.to_pylist():
        assert [a["rank"] for a in row["actions"]] == [1, 2]
        assert row["actions"][0]["score"] >= row["actions"][1]["score"]
        assert row["top_action"] == row["actions"][0]["action"]
        assert row["model_version"] == "3"
    full = decisions_table(decisions, "3")
    best = scores.action_p_conversion.max(axis=1)  # the default catalog: value 1, cost 0
    np.testing.assert_allclose([r[0]["score"] for r in full.column("actions").to_pylist()], best)


def assert_arrow_shape(
    fields: list[pa.Field], model: type[BaseModel], leave_out: tuple[str, ...] = ()
) -> None:
    """`fields` are `model`'s (but `leave_out`), in its order, each of the Arrow type of its Python type
    (times, which answers write as ISO text, are timestamps)."""
    assert [f.name for f in fields] == [name for name in model.model_fields if name not in leave_out]
    arrow_types = {str: pa.string(), float: pa.float64(), int: pa.int32(), bool: pa.bool_()}
    for field in fields:
        annotation = model.model_fields[field.name].annotation
        nullable = get_origin(annotation) is UnionType
        (python,) = [a for a in get_args(annotation) if a is not NoneType] if nullable else [annotation]
        if get_origin(python) is list:
            assert pa.types.is_list(field.type), field
            assert_arrow_shape(list(field.type.value_type), get_args(python)[0])
        elif field.name in ("as_of", "timestamp"):
            assert field.type == UTC_US, field
        else:
            assert field.type == arrow_types[python], field


def test_the_batch_output_has_the_shape_of_the_online_answer() -> None:
    """A batch row is a `RankResponse` but for `fallback` (the online deadline's; batch rows are never
    fallbacks) and `decision_id` (the service's: what it records a served contact under): the same
    fields in the same order, of the same types."""
    leave_out = ("fallback", "decision_id")
    assert_arrow_shape(list(output_schema(explained=True)), RankResponse, leave_out=leave_out)


@pytest.mark.parametrize(
    ("policy", "top_k", "explain"), [("off", None, 0), ("epsilon", 2, 0), ("softmax", 3, 2)]
)
def test_decision_rows_are_the_output_tables_rows(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld, policy: str, top_k: int | None, explain: int
) -> None:
    """The online service's rows, built without the table, are the batch output's rows: rules suppress
    actions, some requests may be served nothing, exploration draws."""
    catalog = ActionCatalog.from_dict(
        {
            "actions": [
                {"id": "email_offer", "channel": "email", "value": 40.0, "limits": [{"max": 1, "days": 7}]},
                {
                    "id": "discount_10",
                    "channel": "email",
                    "value": 36.0,
                    "eligible_if": "profile.email_opt_in == 1",
                },
                {
                    "id": "call_back",
                    "channel": "call_center",
                    "value": 40.0,
                    "cost": 4.0,
                    "cooldown_days": 30,
                },
                {"id": "no_action", "value": 40.0, "eligible_if": 'profile.segment == "gold"'},
            ],
            "exploration": {"policy": policy, "epsilon": 0.3, "temperature": 0.5},
            "control": {"share": 0.3},
        }
    )
    requests = requests_at_end(log).slice(0, 40)
    candidates = np.ones((40, 4), dtype=bool)
    candidates[::5, :3] = False  # only no_action asked for: served only to gold customers
    decisions = decide(
        scorer, log, requests, world.customers, catalog=catalog, candidates=candidates, explain=explain
    )
    table = decisions_table(decisions, "2", top_k)
    assert table.column("chosen_action").null_count > 0  # some requests are served nothing
    assert decision_rows(decisions, "2", top_k) == table.to_pylist()
    control = [row for row in table.to_pylist() if row["control"]]
    assert 0 < len(control) < 40
    for row in control:  # whatever the exploration: any eligible action, uniformly
        eligible = len(decisions.ranking.actions) - len(row["suppressed"])
        assert row["chosen_probability"] == (pytest.approx(1 / eligible) if eligible else None)


@given(
    arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=st.sampled_from([0.1, 0.2, 0.5]))
)
def test_ranking_is_best_first_with_ties_in_catalog_order(values: np.ndarray) -> None:
    catalog = ActionCatalog.default(("a", "b", "c", "d"))
    columns = RuleColumns(len(values), {}, {}, {})
    ranking = rank(catalog, catalog.ids, values, np.zeros_like(values), values[:, 0], values[:, 0], columns)
    for row, ranked in zip(values, ranking.order, strict=True):
        assert sorted(ranked) == list(range(len(row)))
        assert (np.diff(row[ranked]) <= 0).all()
        for a, b in itertools.pairwise(ranked):
            if row[a] == row[b]:
                assert a < b


@pytest.mark.parametrize("policy", ["off", "epsilon", "softmax"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN scores, on purpose
def test_a_model_scoring_nan_never_serves_or_lists_a_suppressed_action(
    log: EventLog, world: SimulatedWorld, tmp_path: Path, policy: str
) -> None:
    """Scores of NaN (a broken model, inputs it cannot read) leave the rules in force: the suppressed
    action, first in the catalog, is neither served nor ranked."""
    broken = make_scorer(log, world.customers)
    with torch.no_grad():
        for parameter in broken.network.parameters():
            parameter.fill_(float("nan"))
    scorer = JourneyScorer.load(broken.save(tmp_path / "model"))
    catalog = ActionCatalog.from_dict(
        {
            "actions": [
                {"id": "discount_10", "eligible_if": 'profile.segment == "nobody"'},
                {"id": "email_offer"},
                {"id": "call_back"},
                {"id": "no_action"},
            ],
            "exploration": {"policy": policy, "epsilon": 0.5},
        }
    )
    records = records_from_tables(log, requests_at_end(log).slice(0, 20), world.customers)
    for answer in score_records(scorer, records, "1", catalog):
        assert answer.chosen_action in {"email_offer", "call_back", "no_action"}
        assert answer.chosen_probability is not None
        assert 0.0 < answer.chosen_probability <= 1.0
        assert [a.action for a in answer.actions] == ["email_offer", "call_back", "no_action"]
        assert [s.action for s in answer.suppressed] == ["discount_10"]


def test_candidates_and_top_k_narrow_the_ranking(scorer: JourneyScorer, log: EventLog) -> None:
    (record,) = records_from_tables(log, requests_at_end(log).slice(0, 1))
    (everything,) = score_records(scorer, [record], "1")
    narrowed = record.model_copy(update={"candidates": ["call_back", "no_action", "email_offer"], "top_k": 2})
    (answer,) = score_records(scorer, [narrowed], "1")
    expected = [a.action for a in everything.actions if a.action in narrowed.candidates][:2]
    assert [a.action for a in answer.actions] == expected
    assert [a.rank for a in answer.actions] == [1, 2]


def test_no_action_has_one_figure_online_in_batch_and_in_uplift(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld
) -> None:
    """A model with a `no_action` action reports its figures as the answer's "with no action" ones, which
    are what uplift is measured from, not the no-action heads' second estimate."""
    requests = requests_at_end(log).slice(0, 30)
    batch = decisions_table(decide(scorer, log, requests, world.customers), "1").to_pylist()
    records = records_from_tables(log, requests, world.customers)
    online = score_records(scorer, records, "1")
    scored = probability_records(scorer, records, "1")
    for row, answer, probabilities in zip(batch, online, scored, strict=True):
        (no_action,) = [a for a in answer.actions if a.action == "no_action"]
        assert no_action.uplift == 0.0
        assert (answer.p_conversion, answer.p_churn) == (no_action.p_conversion, no_action.p_churn)
        assert (row["p_conversion"], row["p_churn"]) == pytest.approx(
            (no_action.p_conversion, no_action.p_churn)
        )
        (scored_no_action,) = [a for a in probabilities.actions if a.action == "no_action"]
        assert probabilities.p_conversion == scored_no_action.p_conversion
        assert probabilities.p_churn == scored_no_action.p_churn


def test_scoring_names_or_refuses_candidates_as_ranking_does(scorer: JourneyScorer, log: EventLog) -> None:
    (record,) = records_from_tables(log, requests_at_end(log).slice(0, 1))
    narrowed = record.model_copy(update={"candidates": ["no_action", "call_back"]})
    (answer,) = probability_records(scorer, [narrowed], "1")
    assert [a.action for a in answer.actions] == ["call_back", "no_action"]  # the model's order
    unknown = record.model_copy(update={"candidates": ["teleport"]})
    for score in (score_records, probability_records):
        with pytest.raises(DataContractError, match=r"candidates: unknown action\(s\) \['teleport'\]"):
            score(scorer, [unknown], "1")


def test_a_customer_without_events_is_scored_from_the_profile(scorer: JourneyScorer) -> None:
    records = [
        ScoringRequest(customer_id="new", events=[], profile={"segment": "gold", "tenure_days": 3}),
        ScoringRequest(customer_id="new", events=[], as_of="2026-03-01T00:00:00Z"),
    ]
    answers = score_records(scorer, records, "1")
    assert [a.customer_id for a in answers] == ["new", "new"]
    assert answers[1].as_of == "2026-03-01T00:00:00+00:00"
    assert all(0.0 < a.p_conversion < 1.0 and len(a.actions) == 4 for a in answers)


def test_two_records_of_one_customer_keep_their_own_histories(scorer: JourneyScorer, log: EventLog) -> None:
    (record,) = records_from_tables(log, requests_at_end(log).slice(0, 1))
    short = record.model_copy(update={"events": record.events[:1], "as_of": None})
    together = score_records(scorer, [record, short], "1")
    alone = score_records(scorer, [record], "1") + score_records(scorer, [short], "1")
    assert [a.p_conversion for a in together] == pytest.approx([a.p_conversion for a in alone], rel=1e-5)


EVENT = {"timestamp": "2026-01-01T00:00:00Z", "event_type": "page_view", "channel": "web"}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"events": [{**EVENT, "timestamp": "yesterday"}]}, "timestamp"),
        ({"events": [EVENT], "as_of": "soon"}, "as_of"),
        ({"events": [EVENT], "candidates": ["teleport"]}, "candidates"),
        ({"events": [EVENT], "profile": {"tenure_days": "long"}}, "profile.tenure_days"),
    ],
    ids=["event-time", "as-of", "unknown-candidate", "profile-type"],
)
def test_unusable_records_name_the_field(
    scorer: JourneyScorer, record: dict[str, object], field: str
) -> None:
    request = ScoringRequest.model_validate({"customer_id": "c1", **record})
    with pytest.raises(DataContractError, match=field):
        score_records(scorer, [request], "1")


def test_unknown_tokens_map_to_the_unknown_token(scorer: JourneyScorer) -> None:
    strange = {"timestamp": "2026-01-01T00:00:00Z", "event_type": "hologram", "channel": "telepathy"}
    (answer,) = score_records(scorer, [ScoringRequest(customer_id="c", events=[strange])], "1")
    assert 0.0 < answer.p_conversion < 1.0


def test_a_model_without_actions_scores_and_serves_nothing(log: EventLog) -> None:
    """Outcome-only models (e.g. Criteo conversion) score requests; their rankings are empty."""
    encoder = JourneyEncoder.fit(log, config=JourneyConfig(max_events=16))
    config = ModelConfig(
        **encoder.network_sizes(),
        num_actions=0,
        max_events=16,
        d_model=16,
        n_heads=2,
    )
    scorer = JourneyScorer(JourneyNetwork(config), encoder, ())
    table = decisions_table(decide(scorer, log, requests_at_end(log)), "1")
    assert table.num_rows == log.num_customers
    assert table.column("top_action").null_count == table.num_rows
    assert table.column("chosen_probability").null_count == table.num_rows
    assert decision_rows(decide(scorer, log, requests_at_end(log)), "1") == table.to_pylist()
    (answer,) = score_records(scorer, records_from_tables(log, requests_at_end(log).slice(0, 1)), "1")
    assert answer.actions == []
    assert 0.0 < answer.p_conversion < 1.0


def test_evidence_is_the_value_lost_without_each_event(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld
) -> None:
    """An event's weight is exactly the served action's value with the event minus without it, the
    strongest come first, and every one is the customer's own event before as_of."""
    records = records_from_tables(log, requests_at_end(log).slice(0, 6), world.customers)
    explained = score_records(scorer, [r.model_copy(update={"explain": 3}) for r in records], "1")
    plain = score_records(scorer, records, "1")
    for record, answer, without_explain in zip(records, explained, plain, strict=True):
        assert without_explain.evidence is None
        assert answer.actions == without_explain.actions
        assert answer.evidence is not None
        assert len(answer.evidence) == min(3, len(record.events))
        weights = [abs(e.weight) for e in answer.evidence]
        assert weights == sorted(weights, reverse=True)
        served = next(a for a in answer.actions if a.action == answer.chosen_action)
        for evidence in answer.evidence:
            position = next(
                i
                for i, e in enumerate(record.events)
                if e.event_type == evidence.event_type
                and datetime.fromisoformat(e.timestamp) == datetime.fromisoformat(evidence.timestamp)
            )
            fewer = record.model_copy(
                update={"events": record.events[:position] + record.events[position + 1 :]}
            )
            (again,) = score_records(scorer, [fewer.model_copy(update={"as_of": answer.as_of})], "1")
            value_without = next(a.score for a in again.actions if a.action == answer.chosen_action)
            # float32 network: batches of other widths agree to about 1e-7
            assert evidence.weight == pytest.approx(served.score - value_without, abs=1e-5)


def test_batch_output_carries_evidence_when_asked(scorer: JourneyScorer, log: EventLog) -> None:
    requests = requests_at_end(log).slice(0, 20)
    table = decisions_table(decide(scorer, log, requests, explain=2), "1")
    assert "evidence" not in decisions_table(decide(scorer, log, requests), "1").column_names
    evidence = table.column("evidence").to_pylist()
    customer_events = log.to_table().group_by("customer_id").aggregate([("timestamp", "count")])
    counts = dict(zip(*(c.to_pylist() for c in customer_events.columns), strict=True))
    for customer, events in zip(table.column("customer_id").to_pylist(), evidence, strict=True):
        assert len(events) == min(2, counts[customer])
        assert all(e["timestamp"] is not None and np.isfinite(e["weight"]) for e in events)


# A scoring batch's memory pattern: several large temporaries, all freed at the end; the third batch's page
# faults are printed.
_BATCHES_SCRIPT = """
import resource, sys
import numpy as np
from nextbest.scoring.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def batch():
    arrays = [np.ones(2_000_000) * i for i in range(6)]  # 6 x 16 MB
    del arrays
batch(); batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_decision_looks_its_customers_up_once(
    scorer: JourneyScorer, log: EventLog, world: SimulatedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder, the history aggregates, the rules and the explanations all read one resolution of the
    requests: the log is searched for the requests' customers once per `decide` call."""
    requests = requests_at_end(log).slice(0, 20)
    lookups: list[int] = []
    look_up = EventLog.index_of

    def counted(self: EventLog, customer_ids: pa.Array) -> np.ndarray:
        if self is log:  # not the logs each explanation builds of a history without one event
            lookups.append(len(customer_ids))
        return look_up(self, customer_ids)

    monkeypatch.setattr(EventLog, "index_of", counted)
    decide(scorer, log, requests, world.customers, explain=2)
    assert lookups == [20]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults() -> None:
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _BATCHES_SCRIPT, mode], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert faults("default") > 1_000  # glibc gave the freed batch back and faults it in again
    assert faults("keep") < 100
