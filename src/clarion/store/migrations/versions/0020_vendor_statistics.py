"""vendor statistics: each account's day as its vendor's statistics API counts it

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from clarion.store.tables import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "vendor_statistics",
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("utc_offset", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=True),
        sa.Column("delivered", sa.Integer(), nullable=True),
        sa.Column("failed", sa.Integer(), nullable=True),
        sa.Column("billed_segments", sa.Integer(), nullable=True),
        sa.Column("fee", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("reported", JSON, nullable=False),
        sa.Column("fetched_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "day", name=op.f("pk_vendor_statistics")),
    )


def downgrade() -> None:
    op.drop_table("vendor_statistics")
