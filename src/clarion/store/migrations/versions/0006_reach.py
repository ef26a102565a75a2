"""reach: provider routes, receipts kept until they can be applied, delivery expiry and fallback links,
template ttl and fallback chains

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import clarion.store.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("match", JSON, nullable=False),
        sa.Column("providers", JSON, nullable=False),
        sa.Column("failover", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_routes")),
    )
    op.create_table(
        "receipts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("provider_message_id", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("received_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_receipts_provider_provider_message_id"), ["provider", "provider_message_id"], unique=False
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("fallback_of", sa.String(length=32), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_deliveries_provider_provider_message_id"), ["provider", "provider_message_id"], unique=False
        )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ttl_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("fallback", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("fallback")
        batch_op.drop_column("ttl_seconds")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_provider_provider_message_id"))
        batch_op.drop_column("fallback_of")
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipts_provider_provider_message_id"))
    op.drop_table("receipts")
    op.drop_table("routes")
