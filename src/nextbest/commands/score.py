"""`nextbest score`: batch scoring of contract tables with a registered (or any MLflow) nextbest model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextbest.batch.buckets import DEFAULT_CHUNK_EVENTS
from nextbest.errors import NextbestError

if TYPE_CHECKING:
    from nextbest.batch.chunk import ScoringOptions
    from nextbest.batch.job import JobInputs

DESCRIPTION = """\
Score customers with a nextbest model: P(conversion) and P(churn) with no action, and the catalog's
actions ranked by expected value under its rules and contact limits. Writes a directory of Parquet part
files, one row per request: customer_id, as_of, model_version, p_conversion, p_churn, top_action,
actions (action, rank, score, uplift, p_conversion, p_churn) and suppressed (action, reason). Columns of
--requests beyond customer_id and as_of are the context that catalog rules read.

The input is scored in chunks of customers with bounded memory, whatever its size. A chunk's part file
appears only when complete, so an interrupted run (Ctrl-C, SIGTERM, SIGKILL) resumes when run again with
the same arguments, and every request lands in the output exactly once. A customer whose event or
profile rows break the data contract is not scored: its rows and requests go to OUT/_rejects with the
reason, and the rest finish.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "score",
        help="batch-score customers with a model from the MLflow registry",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="MLflow model URI, e.g. models:/nextbest@champion (tracking store: MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profiles)")
    parser.add_argument(
        "--requests",
        type=Path,
        metavar="PATH",
        help="customer_id, as_of table of the moments to score (default: every customer, just after "
        "its last event)",
    )
    parser.add_argument(
        "--catalog",
        type=Path,
        metavar="FILE",
        help="action catalog (YAML) used instead of the model's packaged one, for what-if runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output directory of Parquet part files (read it as one data set); rejects in DIR/_rejects",
    )
    parser.add_argument("--top-k", type=int, metavar="K", help="keep the K best actions (default: all)")
    parser.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="add an evidence column: the N history events that weighed most in each served action's "
        "value, by occlusion (one more forward pass per event; default 0: off)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1024, metavar="N", help="requests per model call (default 1024)"
    )
    parser.add_argument(
        "--chunk-events",
        type=int,
        default=DEFAULT_CHUNK_EVENTS,
        metavar="N",
        help=f"about how many events a chunk of customers holds; memory grows with it, not with the "
        f"input (default {DEFAULT_CHUNK_EVENTS:,})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output instead of resuming it. Only the files that the output's "
        "_job.json lists as written by nextbest score are removed, and only when DIR holds nothing else: "
        "a file it did not write stops the command, named, before anything is removed. DIR is never a "
        "file, nor an input, nor a folder that holds or lies inside one",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: this process; spark: the same job on PySpark (needs nextbest[spark])",
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for --engine spark, e.g. spark.master=spark://host:7077 (repeatable; "
        "default master: local[*] unless spark-submit or spark-defaults.conf set one)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.top_k < 1:
        raise NextbestError(f"--top-k must be at least 1, got {args.top_k}")
    if args.explain < 0:
        raise NextbestError(f"--explain must be 0 or more, got {args.explain}")
    if args.batch_size < 1:
        raise NextbestError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.chunk_events < 1:
        raise NextbestError(f"--chunk-events must be at least 1, got {args.chunk_events}")
    spark_conf = _spark_conf(args.spark_conf)
    # MLflow is imported only by the commands that need it: it takes seconds.
    from nextbest.batch.chunk import ScoringOptions
    from nextbest.batch.job import JobInputs, file_digest, run_job
    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.scoring.memory import keep_freed_memory
    from nextbest.scoring.pyfunc import load_version

    scorer, version = load_version(args.model)
    catalog = None if args.catalog is None else ActionCatalog.from_yaml(args.catalog)
    if catalog is not None:
        scorer.check_catalog(catalog)  # before any output: a bad rule must not leave a partial one
    options = ScoringOptions(version, catalog, args.top_k, args.explain, args.batch_size)
    inputs = JobInputs(args.events, args.requests, args.customers, args.catalog)
    description = {
        "model": args.model,
        "model_version": version,
        "catalog": None if args.catalog is None else file_digest(args.catalog),
    }
    if args.engine == "spark":
        _run_on_spark(args, inputs, options, description, spark_conf)
        return 0
    keep_freed_memory()
    try:
        summary = run_job(
            scorer,
            inputs,
            args.out,
            options,
            description=description,
            chunk_events=args.chunk_events,
            overwrite=args.overwrite,
            progress=True,
        )
    except KeyboardInterrupt:
        print(f"nextbest: interrupted; run the same command again to resume {args.out}", file=sys.stderr)
        raise
    print(summary.render())
    return 0


def _run_on_spark(
    args: argparse.Namespace,
    inputs: JobInputs,
    options: ScoringOptions,
    description: dict[str, Any],
    spark_conf: dict[str, str],
) -> None:
    """The same job on Spark: one task per chunk; Spark retries failed tasks, and a rerun starts over."""
    from nextbest.batch.buckets import chunk_count
    from nextbest.batch.claim import claim_output, record_job, written_files
    from nextbest.batch.job import describe_job
    from nextbest.batch.spark import run_spark_job

    chunks = chunk_count(args.events, args.chunk_events)
    job = describe_job(description, inputs, options, chunks, engine="spark")
    # Spark names its files itself: the record lists them once they are written.
    claim_output(args.out, job, [], inputs.paths(), overwrite=args.overwrite, resumable=False)
    summary = run_spark_job(args.model, inputs, args.out, options, chunks=chunks, spark_conf=spark_conf)
    record_job(args.out, job, written_files(args.out))
    rate = summary.requests / max(summary.seconds, 1e-9)
    print(
        f"Scored {summary.requests:,} requests on Spark in {summary.seconds:.1f} s "
        f"({rate:,.0f} customers/s); "
        f"wrote {args.out}.\nRejected {summary.rejected:,} rows"
        + (f" (see {args.out / '_rejects'})." if summary.rejected else ".")
    )


def _spark_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NextbestError(f"--spark-conf takes KEY=VALUE, got {pair!r}")
        conf[key.strip()] = value.strip()
    return conf
