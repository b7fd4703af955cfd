"""Attribution of conversions to touchpoints: absorbing Markov chain removal effects and touch heuristics.

The Markov chain is fitted to the paths by counting: its transient states are START and the touchpoint
states (the last `order` touches), its absorbing states CONVERSION and NULL, and each journey contributes
START -> s1 -> ... -> sn -> CONVERSION or NULL. Absorption probabilities solve the sparse system
(I - Q) x = r (x[s]: the probability of ending in CONVERSION from state s); nothing is simulated.

A touchpoint's removal effect is the share of P(conversion) lost when every state containing it leads to
NULL instead, i.e. P(convert after touching it) / P(convert). How the removals are solved depends on the
order:

- Order 1: each touchpoint is one state, so its removal is a rank-one change of the chain and needs no
  new solve: P(convert after touching c) = P(reach c) * x[c], with P(reach c) = N[START, c] / N[c, c]
  (N = (I - Q)^-1, the expected visits). One sparse LU answers every touchpoint.
- Higher orders: a touchpoint spreads over many states, so each removal is a solve of its own, over the
  states upstream of the removed ones only (every other state keeps its x). These chains have a strongly
  connected core that an LU fills in almost densely (8,000 states took 5 s to factorise, 100,000 did not
  finish in minutes), so they are solved iteratively to round-off (BiCGSTAB, checked, with GMRES and a
  direct solve behind it): absorption makes it converge in a few dozen matrix-vector products.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]
from scipy.sparse.csgraph import breadth_first_order  # type: ignore[import-untyped]
from scipy.sparse.linalg import bicgstab, gmres, splu, spsolve  # type: ignore[import-untyped]

# Columns of the identity solved at once for the diagonal of N: bounds the dense right-hand side.
_DIAGONAL_BLOCK = 256
# The iterative solvers aim at this relative residual (round-off for these well-conditioned systems) within
# this many iterations (absorbing journeys of tens of touches need a few dozen); an answer whose true
# residual is above the second is not accepted.
_TOLERANCE = 1e-13
_MAX_ITERATIONS = 1_000
_ACCEPTED_RESIDUAL = 1e-12


@dataclass(frozen=True)
class Paths:
    """Touchpoint paths of journeys in CSR form.

    Journey j's touches are `codes[offsets[j]:offsets[j+1]]`, oldest first; `names[code]` is the
    touchpoint's label (e.g. a channel); `converted[j]` says whether the journey ended in a conversion.
    """

    codes: np.ndarray
    offsets: np.ndarray
    names: tuple[str, ...]
    converted: np.ndarray

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets)
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(self.codes):
            raise ValueError("offsets must start at 0 and end at the number of touches")
        if np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must be non-decreasing")
        if len(self.converted) != len(offsets) - 1 or self.converted.dtype != np.bool_:
            raise ValueError("converted needs one bool per journey (len(offsets) - 1)")
        if len(self.codes) and (self.codes.min() < 0 or self.codes.max() >= len(self.names)):
            raise ValueError("codes must index names")
        if len(set(self.names)) != len(self.names):
            raise ValueError("names must be unique: results are keyed by name")

    @property
    def lengths(self) -> np.ndarray:
        """Touches per journey."""
        return np.diff(self.offsets)


@dataclass(frozen=True)
class MarkovAttribution:
    """Removal effects of an absorbing Markov chain fitted to the paths.

    Attributes:
        conversion_probability: P(absorption in CONVERSION) from START.
        removal_effects: per touchpoint name, 1 - P(conversion without it) / P(conversion), in [0, 1].
        shares: the removal effects normalised to sum to 1: the share of conversions credited to each
            touchpoint (all zero when nothing converts).
        order: touches remembered by a state.
        states: touchpoint states of the chain (START, CONVERSION and NULL not counted).
    """

    conversion_probability: float
    removal_effects: dict[str, float]
    shares: dict[str, float]
    order: int
    states: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def markov_attribution(paths: Paths, order: int = 1) -> MarkovAttribution:
    """Absorbing Markov chain attribution of `order` (states are the last `order` touches), solved exactly
    (to round-off; nothing is simulated).

    Raises:
        ValueError: `order` is below 1.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    state, window = _touch_states(paths, order)
    effects = np.zeros(len(paths.names))
    probability = 0.0
    if np.any(paths.converted):  # without conversions nothing can be lost: all effects stay 0
        chain = _Chain.fit(paths, state, window)
        if order == 1:
            absorbed, lost = _single_state_removals(chain, window[:, 0])
        else:
            absorbed, lost = _state_set_removals(chain)
        probability = float(absorbed[0])
        effects = np.clip(lost / probability, 0.0, 1.0)  # round-off aside, a removal only loses paths
    total = effects.sum()
    shares = effects / total if total > 0 else np.zeros_like(effects)
    return MarkovAttribution(
        conversion_probability=probability,
        removal_effects=dict(zip(paths.names, effects.tolist(), strict=True)),
        shares=dict(zip(paths.names, shares.tolist(), strict=True)),
        order=order,
        states=len(window),
    )


def touch_attribution(paths: Paths) -> dict[str, dict[str, float]]:
    """First-touch, last-touch and linear (equal credit per touch) shares of conversions.

    Every converted journey with at least one touch gives one conversion of credit, so each model's shares
    sum to 1, like the Markov shares they are shown beside (all zero when no such journey exists).
    Converted journeys without touches credit nothing.
    """
    lengths = paths.lengths
    credited = paths.converted & (lengths > 0)
    size = len(paths.names)
    credit = {
        "first_touch": np.bincount(paths.codes[paths.offsets[:-1][credited]], minlength=size),
        "last_touch": np.bincount(paths.codes[paths.offsets[1:][credited] - 1], minlength=size),
        "linear": np.bincount(
            paths.codes, weights=np.repeat(credited / np.maximum(lengths, 1), lengths), minlength=size
        ),
    }
    conversions = max(int(credited.sum()), 1)
    return {
        model: dict(zip(paths.names, (values / conversions).tolist(), strict=True))
        for model, values in credit.items()
    }


def _touch_states(paths: Paths, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Per touch, its state index; per state, its codes (the last `order` touches, oldest first, -1 padding
    the front of states near a journey's start)."""
    touches = len(paths.codes)
    position = np.arange(touches) - np.repeat(paths.offsets[:-1], paths.lengths)
    window = np.full((touches, order), -1, dtype=np.int64)
    for lag in range(order):
        reaches = position >= lag
        window[reaches, order - 1 - lag] = paths.codes[np.flatnonzero(reaches) - lag]
    # A mixed-radix key per window, one code at a time, renumbered after each so it never overflows int64.
    state = np.zeros(touches, dtype=np.int64)
    first = np.zeros(0, dtype=np.int64)
    for column in window.T:
        key = state * (len(paths.names) + 1) + column + 1
        _, first, state = np.unique(key, return_index=True, return_inverse=True)
    return state, window[first]


@dataclass(frozen=True)
class _Chain:
    """The transient part of the chain: index 0 is START, 1 + s is touchpoint state s.

    Attributes:
        transitions: Q, transition probabilities between transient states (CSR).
        to_conversion: r, the probability of moving from each transient state to CONVERSION.
        members: (transient states x touchpoints) CSC pattern: does the state contain the touchpoint?
    """

    transitions: sp.csr_array
    to_conversion: np.ndarray
    members: sp.csc_array

    @classmethod
    def fit(cls, paths: Paths, state: np.ndarray, window: np.ndarray) -> _Chain:
        size = 1 + len(window)
        touched = paths.lengths > 0
        last = paths.offsets[1:][touched] - 1
        followed = np.ones(len(state), dtype=bool)
        followed[last] = False
        source = np.concatenate([np.zeros(touched.sum(), dtype=np.int64), 1 + state[followed]])
        target = np.concatenate([1 + state[paths.offsets[:-1][touched]], 1 + state[1:][followed[:-1]]])
        # Every journey leaves START once and every touch leaves its state once: the counts to normalise by.
        leaving = np.concatenate([[len(paths.converted)], np.bincount(state, minlength=len(window))])
        ending = np.zeros(len(touched), dtype=np.int64)  # the state each journey leaves for its outcome
        ending[touched] = 1 + state[last]
        transitions = sp.csr_array((1.0 / leaving[source], (source, target)), shape=(size, size))
        padded = window >= 0
        members = sp.csc_array(
            (np.ones(padded.sum()), (1 + np.nonzero(padded)[0], window[padded])),
            shape=(size, len(paths.names)),
        )
        converting = np.bincount(ending[paths.converted], minlength=size)
        return cls(transitions, converting / leaving, members)

    def system(self) -> sp.csr_array:
        """I - Q."""
        return sp.csr_array(sp.eye_array(self.transitions.shape[0]) - self.transitions)


def _single_state_removals(chain: _Chain, touchpoint_of_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absorption probabilities, and per touchpoint P(convert after touching it), when each touchpoint is a
    single state (order 1).

    P(reach s) = N[START, s] / N[s, s]: the expected visits from START over those from s itself.
    """
    lu = splu(sp.csc_array(chain.system()))
    absorbed = lu.solve(chain.to_conversion)
    visits = lu.solve(np.eye(len(absorbed), 1).ravel(), trans="T")  # N[START, :]
    returns = _inverse_diagonal(lu, len(absorbed))  # N[s, s]
    lost = visits[1:] / returns[1:] * absorbed[1:]
    return absorbed, np.bincount(touchpoint_of_state, weights=lost, minlength=chain.members.shape[1])


def _inverse_diagonal(lu: Any, size: int) -> np.ndarray:
    """The diagonal of A^-1 from A's factorisation, a block of identity columns at a time."""
    diagonal = np.empty(size)
    for start in range(0, size, _DIAGONAL_BLOCK):
        columns = np.arange(start, min(start + _DIAGONAL_BLOCK, size))
        unit = np.zeros((size, len(columns)))
        unit[columns, np.arange(len(columns))] = 1.0
        diagonal[columns] = lu.solve(unit)[columns, np.arange(len(columns))]
    return diagonal


def _state_set_removals(chain: _Chain) -> tuple[np.ndarray, np.ndarray]:
    """Absorption probabilities, and per touchpoint P(conversion) - P(conversion with its states leading to
    NULL), one solve per touchpoint."""
    absorbed = _solve(chain.system(), chain.to_conversion)
    predecessors = sp.csr_array(chain.transitions.T)
    lost = np.zeros(chain.members.shape[1])
    for touchpoint in range(len(lost)):
        removed = np.zeros(len(absorbed), dtype=bool)
        removed[chain.members.indices[slice(*chain.members.indptr[touchpoint : touchpoint + 2])]] = True
        if removed.any():
            upstream = _upstream(predecessors, removed)
            lost[touchpoint] = absorbed[0] - _conversion_without(chain, absorbed, removed, upstream)
    return absorbed, lost


def _conversion_without(
    chain: _Chain, absorbed: np.ndarray, removed: np.ndarray, upstream: np.ndarray
) -> float:
    """P(conversion) from START once the `removed` states lead to NULL.

    Only the `upstream` states (those that can reach a removed one) change; the rest keep their absorption
    probability and enter the smaller system as known values.
    """
    if not upstream[0]:
        return float(absorbed[0])
    changing = np.flatnonzero(upstream)
    rows = chain.transitions[changing]
    known = np.where(upstream | removed, 0.0, absorbed)
    system = sp.csr_array(sp.eye_array(len(changing)) - rows[:, changing])
    solution = _solve(system, chain.to_conversion[upstream] + rows @ known, absorbed[upstream])
    return float(solution[0])  # START is index 0, so it comes first among the upstream


def _solve(system: sp.csr_array, rhs: np.ndarray, guess: np.ndarray | None = None) -> np.ndarray:
    """x with `system @ x = rhs`, to round-off.

    BiCGSTAB is the fastest here, but it can break down and still report convergence (of the residual it
    updates, not the true one), so the true residual is checked and GMRES, which minimises it, takes over;
    a direct solve is the last resort.
    """
    for solver in (bicgstab, gmres):
        solution, info = solver(system, rhs, guess, rtol=_TOLERANCE, atol=0.0, maxiter=_MAX_ITERATIONS)
        if info == 0 and np.linalg.norm(system @ solution - rhs) <= _ACCEPTED_RESIDUAL * np.linalg.norm(rhs):
            return solution
    return np.atleast_1d(spsolve(sp.csc_array(system), rhs))


def _upstream(predecessors: sp.csr_array, removed: np.ndarray) -> np.ndarray:
    """States not removed from which a removed state can be reached.

    One breadth-first search backwards (over `predecessors`, the transposed transitions) from an extra node
    whose edges lead to every removed state. Walking on through removed states adds nothing wrong: whatever
    reaches a removed state through them reaches one.
    """
    size = len(removed)
    sources = np.flatnonzero(removed)
    graph = sp.csr_array(
        (
            np.ones(predecessors.nnz + len(sources)),
            np.concatenate([predecessors.indices, sources]),
            np.append(predecessors.indptr, predecessors.nnz + len(sources)),
        ),
        shape=(size + 1, size + 1),
    )
    reached = np.zeros(size + 1, dtype=bool)
    reached[breadth_first_order(graph, size, directed=True, return_predecessors=False)] = True
    return reached[:size] & ~removed
