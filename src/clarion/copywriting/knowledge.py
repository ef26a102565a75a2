"""The copy knowledge base: the measured copies a new brief learns from.

A copy is a template version's content on one channel, per A/B variant, and what its sends did: the funnel's
daily rollup counts its sends, clicks and conversions (``store.copy_examples.measured``), so an experiment's
winning variant is a copy of its own and feeds later prompts as soon as its sends are counted, with nothing to do
by hand. Copies are ranked by the Wilson lower bound of their click (or conversion) rate per send, so volume
alone never wins: a large low-rate copy ranks below a smaller high-rate one. Only copies with ``MIN_SENDS`` sends
or more are ranked (100, as ``GET /v1/analytics/copy`` ranks them: below that the interval is too wide to tell
copies apart). A banned version is never offered; a pinned one always is, first, whatever its sends (within the
number of examples asked for).

``similar`` retrieves, for a brief's text, the ranked copies that share its words: BM25 over the jieba-segmented
terms (``analytics.copy_terms.tokens``) of each copy and its brief, then the ``RETRIEVE`` best matches are ordered
by their lower bound, so the words choose what is relevant and the measured results choose among it. ``hints``
gives the words that distinguish the top copies from the other ranked ones (``copy_terms.knowledge``).

Each call reads the marks and the saved versions of the ``CANDIDATES`` best copies only, and builds its BM25 index
from them. The rollup's grouped read, the costly part, is kept per channel and category and done again only when
the narrow daily rollup's totals on the channel have moved (``store.copy_examples.rollup_state``); a copy's terms
are segmented once per process (``_terms``)."""

from __future__ import annotations

import functools
import math
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from clarion import bootstrap
from clarion.analytics import copy_terms
from clarion.store import copy_examples as store

MIN_SENDS = 100
"""Sends a copy needs before its rates are trusted enough to rank it."""
CANDIDATES = 200
"""The best ranked copies a call reads, retrieves among and compares for hints."""
RETRIEVE = 10
"""BM25 matches kept (at least three per example asked for) before they are ordered by their rate."""
FEW_SHOWN = 50
"""Copies under ``MIN_SENDS`` that ``catalogue`` lists as left out, the most sent first."""
HINTS = 10
"""Hints ``catalogue`` gives."""


@dataclass(frozen=True, slots=True)
class Example:
    """One measured copy (a template version's variant on one channel) and why it is offered."""

    template: str
    version: int
    variant: str
    channel: str
    category: str
    text: str  # the copy as written, in the template language
    sent: int
    clicked: int
    converted: int
    click_rate: float
    conversion_rate: float
    click_interval: tuple[float, float]
    conversion_interval: tuple[float, float]
    pinned: bool
    why: str
    banned: bool = False
    rank: int | None = None  # 1 is the best ranked copy; None when not ranked (pinned, banned or too few sends)
    matched: tuple[str, ...] = ()  # the terms of the brief asked about that the copy shares
    brief: str = ""  # what it was written for: its template's name, and a machine-made version's brief


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What a generator would learn from (``offered``, in order) and what it would not (``left_out``), each with
    its reason in ``why``, and the hints it would be given."""

    offered: list[Example]
    left_out: list[Example]
    hints: list[str]


async def similar(
    clarion: bootstrap.Clarion, *, text: str, channel: str, category: str | None, limit: int = 3
) -> list[Example]:
    """The best measured copies most like ``text`` on ``channel``: the pinned ones first, then the ranked ones
    among the best BM25 matches, by the lower bound of their click rate. A copy sharing no word with ``text`` is
    not offered, unless pinned."""
    gathered = await _gather(clarion, channel=channel, category=category, rank_by="click", few=0)
    offered, _ = _retrieve(gathered, text, limit, explain=False)
    return offered


async def hints(clarion: bootstrap.Clarion, *, channel: str, category: str | None, limit: int = 10) -> list[str]:
    """The distinguishing words of the top copies on ``channel``."""
    gathered = await _gather(clarion, channel=channel, category=category, rank_by="click", few=0)
    return _hints(gathered, "click", limit)


async def catalogue(
    clarion: bootstrap.Clarion,
    *,
    channel: str | None,
    category: str | None,
    q: str | None = None,
    limit: int = 3,
    rank_by: str = "click",
    few: int = FEW_SHOWN,
) -> Catalogue:
    """Every copy the knowledge base holds on ``channel`` in ``category`` (None: any), offered or left out, with
    the reason. Without ``q``: the pinned ones, then every ranked one. With ``q`` (a brief's text): what
    ``similar`` gives for it, ``limit`` examples at most; the other ranked ones are left out."""
    gathered = await _gather(clarion, channel=channel, category=category, rank_by=rank_by, few=few)
    offered: list[Example] = [*gathered.pinned, *gathered.ranked]
    passed_over: list[Example] = []
    if q is not None:
        offered, passed_over = _retrieve(gathered, q, limit)
    left_out = [*gathered.banned, *gathered.few, *passed_over]
    return Catalogue(offered, left_out, _hints(gathered, rank_by, HINTS))


async def dataset(
    clarion: bootstrap.Clarion, *, channel: str | None, category: str | None, min_sends: int = 1
) -> AsyncIterator[dict[str, Any]]:
    """Each measured copy with ``min_sends`` sends or more, banned ones aside, as a fine-tuning record: the
    brief, the copy, the channel, the exposures (sends) and both rates. Versions are read a chunk at a time, so
    an export of every copy holds one chunk in memory."""
    async with clarion.db.read() as conn:
        marks = await store.marks(conn)
        measured = await store.measured(conn, channel=channel, category=category)
    kept = [m for m in measured if m.sent >= min_sends and _state(marks, m) != "banned"]
    for start in range(0, len(kept), store.CHUNK):
        chunk = kept[start : start + store.CHUNK]
        async with clarion.db.read() as conn:
            rows = await store.versions(conn, {(m.template, m.version) for m in chunk})
        for m in chunk:
            row = rows.get((m.template, m.version))
            text = store.copy_of(row.body, m.variant, m.channel) if row is not None else ""
            if row is not None and text:
                yield {
                    "template": m.template,
                    "version": m.version,
                    "variant": m.variant or None,
                    "channel": m.channel,
                    "category": m.category,
                    "brief": store.brief_of(row.body, row.origin),
                    "copy": text,
                    "exposures": m.sent,
                    "clicks": m.clicked,
                    "conversions": m.converted,
                    "ctr": m.clicked / m.sent,
                    "cvr": m.converted / m.sent,
                }


def _retrieve(
    gathered: _Gathered, text: str, limit: int, *, explain: bool = True
) -> tuple[list[Example], list[Example]]:
    """The examples for a brief's ``text`` (pinned first, by how well they match; then the best ``RETRIEVE``
    BM25 matches among the ranked, by their rate), and, to ``explain``, the pinned and ranked copies passed
    over, with why."""
    query = set(_terms(text))
    everyone = [*gathered.pinned, *gathered.ranked]
    score = dict(zip(map(_key, everyone), bm25(query, [_terms(_document(e)) for e in everyone]), strict=True))
    pinned = sorted(gathered.pinned, key=lambda e: -score[_key(e)])  # stable: equal matches keep the rates' order
    hits = sorted((e for e in gathered.ranked if score[_key(e)] > 0), key=lambda e: -score[_key(e)])
    closest = {_key(e) for e in hits[: max(RETRIEVE, 3 * limit)]}
    chosen = [e for e in gathered.ranked if _key(e) in closest]  # the ranked list is in the rates' order
    offered = [*pinned, *chosen][:limit]
    shown = {_key(e) for e in offered}
    passed_over: list[Example] = []
    for e in everyone if explain else ():
        if _key(e) in shown:
            continue
        matched = _shared(query, e)
        if e.pinned:
            reason = f"pinned, but the {limit} examples asked for went to pinned copies that match better"
        elif _key(e) in closest:
            reason = f"matches {', '.join(matched)} but ranks below the {len(offered)} offered"
        elif matched:
            reason = f"matches {', '.join(matched)}, less closely than the {len(closest)} best matches"
        else:
            reason = "no words in common with the brief"
        passed_over.append(replace(e, matched=matched, why=f"{reason}; {e.why}"))
    return [_matching(e, _shared(query, e)) for e in offered], passed_over


def _matching(e: Example, matched: tuple[str, ...]) -> Example:
    return replace(e, matched=matched, why=f"{e.why}; matches {', '.join(matched)}") if matched else e


# -- reading the copies -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Gathered:
    ranked: list[Example]  # the best CANDIDATES with MIN_SENDS sends or more, neither pinned nor banned
    pinned: list[Example]
    banned: list[Example]
    few: list[Example]  # under MIN_SENDS, the most sent first; and ranked copies whose words rank higher already
    measurements: _Measurements  # what they were read from
    marked: frozenset[tuple[str, int, str]]  # the marks they were sorted by


async def _gather(
    clarion: bootstrap.Clarion, *, channel: str | None, category: str | None, rank_by: str, few: int
) -> _Gathered:
    """The copies on ``channel`` in ``category`` in four groups, each in its order, with their text and reason.
    A pinned version that has not been sent on the channel yet still gives its copy there, unmeasured."""
    async with clarion.db.read() as conn:
        marks = await store.marks(conn)
        measured = await _measured(clarion, conn, channel=channel, category=category)
        groups: dict[str, list[store.Measured]] = {"pinned": [], "banned": [], "ranked": [], "few": []}
        for m in measured.ordered(rank_by):
            state = _state(marks, m) or ("ranked" if m.sent >= MIN_SENDS else "few")
            if state != "ranked" or len(groups["ranked"]) < CANDIDATES:
                groups[state].append(m)
        groups["few"] = sorted(groups["few"], key=lambda m: -m.sent)[:few]
        sent_pinned = {(m.template, m.version) for m in groups["pinned"]}
        unsent = [k for k, row in marks.items() if row.state == "pinned" and k not in sent_pinned]
        wanted = {(m.template, m.version) for ms in groups.values() for m in ms} | set(unsent)
        rows = await store.versions(conn, wanted)
    for key in unsent:
        if key in rows:
            groups["pinned"].extend(_unsent(key, rows[key].body, channel, category))
    groups["pinned"].sort(key=functools.partial(_order, rank_by))
    out: dict[str, list[Example]] = {state: [] for state in groups}
    said: dict[tuple[str, str], str] = {}  # the ranked copies' names by their channel and words
    for state, ms in groups.items():
        for m in ms:
            key = (m.template, m.version)
            row = rows.get(key)
            words = (m.channel, store.copy_of(row.body, m.variant, m.channel) if row is not None else "")
            if state == "ranked" and words in said:  # a winner kept in a later version: its words count once
                out["few"].append(_example(m, row, None, rank=None, rank_by=rank_by, reason=said[words]))
                continue
            if not words[1]:  # the version is gone, or has no copy on the channel
                continue
            rank = len(out[state]) + 1 if state == "ranked" else None
            out[state].append(_example(m, row, marks.get(key), rank=rank, rank_by=rank_by))
            if state == "ranked":
                name = f"{m.template}@{m.version}" + (f"/{m.variant}" if m.variant else "")
                said[words] = f"the same words as {name}, ranked above"
    marked = frozenset((*key, row.state) for key, row in marks.items())
    return _Gathered(out["ranked"], out["pinned"], out["banned"], out["few"], measured, marked)


@dataclass(slots=True)
class _Measurements:
    """The measured copies of one channel and category as the rollup stood at ``state``, and their orders."""

    state: tuple[int, int]
    copies: list[store.Measured]
    orders: dict[str, list[store.Measured]] = field(default_factory=dict)
    #: hints by (rank_by, limit, marks): the same copies and marks give the same words
    hints: dict[tuple[str, int, frozenset[tuple[str, int, str]]], list[str]] = field(default_factory=dict)

    def ordered(self, rank_by: str) -> list[store.Measured]:
        """Best first by ``rank_by`` (``_order``), sorted once per state."""
        if rank_by not in self.orders:
            self.orders[rank_by] = sorted(self.copies, key=functools.partial(_order, rank_by))
        return self.orders[rank_by]


#: per database, the measured copies by (channel, category): reading the rollup is most of a call's cost, and
#: the knowledge base is read on every generation
_MEASURED: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, str | None], _Measurements]] = (
    weakref.WeakKeyDictionary()
)


async def _measured(
    clarion: bootstrap.Clarion, conn: Any, *, channel: str | None, category: str | None
) -> _Measurements:
    """The measured copies, read again only when the rollup's state has changed since they were last read."""
    state = await store.rollup_state(conn, channel=channel)
    held = _MEASURED.setdefault(clarion.db, {})
    found = held.get((channel, category))
    if found is None or found.state != state:
        copies = await store.measured(conn, channel=channel, category=category)
        found = held[channel, category] = _Measurements(state, copies)
    return found


def _unsent(key: tuple[str, int], body: Mapping[str, Any], channel: str | None, category: str | None) -> list[Any]:
    """The copies of a pinned version with no sends counted: one per channel it has content for."""
    if category is not None and body.get("category") != category:
        return []
    channels = [c for c in body.get("channels") or {} if c != "default" and channel in (None, c)]
    return [store.Measured(*key, "", c, str(body.get("category") or ""), 0, 0, 0) for c in channels]


def _state(marks: Mapping[tuple[str, int], Any], m: store.Measured) -> str | None:
    mark = marks.get((m.template, m.version))
    return mark.state if mark is not None else None


def _order(rank_by: str, m: store.Measured) -> tuple[float, ...]:
    """Best first: the lower bound of the chosen rate, then of the other one, then more sends."""
    first, second = (m.clicked, m.converted) if rank_by == "click" else (m.converted, m.clicked)
    return (-copy_terms.wilson(first, m.sent)[0], -copy_terms.wilson(second, m.sent)[0], -m.sent)


def _example(
    m: store.Measured, row: Any, mark: Any, *, rank: int | None, rank_by: str, reason: str | None = None
) -> Example:
    """The copy ``m`` counts, read from its saved version ``row``, with ``mark``, the operator's pin or ban, and
    ``rank``, its place among the ranked copies by ``rank_by``; ``reason`` says why it is left out otherwise."""
    text = store.copy_of(row.body, m.variant, m.channel)
    clicks, conversions = copy_terms.wilson(m.clicked, m.sent), copy_terms.wilson(m.converted, m.sent)
    rates = (
        f"click rate {_interval(m.clicked, m.sent, clicks)} over {m.sent:,} sends, "
        f"conversion rate {_interval(m.converted, m.sent, conversions)}"
        if m.sent
        else "not sent yet"
    )
    state = mark.state if mark is not None else None
    because = f" ({mark.reason})" if mark is not None and mark.reason else ""
    if reason is not None:
        why = f"{reason}; {rates}"
    elif state == "pinned":
        why = f"pinned by {mark.actor}{because}; {rates}"
    elif state == "banned":
        why = f"banned by {mark.actor}{because}: never offered; {rates}"
    elif rank is None:
        why = f"{m.sent:,} sends, under the {MIN_SENDS} a copy needs to be ranked; {rates}"
    else:
        why = f"ranked {rank} by {rank_by} rate; {rates}"
    return Example(
        template=m.template,
        version=m.version,
        variant=m.variant,
        channel=m.channel,
        category=m.category,
        text=text,
        sent=m.sent,
        clicked=m.clicked,
        converted=m.converted,
        click_rate=m.clicked / m.sent if m.sent else 0.0,
        conversion_rate=m.converted / m.sent if m.sent else 0.0,
        click_interval=clicks,
        conversion_interval=conversions,
        pinned=state == "pinned",
        banned=state == "banned",
        why=why,
        rank=rank,
        brief=store.brief_of(row.body, row.origin),
    )


def _interval(successes: int, trials: int, bounds: tuple[float, float]) -> str:
    return f"{successes / trials:.1%} [{bounds[0] * 100:.1f}–{bounds[1]:.1%}]"


# -- retrieval --------------------------------------------------------------------------------------------------


def bm25(query: Collection[str], documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each document (its terms) for the ``query`` terms, each counted once: a term weighs its
    inverse document frequency ``ln(1 + (N - n + 0.5) / (n + 0.5))``, saturated by its count in the document
    and normalised by the document's length against the average. 0 for a document sharing no term."""
    if not documents:
        return []
    counts = [Counter(d) for d in documents]
    average = sum(len(d) for d in documents) / len(documents) or 1.0
    frequency = {q: sum(1 for c in counts if q in c) for q in query}
    idf = {q: math.log(1 + (len(documents) - n + 0.5) / (n + 0.5)) for q, n in frequency.items() if n}
    scores = []
    for doc, count in zip(documents, counts, strict=True):
        norm = k1 * (1 - b + b * len(doc) / average)
        scores.append(sum(w * count[q] * (k1 + 1) / (count[q] + norm) for q, w in idf.items() if q in count))
    return scores


@functools.lru_cache(maxsize=20_000)
def _terms(text: str) -> tuple[str, ...]:
    """The terms of a text, segmented once per process: a copy is read on every generation, its words never
    change (a saved version is never edited)."""
    return tuple(copy_terms.tokens(text))


def _document(e: Example) -> str:
    return f"{e.brief}\n{e.text}"


def _shared(query: set[str], e: Example) -> tuple[str, ...]:
    terms = _terms(_document(e))
    return tuple(dict.fromkeys(t for t in terms if t in query))


def _key(e: Example) -> tuple[str, int, str, str]:
    return (e.template, e.version, e.variant, e.channel)


def _hints(gathered: _Gathered, rank_by: str, limit: int) -> list[str]:
    """The words of the top copies against the other ranked ones; pinned copies with enough sends count too.
    Kept with the measurements they come from, since segmenting every candidate is most of their cost."""
    key = (rank_by, limit, gathered.marked)
    kept = gathered.measurements.hints
    if key not in kept:
        copies = [
            copy_terms.Copy(e.text, e.sent, e.clicked, e.converted)
            for e in (*gathered.pinned, *gathered.ranked)
            if e.sent >= MIN_SENDS
        ]
        found = copy_terms.knowledge(copies, by=rank_by, min_sends=MIN_SENDS, limit=limit)
        kept[key] = [term.term for term in found.terms]
    return kept[key]
