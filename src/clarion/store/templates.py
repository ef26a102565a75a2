"""Reads and writes of template governance: saved versions, the approval settings, the audit log and the test
whitelist. SQL in, rows and ``clarion.domain.approval`` values out; the rules themselves are the domain's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import approval, model
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import tables as t

SETTINGS_KEY = "approval"
T = t.templates
V = t.template_versions


def subject(key: str, version: int | None = None) -> str:
    """How the audit log names a template (``template:welcome``) or one version of it (``template:welcome@3``)."""
    return f"template:{key}" if version is None else f"template:{key}@{version}"


# -- settings ------------------------------------------------------------------------------------------------


async def load_settings(conn: AsyncConnection) -> approval.Settings:
    table = t.policy_settings
    row = (await conn.execute(sa.select(table.c.value).where(table.c.key == SETTINGS_KEY))).first()
    return approval.Settings.from_json(row.value) if row is not None else approval.Settings()


async def save_settings(conn: AsyncConnection, settings: approval.Settings, now: datetime) -> None:
    table = t.policy_settings
    value = settings.to_json()
    updated = await conn.execute(table.update().where(table.c.key == SETTINGS_KEY).values(value=value, updated_at=now))
    if not updated.rowcount:
        await conn.execute(table.insert().values(key=SETTINGS_KEY, value=value, updated_at=now))


# -- templates and their versions ----------------------------------------------------------------------------


_WITH_STATUS = sa.select(T, V.c.status).select_from(
    T.outerjoin(V, sa.and_(V.c.template_key == T.c.key, V.c.version == T.c.version))
)


async def template_rows(
    conn: AsyncConnection, *, key: str | None = None, limit: int = 1000, after: str | None = None
) -> list[Any]:
    """Templates (all columns) with ``status``: their latest version's, None for one saved before versions."""
    query = _WITH_STATUS.order_by(T.c.key).limit(limit)
    if key is not None:
        query = query.where(T.c.key == key)
    if after is not None:
        query = query.where(T.c.key > after)
    return list((await conn.execute(query)).all())


@dataclass(frozen=True, slots=True)
class Saved:
    version: int
    status: approval.Status
    live_version: int | None
    created: bool


async def save(
    conn: AsyncConnection,
    key: str,
    values: Mapping[str, Any],
    *,
    author: str,
    settings: approval.Settings,
    now: datetime,
    origin: Mapping[str, Any] | None = None,
) -> Saved:
    """Store ``values`` (the template's columns as a PUT gives them) as the template's next version, and as the
    template's latest content. The version is live at once where its category needs no approval; otherwise the
    live version stays where it is until this one is approved. Numbers continue after a deleted template's
    versions, so what old messages recorded still names the text they were rendered from. ``origin`` says where
    the version's words came from when no person typed them (AI copy: the model, the prompt, its raw answer and
    the ``llm_calls`` row)."""
    row = (await conn.execute(sa.select(T.c.version, T.c.live_version).where(T.c.key == key).with_for_update())).first()
    last = (await conn.execute(sa.select(sa.func.max(V.c.version)).where(V.c.template_key == key))).scalar()
    number = max(row.version if row else 0, last or 0) + 1
    status = approval.initial_status(settings, model.Category(values["category"]))
    approvals: list[dict[str, Any]] = []
    if status is not approval.Status.APPROVED and row is not None and row.live_version is not None:
        live_body = (await get_version(conn, key, row.live_version)).body
        if approval.weights_only(live_body, values):
            status = approval.Status.APPROVED
            approvals = [{"level": "weights", "by": author, "at": now.isoformat(), "comment": _weights_note(row)}]
    live = number if status is approval.Status.APPROVED else (row.live_version if row else None)
    columns = {**values, "version": number, "live_version": live, "updated_at": now}
    if row is None:
        await conn.execute(T.insert().values(key=key, created_at=now, **columns))
    else:
        await conn.execute(T.update().where(T.c.key == key).values(columns))
    await conn.execute(
        V.insert().values(
            template_key=key,
            version=number,
            body=dict(values),
            status=status.value,
            author=author,
            approvals=approvals,
            comment=None,
            origin=dict(origin) if origin is not None else None,
            created_at=now,
            updated_at=now,
        )
    )
    return Saved(number, status, live, row is None)


def _weights_note(row: Any) -> str:
    return f"only the variants' weights changed; the words are those approved in version {row.live_version}"


async def delete(conn: AsyncConnection, key: str) -> bool:
    """Delete the template; its versions stay, for the messages rendered from them and for the audit log."""
    return bool((await conn.execute(T.delete().where(T.c.key == key))).rowcount)


def version_of(row: Any) -> approval.Version:
    return approval.Version(
        template=row.template_key,
        number=row.version,
        category=model.Category(row.body["category"]),
        status=approval.Status(row.status),
        author=row.author,
        approvals=tuple(approval.Approval.from_json(a) for a in row.approvals or ()),
    )


async def get_version(conn: AsyncConnection, key: str, number: int, *, lock: bool = False) -> Any:
    query = sa.select(V).where(V.c.template_key == key, V.c.version == number)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def list_versions(conn: AsyncConnection, key: str, *, limit: int = 100, before: int | None = None) -> list[Any]:
    """Newest first."""
    query = sa.select(V).where(V.c.template_key == key).order_by(V.c.version.desc()).limit(limit)
    if before is not None:
        query = query.where(V.c.version < before)
    return list((await conn.execute(query)).all())


async def record_outcome(
    conn: AsyncConnection, key: str, number: int, outcome: approval.Outcome, now: datetime
) -> int | None:
    """Store what an action decided; a version that became approved becomes live (the live version only moves
    forward). Returns the template's live version afterwards."""
    await conn.execute(
        V.update()
        .where(V.c.template_key == key, V.c.version == number)
        .values(
            status=outcome.status.value,
            approvals=[a.to_json() for a in outcome.approvals],
            comment=outcome.comment,
            updated_at=now,
        )
    )
    if outcome.live:
        await conn.execute(
            T.update()
            .where(T.c.key == key, sa.or_(T.c.live_version.is_(None), T.c.live_version < number))
            .values(live_version=number)
        )
    return (await conn.execute(sa.select(T.c.live_version).where(T.c.key == key))).scalar()


def template_at(row: Any, body: Mapping[str, Any], number: int) -> model.Template:
    """The template as it was saved in version ``number``: ``row`` (a templates row) with the version's body."""
    columns = {c.name: getattr(row, c.name) for c in T.columns}
    # a version saved before templates had a ttl or a fallback has none, whatever the latest version says
    at = SimpleNamespace(
        **{
            **columns,
            "ttl_seconds": None,
            "fallback": None,
            "goal": None,
            "experiment": None,
            **body,
            "version": number,
        }
    )
    return records.template_from_row(at)


# -- what sends use ------------------------------------------------------------------------------------------


_SENDABLE = sa.select(T, V.c.body.label("live_body")).select_from(
    T.outerjoin(V, sa.and_(V.c.template_key == T.c.key, V.c.version == T.c.live_version))
)


async def sendable_row(conn: AsyncConnection, key: str) -> Any:
    """The template's row with its live version's body (``live_body``), in one query."""
    return (await conn.execute(_SENDABLE.where(T.c.key == key))).first()


def sendable(row: Any, settings: approval.Settings) -> model.Template | None:
    """What sends use: the live version where the category needs approval (None when none is approved yet),
    otherwise the latest."""
    if not settings.needs_approval(model.Category(row.category)):
        return records.template_from_row(row)
    if row.live_version is None or row.live_body is None:
        return None
    return template_at(row, row.live_body, row.live_version)


# -- audit log (``clarion.store.audit``; kept here for the callers that write template and campaign entries) --


audit = audit_log.record
audit_entries = audit_log.entries


# -- test whitelist ------------------------------------------------------------------------------------------


async def replace_test_recipients(
    conn: AsyncConnection, recipients: Iterable[tuple[str, str | None]], now: datetime
) -> None:
    await conn.execute(t.test_recipients.delete())
    rows = [{"user_id": u, "note": n, "created_at": now} for u, n in dict(recipients).items()]
    if rows:
        await conn.execute(t.test_recipients.insert(), rows)


async def test_recipients(conn: AsyncConnection) -> list[Any]:
    return list((await conn.execute(sa.select(t.test_recipients).order_by(t.test_recipients.c.user_id))).all())


async def not_test_recipients(conn: AsyncConnection, user_ids: Sequence[str]) -> list[str]:
    """Those of ``user_ids`` that are not on the whitelist, in the order given."""
    table = t.test_recipients
    listed: set[str] = set(
        (await conn.execute(sa.select(table.c.user_id).where(table.c.user_id.in_(list(user_ids))))).scalars()
    )
    return [u for u in dict.fromkeys(user_ids) if u not in listed]
