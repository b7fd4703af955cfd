"""The Spark batch engine: the same chunks and the same `score_chunk` as the local job, on a cluster.

Each table is read by Spark and its rows are sent to the bucket (chunk) of their customer. Spark's cogroup
hands each bucket to a Python worker as Arrow tables, events on one side and requests and customers on the
other, and the worker scores it with `score_chunk` on the raw rows, as the local engine would.

Output layout: `out` is a Parquet data set of the decisions (`nextbest.scoring.output.OUTPUT_SCHEMA`) and
`out/_rejects` one of the rejected rows (`REJECTS_SCHEMA`). The files are added to `out`: a caller that
reruns a job into it removes the last run's first (`nextbest.batch.claim`, as `nextbest score` does).

PySpark is an optional extra, imported only when a job runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from mlflow.exceptions import MlflowException

from nextbest.batch.chunk import REJECTS_SCHEMA, ScoringOptions, score_chunk
from nextbest.batch.job import REJECTS_DIR, JobInputs
from nextbest.data import CUSTOMERS, EVENTS, REQUESTS, TableSpec, ValidationReport
from nextbest.data.io import count_rows, table_format
from nextbest.data.normalize import normalise_table
from nextbest.errors import DataContractError, NextbestError
from nextbest.registry import tracking_uri_for
from nextbest.scoring.output import output_schema
from nextbest.scoring.pyfunc import ModelLoadError, load_scorer
from nextbest.scoring.scorer import JourneyScorer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Helper columns of the shuffled rows (each table's own columns travel in one struct named after it).
BUCKET = "__nextbest_bucket"
# A row's place in its input: the shuffle loses the order, and the order decides which of two repeated
# rows is kept and how events at the same time are ordered.
ORDER = ("__nextbest_file", "__nextbest_block", "__nextbest_row")
DECISION = "decision"
REJECT = "reject"
# Rows of each table checked on the driver before scoring (see `_check_usable`).
SAMPLE_ROWS = 1000


@dataclass(frozen=True)
class SparkSummary:
    """What a Spark run wrote: requests scored (output rows) and rows rejected."""

    out: Path
    requests: int
    rejected: int
    seconds: float


def run_spark_job(
    model_uri: str,
    inputs: JobInputs,
    out: Path,
    options: ScoringOptions,
    *,
    chunks: int,
    spark_conf: dict[str, str] | None = None,
) -> SparkSummary:
    """Scores `inputs` with Spark into the directory `out` (layout in the module docstring).

    Uses the active SparkSession, or starts one with `spark_conf` (left running for the caller).

    Args:
        chunks: how many buckets the customers are hashed into; a bucket is scored in one worker's
            memory, so it bounds memory per task.

    Raises:
        NextbestError: PySpark is not installed, or `chunks` < 1.
        ModelLoadError: the model cannot be downloaded or loaded.
        DataContractError: a table cannot be used at all (e.g. a required column is missing).
    """
    began = time.perf_counter()
    if chunks < 1:
        raise NextbestError(f"a Spark job needs at least 1 chunk, got {chunks}")
    spark = _session(spark_conf or {})
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    model = _ship_model(spark, model_uri)
    tables = {
        name: _rows_by_bucket(spark, spec, path, chunks) for name, (spec, path) in inputs.tables().items()
    }
    events = tables.pop(EVENTS.name)
    others = reduce(  # requests and customers side by side: a row has one of the two struct columns
        lambda a, b: a.unionByName(b, allowMissingColumns=True),
        tables.values(),
        spark.createDataFrame([], f"{BUCKET} bigint"),
    )
    schema = from_arrow_schema(pa.schema(zip((DECISION, REJECT), _result_types(options), strict=True)))
    score = partial(_score_bucket, model, options, inputs.requests is not None)
    # Both sides hash-partitioned alike, so the cogroup needs no further shuffle: a task per chunk, not
    # spark.sql.shuffle.partitions (200) tasks, most of them empty.
    result = (
        events.repartition(chunks, BUCKET)
        .groupBy(BUCKET)
        .cogroup(others.repartition(chunks, BUCKET).groupBy(BUCKET))
        .applyInArrow(score, schema)
        .persist(StorageLevel.MEMORY_AND_DISK)  # scored once, written twice
    )
    try:
        for column, path in ((DECISION, out), (REJECT, out / REJECTS_DIR)):
            rows = result.where(F.col(column).isNotNull()).select(f"{column}.*")
            # Appended: Spark's "overwrite" would delete all of `out`, files nextbest did not write too.
            rows.write.mode("append").parquet(str(path))
        counts = result.agg(F.count(DECISION), F.count(REJECT)).first()
    finally:
        result.unpersist()
    assert counts is not None  # an aggregate without grouping has one row
    return SparkSummary(out, int(counts[0]), int(counts[1]), time.perf_counter() - began)


def _session(conf: dict[str, str]) -> SparkSession:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise NextbestError("the Spark engine needs PySpark: pip install 'nextbest[spark]'") from exc
    # Workers must run an interpreter that has nextbest; Spark's default is `python3` on the PATH. Read
    # when the SparkContext starts, so spark-submit's own setting (spark.pyspark.python) wins.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # No master is set here: the spark-submit that pyspark launches defaults it to local[*] only when
    # neither `conf`, spark-submit's arguments nor the cluster's spark-defaults name one.
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # The output contract: UTC instants, written as Parquet TIMESTAMP_MICROS (Spark's default is INT96).
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    return spark


def _ship_model(spark: SparkSession, model_uri: str) -> str:
    """Downloads the model on the driver and adds it to the session's files; returns its name there."""
    mlflow.set_tracking_uri(tracking_uri_for(model_uri))  # `models:/name@alias` is resolved in the registry
    directory = Path(tempfile.mkdtemp(prefix="nextbest-model-"))  # a new name: SparkFiles names are unique
    # Spark serves added files from this path for the rest of the session (executors that join later
    # fetch them too), so it is removed when the process ends, not after the job.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(directory))
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(f"cannot load the model {model_uri}: {exc}") from exc
    load_scorer(str(directory))  # a model that cannot load fails here, once, not in every task
    spark.sparkContext.addFile(str(directory), recursive=True)
    return directory.name


def _rows_by_bucket(spark: SparkSession, spec: TableSpec, path: Path, chunks: int) -> DataFrame:
    """The table's rows as one struct column named after it, with their bucket and place in the input."""
    from pyspark.sql import functions as F

    count_rows(path, spec)  # a missing or unreadable table is named here, as the local engine names it
    if table_format(path) == "csv":
        # Every cell as text, as the local engine reads contract columns: quotes escaped as in RFC 4180,
        # and the texts that pyarrow reads as missing ("", "NA", "null", ...) missing.
        sep = "\t" if path.name.lower().endswith(".tsv") else ","
        frame = spark.read.csv(str(path), header=True, sep=sep, escape='"')
        frame = frame.na.replace(pcsv.ConvertOptions().null_values, None)
    else:
        frame = spark.read.parquet(str(path))
    _check_usable(frame, spec, path)
    return frame.select(
        F.pmod(F.xxhash64(F.col("customer_id").cast("string")), F.lit(chunks)).alias(BUCKET),
        # Rows of one file split keep their order in one partition, so these three order the input.
        F.col("_metadata.file_path").alias(ORDER[0]),
        F.col("_metadata.file_block_start").alias(ORDER[1]),
        F.monotonically_increasing_id().alias(ORDER[2]),
        F.struct("*").alias(spec.name),
    )


def _check_usable(frame: DataFrame, spec: TableSpec, path: Path) -> None:
    """Raises, as the local engine does, when a table cannot be used at all (empty, a required column
    missing or of an impossible type): its first rows tell, and every chunk would fail alike."""
    report = ValidationReport()
    if normalise_table(frame.limit(SAMPLE_ROWS).toArrow(), spec, report) is None:
        problems = "\n".join(f"  {finding}" for finding in report.errors)
        raise DataContractError(f"{spec.name} table {path} does not meet the data contract:\n{problems}")


def _result_types(options: ScoringOptions) -> tuple[pa.StructType, pa.StructType]:
    """The Arrow types of a decision and of a reject row."""
    output = output_schema(explained=options.explain > 0)
    return pa.struct(list(output)), pa.struct(list(REJECTS_SCHEMA))


# Per Python worker (Spark reuses them across tasks): a model is loaded once, not once per bucket.
_SCORERS: dict[str, JourneyScorer] = {}


def _score_bucket(
    model: str, options: ScoringOptions, requests_given: bool, events: pa.Table, others: pa.Table
) -> pa.Table:
    """Scores one bucket (runs on an executor): its decisions and rejects, one struct column each."""
    from pyspark import SparkFiles

    decision_type, reject_type = _result_types(options)
    requests = _table(others, REQUESTS.name)
    if requests_given and requests is None:  # no request falls in this bucket
        decisions, rejects = pa.schema(list(decision_type)).empty_table(), REJECTS_SCHEMA.empty_table()
    else:
        if model not in _SCORERS:
            _SCORERS.clear()  # a worker keeps only the model of the job it runs
            _SCORERS[model] = load_scorer(SparkFiles.get(model))
        scored = score_chunk(
            _SCORERS[model], _table(events, EVENTS.name), requests, _table(others, CUSTOMERS.name), options
        )
        decisions, rejects = scored.decisions, scored.rejects
    n, m = decisions.num_rows, rejects.num_rows
    return pa.table(
        {
            DECISION: pa.chunked_array(
                [*decisions.to_struct_array().chunks, pa.nulls(m, decision_type)], decision_type
            ),
            REJECT: pa.chunked_array(
                [pa.nulls(n, reject_type), *rejects.to_struct_array().chunks], reject_type
            ),
        }
    )


def _table(side: pa.Table, name: str) -> pa.Table | None:
    """The raw rows of table `name` on one side of a cogroup, in input order; None if it has none."""
    if name not in side.column_names:
        return None
    rows = side.filter(pc.is_valid(side.column(name)))
    if rows.num_rows == 0:
        return None
    return pa.Table.from_struct_array(rows.sort_by([(column, "ascending") for column in ORDER]).column(name))
