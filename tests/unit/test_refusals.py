"""BentoML's log record of a refused request becomes one warning line without the request's values."""

from __future__ import annotations

import logging
import sys

from pydantic import BaseModel, ValidationError

from nextbest_serving.refusals import RefusalLogFilter


class Event(BaseModel):
    value: float
    extra: dict[str, int]


def logged_refusal(body: dict[str, object]) -> logging.LogRecord:
    try:
        Event.model_validate(body)
    except ValidationError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.ERROR, "f", 1, "Exception on %s [%s]", ("/rank", "POST"), exc_info
    )
    assert RefusalLogFilter().filter(record)
    return record


def test_the_record_names_fields_and_error_types_only() -> None:
    record = logged_refusal({"value": "sk-secret-value", "extra": {"key\nforged line": "sk-other"}})
    line = record.getMessage()
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert line == "refused a request to /rank: value (float_parsing), extra.key\\nforged line (int_parsing)"
    assert "sk-" not in line
    assert "\n" not in line


def test_other_records_pass_unchanged() -> None:
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "boom %s", ("a",), None)
    assert RefusalLogFilter().filter(record)
    assert (record.levelno, record.getMessage()) == (logging.ERROR, "boom a")
