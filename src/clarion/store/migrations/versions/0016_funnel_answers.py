"""a covering index for the funnel's usual answers (totals, per day or hour, per channel and provider)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 14:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COLUMNS = ["bucket", "stage", "policy", "channel", "provider", "count", "revenue"]


def upgrade() -> None:
    for name in ("funnel_hourly", "funnel_daily"):
        op.create_index(f"ix_{name}_answers", name, COLUMNS)


def downgrade() -> None:
    for name in ("funnel_daily", "funnel_hourly"):
        op.drop_index(f"ix_{name}_answers", table_name=name)
