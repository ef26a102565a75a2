"""AI copy: the origin of a machine-written template version, the language model's calls, pinned and banned examples

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 08:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from clarion.store.tables import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("template_versions") as batch:
        batch.add_column(sa.Column("origin", JSON, nullable=True))
    op.create_table(
        "llm_calls",
        sa.Column("id", Serial, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("department", sa.String(100), nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_calls")),
    )
    op.create_index("ix_llm_calls_department_at", "llm_calls", ["department", "at"])
    op.create_table(
        "copy_examples",
        sa.Column("template_key", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("template_key", "version", name=op.f("pk_copy_examples")),
    )


def downgrade() -> None:
    op.drop_table("copy_examples")
    op.drop_index("ix_llm_calls_department_at", table_name="llm_calls")
    op.drop_table("llm_calls")
    with op.batch_alter_table("template_versions") as batch:
        batch.drop_column("origin")
