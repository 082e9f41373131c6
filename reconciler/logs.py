"""Logging for unattended runs: text for people, JSON lines for Azure Monitor / Log Analytics.

At `info` a run logs its start (with its settings, secrets left out), each upload, and its
summary; a fatal error is logged too, so that it reaches --log-file (README, "Logs").
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ConfigError
from reconciler.ledger.url import plain_sqlite_file
from reconciler.names import one_line

if TYPE_CHECKING:
    from reconciler.config import Settings
    from reconciler.model import RunSummary

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
    """Send the 'reconciler' logger to `file` (else stderr); a log file that cannot be
    written is the operator's to fix: a ConfigError naming it, not a traceback."""
    handler: logging.Handler
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                "log_file",
                f"cannot write the log file {file} ({exc.strerror or exc}); point log_file "
                "at a file this account can create or append to",
            ) from None
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


def to_stderr() -> bool:
    """Do the 'reconciler' logs go to stderr (no --log-file)?"""
    handlers = logging.getLogger("reconciler").handlers
    return any(getattr(handler, "stream", None) is sys.stderr for handler in handlers)


def settings_for_log(settings: Settings) -> str:
    """Every setting as `name=value`, for the run's first log line: secrets are left out,
    and a database URL's password is masked."""
    from reconciler.config import SETTINGS

    parts = []
    for spec in SETTINGS:
        if spec.secret:
            continue
        value = getattr(settings, spec.name, None)
        if spec.name == "database_url" and isinstance(value, str):
            value = _without_password(value)
        parts.append(f"{spec.name}={value}")
    return " ".join(parts)


def _without_password(database_url: str) -> str:
    """The URL with its password masked; a plain SQLite URL has none to mask, and is shown
    without importing SQLAlchemy (reconciler/ledger/url.py)."""
    if plain_sqlite_file(database_url) is not None:
        return database_url
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


_RUN_LOG = logging.getLogger("reconciler")  # the logger app.py logs a run with


def run_started(run_id: int, command: str, dry_run: bool, settings: Settings) -> None:
    """A run's first line, with its settings; every later line of the run carries its id."""
    RUN_ID.run_id = run_id
    dry = " (dry run)" if dry_run else ""
    _RUN_LOG.info("run %d started: %s%s with %s", run_id, command, dry, settings_for_log(settings))


def run_finished(summary: RunSummary, exit_code: int, error: str | None) -> None:
    """A run's last line: how it ended and what it did."""
    counts = ", ".join(f"{o.value} {n}" for o, n in summary.counts.items() if n)
    _RUN_LOG.info(
        "run %d finished: exit %d; %s; %d Graph requests in %.1fs%s",
        summary.run_id,
        exit_code,
        counts or "nothing to do",
        summary.graph_requests,
        summary.duration_s,
        f"; {error}" if error else "",
    )
    RUN_ID.run_id = None


def ledger_file_warned(warnings: list[str]) -> None:
    """Each problem with the ledger file, every run, in the log and on stderr (once when the
    log already goes to stderr)."""
    for warning in warnings:
        _RUN_LOG.warning("%s", warning)
        if not to_stderr():
            print(f"photosync: warning: {warning}", file=sys.stderr)
