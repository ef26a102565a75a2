"""costs: each delivery's cost and currency, sent_at indexed; department budgets; vendors' bill lines

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 14:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from clarion.store.tables import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("cost", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("cost_currency", sa.String(3), nullable=True))
    op.create_index(op.f("ix_deliveries_sent_at"), "deliveries", ["sent_at"])
    op.create_table(
        "budgets",
        sa.Column("department", sa.String(100), nullable=False),
        sa.Column("monthly", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("refuse_marketing", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("department", name=op.f("pk_budgets")),
    )
    op.create_table(
        "bill_lines",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("vendor_message_id", sa.String(300), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("vendor_status", sa.String(64), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("fee", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("uploaded_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bill_lines")),
    )
    op.create_index(op.f("ix_bill_lines_provider_day"), "bill_lines", ["provider", "day"])
    op.create_index(op.f("ix_bill_lines_provider_vendor_message_id"), "bill_lines", ["provider", "vendor_message_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bill_lines_provider_vendor_message_id"), table_name="bill_lines")
    op.drop_index(op.f("ix_bill_lines_provider_day"), table_name="bill_lines")
    op.drop_table("bill_lines")
    op.drop_table("budgets")
    op.drop_index(op.f("ix_deliveries_sent_at"), table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("cost_currency")
        batch.drop_column("cost")
