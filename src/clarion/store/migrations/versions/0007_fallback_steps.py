"""fallback steps: a template's channel fallback waiting to fire, durable across restarts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clarion.store.tables

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fallback_steps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("original_id", sa.String(length=32), nullable=False),
        sa.Column("fallback_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.SmallInteger(), nullable=False),
        sa.Column("when", sa.String(length=16), nullable=False),
        sa.Column("within", sa.Integer(), nullable=True),
        sa.Column("run_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_until", clarion.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fallback_steps")),
    )
    with op.batch_alter_table("fallback_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fallback_steps_message_id"), ["message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fallback_steps_original_id"), ["original_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fallback_steps_state_run_at"), ["state", "run_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fallback_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fallback_steps_state_run_at"))
        batch_op.drop_index(batch_op.f("ix_fallback_steps_original_id"))
        batch_op.drop_index(batch_op.f("ix_fallback_steps_message_id"))
    op.drop_table("fallback_steps")
