"""Markov and touch attribution: chains computed by hand, a dense reference of the definition, properties."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.discovery import attribution
from nextbest.discovery.attribution import Paths, markov_attribution, touch_attribution

Journey = tuple[str, bool]  # the touches, one letter each, oldest first; did it convert?

# The toy of the hand-computed tests: A>B>C converts, A>C does not, B>C converts, B does not.
TOY: list[Journey] = [("ABC", True), ("AC", False), ("BC", True), ("B", False)]


def make_paths(journeys: list[Journey], names: str = "ABC") -> Paths:
    codes = np.array([names.index(touch) for touches, _ in journeys for touch in touches], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(touches) for touches, _ in journeys])]).astype(np.int64)
    converted = np.array([flag for _, flag in journeys], dtype=bool)
    return Paths(codes, offsets, tuple(names), converted)


def test_first_order_by_hand() -> None:
    # START -> A 2/4, B 2/4;  A -> B 1/2, C 1/2;  B -> C 2/3, NULL 1/3;  C -> CONVERSION 2/3, NULL 1/3.
    # x_C = 2/3,  x_B = 2/3 * 2/3 = 4/9,  x_A = 1/2 * 4/9 + 1/2 * 2/3 = 5/9,  P = 1/2 * 5/9 + 1/2 * 4/9 = 1/2.
    # Without A: P = 1/2 * x_B = 2/9, effect 1 - (2/9) / (1/2) = 5/9.
    # Without B: x_A = 1/2 * 2/3 = 1/3, P = 1/2 * 1/3 = 1/6, effect 1 - 1/3 = 2/3.
    # Without C: nothing converts, effect 1.  Effects sum to 20/9: shares 5/20, 6/20, 9/20.
    result = markov_attribution(make_paths(TOY))
    assert result.conversion_probability == pytest.approx(1 / 2, abs=1e-12)
    assert result.removal_effects == pytest.approx({"A": 5 / 9, "B": 2 / 3, "C": 1.0}, abs=1e-12)
    assert result.shares == pytest.approx({"A": 1 / 4, "B": 3 / 10, "C": 9 / 20}, abs=1e-12)
    assert (result.order, result.states) == (1, 3)


def test_second_order_by_hand() -> None:
    # States (A), (B), (A,B), (A,C), (B,C); (B,C) is shared by A>B>C and B>C.
    # START -> (A) 1/2, (B) 1/2;  (A) -> (A,B) 1/2, (A,C) 1/2;  (A,B) -> (B,C) 1;  (B) -> (B,C) 1/2, NULL 1/2;
    # (B,C) -> CONVERSION 1;  (A,C) -> NULL 1.
    # x_(B,C) = 1, x_(A,B) = 1, x_(A,C) = 0, x_(A) = 1/2, x_(B) = 1/2,  P = 1/2.
    # Without A ((A), (A,B), (A,C)): P = 1/2 * x_(B) = 1/4, effect 1/2.
    # Without B or C: (B,C) goes, and every conversion with it: effect 1.  Sum 5/2: shares 1/5, 2/5, 2/5.
    result = markov_attribution(make_paths(TOY), order=2)
    assert result.conversion_probability == pytest.approx(1 / 2, abs=1e-12)
    assert result.removal_effects == pytest.approx({"A": 1 / 2, "B": 1.0, "C": 1.0}, abs=1e-12)
    assert result.shares == pytest.approx({"A": 1 / 5, "B": 2 / 5, "C": 2 / 5}, abs=1e-12)
    assert (result.order, result.states) == (2, 5)


def test_first_order_pools_transitions_that_second_order_tells_apart() -> None:
    # Z>A does not convert, A does. Order 1 pools A's transitions: START -> Z 1/2 -> A -> CONVERSION 1/2,
    # so Z carries 1/4 of the P = 1/2 and gets effect 1/2 although it never preceded a conversion.
    # Order 2 keeps (Z,A), which only leads to NULL: Z's effect is 0.
    paths = make_paths([("ZA", False), ("A", True)], names="AZ")
    assert markov_attribution(paths).removal_effects == pytest.approx({"A": 1.0, "Z": 0.5}, abs=1e-12)
    assert markov_attribution(paths, order=2).removal_effects == pytest.approx(
        {"A": 1.0, "Z": 0.0}, abs=1e-12
    )


def test_journeys_without_touches_count_and_cannot_be_removed() -> None:
    # START -> CONVERSION 1/3 (the empty journey), START -> A 2/3, A -> CONVERSION 1/2: P = 1/3 + 1/3 = 2/3.
    # Without A only the empty journey's 1/3 is left: effect 1/2.
    paths = make_paths([("", True), ("A", True), ("A", False)], names="A")
    for order in (1, 2):
        result = markov_attribution(paths, order)
        assert result.conversion_probability == pytest.approx(2 / 3, abs=1e-12)
        assert result.removal_effects == pytest.approx({"A": 1 / 2}, abs=1e-12)
    assert touch_attribution(paths) == {
        "first_touch": {"A": 1.0},
        "last_touch": {"A": 1.0},
        "linear": {"A": 1.0},
    }


def test_touch_attribution_by_hand() -> None:
    # Converted: A>B>C and B>C. First touches A, B; last touches C, C; linear 1/3 each, then 1/2 each.
    result = touch_attribution(make_paths(TOY))
    assert result["first_touch"] == pytest.approx({"A": 1 / 2, "B": 1 / 2, "C": 0.0}, abs=1e-12)
    assert result["last_touch"] == pytest.approx({"A": 0.0, "B": 0.0, "C": 1.0}, abs=1e-12)
    linear = {"A": 1 / 6, "B": (1 / 3 + 1 / 2) / 2, "C": (1 / 3 + 1 / 2) / 2}
    assert result["linear"] == pytest.approx(linear, abs=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_no_conversion_gives_zeros_not_nan(order: int) -> None:
    paths = make_paths([("AB", False), ("C", False), ("", False)])
    result = markov_attribution(paths, order)
    assert result.conversion_probability == 0.0
    assert result.removal_effects == {"A": 0.0, "B": 0.0, "C": 0.0}
    assert result.shares == {"A": 0.0, "B": 0.0, "C": 0.0}
    assert all(v == 0.0 for shares in touch_attribution(paths).values() for v in shares.values())


def test_to_dict_is_json() -> None:
    result = markov_attribution(make_paths(TOY), order=2)
    assert json.loads(json.dumps(result.to_dict())) == {
        "conversion_probability": result.conversion_probability,
        "removal_effects": result.removal_effects,
        "shares": result.shares,
        "order": 2,
        "states": 5,
    }


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="order"):
        markov_attribution(make_paths(TOY), order=0)
    good = make_paths(TOY)
    with pytest.raises(ValueError, match="offsets"):
        Paths(good.codes, good.offsets[:-1], good.names, good.converted)
    with pytest.raises(ValueError, match="converted"):
        Paths(good.codes, good.offsets, good.names, good.converted.astype(np.int64))
    with pytest.raises(ValueError, match="codes"):
        Paths(good.codes + 1, good.offsets, good.names, good.converted)
    with pytest.raises(ValueError, match="unique"):
        Paths(good.codes, good.offsets, ("A", "B", "A"), good.converted)


def reference_effects(journeys: list[Journey], order: int, names: str) -> tuple[float, dict[str, float]]:
    """The definition, state by state with dense matrices: P(conversion) and each removal effect."""
    walks = [[touches[max(0, i - order + 1) : i + 1] for i in range(len(touches))] for touches, _ in journeys]
    states = ["", *sorted({s for walk in walks for s in walk})]  # "" is START
    index = {s: i for i, s in enumerate(states)}
    counts = np.zeros((len(states), len(states) + 2))  # the last two columns: CONVERSION, NULL
    for walk, (_, converted) in zip(walks, journeys, strict=True):
        steps = ["", *walk]
        for here, there in itertools.pairwise(steps):
            counts[index[here], index[there]] += 1
        counts[index[steps[-1]], -2 if converted else -1] += 1
    chain = counts / counts.sum(axis=1, keepdims=True)

    def conversion(removed: str | None) -> float:
        keep = [i for i, s in enumerate(states) if removed is None or removed not in s]
        q = chain[np.ix_(keep, keep)]
        x = np.linalg.solve(np.eye(len(keep)) - q, chain[keep, -2])
        return float(x[0])

    probability = conversion(None)
    if probability == 0:
        return 0.0, dict.fromkeys(names, 0.0)
    return probability, {name: 1 - conversion(name) / probability for name in names}


journeys_strategy = st.lists(
    st.tuples(st.text(alphabet="ABCD", max_size=6), st.booleans()), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None)
@given(journeys=journeys_strategy, order=st.integers(1, 3))
def test_equals_the_dense_definition(journeys: list[Journey], order: int) -> None:
    probability, effects = reference_effects(journeys, order, "ABCD")
    result = markov_attribution(make_paths(journeys, "ABCD"), order)
    assert result.conversion_probability == pytest.approx(probability, abs=1e-10)
    assert result.removal_effects == pytest.approx(effects, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(journeys=journeys_strategy, order=st.integers(1, 3))
def test_effects_are_probabilities_and_shares_sum_to_one(journeys: list[Journey], order: int) -> None:
    paths = make_paths(journeys, "ABCD")
    result = markov_attribution(paths, order)
    effects = np.array(list(result.removal_effects.values()))
    assert np.all(np.isfinite(effects))
    assert np.all((effects >= 0) & (effects <= 1))
    # A chain fitted by counting conserves the observed flow: P(conversion) is the observed conversion rate.
    assert result.conversion_probability == pytest.approx(paths.converted.mean(), abs=1e-12)
    touched_conversions = any(converted and touches for touches, converted in journeys)
    assert sum(result.shares.values()) == pytest.approx(1.0 if touched_conversions else 0.0)
    for shares in touch_attribution(paths).values():
        assert sum(shares.values()) == pytest.approx(1.0 if touched_conversions else 0.0)


@settings(max_examples=100, deadline=None)
@given(
    journeys=st.lists(
        st.tuples(st.text(alphabet="ABC", max_size=5), st.text(alphabet="XY", max_size=3), st.booleans()),
        min_size=1,
        max_size=10,
    ),
    order=st.integers(1, 3),
)
def test_touchpoints_after_which_nothing_converts_get_nothing(
    journeys: list[tuple[str, str, bool]], order: int
) -> None:
    # X and Y only ever start a non-converting tail: no state holding them can reach CONVERSION. (A channel
    # merely absent from converting journeys can still get credit: see the pooling test above.)
    paths = make_paths([(head + tail, converted and not tail) for head, tail, converted in journeys], "ABCXY")
    result = markov_attribution(paths, order)
    # Round-off aside: higher orders solve the chain iteratively (one example left 1.2e-13).
    assert result.removal_effects["X"] == pytest.approx(0.0, abs=1e-12)
    assert result.removal_effects["Y"] == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(journeys=journeys_strategy, order=st.integers(1, 3))
def test_a_touchpoint_closing_every_conversion_gets_everything(journeys: list[Journey], order: int) -> None:
    # Every arrival in CONVERSION comes from a state ending with E. (E merely on every converting path is not
    # enough: the chain can join the start of one path to the end of another.)
    closed = [(touches + "E" if converted else touches, converted) for touches, converted in journeys]
    result = markov_attribution(make_paths(closed, "ABCDE"), order)
    expected = 1.0 if any(converted for _, converted in journeys) else 0.0
    assert result.removal_effects["E"] == pytest.approx(expected, abs=1e-12)


def test_a_breakdown_of_the_fast_iteration_is_caught() -> None:
    # BiCGSTAB breaks down on this chain (a triangular system) yet reports convergence; GMRES takes over.
    # Every journey converts: P = 1. Without A only the journey without touches is left (effect 2/3); without
    # B or C one of the three journeys goes (1/3).
    result = markov_attribution(make_paths([("", True), ("AC", True), ("AABA", True)], "ABC"), order=2)
    assert result.conversion_probability == pytest.approx(1.0, abs=1e-12)
    assert result.removal_effects == pytest.approx({"A": 2 / 3, "B": 1 / 3, "C": 1 / 3}, abs=1e-12)


def test_direct_solve_is_the_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    iterated = markov_attribution(make_paths(TOY), order=2)
    for solver in ("bicgstab", "gmres"):
        monkeypatch.setattr(attribution, solver, lambda system, rhs, *args, **kwargs: (rhs * np.nan, -10))
    direct = markov_attribution(make_paths(TOY), order=2)
    assert direct.removal_effects == pytest.approx(iterated.removal_effects, abs=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_many_channels_stay_finite(order: int) -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 11, 20_000)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    paths = Paths(
        rng.integers(0, 500, offsets[-1]),
        offsets,
        tuple(f"c{i}" for i in range(500)),
        rng.random(20_000) < 0.3,
    )
    result = markov_attribution(paths, order)
    effects = np.array(list(result.removal_effects.values()))
    assert np.all(np.isfinite(effects))
    assert np.all((effects >= 0) & (effects <= 1))
    assert result.conversion_probability == pytest.approx(paths.converted.mean(), abs=1e-12)
    assert sum(result.shares.values()) == pytest.approx(1.0)
