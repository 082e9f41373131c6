"""Which migration a ledger is at, and what that means for this photosync: without Alembic,
so a run against a ledger already at head never imports it (docs/architecture.md)."""

from __future__ import annotations

# The newest migration in migrations/versions. A new migration must change this too:
# tests/test_ledger.py checks it is Alembic's head.
HEAD_REVISION = "0005"

# Where Alembic keeps the revision a database is at (its default table name).
VERSION_TABLE = "alembic_version"


def revision_problem(
    where: str, current: str | None, head: str | None, known: frozenset[str], *, migrating: bool
) -> str | None:
    """What stops photosync from using a ledger at revision `current`, or None. A run
    (`migrating`) brings an older ledger to head itself; a reader only says how to."""
    if current == head:
        return None
    if current is not None and current not in known:
        return (
            f"the ledger {where} is at revision {current}, newer than this photosync "
            f"({head}); upgrade photosync"
        )
    if migrating:
        return None
    if current is None:
        return (
            f"the ledger {where} holds no photosync tables yet; run `photosync db upgrade` "
            "or a first `photosync reconcile`"
        )
    return (
        f"the ledger {where} is at revision {current}, behind this photosync ({head}); "
        "run `photosync db upgrade`"
    )
