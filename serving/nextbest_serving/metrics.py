"""What the service decides, in Prometheus (`/metrics`), with bounded label sets only.

| metric | labels | what |
|---|---|---|
| `nextbest_model_batch_size` | endpoint | requests scored together in one model call |
| `nextbest_decisions_total` | action, control | answers by served action ("none": nothing eligible) |
| `nextbest_suppressions_total` | action, rule | suppressed actions by kind of rule ("contact limit") |
| `nextbest_fallbacks_total` | | answers given in the catalog's default order (the deadline passed) |
| `nextbest_served_expected_value` | | the served action's expected value, in the catalog's units |
| `nextbest_model_version` | version | 1 for the version a worker serves, 0 for one it served before |

Actions come from the catalog, rule kinds from `nextbest.decisioning.policy` (the text before the first
colon of a reason), versions from the registry: none from what a request says. Each metric is created in
the worker, once: prometheus_client must start after BentoML has set its multiprocess directory.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from nextbest.scoring.schemas import RankResponse

NOTHING_SERVED = "none"
# The served expected value's buckets: catalog units vary, so they span several orders of magnitude.
VALUE_BUCKETS = (-100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)


def record_answers(answers: Sequence[RankResponse]) -> None:
    """Counts what each answer served and suppressed (fallback answers count as fallbacks only)."""
    metrics = _metrics()
    for answer in answers:
        if answer.fallback is not None:
            metrics["fallbacks"].inc()
            continue
        served = answer.chosen_action or NOTHING_SERVED
        metrics["decisions"].labels(served, str(answer.control).lower()).inc()
        for suppressed in answer.suppressed:
            metrics["suppressions"].labels(suppressed.action, suppressed.reason.split(":")[0]).inc()
        value = next((a.score for a in answer.actions if a.action == answer.chosen_action), None)
        if value is not None:
            metrics["served_value"].observe(value)


def record_version(version: str, previous: str | None = None) -> None:
    """The version a worker serves now (and, after a reload, the one it no longer serves)."""
    gauge = _metrics()["version"]
    if previous is not None:
        gauge.labels(previous).set(0)
    gauge.labels(version).set(1)


def batch_sizes() -> Any:
    """The histogram of requests per model call, by endpoint: how well batching works."""
    return _metrics()["batch_sizes"]


@functools.cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "batch_sizes": Histogram(
            "nextbest_model_batch_size",
            "Requests scored together in one model call",
            ["endpoint"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        ),
        "decisions": Counter(
            "nextbest_decisions", "Answers by served action and control group", ["action", "control"]
        ),
        "suppressions": Counter(
            "nextbest_suppressions",
            "Actions suppressed in answers, by action and kind of rule",
            ["action", "rule"],
        ),
        "fallbacks": Counter(
            "nextbest_fallbacks", "Answers in the catalog's default order (deadline passed)"
        ),
        "served_value": Histogram(
            "nextbest_served_expected_value",
            "Expected value of the served action, in the catalog's units",
            buckets=VALUE_BUCKETS,
        ),
        # Each live worker reports its own: with several workers, one series per worker and version.
        "version": Gauge(
            "nextbest_model_version",
            "1 for the model version served",
            ["version"],
            multiprocess_mode="liveall",
        ),
    }
