"""Logging for unattended runs: text for people, JSON lines for Azure Monitor / Log Analytics."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from reconciler.names import one_line

# Structured fields callers pass with `extra=`; JSON lines carry them as top-level keys.
FIELDS = ("run_id", "file", "user_id", "action", "http_status", "client_request_id")


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": one_line(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = one_line(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class OneLineFormatter(logging.Formatter):
    """Text lines whose message cannot span lines or break the encoder, whatever a file
    name holds (a newline, a byte that is not UTF-8); a traceback still follows as is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


class RunIdFilter(logging.Filter):
    """Stamps every record with the current run id, so one run's lines can be grouped."""

    def __init__(self) -> None:
        super().__init__()
        self.run_id: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = self.run_id
        return True


RUN_ID = RunIdFilter()


def configure(level: str, fmt: str, file: Path | None) -> None:
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RUN_ID)
    root = logging.getLogger("reconciler")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()  # a log file left open would leak one descriptor per configure()
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    # azure-identity logs request URLs and, at DEBUG, headers; keep it to real problems.
    logging.getLogger("azure").setLevel(logging.ERROR)
