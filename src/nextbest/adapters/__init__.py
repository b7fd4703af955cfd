"""Adapters that convert public data sets into the contract tables (DESIGN.md §2).

Each adapter reads one source file in place and returns a `ConvertedDataset`; `write_dataset` writes it
as ``events.parquet``, ``labels.parquet``, ``customers.parquet`` (when the source has customers) and
``dataset.json`` (provenance: source file and checksum, counts, positive rates, protocol, license).

* `read_criteo` -- Criteo attribution journeys, conversion labels (`nextbest.adapters.criteo`).
* `read_cdnow` -- CDNOW purchase histories, churn / repeat-purchase labels (`nextbest.adapters.cdnow`).

The module docstrings of the adapters document each mapping and labelling protocol.
"""

from __future__ import annotations

from nextbest.adapters._output import ConvertedDataset, format_summary, write_dataset
from nextbest.adapters.cdnow import read_cdnow
from nextbest.adapters.criteo import read_criteo

__all__ = ["ConvertedDataset", "format_summary", "read_cdnow", "read_criteo", "write_dataset"]
