"""users: unknown eligibility is NULL; external-account properties

Delta items are patches, so a user's accountEnabled may be unknown until Graph says it:
the column becomes nullable (NULL is never read as enabled). creationType and
externalUserState mark B2B accounts (docs/graph-behaviour.md, "External accounts").

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("account_enabled", existing_type=sa.Boolean(), nullable=True)
        batch.add_column(sa.Column("creation_type", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("external_user_state", sa.String(length=64), nullable=True))
    # Users stored before this revision may hold eligibility guessed from partial delta
    # items, and none has the new properties: forget the delta link so the next run that
    # needs users lists them all afresh.
    op.execute("DELETE FROM sync_state WHERE key = 'users.delta_link'")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("external_user_state")
        batch.drop_column("creation_type")
        batch.alter_column("account_enabled", existing_type=sa.Boolean(), nullable=False)
