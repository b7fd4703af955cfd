"""Hash partitioning of contract tables by customer: every row of a customer lands in the same bucket.

A batch job that cannot hold its input in memory spills each table into per-bucket Parquet files in one
streaming pass, then scores bucket by bucket: a customer's events, profile and requests always meet in
one bucket, and a bucket is small enough to score in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nextbest.data.io import count_rows
from nextbest.data.schema import EVENTS
from nextbest.errors import NextbestError

DEFAULT_CHUNK_EVENTS = 1_000_000
# Rough bytes per events row of a CSV file, to size chunks before reading it (only memory depends on it).
_CSV_BYTES_PER_ROW = 60


def bucket_of(customer_ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """The bucket (0 ≤ b < `buckets`) of each customer id: a hash of the id's text, so the same id gets
    the same bucket in every file, batch, run and machine. Integer ids hash as their decimal text (as
    the contract reads them); a null id hashes as the empty text.
    """
    if isinstance(customer_ids, pa.ChunkedArray):
        customer_ids = customer_ids.combine_chunks()
    if pa.types.is_dictionary(customer_ids.type):  # hash each distinct id once
        indices = np.asarray(customer_ids.indices.fill_null(-1), dtype=np.int64)
        of_dictionary = np.append(
            bucket_of(customer_ids.dictionary, buckets), bucket_of(pa.array([""]), buckets)
        )
        return of_dictionary[indices]
    text = pc.cast(customer_ids, pa.string()).fill_null("")
    # pandas' SipHash with its fixed default key: stable across processes, unlike Python's hash().
    hashes = pd.util.hash_array(text.to_numpy(zero_copy_only=False), categorize=False)
    return (hashes % np.uint64(buckets)).astype(np.int64)


def chunk_count(events: Path, chunk_events: int) -> int:
    """How many chunks of about `chunk_events` events the events table at `events` makes.

    Raises:
        DataContractError: the events table is missing or cannot be read as a table at all.
    """
    if chunk_events < 1:
        raise NextbestError(f"chunk size must be at least 1 event, got {chunk_events}")
    rows = count_rows(events, EVENTS)
    if rows is None:  # CSV: estimated from the file's size
        rows = events.stat().st_size // _CSV_BYTES_PER_ROW
    return max(1, -(-rows // chunk_events))


class BucketWriter:
    """Appends the rows of record batches to one Parquet file per bucket under `directory`."""

    def __init__(self, directory: Path, buckets: int) -> None:
        self.directory = directory
        self.buckets = buckets
        self._writers: dict[int, pq.ParquetWriter] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, batch: pa.RecordBatch) -> None:
        """Splits `batch` by the bucket of its `customer_id` column."""
        if batch.num_rows == 0:
            return
        buckets = bucket_of(batch.column("customer_id"), self.buckets)
        order = np.argsort(buckets, kind="stable")
        grouped = batch.take(pa.array(order))
        bounds = np.concatenate([[0], np.cumsum(np.bincount(buckets, minlength=self.buckets))])
        for bucket in np.flatnonzero(np.diff(bounds)):
            rows = grouped.slice(bounds[bucket], bounds[bucket + 1] - bounds[bucket])
            # write_table ends a row group per call; write_batch would buffer every bucket's rows
            # until a row group fills (a million rows), holding most of the input in memory.
            self._writer(int(bucket), batch.schema).write_table(pa.Table.from_batches([rows]))

    def write_all(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            self.write(batch)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, bucket: int, schema: pa.Schema) -> pq.ParquetWriter:
        if bucket not in self._writers:
            self._writers[bucket] = pq.ParquetWriter(bucket_path(self.directory, bucket), schema)
        return self._writers[bucket]


def bucket_path(directory: Path, bucket: int) -> Path:
    """Where a `BucketWriter` on `directory` writes the rows of `bucket`."""
    return directory / f"bucket-{bucket:05d}.parquet"
