"""Reads and writes of the copy knowledge base: operators' pins and bans of template versions, what each copy's
sends did (from the daily funnel rollup), and the saved versions the copies are read from, with what a version
says: its copy on a channel (``copy_of``) and what it was written for (``brief_of``).

A mark names a template version (``welcome@3``): every copy of that version — each variant, each channel — is
pinned or banned with it, since that is what an operator reviewed. The table is small (one row per mark), so it
is read whole."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from clarion.analytics import copy_terms
from clarion.store import rollups
from clarion.store import tables as t
from clarion.store.driver import Conn

E = t.copy_examples
V = t.template_versions
CHUNK = 500
"""Versions per ``IN (…)`` look-up."""


async def get(conn: Conn, key: str, version: int) -> Any:
    """The mark on ``key@version`` (``state``, ``reason``, ``actor``, timestamps), or None."""
    query = sa.select(E).where(E.c.template_key == key, E.c.version == version)
    return (await conn.execute(query)).first()


async def put(
    conn: Conn, key: str, version: int, *, state: str | None, reason: str | None, actor: str, now: datetime
) -> None:
    """Pin or ban ``key@version`` (``state`` "pinned" or "banned"), or clear its mark (``state`` None)."""
    where = (E.c.template_key == key, E.c.version == version)
    if state is None:
        await conn.execute(E.delete().where(*where))
        return
    values = {"state": state, "reason": reason, "actor": actor, "updated_at": now}
    if not (await conn.execute(E.update().where(*where).values(values))).rowcount:
        await conn.execute(E.insert().values(template_key=key, version=version, created_at=now, **values))


async def marks(conn: Conn) -> dict[tuple[str, int], Any]:
    """Every mark, by (template, version)."""
    return {(row.template_key, row.version): row for row in await conn.execute(sa.select(E))}


@dataclass(frozen=True, slots=True)
class Measured:
    """What one copy's sends did: a template version's variant ("" for none) on one channel, in one category."""

    template: str
    version: int
    variant: str
    channel: str
    category: str
    sent: int
    clicked: int
    converted: int


_GROUPS = ["template", "version", "variant", "channel", "category"]


async def measured(conn: Conn, *, channel: str | None, category: str | None) -> list[Measured]:
    """Every copy with at least one send on ``channel`` in ``category`` (None: any), all time, from the daily
    rollup: one grouped query however many copies there are."""
    given = {"channel": channel, "category": category}
    filters = {k: v for k, v in given.items() if v is not None}
    cells = await rollups.cells(conn, table=t.funnel_daily, since=None, until=None, filters=filters, group_by=_GROUPS)
    counts: dict[tuple[str, int, str, str, str], dict[str, int]] = {}
    for cell in cells:
        if cell.template and cell.channel and cell.stage in _STAGES:
            key = (cell.template, int(cell.version), cell.variant or "", cell.channel, cell.category or "")
            into = counts.setdefault(key, {"sent": 0, "clicked": 0, "converted": 0})
            into[cell.stage] += int(cell.n)
    return [
        Measured(*key, sent=c["sent"], clicked=c["clicked"], converted=c["converted"])
        for key, c in sorted(counts.items())
        if c["sent"]
    ]


_STAGES = ("sent", "clicked", "converted")


async def rollup_state(conn: Conn, *, channel: str | None) -> tuple[int, int]:
    """The cells and the sum of the counts ``measured`` reads from, on ``channel`` (None: all), taken from the
    narrow daily rollup (a few cells a day): they change whenever a send, click or conversion is counted there,
    so a copy of ``measured`` kept with them is current while they are unchanged."""
    table = rollups.NARROW[t.funnel_daily]
    query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(table.c["count"]), 0)).where(
        table.c.stage.in_(_STAGES)
    )
    if channel is not None:
        query = query.where(table.c.channel == channel)
    row = (await conn.execute(query)).one()
    return int(row[0]), int(row[1])


async def versions(conn: Conn, wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """The saved versions named (``body`` and ``origin``), by (template, version); those that do not exist are
    left out. A deleted template's versions are still there."""
    pairs = sorted(set(wanted))
    out: dict[tuple[str, int], Any] = {}
    for i in range(0, len(pairs), CHUNK):
        query = sa.select(V.c.template_key, V.c.version, V.c.body, V.c.origin).where(
            sa.tuple_(V.c.template_key, V.c.version).in_(pairs[i : i + CHUNK])
        )
        out.update(((row.template_key, row.version), row) for row in await conn.execute(query))
    return out


# -- what a saved version says ---------------------------------------------------------------------------------


def copy_of(body: Mapping[str, Any], variant: str, channel: str) -> str:
    """The copy of a saved version (its ``body``) on ``channel`` for ``variant`` ("" for none), as the messages
    were rendered from it: the variant's content for the channel, else the template's; an empty content is the
    default it is adapted from. "" for a channel the version does not send on."""
    channels = body.get("channels") or {}
    if channel == "default" or channel not in channels:
        return ""
    variants = body.get("variants") or () if variant else ()
    chosen = next((v.get("channels") or {} for v in variants if v.get("name") == variant), {})
    content = chosen.get(channel)
    if content is None:
        content = channels.get(channel) or {}
    if not content:
        own = chosen.get("default")
        content = (own if own is not None else channels.get("default")) or {}
    return copy_terms.copy_text(content)


def brief_of(body: Mapping[str, Any], origin: Any) -> str:
    """What a version was written for: the template's name and, for a machine-made version, the brief its
    prompt holds (``origin["prompt"]``: the brief as text; a document, whose ``brief`` is taken when it has one;
    or the chat messages sent, whose user messages hold the brief, between ``<brief>`` tags as copy generation
    writes it), structured briefs written as JSON."""
    name = str(body.get("name") or "")
    prompt = origin.get("prompt") if isinstance(origin, Mapping) else None
    if isinstance(prompt, Mapping):
        prompt = prompt.get("brief", prompt)
    elif isinstance(prompt, list):
        said = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        prompt = "\n".join(_unwrapped(c) for c in said if isinstance(c, str))
    if not prompt:
        return name
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True)
    return f"{name}\n{text}" if name else text


def _unwrapped(content: str) -> str:
    """A user message's brief without the ``<brief>`` … ``</brief>`` tags that delimit it as data."""
    inner = content.strip()
    if inner.startswith("<brief>") and inner.endswith("</brief>"):
        return inner[len("<brief>") : -len("</brief>")].strip()
    return content
