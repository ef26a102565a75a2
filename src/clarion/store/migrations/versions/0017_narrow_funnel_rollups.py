"""narrow funnel rollups (channel and provider only) for the usual answers, instead of a covering index

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.store.tables import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NARROW = {"funnel_hourly_channels": "funnel_hourly", "funnel_daily_channels": "funnel_daily"}
KEY = ["bucket", "channel", "provider", "stage", "policy"]


def upgrade() -> None:
    for wide in ("funnel_hourly", "funnel_daily"):
        op.drop_index(f"ix_{wide}_answers", table_name=wide)
    for name, wide in NARROW.items():
        op.create_table(
            name,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
            sa.Column("bucket", UTCDateTime(timezone=True), nullable=False),
            sa.Column("channel", sa.String(20), nullable=False),
            sa.Column("provider", sa.String(128), nullable=False),
            sa.Column("stage", sa.String(16), nullable=False),
            sa.Column("policy", sa.String(32), nullable=False),
            sa.Column("count", sa.BigInteger(), nullable=False),
            sa.Column("revenue", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        )
        op.create_index(f"ux_{name}_key", name, KEY, unique=True)
        columns = ", ".join(KEY)
        op.execute(
            f"INSERT INTO {name} ({columns}, count, revenue) "
            f"SELECT {columns}, SUM(count), SUM(revenue) FROM {wide} GROUP BY {columns}"
        )


def downgrade() -> None:
    for name in NARROW:
        op.drop_index(f"ux_{name}_key", table_name=name)
        op.drop_table(name)
    columns = ["bucket", "stage", "policy", "channel", "provider", "count", "revenue"]
    for wide in ("funnel_hourly", "funnel_daily"):
        op.create_index(f"ix_{wide}_answers", wide, columns)
