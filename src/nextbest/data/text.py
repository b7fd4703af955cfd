"""Low-cardinality text columns (event types, channels, actions) as dictionary codes.

Reading these columns dictionary-encoded and working on the codes means each row's string is hashed at
most once, instead of once per step (vocabulary counting, encoding, filtering).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Contract columns that hold a handful of distinct values: read as dictionaries.
CATEGORICAL_COLUMNS = ("event_type", "channel", "action")
# Up to this many distinct strings, a dict or set lookup per string beats setting up Arrow's hash join (an
# online request holds a dozen).
LOOKUP_LIMIT = 1_000


def as_dictionary(values: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """`values` as one dictionary array of strings (chunks' dictionaries unified)."""
    if isinstance(values, pa.ChunkedArray):
        if pa.types.is_dictionary(values.type):
            values = values.unify_dictionaries()
        values = values.combine_chunks()
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values)
    if not pa.types.is_string(values.type.value_type):
        values = pa.DictionaryArray.from_arrays(values.indices, values.dictionary.cast(pa.string()))
    return values


def dictionary_codes(values: pa.Array | pa.ChunkedArray) -> tuple[pa.StringArray, np.ndarray]:
    """The distinct strings and, per row, the int32 index of its string (-1 for null)."""
    encoded = as_dictionary(values)
    indices = np.asarray(encoded.indices.fill_null(-1), dtype=np.int32)
    return encoded.dictionary, indices


def equals_mask(values: pa.Array | pa.ChunkedArray, *tokens: str) -> np.ndarray:
    """Boolean mask of rows equal to one of `tokens`."""
    return codes_mask(*dictionary_codes(values), tokens)


def codes_mask(dictionary: pa.StringArray, indices: np.ndarray, tokens: Collection[str]) -> np.ndarray:
    """Boolean mask of rows, given as distinct strings and per-row indices (`dictionary_codes`), whose
    string is one of `tokens`; null rows (index -1) match nothing."""
    if len(dictionary) <= LOOKUP_LIMIT:
        wanted = set(tokens)
        found = [token in wanted for token in dictionary.to_pylist()]
    else:
        found = pc.is_in(dictionary, value_set=pa.array(list(tokens), pa.string())).to_pylist()
    return np.array([*found, False], dtype=bool)[indices]  # the extra slot answers for nulls (index -1)
