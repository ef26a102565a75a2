"""The copy knowledge base: the words and phrases that distinguish top-performing copies, and rates ranked fairly.

Pure. ``tokens`` turns a copy into terms: template syntax (``{userName}``, ``${user.name}``, ``<#if …>`` and other
tags) is removed first, Chinese runs are segmented with jieba (precise mode), English runs give lower-cased words
and the bigrams of adjacent words; punctuation, numbers and stop words are dropped.

``distinguishing_terms`` compares the terms of the top copies with the rest by the weighted log-odds ratio with an
informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words"), the prior being the pooled counts of
both groups, so a term is distinctive only when the difference is large against its own frequency.

``rank`` orders copies (or variants) by the Wilson lower bound of their rate, and refuses to rank those with too
few sends: 3 clicks out of 12 is not a 25 % click rate. ``knowledge`` puts both together for
``GET /v1/analytics/copy``: copies ranked by click and by conversion rate, and the terms of the top ones.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jieba

jieba.setLogLevel(logging.WARNING)  # jieba reports building its dictionary at INFO/DEBUG on first use

_TEMPLATE = re.compile(r"\$\{[^{}]*\}|\{[^{}]*\}|</?[#@A-Za-z][^<>]*>")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUN = re.compile(rf"(?P<han>[{_HAN}]+)|(?P<word>[^\W_{_HAN}]+(?:['’][^\W_{_HAN}]+)*)")

_ZH_STOP_WORDS = (  # Chinese particles, pronouns and connectives
    "的 了 是 在 和 与 及 或 就 都 也 还 又 而 着 过 吗 呢 吧 啊 呀 哦 嘛 我 你 您 他 她 它 我们 你们 他们 这 那 "
    "这个 那个 有 被 把 给 让 对 从 到 为 以 之 其 等 个 将 并 很 更 已 已经 一个 一下"
)
_EN_STOP_WORDS = (  # English function words
    "a an the to of in on at for from by with and or but if is are was were be been being it its this that "
    "these those you your yours we our us i me my he she they them their his her as so not no do does did "
    "have has had will would can could should may might just than then there here what which who whom"
)
STOP_WORDS = frozenset(_ZH_STOP_WORDS.split() + _EN_STOP_WORDS.split())


def tokens(text: str, language: str | None = None) -> list[str]:
    """The terms of one copy, in order. ``language`` "en…" skips Chinese segmentation (a Han run stays whole);
    otherwise (``None``, "zh…") Han runs are segmented and Latin runs read as English."""
    segment = not (language or "").lower().startswith("en")
    cleaned = _TEMPLATE.sub(" | ", text)  # a placeholder stands for a word: no bigram across it
    out: list[str] = []
    previous: str | None = None  # the last English word, while a bigram with the next one is possible
    last_end = 0
    for match in _RUN.finditer(cleaned):
        gap = cleaned[last_end : match.start()]
        last_end = match.end()
        if match.lastgroup == "han":
            previous = None
            words = _segment(match.group()) if segment else [match.group()]
            out.extend(w for w in words if w not in STOP_WORDS)
            continue
        word = match.group().lower().replace("’", "'")
        keep = not word.isdigit() and word not in STOP_WORDS
        if keep:
            if previous is not None and not gap.strip(" \t-"):  # adjacent words, or hyphenated ones
                out.append(f"{previous} {word}")
            out.append(word)
        previous = word if keep else None
    return out


def _segment(run: str) -> list[str]:
    return [w for w in jieba.lcut(run, cut_all=False) if w.strip()]


@dataclass(frozen=True)
class Term:
    term: str
    top_count: int
    rest_count: int
    z: float


def distinguishing_terms(top: list[str], rest: list[str], limit: int = 20, min_count: int = 3) -> list[Term]:
    """The terms most characteristic of the ``top`` copies against the ``rest``, highest z-score first.

    For term w with counts y_t, y_r in groups of n_t, n_r terms, and prior α_w = y_t + y_r (α_0 = n_t + n_r):
    δ_w = log((y_t+α_w)/(n_t+α_0-y_t-α_w)) − log((y_r+α_w)/(n_r+α_0-y_r-α_w)), Var ≈ 1/(y_t+α_w) + 1/(y_r+α_w),
    z = δ_w / √Var. Only terms counted ``min_count`` times or more over both groups are listed."""
    top_counts = Counter(t for text in top for t in tokens(text))
    rest_counts = Counter(t for text in rest for t in tokens(text))
    n_top, n_rest = sum(top_counts.values()), sum(rest_counts.values())
    alpha0 = n_top + n_rest
    terms: list[Term] = []
    for term in top_counts.keys() | rest_counts.keys():
        y_top, y_rest = top_counts[term], rest_counts[term]
        alpha = y_top + y_rest
        if alpha < min_count:
            continue
        other_top = n_top + alpha0 - y_top - alpha
        other_rest = n_rest + alpha0 - y_rest - alpha
        if other_top <= 0 or other_rest <= 0:  # the only term there is: nothing to compare it with
            z = 0.0
        else:
            delta = math.log((y_top + alpha) / other_top) - math.log((y_rest + alpha) / other_rest)
            z = delta / math.sqrt(1 / (y_top + alpha) + 1 / (y_rest + alpha))
        terms.append(Term(term, y_top, y_rest, z))
    terms.sort(key=lambda t: (-t.z, -t.top_count, t.term))
    return terms[:limit]


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate: (0, 1) with no trials."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError("need 0 <= successes <= trials")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rated:
    key: str
    trials: int
    successes: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class Ranking:
    ranked: list[Rated]  # enough trials: by Wilson lower bound, highest first
    not_enough_data: list[Rated]  # fewer than min_trials: listed in the order given, never ranked


def rank(items: Iterable[tuple[str, int, int]], min_trials: int = 100) -> Ranking:
    """Rank ``(key, trials, successes)`` by the Wilson lower bound; items under ``min_trials`` stay unranked."""
    ranked: list[Rated] = []
    small: list[Rated] = []
    for key, trials, successes in items:
        low, high = wilson(successes, trials)
        rated = Rated(key, trials, successes, successes / trials if trials else 0.0, low, high)
        (ranked if trials >= min_trials else small).append(rated)
    ranked.sort(key=lambda r: (-r.low, -r.trials))
    return Ranking(ranked, small)


#: the fields of a channel's content that are copy (what the user reads); links, ids and signatures are not
COPY_FIELDS = ("subject", "title", "text", "body", "content", "description", "markdown")


def copy_text(content: Mapping[str, Any]) -> str:
    """The copy of one channel's content: its text fields, one per line."""
    return "\n".join(v for k in COPY_FIELDS if isinstance(v := content.get(k), str) and v)


@dataclass(frozen=True)
class Copy:
    """One copy's words and what its sends did."""

    text: str
    sent: int
    clicked: int
    converted: int


@dataclass(frozen=True)
class Knowledge:
    """Copies ranked by click rate and by conversion rate (keys: the copies' indexes as given), the indexes of
    the top copies by the chosen rate, and the terms that set them apart from the other ranked copies."""

    clicks: Ranking
    conversions: Ranking
    top: list[int]
    terms: list[Term]


def knowledge(
    copies: Sequence[Copy],
    *,
    by: str = "click",
    min_sends: int = 100,
    top_share: float = 1 / 3,
    limit: int = 20,
    min_count: int = 2,
) -> Knowledge:
    """Rank ``copies`` (rates per send) and find what the top ``top_share`` of the ranked ones by ``by``
    ("click" or "conversion") say that the rest do not. Copies under ``min_sends`` are neither ranked nor
    compared; with fewer than two ranked there is nothing to compare, so no terms. Each copy counts once,
    however often it was sent: a term is distinctive when it recurs across the better copies."""
    clicks = rank(((str(i), c.sent, c.clicked) for i, c in enumerate(copies)), min_sends)
    conversions = rank(((str(i), c.sent, c.converted) for i, c in enumerate(copies)), min_sends)
    ranked = [int(r.key) for r in (clicks if by == "click" else conversions).ranked]
    if len(ranked) < 2:
        return Knowledge(clicks, conversions, [], [])
    cut = min(len(ranked) - 1, max(1, math.ceil(len(ranked) * top_share)))
    top, rest = ranked[:cut], ranked[cut:]
    terms = distinguishing_terms([copies[i].text for i in top], [copies[i].text for i in rest], limit, min_count)
    return Knowledge(clicks, conversions, top, [term for term in terms if term.z > 0])
