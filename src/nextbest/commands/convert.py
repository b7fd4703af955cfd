"""`nextbest convert`: turn a public data set into the contract tables.

``nextbest convert criteo --input FILE --out DIR [--limit N]`` and
``nextbest convert cdnow --input FILE --out DIR`` write ``events.parquet``, ``labels.parquet``,
``customers.parquet`` (Criteo only) and ``dataset.json`` into DIR. The mappings and labelling protocols
are documented in `nextbest.adapters.criteo` and `nextbest.adapters.cdnow`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_CRITEO_HELP = "Criteo attribution journeys (JSON lines): one customer per journey, conversion labels"
_CDNOW_HELP = "CDNOW purchase histories: churn / repeat-purchase labels, 39-week calibration and holdout"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``convert`` command and its per-data-set subcommands."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a public data set (criteo, cdnow) into the contract tables",
        description="Convert a public data set into events, labels (and customers) Parquet tables "
        "plus a dataset.json with provenance.",
    )
    sources = parser.add_subparsers(title="data sets", metavar="DATASET", required=True)

    criteo = sources.add_parser("criteo", help=_CRITEO_HELP, description=_CRITEO_HELP + ".")
    _add_paths(criteo, "train_journeys.jsonl")
    criteo.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="keep only the first N journeys (quick runs; the file lists unconverted journeys first)",
    )
    criteo.set_defaults(handler=_convert_criteo)

    cdnow = sources.add_parser("cdnow", help=_CDNOW_HELP, description=_CDNOW_HELP + ".")
    _add_paths(cdnow, "CDNOW_master.txt")
    cdnow.set_defaults(handler=_convert_cdnow)


def _add_paths(parser: argparse.ArgumentParser, source_file: str) -> None:
    parser.add_argument(
        "--input", required=True, type=Path, metavar="PATH", help=f"the source file ({source_file})"
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# The adapters are imported when a conversion runs, not when the parser is built, so that every other
# command starts without loading pandas.
def _convert_criteo(args: argparse.Namespace) -> int:
    from nextbest.adapters import format_summary, read_criteo, write_dataset

    ds = read_criteo(args.input, limit=args.limit)
    print(format_summary(ds, write_dataset(ds, args.out)))
    return 0


def _convert_cdnow(args: argparse.Namespace) -> int:
    from nextbest.adapters import format_summary, read_cdnow, write_dataset

    ds = read_cdnow(args.input)
    print(format_summary(ds, write_dataset(ds, args.out)))
    return 0
