"""Refused requests in the log and in Prometheus, without what they contained.

BentoML logs every request that fails validation at ERROR with a traceback, and pydantic's message quotes
the values it refused: request contents in the log (a privacy problem), and megabytes of it under a fuzzer.
`RefusalLogFilter` turns each such record into one warning line that names the endpoint, the fields and
the error types only, and counts it in `nextbest_refused_requests_total{endpoint, error}` (pydantic's
error types are a fixed set, and the endpoints are the service's routes).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from pydantic import ValidationError

# The logger of BentoML's `log_exception`, which its API wrapper calls on a refused request.
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"
MAX_FIELDS = 5  # a request with many errors is named by its first few


class RefusalLogFilter(logging.Filter):
    """Rewrites BentoML's log record of a request that failed validation; other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, ValidationError):
            return True
        endpoint = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        problems = error.errors(include_input=False, include_context=False, include_url=False)
        _refusals().labels(endpoint, problems[0]["type"] if problems else "unknown").inc()
        named = ", ".join(f"{_field(p['loc'])} ({p['type']})" for p in problems[:MAX_FIELDS])
        more = f" and {len(problems) - MAX_FIELDS} more" if len(problems) > MAX_FIELDS else ""
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "refused a request to %s: %s%s", (endpoint, named, more)
        record.exc_info = record.exc_text = None
        return True


def install() -> None:
    """Puts the filter on BentoML's request logger (once per process)."""
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, RefusalLogFilter) for f in logger.filters):
        logger.addFilter(RefusalLogFilter())


def _field(location: tuple[int | str, ...]) -> str:
    """A field path, with JSON escapes: a key a caller chose cannot break the line or forge another."""
    return ".".join(json.dumps(part)[1:-1][:40] if isinstance(part, str) else str(part) for part in location)


@functools.cache
def _refusals() -> Any:
    """Created in the worker, once: prometheus_client must start after BentoML sets its multiprocess
    directory."""
    from prometheus_client import Counter

    return Counter(
        "nextbest_refused_requests",
        "Requests refused because their body failed validation, by endpoint and first error type",
        ["endpoint", "error"],
    )
