"""Token vocabularies with reserved padding, unknown and missing tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.text import LOOKUP_LIMIT, dictionary_codes

PAD, UNKNOWN, MISSING = 0, 1, 2
RESERVED = ("<pad>", "<unk>", "<none>")


@dataclass(frozen=True)
class Vocabulary:
    """Maps strings to int codes: 0 padding, 1 unknown (unseen in training), 2 missing (null), then tokens.

    Attributes:
        tokens: the known tokens, most frequent first; token `tokens[i]` has code `i + 3`.
    """

    tokens: tuple[str, ...]
    _value_set: pa.Array = field(init=False, repr=False, compare=False)
    _codes: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_value_set", pa.array(self.tokens, type=pa.string()))
        object.__setattr__(self, "_codes", {token: i + len(RESERVED) for i, token in enumerate(self.tokens)})

    def __len__(self) -> int:
        """Number of codes, reserved ones included (the embedding table size)."""
        return len(self.tokens) + len(RESERVED)

    @classmethod
    def fit(
        cls, values: pa.Array | pa.ChunkedArray, min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Tokens seen at least `min_count` times, most frequent first (ties by token), `max_size` at most."""
        dictionary, indices = dictionary_codes(values)
        freq = np.bincount(indices[indices >= 0], minlength=len(dictionary))
        tokens = np.asarray(dictionary.to_pylist(), dtype=object)
        keep = freq >= min_count
        tokens, freq = tokens[keep], freq[keep]
        order = sorted(range(len(tokens)), key=lambda i: (-int(freq[i]), str(tokens[i])))
        return cls(tuple(str(tokens[i]) for i in order[:max_size]))

    def encode(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Codes (int32) for `values`; unseen tokens map to UNKNOWN, nulls to MISSING."""
        if len(values) <= LOOKUP_LIMIT and pa.types.is_string(values.type):  # e.g. one request's profile
            return np.array(
                [MISSING if v is None else self._codes.get(v, UNKNOWN) for v in values.to_pylist()],
                dtype=np.int32,
            )
        return self.encode_codes(*dictionary_codes(values))

    def encode_codes(self, dictionary: pa.StringArray, indices: np.ndarray) -> np.ndarray:
        """Codes (int32) for values given as distinct strings and per-row indices into them (-1: null),
        e.g. `EventLog.token_codes`."""
        if len(dictionary) <= LOOKUP_LIMIT:
            codes = [self._codes.get(token, UNKNOWN) for token in dictionary.to_pylist()]
        else:
            found = np.asarray(pc.index_in(dictionary, value_set=self._value_set).fill_null(-1))
            codes = np.where(found >= 0, found + len(RESERVED), UNKNOWN).tolist()
        # One extra slot at the end maps the null index (-1) to MISSING.
        return np.array([*codes, MISSING], dtype=np.int32)[indices]

    def decode(self, codes: Sequence[int] | np.ndarray) -> list[str]:
        """Tokens for `codes` (reserved codes as their `<...>` names)."""
        names = RESERVED + self.tokens
        return [names[int(c)] for c in codes]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(tuple(data["tokens"]))
