"""campaign run parts: a run's audience in parts that several runners advance at once

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.store.tables import UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_run_parts",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("stop", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "part", name=op.f("pk_campaign_run_parts")),
    )
    # a run started before parts existed continues as one part, where its cursor is
    op.execute(
        "INSERT INTO campaign_run_parts (run_id, part, start, stop, cursor, lease_owner, lease_until) "
        "SELECT id, 0, 0, audience, cursor, lease_owner, lease_until FROM campaign_runs "
        "WHERE status IN ('running', 'paused')"
    )


def downgrade() -> None:
    op.drop_table("campaign_run_parts")
