"""tag feedback rules and their firings; stored alert rules, their state and history; a template's experiment

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 13:45:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from clarion.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("experiment", JSON, nullable=True))
    op.create_table(
        "feedback_rules",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_feedback_rules")),
    )
    op.create_table(
        "feedback_firings",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("rule_key", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(32), nullable=True),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_firings")),
    )
    op.create_index(op.f("ix_feedback_firings_user_id_at"), "feedback_firings", ["user_id", "at"])
    op.create_index(
        op.f("ix_feedback_firings_rule_key_message_id"), "feedback_firings", ["rule_key", "message_id"], unique=True
    )
    op.create_table(
        "alert_rules",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("rule", JSON, nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_alert_rules")),
    )
    op.create_table(
        "alert_states",
        sa.Column("rule_key", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("firing_since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("notified_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("rule_key", "subject", name=op.f("pk_alert_states")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("rule_key", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("notified", sa.String(10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_rule_key_at"), "alerts", ["rule_key", "at"])
    op.create_index(op.f("ix_alerts_at"), "alerts", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_at"), table_name="alerts")
    op.drop_index(op.f("ix_alerts_rule_key_at"), table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_states")
    op.drop_table("alert_rules")
    op.drop_index(op.f("ix_feedback_firings_rule_key_message_id"), table_name="feedback_firings")
    op.drop_index(op.f("ix_feedback_firings_user_id_at"), table_name="feedback_firings")
    op.drop_table("feedback_firings")
    op.drop_table("feedback_rules")
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("experiment")
