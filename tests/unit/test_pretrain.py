"""Contrastive pretraining: the sub-sequence sampler, the InfoNCE loss, the histories read, the settings."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.journeys.windows import Windows
from nextbest.simulate import SimulationConfig, simulate, write_world
from nextbest_training.data import JourneyDataModule
from nextbest_training.pretrain import (
    PretrainSettings,
    info_nce,
    pretraining_histories,
    sample_sub_sequences,
)

lengths = st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=20)


def histories_of(sizes: list[int]) -> Windows:
    """Back-to-back histories of the given lengths, as customers lie in a sorted log."""
    end = np.cumsum(sizes)
    start = end - np.asarray(sizes)
    return Windows(start=start, end=end, first=start)


@settings(max_examples=50, deadline=None)
@given(
    sizes=lengths,
    views=st.integers(min_value=2, max_value=4),
    min_length=st.integers(min_value=1, max_value=10),
    extra=st.integers(min_value=0, max_value=30),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_sub_sequences_lie_within_their_history(
    sizes: list[int], views: int, min_length: int, extra: int, seed: int
) -> None:
    histories = histories_of(sizes)
    max_length = min_length + extra
    start, end = sample_sub_sequences(histories, views, min_length, max_length, np.random.default_rng(seed))
    owner = np.tile(np.arange(len(sizes)), views)  # view-major: row v·N + i is history i
    assert len(start) == views * len(sizes)
    assert np.all(histories.start[owner] <= start)
    assert np.all(end <= histories.end[owner])
    length = end - start
    size = np.asarray(sizes)[owner]
    # Within [min_length, max_length], except that a short history is taken whole.
    assert np.all(length >= np.minimum(min_length, size))
    assert np.all(length <= np.minimum(max_length, size))


def test_sub_sequences_vary_in_place_and_length() -> None:
    histories = histories_of([100] * 200)
    start, end = sample_sub_sequences(histories, 2, 5, 50, np.random.default_rng(0))
    assert len(np.unique(end - start)) > 20
    assert len(np.unique(start - np.tile(histories.start, 2))) > 20


def orthonormal(permutation: list[int]) -> torch.Tensor:
    return torch.eye(len(permutation))[permutation]


@settings(max_examples=50, deadline=None)
@given(
    permutation=st.permutations(list(range(8))).flatmap(
        lambda p: st.tuples(st.just(p), st.integers(min_value=2, max_value=8))
    ),
    temperature=st.floats(min_value=0.05, max_value=1.0),
)
def test_the_loss_is_lower_for_matching_views(permutation: tuple[list[int], int], temperature: float) -> None:
    order, customers = permutation
    z = orthonormal(order)[:customers]  # distinct customers, orthogonal embeddings
    matching = info_nce(torch.cat([z, z]), views=2, temperature=temperature)
    shifted = info_nce(torch.cat([z, z.roll(1, dims=0)]), views=2, temperature=temperature)
    assert 0.0 <= matching.item() < shifted.item()


def test_the_loss_is_nt_xent_for_two_views() -> None:
    """Identical views of N orthonormal customers: each view's only positive scores 1/τ, the 2N - 2
    negatives 0, so the loss is log(1 + (2N - 2)·exp(-1/τ))."""
    n, temperature = 5, 0.2
    z = orthonormal(list(range(n)))
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    loss = info_nce(torch.cat([z, z]), views=2, temperature=temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_loss_does_not_depend_on_the_customers_order_and_has_gradients() -> None:
    z = torch.randn(3 * 6, 4, requires_grad=True)
    loss = info_nce(z, views=3, temperature=0.1)
    permutation = torch.randperm(6)
    permuted = z.view(3, 6, 4)[:, permutation].reshape(18, 4)
    assert info_nce(permuted, views=3, temperature=0.1).item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()


def test_held_out_customers_are_read_only_before_their_first_cutoff(tmp_path: Path) -> None:
    write_world(simulate(SimulationConfig(n_customers=200, seed=3)), tmp_path)
    data = JourneyDataModule(str(tmp_path / "events.parquet"), decisions=str(tmp_path / "decisions.parquet"))
    prepared = data.prepared
    log, journeys = prepared.log, prepared.journeys
    held_out = np.concatenate([prepared.splits["validation"], prepared.splits["test"]])
    first_cutoff: dict[int, int] = {}
    for customer, as_of in zip(journeys.requests.customer[held_out], journeys.as_of[held_out], strict=True):
        first_cutoff[int(customer)] = min(int(as_of), first_cutoff.get(int(customer), int(as_of)))

    histories = pretraining_histories(prepared)
    owner = np.searchsorted(log.offsets, histories.start, side="right") - 1
    assert np.all(histories.start == log.offsets[owner])  # from each customer's first event
    for customer, end in zip(owner.tolist(), histories.end.tolist(), strict=True):
        if customer in first_cutoff:
            assert log.timestamps[end - 1] < first_cutoff[customer]
            assert end == log.offsets[customer + 1] or log.timestamps[end] >= first_cutoff[customer]
        else:
            assert end == log.offsets[customer + 1]  # the whole history
    assert len(histories.start) > len(set(journeys.requests.customer[prepared.splits["train"]].tolist()))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"views": 1}, "pretrain.views"),
        ({"batch_size": 1}, "pretrain.batch_size"),
        ({"min_length": 10, "max_length": 5}, "pretrain.max_length"),
        ({"temperature": 0.0}, "pretrain.temperature"),
        ({"epochs": 0}, "pretrain.epochs"),
    ],
)
def test_bad_settings_name_the_field(change: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        replace(PretrainSettings(), **change)
