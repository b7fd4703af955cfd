"""Training examples from contract tables, and splits that keep groups whole."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from nextbest.data import DECISIONS, load_events, load_table
from nextbest.journeys import LabelRules
from nextbest.journeys.examples import NO_DECISION, build_examples, default_cutoff, split_groups
from nextbest.simulate import SimulationConfig, simulate


@given(
    groups=st.lists(st.sampled_from([f"g{i}" for i in range(12)]), min_size=1, max_size=80),
    seed=st.integers(0, 5),
)
def test_splits_keep_groups_whole_and_ignore_row_order(groups: list[str], seed: int) -> None:
    splits = split_groups(pa.array(groups), [0.25, 0.25], seed)
    assert sorted(np.concatenate(splits).tolist()) == list(range(len(groups)))
    split_of = {}
    for split, rows in enumerate(splits):
        for row in rows:
            assert split_of.setdefault(groups[row], split) == split  # a group never straddles splits
    reversed_splits = split_groups(pa.array(groups[::-1]), [0.25, 0.25], seed)
    for split, rows in enumerate(reversed_splits):
        assert all(split_of[groups[::-1][row]] == split for row in rows)


def test_split_sizes_follow_the_fractions() -> None:
    groups = pa.array([f"c{i}" for i in range(1000)])
    train, validation, test = split_groups(groups, [0.2, 0.1], seed=0)
    assert (len(train), len(validation), len(test)) == (700, 200, 100)


def test_decision_examples_carry_the_action_and_the_logged_outcomes() -> None:
    world = simulate(SimulationConfig(n_customers=200, seed=2))
    log = load_events(world.events)
    decisions = load_table(world.decisions, DECISIONS)
    examples = build_examples(log, LabelRules(), decisions=decisions)
    assert len(examples) == decisions.num_rows
    assert examples.actions == tuple(sorted(set(decisions.column("action").to_pylist())))
    taken = [examples.actions[i] for i in examples.decision_action]
    assert taken == decisions.column("action").to_pylist()
    np.testing.assert_array_equal(examples.labels["conversion"], decisions.column("converted").to_numpy())


def test_without_labels_or_decisions_every_customer_is_labelled_at_the_last_observed_cutoff() -> None:
    world = simulate(SimulationConfig(n_customers=200, seed=2))
    log = load_events(world.events)
    rules = LabelRules()
    examples = build_examples(log, rules)
    cutoff = default_cutoff(log, rules)
    assert set(examples.requests.column("as_of").to_pylist()) == {cutoff}
    assert (examples.decision_action == NO_DECISION).all()
    assert not np.isnan(examples.labels["churn"]).any()  # the default cutoff leaves every window observed


def test_group_by_reads_the_customers_table() -> None:
    world = simulate(SimulationConfig(n_customers=50, seed=2))
    log = load_events(world.events)
    customers = world.customers.append_column("household", pa.array(["h1"] * 25 + ["h2"] * 25))
    examples = build_examples(log, LabelRules(), customers=customers, group_by="household")
    assert set(examples.groups.to_pylist()) <= {"h1", "h2"}
