"""add the pipeline source tables and the run owner columns

Source files and SQL watermarks let a pipeline read each input once; the owner and
heartbeat of a run show whether the process running it is still alive.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:20:38.896477
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pipeline_source_files",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("run_id", _ID, nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
            name=op.f("fk_pipeline_source_files_run_id_pipeline_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_source_files")),
        sa.UniqueConstraint(
            "pipeline", "path", "sha256", name=op.f("uq_pipeline_source_files_pipeline_path_sha256")
        ),
    )
    with op.batch_alter_table("pipeline_source_files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_source_files_run_id"), ["run_id"], unique=False
        )

    op.create_table(
        "pipeline_watermarks",
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("run_id", _ID, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
            name=op.f("fk_pipeline_watermarks_run_id_pipeline_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("pipeline", name=op.f("pk_pipeline_watermarks")),
    )

    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("owner")

    op.drop_table("pipeline_watermarks")
    with op.batch_alter_table("pipeline_source_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_source_files_run_id"))
    op.drop_table("pipeline_source_files")
