"""The audit report of files that have not landed: table, CSV, JSON. Built from the ledger
alone; no Graph call."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

# Stable column order: the CSV and JSON formats are documented in the README.
COLUMNS = (
    "file",
    "reason",
    "detail",
    "user",
    "candidates",
    "attempts",
    "first_seen",
    "last_attempt",
    "location",
    "path",
)


@dataclass(frozen=True)
class ReportRow:
    file: str
    reason: str  # unmatched / ambiguous / ineligible / invalid / failed / deferred
    detail: str
    user: str | None
    candidates: list[str]
    attempts: int | None
    first_seen: datetime | None
    last_attempt: datetime | None
    location: str  # inbox / failed
    path: str  # where the file is now

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("first_seen", "last_attempt"):
            value = data[key]
            data[key] = value.isoformat(timespec="seconds") if value else None
        return data


def to_json(rows: Sequence[ReportRow]) -> str:
    return json.dumps([row.as_dict() for row in rows], indent=2, ensure_ascii=False)


def to_csv(rows: Sequence[ReportRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        data = row.as_dict()
        data["candidates"] = "; ".join(row.candidates)
        writer.writerow(data)
    return buffer.getvalue()


def to_table(rows: Sequence[ReportRow]) -> str:
    if not rows:
        return "Every file has landed."
    width = max(len(r.file) for r in rows)
    lines = [f"{'FILE':<{width}}  {'REASON':<10}  DETAIL"]
    for row in rows:
        lines.append(f"{row.file:<{width}}  {row.reason:<10}  {row.detail}")
    return "\n".join(lines)
