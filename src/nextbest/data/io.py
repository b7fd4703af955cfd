"""Reading contract tables from Parquet (file or directory of part files) and CSV (optionally compressed)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from nextbest.data.report import MAX_EXAMPLES, ValidationReport
from nextbest.data.schema import TableSpec
from nextbest.data.text import CATEGORICAL_COLUMNS
from nextbest.errors import DataContractError

TEXT_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
PARQUET_MAGIC = b"PAR1"
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


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
    if not path.exists():
        raise DataContractError(f"{spec.name} table {path}: no such file or directory")
    try:
        if table_format(path) == "parquet":
            present = set(pq.read_schema(path).names) if path.is_file() else set(CATEGORICAL_COLUMNS)
            dictionary_columns = [c for c in CATEGORICAL_COLUMNS if c in present]
            return pq.read_table(path, read_dictionary=dictionary_columns)
        return _read_csv(path, spec, report)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as exc:
        raise DataContractError(f"{spec.name} table {path}: cannot be read: {exc}") from exc


def _read_csv(path: Path, spec: TableSpec, report: ValidationReport) -> pa.Table:
    malformed: list[str] = []

    def on_invalid_row(row: pcsv.InvalidRow) -> str:
        malformed.append(
            f"{row.text[:80]!r} has {row.actual_columns} fields, header has {row.expected_columns}"
        )
        return "skip"

    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    with _unraisable_exceptions() as undecodable:
        try:
            table = _read_csv_table(path, spec, delimiter, on_invalid_row)
        except pa.ArrowException:
            if undecodable:
                raise DataContractError(
                    f"{spec.name} table {path}: is not UTF-8 text: {undecodable[0]}"
                ) from None
            raise
    if malformed:
        report.reject(spec.name, None, "malformed CSV lines", len(malformed), malformed[:MAX_EXAMPLES])
    return table


def _read_csv_table(
    path: Path, spec: TableSpec, delimiter: str, on_invalid_row: Callable[[pcsv.InvalidRow], str]
) -> pa.Table:
    return pcsv.read_csv(
        path,
        parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid_row),
        convert_options=pcsv.ConvertOptions(
            column_types={
                c.name: TEXT_DICTIONARY if c.name in CATEGORICAL_COLUMNS else pa.string()
                for c in spec.columns
            },
            strings_can_be_null=True,
        ),
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
