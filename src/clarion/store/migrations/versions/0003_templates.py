"""templates: versions and approval, audit log, test recipients, short links, variants and SMS segments

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 05:10:27.626401
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import clarion.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column(
            "detail", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_subject_at"), ["subject", "at"], unique=False)

    op.create_table(
        "short_links",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("first_clicked_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_short_links")),
    )
    with op.batch_alter_table("short_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_short_links_delivery_id"), ["delivery_id"], unique=False)

    op.create_table(
        "template_versions",
        sa.Column("template_key", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "body", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=True),
        sa.Column(
            "approvals", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("template_key", "version", name=op.f("pk_template_versions")),
    )
    op.create_table(
        "test_recipients",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("created_at", clarion.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_test_recipients")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segments", sa.SmallInteger(), nullable=True))

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.String(length=64), nullable=True))

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("live_version", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "variants",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )

    _backfill_versions()


# The body fields a version keeps: the template's content columns (as in store.templates.save).
_BODY = ("name", "category", "priority", "department", "owner", "channels", "policy", "variants")


def _backfill_versions() -> None:
    """Every template saved before versions existed gets its current state as its approved, live version, so
    what was being sent goes on being sent."""
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    when = clarion.store.tables.UTCDateTime()
    templates = sa.table(
        "templates",
        *(sa.column(name, json if name in ("channels", "policy", "variants") else None) for name in _BODY),
        sa.column("key"),
        sa.column("version"),
        sa.column("live_version"),
        sa.column("created_at", when),
        sa.column("updated_at", when),
    )
    versions = sa.table(
        "template_versions",
        sa.column("template_key"),
        sa.column("version"),
        sa.column("body", json),
        sa.column("status"),
        sa.column("author"),
        sa.column("approvals", json),
        sa.column("comment"),
        sa.column("created_at", when),
        sa.column("updated_at", when),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(templates)).all()
    if not rows:
        return
    bind.execute(
        versions.insert(),
        [
            {
                "template_key": row.key,
                "version": row.version,
                "body": {name: getattr(row, name) for name in _BODY},
                "status": "approved",
                "author": None,
                "approvals": [],
                "comment": "existing before versions were kept",
                "created_at": row.updated_at,
                "updated_at": row.updated_at,
            }
            for row in rows
        ],
    )
    bind.execute(templates.update().values(live_version=templates.c.version))


def downgrade() -> None:

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("variants")
        batch_op.drop_column("live_version")

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("variant")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("segments")

    op.drop_table("test_recipients")
    op.drop_table("template_versions")
    with op.batch_alter_table("short_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_short_links_delivery_id"))

    op.drop_table("short_links")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_subject_at"))

    op.drop_table("audit_log")
