"""Worker logs: plain text or JSON lines (``CALLGUARD_LOG_FORMAT``), numbers always masked.

callguard's own messages never contain a phone number; libraries may (an
exception that quotes a message, a repr of an event), so every formatted line
also goes through :func:`scrub`, which masks anything shaped like a phone
number the way :func:`callguard.core.numbers.mask` does. It is a safety net, so it
errs on the side of masking: a 9-to-15-digit offset is masked too.

A JSON line is ``{"ts", "level", "logger", "msg", "pid"}`` plus ``event`` (a
stable name for notable events: ``worker_started``, ``partitions_assigned``,
``redis_lookup_failed``, …) and any other ``extra`` fields, and ``exc`` with
the traceback when there is one.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from callguard.core.numbers import mask

#: Something a person would read as a phone number: optional ``+``, then
#: 9-15 digits, possibly grouped by spaces, dots, dashes or brackets.
_NUMBER = re.compile(r"(?<![\w+])\+?\(?\d(?:[ .\-()]{0,2}\d){8,14}(?!\w)")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

#: Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    if _ISO_DATE.match(text.lstrip("+(")):  # a date followed by a time, not a phone number
        return text
    digits = re.sub(r"\D", "", text)
    return mask(("+" if text.startswith("+") else "") + digits)


def scrub(text: str) -> str:
    """Mask every phone-number-shaped run of ``text``."""
    return _NUMBER.sub(_mask_match, text)


class TextFormatter(logging.Formatter):
    """``[time] [pid] [LEVEL] message``, scrubbed."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = scrub(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return scrub(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return scrub(super().formatStack(stack_info))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = scrub(self.formatStack(record.stack_info))
        return orjson.dumps(line, default=lambda v: scrub(str(v))).decode()


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the worker (handed to Faust's worker,
    which would otherwise install its own coloured formatter)."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"callguard": {"()": formatter}},
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "callguard", "stream": sys.stdout},
        },
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        # aiokafka reports every rebalance and reconnect at INFO/WARNING; keep them but not their chatter
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }
