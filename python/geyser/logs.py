"""Log output of Geyser's commands: ``--log-format text`` (the default) or ``json``.

``python -m geyser.worker`` (its supervisor and every child) and ``python -m geyser.server``
call ``configure`` once at start. ``json`` writes one JSON object per line with ``ts``
(ISO 8601, UTC), ``level``, ``logger`` and ``message``, the job fields a record carries
(``JOB_FIELDS``, given as ``extra=`` by ``geyser.worker``) as keys of their own, and an
exception's traceback as the string ``traceback``. This module only formats records;
it touches no queue or store.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

__all__ = ["FORMATS", "JOB_FIELDS", "JsonFormatter", "TEXT_FORMAT", "configure"]

#: The values of ``--log-format``.
FORMATS = ("text", "json")
#: The format of ``--log-format text``.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Record attributes copied into a JSON line when a record has them (a job's transition).
JOB_FIELDS = ("uuid", "job_type", "queue", "attempt", "duration_s", "outcome")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        from datetime import datetime, timezone  # here: a text log never needs it

        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["traceback"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def configure(level: str, fmt: str = "text") -> None:
    """Send log records of ``level`` and above to stderr in format ``fmt`` (one of ``FORMATS``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(FORMATS)})")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level.upper())  # a logger set lower to count records (geyser.metrics) prints no more
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
