"""Idempotency claims: a send_requests row may hold a key as a claim (claimed_key, no response yet) while the request
that claimed it is composed

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("send_requests") as batch:
        batch.add_column(sa.Column("claimed_key", sa.String(length=200), nullable=True))
        batch.create_unique_constraint(op.f("uq_send_requests_claimed_key"), ["claimed_key"])
        batch.alter_column("response", existing_type=JSON, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM send_requests WHERE claimed_key IS NOT NULL")  # claims of requests being composed
    with op.batch_alter_table("send_requests") as batch:
        batch.alter_column("response", existing_type=JSON, nullable=False)
        batch.drop_constraint(op.f("uq_send_requests_claimed_key"), type_="unique")
        batch.drop_column("claimed_key")
