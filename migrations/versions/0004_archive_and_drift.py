"""archive objects and ETags on uploads; photo changes (rollback, prune, fix); drift

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("replaced_object", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("uploaded_object", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("etag_after", sa.String(length=256), nullable=True))
    op.create_table(
        "photo_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("before_object", sa.String(length=64), nullable=True),
        sa.Column("written_object", sa.String(length=64), nullable=True),
        sa.Column("etag_after", sa.String(length=256), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_photo_changes_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name=op.f("fk_photo_changes_upload_id_uploads")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photo_changes")),
    )
    op.create_index("ix_photo_changes_upload_id", "photo_changes", ["upload_id"])
    op.create_index("ix_photo_changes_user_id", "photo_changes", ["user_id"])
    op.create_table(
        "photo_drift",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expected_etag", sa.String(length=256), nullable=True),
        sa.Column("seen_etag", sa.String(length=256), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_run_id"], ["runs.id"], name=op.f("fk_photo_drift_last_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_photo_drift")),
    )


def downgrade() -> None:
    op.drop_table("photo_drift")
    op.drop_index("ix_photo_changes_user_id", table_name="photo_changes")
    op.drop_index("ix_photo_changes_upload_id", table_name="photo_changes")
    op.drop_table("photo_changes")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("etag_after")
        batch.drop_column("uploaded_object")
        batch.drop_column("replaced_object")
