"""The keys of the ledger's sync_state table (one value per key), and what their values
say. Standard library only: the idle run reads them with sqlite3 (reconciler/idle.py)."""

from __future__ import annotations

from pathlib import Path

DELTA_LINK = "users.delta_link"
# When the users were last listed in full (ISO 8601, UTC): the backstop for what delta
# rounds miss (docs/graph-behaviour.md, "Full listing as a backstop").
FULL_LISTING_AT = "users.full_listing_at"
# The archive as the last trim left it: archive_keep versions per user in this folder. A
# run with nothing to do skips the trim only while the settings still say the same.
ARCHIVE_TRIMMED = "archive.trimmed"


def archive_trim_mark(keep: int, root: Path) -> str:
    """ARCHIVE_TRIMMED's value for a trim to `keep` versions in the archive at `root`."""
    return f"{keep} {root}"
