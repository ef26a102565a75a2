"""sms replies: users' mobile-originated SMS and what their keywords did

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clarion.store.tables

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_replies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("vendor_id", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("to", sa.String(length=64), nullable=True),
        sa.Column("sign", sa.String(length=64), nullable=True),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=True),
        sa.Column("suppression_id", sa.String(length=32), nullable=True),
        sa.Column("confirmation", sa.String(length=10), nullable=True),
        sa.Column("confirmation_reason", sa.Text(), nullable=True),
        sa.Column("received_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_replies")),
        sa.UniqueConstraint("provider", "vendor_id", name=op.f("uq_sms_replies_provider_vendor_id")),
    )
    with op.batch_alter_table("sms_replies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_replies_phone"), ["phone"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sms_replies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_replies_phone"))
    op.drop_table("sms_replies")
