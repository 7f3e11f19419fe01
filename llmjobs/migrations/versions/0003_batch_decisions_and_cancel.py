"""add batches.decisions and batches.cancel_requested_at

decisions: the final result counts per moderation decision, written when a moderate
batch finishes, so that `llmjobs status` on a finished batch reads one row instead of
counting every result. Batches finished before this revision have none, and `status`
counts their results as before.

cancel_requested_at: set by `llmjobs cancel`, so that jobs that go back to the queue
afterwards (released on shutdown, or left running by a dead worker) are cancelled
instead of run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 23:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decisions", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested_at")
        batch_op.drop_column("decisions")
