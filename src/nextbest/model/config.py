"""Configuration of the journey network: architecture knobs plus the sizes the data dictates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from nextbest.errors import NextbestError

EncoderKind = Literal["transformer", "gru"]
ENCODER_KINDS: tuple[str, ...] = get_args(EncoderKind)


class ModelConfigError(NextbestError, ValueError):
    """A model configuration value is invalid; the message names the field."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything needed to build a `JourneyNetwork`; JSON-serialisable so an exported model rebuilds itself.

    Keyword-only, so the data-given sizes can be required while the architecture knobs keep defaults.

    Attributes:
        event_type_vocab: Size of the event type vocabulary (padding, unknown and missing codes included).
        channel_vocab: Size of the channel vocabulary.
        action_vocab: Size of the vocabulary of the events' `action` column (the action behind a touchpoint).
        num_actions: Number of candidate business actions A scored by the action heads; 0 when the data
            has no decisions (the action heads then have width 0 and only the cutoff heads learn).
        profile_categorical_sizes: Vocabulary size of each categorical profile column (may be empty).
        profile_numeric_dim: Width of the numeric profile block (may be 0).
        history_dim: Width of the history aggregates block.
        encoder: Sequence encoder over the events: a pre-norm transformer or a GRU.
        d_model: Width of every representation (event, history, profile, customer, action).
        n_layers: Transformer or GRU layers.
        n_heads: Attention heads (transformer only; must divide `d_model`).
        ffn_multiplier: Width of the transformer feed-forward layer, as a multiple of `d_model`.
        dropout: Dropout probability used throughout.
        max_events: Number of learned recency positions; older events share the oldest position.
        action_hidden_dim: Hidden width of each action's uplift MLP.
    """

    event_type_vocab: int
    channel_vocab: int
    action_vocab: int
    num_actions: int
    profile_categorical_sizes: tuple[int, ...] = ()
    profile_numeric_dim: int = 0
    history_dim: int = 4
    encoder: EncoderKind = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ffn_multiplier: int = 4
    dropout: float = 0.1
    max_events: int = 100
    action_hidden_dim: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.profile_categorical_sizes, list | tuple):
            raise ModelConfigError(
                "ModelConfig.profile_categorical_sizes must be a list of integers, "
                f"got {self.profile_categorical_sizes!r}"
            )
        # YAML and JSON give lists; the frozen config keeps a hashable tuple.
        object.__setattr__(self, "profile_categorical_sizes", tuple(self.profile_categorical_sizes))
        for name in ("event_type_vocab", "channel_vocab", "action_vocab"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_actions", self.num_actions, minimum=0)
        for i, size in enumerate(self.profile_categorical_sizes):
            _check_int(f"profile_categorical_sizes[{i}]", size, minimum=1)
        for name in ("profile_numeric_dim", "history_dim"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("d_model", "n_layers", "n_heads", "ffn_multiplier", "max_events", "action_hidden_dim"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.encoder not in ENCODER_KINDS:
            raise ModelConfigError(
                f"ModelConfig.encoder must be one of {ENCODER_KINDS}, got {self.encoder!r}"
            )
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ModelConfigError(
                f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise ModelConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary of every field."""
        data = dataclasses.asdict(self)
        data["profile_categorical_sizes"] = list(self.profile_categorical_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error rather than silently dropped."""
        fields = dataclasses.fields(cls)
        unknown = sorted(set(data) - {f.name for f in fields})
        if unknown:
            raise ModelConfigError(f"ModelConfig has no field(s) {unknown}")
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise ModelConfigError(f"ModelConfig is missing required field(s) {missing}")
        return cls(**data)


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass, but `d_model=True` is a mistake, not a width of 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelConfigError(f"ModelConfig.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ModelConfigError(f"ModelConfig.{name} must be >= {minimum}, got {value}")
