"""uploads: quality notes on each uploaded photo

The notes (no face found, several faces, face too small, blurred, too dark or bright) are
recorded with every upload so `photosync runs show` and the reports can say them later
(reconciler/faces/quality.py). Uploads made before this revision have none (NULL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("quality_notes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("quality_notes")
