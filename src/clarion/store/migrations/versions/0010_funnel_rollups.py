"""funnel rollups, hourly and daily, kept with the timeline

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DIMS = (
    "template_key",
    "template_version",
    "variant",
    "campaign_key",
    "campaign_run",
    "category",
    "department",
    "channel",
    "provider",
)


def upgrade() -> None:
    for name in ("funnel_hourly", "funnel_daily"):
        op.create_table(
            name,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
            sa.Column("bucket", UTCDateTime(timezone=True), nullable=False),
            sa.Column("template_key", sa.String(128), nullable=False),
            sa.Column("template_version", sa.Integer(), nullable=False),
            sa.Column("variant", sa.String(64), nullable=False),
            sa.Column("campaign_key", sa.String(128), nullable=False),
            sa.Column("campaign_run", sa.String(32), nullable=False),
            sa.Column("category", sa.String(20), nullable=False),
            sa.Column("department", sa.String(100), nullable=False),
            sa.Column("channel", sa.String(20), nullable=False),
            sa.Column("provider", sa.String(128), nullable=False),
            sa.Column("stage", sa.String(16), nullable=False),
            sa.Column("policy", sa.String(32), nullable=False),
            sa.Column("count", sa.BigInteger(), nullable=False),
            sa.Column("revenue", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        )
        op.create_index(f"ux_{name}_key", name, ["bucket", *DIMS, "stage", "policy"], unique=True)


def downgrade() -> None:
    for name in ("funnel_daily", "funnel_hourly"):
        op.drop_index(f"ux_{name}_key", table_name=name)
        op.drop_table(name)
