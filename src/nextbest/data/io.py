"""Reading contract tables from Parquet (file or directory of part files) and CSV (optionally compressed)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from nextbest.data.report import MAX_EXAMPLES, ValidationReport
from nextbest.data.schema import TableSpec
from nextbest.data.text import CATEGORICAL_COLUMNS
from nextbest.errors import DataContractError

TEXT_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
PARQUET_MAGIC = b"PAR1"
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
MALFORMED_CSV = "malformed CSV lines"


def table_format(path: Path) -> str:
    """'parquet' or 'csv': by content for Parquet files (whatever their name), else by file name.

    A directory is a Parquet data set.
    """
    name = path.name.lower()
    if path.is_dir() or name.endswith(PARQUET_SUFFIXES) or _starts_with(path, PARQUET_MAGIC):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataContractError(
        f"{path}: unknown table format; expected one of {', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)} "
        "or a directory of Parquet files"
    )


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as file:
        return file.read(len(magic)) == magic


def read_raw_table(path: str | Path, spec: TableSpec, report: ValidationReport) -> pa.Table:
    """Read `path` as the contract table `spec`, without type normalisation.

    CSV cells of contract columns are read as text so that one bad cell rejects one row, not the whole
    file, and identifiers keep their leading zeros. Low-cardinality text columns are read
    dictionary-encoded (see `nextbest.data.text`). Malformed CSV lines (wrong number of fields) are
    rejected and reported in `report`.

    Raises:
        DataContractError: the file is missing or cannot be read as a table at all.
    """
    path = Path(path)
    with _reading(path, spec):
        if table_format(path) == "parquet":
            present = set(pq.read_schema(path).names) if path.is_file() else set(CATEGORICAL_COLUMNS)
            dictionary_columns = [c for c in CATEGORICAL_COLUMNS if c in present]
            return pq.read_table(path, read_dictionary=dictionary_columns)
        return _read_csv(path, spec, report)


def iter_raw_batches(
    path: str | Path, spec: TableSpec, report: ValidationReport, batch_rows: int = 1 << 20
) -> Iterator[pa.RecordBatch]:
    """Stream `path` as the contract table `spec` in batches of at most about `batch_rows` rows, without
    type normalisation and with bounded memory, whatever the file's size.

    Read as `read_raw_table` reads, except that text stays plain (a dictionary per batch would differ
    from batch to batch). Malformed CSV lines are reported in `report` once the stream ends.

    Raises:
        DataContractError: the file is missing or cannot be read as a table at all.
    """
    path = Path(path)
    with _reading(path, spec):
        if table_format(path) == "parquet":
            # File by file, row group by row group: the dataset scanner reads ahead of a slow consumer
            # without bound (a whole file's row groups), which would hold the input in memory.
            for file in ds.dataset(path, format="parquet").files:
                yield from pq.ParquetFile(file).iter_batches(batch_size=batch_rows)
            return
        with _csv_reading(path, spec, report) as on_invalid_row:
            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=max(1 << 20, batch_rows * 64)),
                parse_options=_csv_parse_options(path, on_invalid_row),
                convert_options=_csv_convert_options(spec, dictionary=False),
            )
            yield from reader


def count_rows(path: str | Path, spec: TableSpec) -> int | None:
    """The rows of the contract table `spec` at `path`, without reading it: from the metadata of a
    Parquet table; None for CSV, whose rows are known only once it is read.

    Raises:
        DataContractError: the file is missing or cannot be read as a table at all.
    """
    path = Path(path)
    with _reading(path, spec):
        if table_format(path) == "csv":
            return None
        if path.is_file():  # the file's own error when it is no Parquet file, not a data set's
            return int(pq.read_metadata(path).num_rows)
        return int(ds.dataset(path, format="parquet").count_rows())


@contextmanager
def _reading(path: Path, spec: TableSpec) -> Iterator[None]:
    """Reading `path` as `spec`: a missing file, or one that cannot be read as a table, is a
    DataContractError that names the table and the file."""
    if not path.exists():
        raise DataContractError(f"{spec.name} table {path}: no such file or directory")
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as exc:
        raise DataContractError(f"{spec.name} table {path}: cannot be read: {exc}") from exc


def _read_csv(path: Path, spec: TableSpec, report: ValidationReport) -> pa.Table:
    with _csv_reading(path, spec, report) as on_invalid_row:
        return pcsv.read_csv(
            path,
            parse_options=_csv_parse_options(path, on_invalid_row),
            convert_options=_csv_convert_options(spec, dictionary=True),
        )


@contextmanager
def _csv_reading(
    path: Path, spec: TableSpec, report: ValidationReport
) -> Iterator[Callable[[pcsv.InvalidRow], str]]:
    """Yields the invalid-row handler of a CSV read; reports the malformed lines it skipped, and names
    text that is not UTF-8 instead of Arrow's generic error."""
    malformed: list[str] = []

    def on_invalid_row(row: pcsv.InvalidRow) -> str:
        malformed.append(
            f"{row.text[:80]!r} has {row.actual_columns} fields, header has {row.expected_columns}"
        )
        return "skip"

    with _unraisable_exceptions() as undecodable:
        try:
            yield on_invalid_row
        except pa.ArrowException:
            if undecodable:
                raise DataContractError(
                    f"{spec.name} table {path}: is not UTF-8 text: {undecodable[0]}"
                ) from None
            raise
    if malformed:
        report.reject(spec.name, None, MALFORMED_CSV, len(malformed), malformed[:MAX_EXAMPLES])
        report.keep(spec.name, None, MALFORMED_CSV, lines=malformed)


def _csv_parse_options(path: Path, on_invalid_row: Callable[[pcsv.InvalidRow], str]) -> pcsv.ParseOptions:
    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    return pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid_row)


def _csv_convert_options(spec: TableSpec, dictionary: bool) -> pcsv.ConvertOptions:
    text = {c: TEXT_DICTIONARY if dictionary else pa.string() for c in CATEGORICAL_COLUMNS}
    return pcsv.ConvertOptions(
        column_types={c.name: text.get(c.name, pa.string()) for c in spec.columns},
        strings_can_be_null=True,
    )


@contextmanager
def _unraisable_exceptions() -> Iterator[list[BaseException]]:
    """Collect exceptions reported through `sys.unraisablehook` instead of printing their tracebacks.

    pyarrow decodes a malformed line's text before calling the invalid-row handler; when the bytes are
    not UTF-8 that fails outside any caller and would print a traceback, then abort the read.
    """
    caught: list[BaseException] = []
    previous = sys.unraisablehook

    def collect(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_value is not None:
            caught.append(unraisable.exc_value)

    sys.unraisablehook = collect
    try:
        yield caught
    finally:
        sys.unraisablehook = previous
