"""Journey network, losses and calibration: shapes, masking conventions, learning, serialisation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from nextbest.evaluation import log_loss
from nextbest.model import (
    HEADS,
    CalibrationKind,
    IsotonicCalibration,
    JourneyNetwork,
    ModelConfig,
    TemperatureScaling,
    calibrator_from_dict,
    expected_calibration_error,
    fit_calibrator,
    journey_losses,
    masked_bce_with_logits,
    probabilities,
)

ENCODERS = ("transformer", "gru")
SEQUENCE_KEYS = (
    "event_type",
    "channel",
    "action",
    "log_gap_seconds",
    "log_recency_seconds",
    "log_value",
    "has_value",
    "hour",
    "weekday",
    "mask",
)
OUTPUT_KEYS = (
    "embedding",
    "conversion_logit",
    "churn_logit",
    "action_conversion_logit",
    "action_churn_logit",
)


def make_config(**overrides: Any) -> ModelConfig:
    """A small config with every input block present (two categorical columns, three numeric)."""
    values: dict[str, Any] = {
        "event_type_vocab": 12,
        "channel_vocab": 6,
        "action_vocab": 9,
        "num_actions": 5,
        "profile_categorical_sizes": (4, 7),
        "profile_numeric_dim": 3,
        "d_model": 16,
        "n_layers": 2,
        "n_heads": 2,
        "max_events": 20,
        "action_hidden_dim": 8,
    }
    return ModelConfig(**(values | overrides))


def random_batch(
    config: ModelConfig,
    batch_size: int,
    max_length: int,
    seed: int = 0,
    lengths: np.ndarray | None = None,
) -> dict[str, Tensor]:
    """A valid batch as `EncodedJourneys.batch` makes it (int32 codes, left-aligned events, zero padding).

    The width L is the longest history, as in the encoder; lengths include 0 unless given.
    """
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(0, max_length + 1, batch_size)
    width = int(lengths.max(initial=0))
    mask = np.arange(width)[None, :] < lengths[:, None]

    def codes(high: int, low: int = 1) -> np.ndarray:
        return np.where(mask, rng.integers(low, high, (batch_size, width)), 0).astype(np.int32)

    def reals() -> np.ndarray:
        return np.where(mask, rng.normal(size=(batch_size, width)), 0.0).astype(np.float32)

    arrays: dict[str, np.ndarray] = {
        "event_type": codes(config.event_type_vocab),
        "channel": codes(config.channel_vocab),
        "action": codes(config.action_vocab),
        "log_gap_seconds": np.abs(reals()),
        "log_recency_seconds": np.abs(reals()),
        "log_value": reals(),
        "has_value": np.where(mask, rng.integers(0, 2, (batch_size, width)), 0).astype(np.float32),
        "hour": codes(24, low=0),
        "weekday": codes(7, low=0),
        "mask": mask,
        "length": lengths.astype(np.int32),
        "profile_categorical": np.stack(
            [rng.integers(1, size, batch_size) for size in config.profile_categorical_sizes], axis=1
        ).astype(np.int32)
        if config.profile_categorical_sizes
        else np.zeros((batch_size, 0), np.int32),
        "profile_numeric": rng.normal(size=(batch_size, config.profile_numeric_dim)).astype(np.float32),
        "history": rng.normal(size=(batch_size, config.history_dim)).astype(np.float32),
        "decision_action": rng.integers(-1, config.num_actions, batch_size).astype(np.int64),
    }
    for label in ("conversion", "churn"):
        values = rng.integers(0, 2, batch_size).astype(np.float32)
        arrays[label] = np.where(rng.random(batch_size) < 0.2, np.nan, values).astype(np.float32)
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def pad_columns(batch: dict[str, Tensor], extra: int) -> dict[str, Tensor]:
    """`batch` with `extra` more padding columns on every [B, L] input."""
    padded = dict(batch)
    for name in SEQUENCE_KEYS:
        value = batch[name]
        padded[name] = torch.cat([value, value.new_zeros(value.shape[0], extra)], dim=1)
    return padded


def eval_network(config: ModelConfig, seed: int = 0) -> JourneyNetwork:
    torch.manual_seed(seed)
    return JourneyNetwork(config).eval()


def run(network: JourneyNetwork, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    with torch.inference_mode():
        return dict(network(batch))


def assert_outputs_close(left: dict[str, Tensor], right: dict[str, Tensor]) -> None:
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(left[key], right[key], atol=1e-5, rtol=1e-5)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (no ties expected in float scores)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- network ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ENCODERS)
def test_output_shapes(encoder: str) -> None:
    config = make_config(encoder=encoder)
    outputs = run(eval_network(config), random_batch(config, batch_size=6, max_length=9))
    assert set(outputs) == set(OUTPUT_KEYS)
    assert outputs["embedding"].shape == (6, config.d_model)
    assert outputs["conversion_logit"].shape == outputs["churn_logit"].shape == (6,)
    assert outputs["action_conversion_logit"].shape == outputs["action_churn_logit"].shape == (6, 5)
    assert all(torch.isfinite(value).all() for value in outputs.values())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_uplift_is_relative_to_the_cutoff_baseline(encoder: str) -> None:
    config = make_config(encoder=encoder)
    network = eval_network(config)
    batch = random_batch(config, batch_size=4, max_length=5)
    outputs = run(network, batch)
    with torch.inference_mode():
        delta = network.uplift(outputs["embedding"])
    torch.testing.assert_close(
        outputs["action_conversion_logit"] - outputs["conversion_logit"][:, None], delta[..., 0]
    )
    torch.testing.assert_close(outputs["action_churn_logit"] - outputs["churn_logit"][:, None], delta[..., 1])


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_empty_histories_give_finite_outputs(encoder: str, batch_size: int) -> None:
    config = make_config(encoder=encoder)
    network = eval_network(config)
    no_history = random_batch(config, batch_size, max_length=0)
    assert no_history["mask"].shape == (batch_size, 0)
    some_empty = random_batch(config, batch_size, max_length=6, lengths=np.arange(batch_size) % 2 * 6)
    for batch in (no_history, some_empty):
        outputs = run(network, batch)
        assert all(torch.isfinite(value).all() for value in outputs.values())
    # Training mode too: a fully masked attention row would give NaN gradients.
    network.train()
    journey_losses(network(no_history), no_history)["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_extra_padding_columns_change_nothing(encoder: str) -> None:
    config = make_config(encoder=encoder)
    network = eval_network(config)
    batch = random_batch(config, batch_size=8, max_length=7, seed=3)
    assert_outputs_close(run(network, batch), run(network, pad_columns(batch, extra=5)))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_row_does_not_depend_on_the_rest_of_the_batch(encoder: str) -> None:
    config = make_config(encoder=encoder)
    network = eval_network(config)
    batch = random_batch(config, batch_size=7, max_length=8, seed=4)
    together = run(network, batch)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    shuffled = run(network, {name: value[order] for name, value in batch.items()})
    assert_outputs_close({k: v[order] for k, v in together.items()}, shuffled)
    # Alone, row 2 has no padding beyond its own history: trim the columns to its length.
    width = int(batch["length"][2])
    alone = {
        name: value[2:3, :width] if name in SEQUENCE_KEYS else value[2:3] for name, value in batch.items()
    }
    assert_outputs_close({k: v[2:3] for k, v in together.items()}, run(network, alone))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_eval_mode_is_deterministic_and_train_mode_uses_dropout(encoder: str) -> None:
    config = make_config(encoder=encoder, dropout=0.5)
    network = eval_network(config)
    batch = random_batch(config, batch_size=4, max_length=6)
    first, second = run(network, batch), run(network, batch)
    assert all(torch.equal(first[key], second[key]) for key in OUTPUT_KEYS)
    network.train()
    assert not torch.equal(network(batch)["embedding"], network(batch)["embedding"])


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("training", [False, True])
def test_the_summary_attends_as_every_position_does(batch_size: int, training: bool) -> None:
    """The last block attends from the summary token alone, without keys and values for every position:
    the summary's output is the one a full block gives it (also in training, where dropout is off here)."""
    block = JourneyNetwork(make_config(dropout=0.0)).history_encoder.blocks[-1].train(training)
    generator = torch.Generator().manual_seed(batch_size)
    x = torch.randn(batch_size, 7, 16, generator=generator)
    keep = torch.rand(batch_size, 1, 1, 7, generator=generator) > 0.4
    keep[..., 0] = True  # the summary token is always kept
    keep[0, ..., 1:] = False  # a history with no events
    full = block(x, keep, queries=7)[:, :1]
    assert torch.allclose(block(x, keep, queries=1), full, atol=1e-5)


def test_network_without_profile_blocks() -> None:
    config = make_config(profile_categorical_sizes=(), profile_numeric_dim=0, history_dim=0)
    batch = random_batch(config, batch_size=3, max_length=4)
    for name in ("profile_categorical", "profile_numeric", "history"):
        del batch[name]
    assert run(eval_network(config), batch)["embedding"].shape == (3, config.d_model)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gradient_reaches_every_embedding(encoder: str) -> None:
    config = make_config(encoder=encoder)
    network = JourneyNetwork(config)
    batch = random_batch(config, batch_size=16, max_length=6, seed=1)
    batch["decision_action"][:8] = -1
    journey_losses(network(batch), batch)["total"].backward()
    categorical = network.static_embedding.categorical
    assert categorical is not None
    assert categorical.weight.grad is not None
    assert categorical.weight.grad.abs().sum() > 0
    # Every action's head learns from the rows where it was taken with a known outcome.
    grad = network.uplift.hidden_weight.grad
    assert grad is not None
    known = ~batch["conversion"].isnan() | ~batch["churn"].isnan()
    taken = batch["decision_action"][(batch["decision_action"] >= 0) & known].unique()
    assert len(taken) > 1
    assert all(grad[a].abs().sum() > 0 for a in taken.tolist())
    events = network.event_embedding
    blocks = torch.tensor_split(events.codes.weight.grad, events.offsets[1:].tolist())
    assert len(blocks) == 6  # event type, channel, action, hour, weekday, recency position
    assert all(block.abs().sum() > 0 for block in blocks)
    # Token code 0 only ever marks padding, which is masked everywhere, so it learns nothing.
    assert all(block[0].abs().sum() == 0 for block in blocks[:3])


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and spinning threads slow training badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("encoder", ENCODERS)
def test_learns_a_history_dependent_and_an_action_dependent_label(encoder: str) -> None:
    """Cutoff label: event type 5 occurs in the history. Action label: action 1 converts only those
    customers whose profile category is 2, action 3 converts everyone, other actions no one."""
    torch.manual_seed(0)
    config = make_config(encoder=encoder, d_model=32, n_layers=1, n_heads=2, dropout=0.0, num_actions=4)
    network = JourneyNetwork(config)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-2)

    def task(seed: int, size: int) -> dict[str, Tensor]:
        batch = random_batch(config, size, max_length=12, seed=seed)
        has_five = ((batch["event_type"] == 5) & batch["mask"]).any(dim=1)
        action = batch["decision_action"]
        segment_two = batch["profile_categorical"][:, 0] == 2
        converts = (action == 3) | ((action == 1) & segment_two)
        batch["conversion"] = torch.where(action < 0, has_five, converts).float()
        batch["churn"] = torch.full((size,), float("nan"))
        return batch

    for step in range(150):
        batch = task(seed=100 + step, size=128)
        optimiser.zero_grad()
        journey_losses(network(batch), batch)["total"].backward()
        optimiser.step()

    test = task(seed=1, size=1000)
    outputs = run(network.eval(), test)
    cutoff = test["decision_action"] < 0
    history_auc = auc(outputs["conversion_logit"][cutoff].numpy(), test["conversion"][cutoff].numpy())
    assert history_auc > 0.9
    taken = test["decision_action"].clamp(min=0)[:, None]
    action_logits = outputs["action_conversion_logit"].gather(1, taken).squeeze(1)
    correct = ((action_logits > 0).float() == test["conversion"])[~cutoff].float().mean()
    assert correct > 0.9


# --- losses ----------------------------------------------------------------------------------------------


def test_masked_bce_ignores_unknown_labels() -> None:
    logits = torch.tensor([0.5, -1.0, 2.0, 3.0], requires_grad=True)
    labels = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
    loss = masked_bce_with_logits(logits, labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[1] == logits.grad[3] == 0


def test_masked_bce_is_zero_with_a_gradient_when_no_label_is_known() -> None:
    logits = torch.randn(5, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.full((5,), float("nan")))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros(5))


def test_journey_losses_use_cutoff_rows_and_the_taken_action() -> None:
    conversion = torch.tensor([0.3, -0.2, 1.0, 0.7], requires_grad=True)
    action_conversion = torch.randn(4, 3, requires_grad=True)
    outputs = {
        "conversion_logit": conversion,
        "churn_logit": torch.zeros(4, requires_grad=True),
        "action_conversion_logit": action_conversion,
        "action_churn_logit": torch.zeros(4, 3, requires_grad=True),
    }
    batch = {
        "decision_action": torch.tensor([-1, 2, -1, 0]),
        "conversion": torch.tensor([1.0, 0.0, float("nan"), 1.0]),
        "churn": torch.full((4,), float("nan")),
    }
    losses = journey_losses(outputs, batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(losses["conversion"], bce(conversion[:1], torch.ones(1)))
    taken = torch.stack([action_conversion[1, 2], action_conversion[3, 0]])
    torch.testing.assert_close(losses["action_conversion"], bce(taken, torch.tensor([0.0, 1.0])))
    assert losses["churn"].item() == losses["action_churn"].item() == 0.0
    torch.testing.assert_close(losses["total"], losses["conversion"] + losses["action_conversion"])
    losses["total"].backward()
    assert conversion.grad is not None
    assert action_conversion.grad is not None
    # Only row 0 trains the cutoff head (row 2's label is unknown; rows 1 and 3 had a decision) ...
    assert torch.equal(conversion.grad != 0, torch.tensor([True, False, False, False]))
    # ... and only the taken actions of rows 1 and 3 train the action head.
    expected = torch.zeros(4, 3, dtype=torch.bool)
    expected[1, 2] = expected[3, 0] = True
    assert torch.equal(action_conversion.grad != 0, expected)


def test_journey_losses_without_decisions_train_the_cutoff_heads_only() -> None:
    config = make_config()
    batch = random_batch(config, batch_size=6, max_length=4)
    del batch["decision_action"], batch["churn"]
    losses = journey_losses(run(eval_network(config), batch), batch)
    assert (
        losses["action_conversion"].item() == losses["action_churn"].item() == losses["churn"].item() == 0.0
    )
    assert losses["conversion"].item() > 0.0


def test_without_candidate_actions_only_the_cutoff_heads_learn() -> None:
    config = make_config(num_actions=0)
    network = JourneyNetwork(config)
    batch = random_batch(config, batch_size=4, max_length=3)
    outputs = network(batch)
    assert outputs["action_conversion_logit"].shape == outputs["action_churn_logit"].shape == (4, 0)
    losses = journey_losses(outputs, batch)
    assert losses["action_conversion"].item() == losses["action_churn"].item() == 0.0
    losses["total"].backward()
    batch["decision_action"][0] = 0
    with pytest.raises(ValueError, match="no candidate actions"):
        journey_losses(network(batch), batch)


def test_probabilities_are_the_sigmoid_of_every_logit() -> None:
    config = make_config()
    outputs = run(eval_network(config), random_batch(config, batch_size=3, max_length=4))
    probs = probabilities(outputs)
    assert set(probs) == {"conversion", "churn", "action_conversion", "action_churn"}
    torch.testing.assert_close(probs["action_churn"], torch.sigmoid(outputs["action_churn_logit"]))


def test_every_head_is_an_output_a_loss_and_a_probability() -> None:
    config = make_config()
    batch = random_batch(config, batch_size=3, max_length=4)
    outputs = run(eval_network(config), batch)
    names = [head.name for head in HEADS]
    assert names == ["conversion", "churn", "action_conversion", "action_churn"]
    assert set(outputs) == {"embedding", *(head.output for head in HEADS)}
    for head in HEADS:
        assert outputs[head.output].shape == ((3, config.num_actions) if head.per_action else (3,))
    assert list(journey_losses(outputs, batch)) == [*names, "total"]
    assert list(probabilities(outputs)) == names


# --- config ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model"),
        ({"d_model": 0}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"encoder": "lstm"}, "encoder"),
        ({"num_actions": -1}, "num_actions"),
        ({"event_type_vocab": -3}, "event_type_vocab"),
        ({"profile_categorical_sizes": (4, 0)}, r"profile_categorical_sizes\[1\]"),
        ({"profile_categorical_sizes": 5}, "profile_categorical_sizes"),
        ({"profile_numeric_dim": -1}, "profile_numeric_dim"),
        ({"max_events": 2.5}, "max_events"),
        ({"n_heads": True}, "n_heads"),
    ],
)
def test_invalid_config_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}"):
        make_config(**overrides)


def test_gru_does_not_need_heads_to_divide_the_width() -> None:
    assert make_config(encoder="gru", d_model=30, n_heads=4).d_model == 30


def test_config_round_trips_through_json() -> None:
    config = make_config(encoder="gru", dropout=0.2)
    data = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="d_modle"):
        ModelConfig.from_dict(data | {"d_modle": 3})
    with pytest.raises(ValueError, match="num_actions"):
        ModelConfig.from_dict({k: v for k, v in data.items() if k != "num_actions"})


def test_weights_load_into_a_network_rebuilt_from_the_config() -> None:
    config = make_config()
    network = eval_network(config, seed=1)
    rebuilt = JourneyNetwork(ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))).eval()
    rebuilt.load_state_dict(network.state_dict())
    batch = random_batch(config, batch_size=4, max_length=5)
    assert_outputs_close(run(network, batch), run(rebuilt, batch))


def test_default_config_is_valid() -> None:
    config = ModelConfig(event_type_vocab=10, channel_vocab=5, action_vocab=8, num_actions=6)
    assert dataclasses.asdict(config)["encoder"] == "transformer"
    assert run(JourneyNetwork(config).eval(), random_batch(config, 2, 3))["embedding"].shape == (2, 64)


# --- calibration -----------------------------------------------------------------------------------------


def miscalibrated(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of an overconfident, biased model: 3x the true logit plus 1."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 1.5, size)
    labels = (rng.random(size) < 1.0 / (1.0 + np.exp(-true_logits))).astype(np.float64)
    return 3.0 * true_logits + 1.0, labels


@pytest.mark.parametrize("kind", ["temperature", "isotonic"])
def test_calibration_reduces_log_loss_and_ece_on_held_out_data(kind: CalibrationKind) -> None:
    fit_logits, fit_labels = miscalibrated(seed=0, size=20_000)
    fit_labels[::10] = np.nan
    test_logits, test_labels = miscalibrated(seed=1, size=20_000)
    calibrator = fit_calibrator(kind, fit_logits, fit_labels)
    raw = 1.0 / (1.0 + np.exp(-test_logits))
    calibrated = calibrator.calibrate(test_logits)
    assert log_loss(test_labels, calibrated) < log_loss(test_labels, raw) - 0.05
    assert expected_calibration_error(calibrated, test_labels) < 0.03
    assert expected_calibration_error(raw, test_labels) > 0.05
    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_allclose(restored.calibrate(test_logits), calibrated)


def test_temperature_scaling_recovers_the_temperature() -> None:
    logits, labels = miscalibrated(seed=2, size=50_000)
    scaled = TemperatureScaling.fit(logits - 1.0, labels)
    assert scaled.temperature == pytest.approx(3.0, rel=0.05)
    assert scaled.bias == 0.0
    with_bias = TemperatureScaling.fit(logits, labels, fit_bias=True)
    assert with_bias.temperature == pytest.approx(3.0, rel=0.05)
    assert with_bias.bias == pytest.approx(-1.0 / 3.0, abs=0.05)


def test_calibrators_without_known_labels_are_the_identity() -> None:
    logits, unknown = np.array([-2.0, 0.0, 3.0]), np.full(3, np.nan)
    expected = 1.0 / (1.0 + np.exp(-logits))
    kinds: tuple[CalibrationKind, ...] = ("temperature", "isotonic", "none")
    for kind in kinds:
        np.testing.assert_allclose(fit_calibrator(kind, logits, unknown).calibrate(logits), expected)


def test_isotonic_pools_violators() -> None:
    calibration = IsotonicCalibration.fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    np.testing.assert_allclose(calibration.apply(np.array([0.1, 0.2, 0.3, 0.4])), [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(calibration.apply(np.array([0.0, 0.25, 0.9])), [0.0, 0.5, 1.0])


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, float("nan")])), min_size=1, max_size=60
    ),
    queries=st.lists(st.floats(-0.5, 1.5), min_size=2, max_size=30),
)
def test_isotonic_output_is_monotone_and_a_probability(
    data: list[tuple[float, float]], queries: list[float]
) -> None:
    probs, labels = (np.array(column) for column in zip(*data, strict=True))
    calibration = IsotonicCalibration.fit(probs, labels)
    assert all(np.diff(calibration.x) > 0)
    outputs = calibration.apply(np.sort(np.array(queries)))
    assert np.all(np.diff(outputs) >= -1e-12)
    if calibration.x:
        assert np.all((outputs >= 0.0) & (outputs <= 1.0))


def test_ece_of_calibrated_data_is_small_and_of_miscalibrated_data_is_not() -> None:
    rng = np.random.default_rng(5)
    probs = rng.random(100_000)
    labels = (rng.random(100_000) < probs).astype(np.float64)
    assert expected_calibration_error(probs, labels) < 0.01
    assert expected_calibration_error(probs**3, labels) > 0.1
    labels[:50_000] = np.nan
    assert expected_calibration_error(probs, labels) < 0.015
    assert np.isnan(expected_calibration_error(probs, np.full_like(probs, np.nan)))
