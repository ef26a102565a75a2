"""policies: user preferences, template overrides, settings, caps, keyword lists, suppressions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:48:44.439401
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import clarion.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "caps",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column(
            "definition", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_caps")),
    )
    op.create_table(
        "keyword_lists",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column(
            "words", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("case_sensitive", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_keyword_lists")),
    )
    op.create_table(
        "policy_settings",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column(
            "value", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("updated_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_policy_settings")),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=True),
        sa.Column("category", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
    )
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suppressions_address"), ["address"], unique=False)
        batch_op.create_index(batch_op.f("ix_suppressions_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "policy", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
            )
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "preferences",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("preferences")

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("policy")

    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suppressions_user_id"))
        batch_op.drop_index(batch_op.f("ix_suppressions_address"))

    op.drop_table("suppressions")
    op.drop_table("policy_settings")
    op.drop_table("keyword_lists")
    op.drop_table("caps")
