"""Keyword interception: operator-managed word lists matched with an Aho–Corasick automaton.

Each ``KeywordList`` is one version of one list (illegal, violent, competitor names, …) with an action:

* ``block`` — a message whose rendered text contains a word is filtered (reason ``keyword``, naming the word);
* ``mask`` — every occurrence is replaced by ``***`` and the message goes out.

The same lists check a template when it is saved: a block-list match is an error, a mask-list match a warning
(``find`` gives every occurrence with its position). The automaton is built once, in the constructor, so a list
is built once per version and shared by every message; matching a text is one left-to-right pass over it.

Matching
--------
Words are stripped; empty and whitespace-only words are ignored. There are no word boundaries: a word matches
anywhere, which is what Chinese needs (``赌博`` in ``网络赌博彩票``) and means ``ass`` matches inside ``class``
for English — list whole phrases where that matters.

Text and words go through the same folding, unit by unit, and every ``Match`` gives ``[start, end)`` in the
ORIGINAL text: a match that covers part of a unit's folded form covers the whole unit.

* Case: unless ``case_sensitive=True``, ``str.casefold()`` (full Unicode case folding). It can change length —
  ``ß`` folds to ``ss`` — so ``strasse`` matches ``Straße`` with the span covering the 6 original characters,
  and a word ``s`` matches the ``ß`` once, as that one character. Folding is locale independent: Turkish dotless
  ``ı`` stays distinct from ``i``, and ``İ`` folds to ``i`` + U+0307 (combining dot), so ``İSTANBUL`` matches
  ``İstanbul`` but ``istanbul`` does not.
* Normalization (``normalize=True``, the default): each unit — a character with the combining marks that follow
  it — is NFKC-normalized before and after case folding, so full-width and other compatibility forms match
  (``ｆｒｅｅ`` → ``free``, ``①`` → ``1``, ``Ｓ`` → ``s``) and a decomposed ``e`` + U+0301 matches ``é``. Invisible
  format characters (zero-width space/joiners, word joiner, BOM, soft hyphen, bidi marks, …: ``_IGNORABLE``) are
  dropped, so ``f\\u200bree`` matches ``free`` and the span includes the zero-width space. Not done: ignoring
  spaces or punctuation inserted between letters (``f r e e``, ``赌*博``), homoglyphs across scripts (Cyrillic
  ``а`` for Latin ``a``), traditional/simplified Chinese conversion, and composing Hangul jamo across units.

Several words that fold to the same string (``Free`` and ``FREE``) are one pattern; matches name the first of them
in the order given. ``words`` keeps all of them.

Limits: at most ``MAX_WORDS`` (100,000) distinct words per list and ``MAX_WORD_LENGTH`` (200) characters per
stripped word; beyond either the constructor raises ``ValueError``.

Speed
-----
Every rendered message is screened, and almost none contains a listed word. Besides the automaton, each list
compiles its words into one regular expression, a trie of alternatives, that only answers "does any word occur
in this folded text?"; the regular expression engine answers that in C, so a text without a match never walks
the automaton character by character. ``screen`` folds a text once for all the lists that fold alike.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

MAX_WORDS = 100_000
MAX_WORD_LENGTH = 200
DEFAULT_REPLACEMENT = "***"

Action = Literal["block", "mask"]

# Invisible characters that are dropped before matching when ``normalize`` is on (NFKC keeps them all).
_IGNORABLE = frozenset(
    "\u00ad"  # soft hyphen
    "\u034f"  # combining grapheme joiner
    "\u061c"  # Arabic letter mark
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers
    "\u17b4\u17b5"  # Khmer inherent vowels
    "\u180b\u180c\u180d\u180e\u180f"  # Mongolian free variation selectors, vowel separator
    "\u200b\u200c\u200d\u200e\u200f"  # zero-width space, non-joiner, joiner, LRM, RLM
    "\u202a\u202b\u202c\u202d\u202e"  # bidi embeddings and overrides
    "\u2060\u2061\u2062\u2063\u2064"  # word joiner, invisible operators
    "\u2066\u2067\u2068\u2069"  # bidi isolates
    "\ufe00\ufe01\ufe02\ufe03\ufe04\ufe05\ufe06\ufe07\ufe08\ufe09\ufe0a\ufe0b\ufe0c\ufe0d\ufe0e\ufe0f"  # VS1-16
    "\ufeff"  # zero-width no-break space / BOM
)


@dataclass(frozen=True, slots=True)
class Match:
    """One occurrence of ``word`` (as listed, stripped) at ``[start, end)`` of the original text."""

    word: str
    start: int
    end: int
    list_key: str


# --- folding ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


@functools.lru_cache(maxsize=1 << 16)
def _fold_unit(unit: str, casefold: bool, normalize: bool) -> str:
    if normalize:
        unit = unicodedata.normalize("NFKC", unit)
    if casefold:
        unit = unit.casefold()
        if normalize:
            unit = unicodedata.normalize("NFKC", unit)
    if normalize:
        unit = "".join(ch for ch in unit if ch not in _IGNORABLE)
    return unit


class _OneToOne(dict[int, str]):
    """``str.translate`` table for normalized folding: a code point to its folded character when the character is
    a unit of its own that folds to exactly one character, else to two characters (so the length tells).

    Filled on demand; it stops remembering past ``_ONE_TO_ONE_SIZE`` entries, so hostile text cannot grow it."""

    def __init__(self, casefold: bool) -> None:
        super().__init__()
        self._casefold = casefold

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        folded = _fold_unit(ch, self._casefold, True)
        value = folded if len(folded) == 1 and not _is_mark(ch) else "\x00\x00"
        if len(self) < _ONE_TO_ONE_SIZE:
            self[code] = value
        return value


_ONE_TO_ONE_SIZE = 1 << 16
_ONE_TO_ONE = {True: _OneToOne(casefold=True), False: _OneToOne(casefold=False)}


_Folded = tuple[str, list[int] | None, list[int] | None]  # what ``_fold`` gives


def _fold(text: str, *, casefold: bool, normalize: bool) -> _Folded:
    """Fold ``text`` for matching: ``(folded, starts, ends)``.

    ``starts[k]``/``ends[k]`` are the original ``[start, end)`` of the unit that produced ``folded[k]``; both are
    None when folding kept every character in place — the common case: ASCII, Chinese with full-width
    punctuation (``，`` → ``,``). The fast paths give exactly what the unit-by-unit path would.
    """
    if normalize:
        if text.isascii():  # NFKC leaves ASCII alone, nothing ignorable, casefold == lower
            return (text.lower() if casefold else text), None, None
        folded = text.translate(_ONE_TO_ONE[casefold])  # no marks, every character folds to one: in place
        if len(folded) == len(text):
            return folded, None, None
    elif not casefold:
        return text, None, None
    else:
        folded = text.casefold()  # per character; never folds a character to nothing
        if len(folded) == len(text):
            return folded, None, None

    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    n = len(text)
    i = 0
    while i < n:
        j = i + 1
        if normalize:  # a unit is a character with the combining marks after it, so NFKC can compose them
            while j < n and _is_mark(text[j]):
                j += 1
        piece = _fold_unit(text[i:j], casefold, normalize)
        if piece:
            pieces.append(piece)
            starts.extend([i] * len(piece))
            ends.extend([j] * len(piece))
        i = j
    return "".join(pieces), starts, ends


# --- the automaton ---------------------------------------------------------------------------------------------


class KeywordList:
    """One immutable, compiled version of a keyword list."""

    __slots__ = (
        "_action",
        "_casefold",
        "_fail",
        "_goto",
        "_key",
        "_labels",
        "_lengths",
        "_normalize",
        "_out",
        "_out_link",
        "_present",
        "_version",
        "_words",
    )

    def __init__(
        self,
        key: str,
        words: Iterable[str],
        *,
        action: Action,
        version: int = 1,
        case_sensitive: bool = False,
        normalize: bool = True,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("a keyword list needs a non-empty key")
        if action not in ("block", "mask"):
            raise ValueError(f"action must be 'block' or 'mask', not {action!r}")
        if isinstance(words, str):
            raise TypeError("words must be an iterable of words, not one string")
        self._key = key
        self._action: Action = action
        self._version = version
        self._casefold = not case_sensitive
        self._normalize = normalize

        listed: set[str] = set()
        patterns: dict[str, str] = {}  # folded pattern -> the first listed word that folds to it
        for raw in words:
            if not isinstance(raw, str):
                raise TypeError(f"keywords must be strings, not {type(raw).__name__}")
            word = raw.strip()
            if not word or word in listed:
                continue
            if len(word) > MAX_WORD_LENGTH:
                raise ValueError(f"keyword longer than {MAX_WORD_LENGTH} characters: {word[:20]!r}…")
            pattern = self._fold(word)[0]
            if not pattern:  # nothing left to match, e.g. only zero-width characters
                continue
            listed.add(word)
            if len(listed) > MAX_WORDS:
                raise ValueError(f"a keyword list holds at most {MAX_WORDS} words")
            patterns.setdefault(pattern, word)
        self._words = frozenset(listed)
        self._build(patterns)

    def _build(self, patterns: dict[str, str]) -> None:
        # State 0 is the root. goto[s] maps a character to the next state of the trie (the failure links fill in
        # the rest when matching); out[s] is the pattern that ends at s, or -1; out_link[s] is the nearest state
        # on s's failure chain with a pattern (0: none), so all the patterns ending at a position are a short
        # walk, never a walk over pattern-less states.
        goto: list[dict[str, int]] = [{}]
        out: list[int] = [-1]
        labels: list[str] = []
        lengths: list[int] = []
        for pattern, word in patterns.items():
            state = 0
            for ch in pattern:
                nxt = goto[state].get(ch)
                if nxt is None:
                    nxt = len(goto)
                    goto[state][ch] = nxt
                    goto.append({})
                    out.append(-1)
                state = nxt
            out[state] = len(labels)
            labels.append(word)
            lengths.append(len(pattern))

        fail = [0] * len(goto)
        out_link = [0] * len(goto)
        queue: deque[int] = deque(goto[0].values())  # depth 1: fail to the root
        while queue:
            state = queue.popleft()
            for ch, child in goto[state].items():
                queue.append(child)
                f = fail[state]
                while f and ch not in goto[f]:
                    f = fail[f]
                target = goto[f].get(ch, 0)
                fail[child] = target if target != child else 0
                out_link[child] = fail[child] if out[fail[child]] >= 0 else out_link[fail[child]]

        self._fail = fail
        self._out = out
        self._out_link = out_link
        self._labels = labels
        self._lengths = lengths
        self._present = _presence(patterns)
        self._goto = goto  # last: from here on the list is frozen (see __setattr__)

    # --- read-only attributes ---

    @property
    def key(self) -> str:
        return self._key

    @property
    def action(self) -> Action:
        return self._action

    @property
    def version(self) -> int:
        return self._version

    @property
    def words(self) -> frozenset[str]:
        return self._words

    @property
    def case_sensitive(self) -> bool:
        return not self._casefold

    @property
    def normalize(self) -> bool:
        return self._normalize

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_goto"):  # the last thing the constructor sets
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"KeywordList(key={self._key!r}, action={self._action!r}, version={self._version}, "
            f"words={len(self._words)})"
        )

    # --- matching ---

    def _fold(self, text: str) -> _Folded:
        return _fold(text, casefold=self._casefold, normalize=self._normalize)

    def _occurs(self, folded: str) -> bool:
        """Whether the automaton would find a pattern in ``folded``: exact with a presence check, else always True."""
        return self._present is None or self._present.search(folded) is not None

    def _scan(self, folded: str, *, first: bool) -> list[tuple[int, int]]:
        """``(end, pattern)`` for every pattern occurrence in ``folded``, by end; only the first when ``first``.

        At one end position the longest pattern comes first (the state's own, then its output links)."""
        goto, fail, out, out_link = self._goto, self._fail, self._out, self._out_link
        found: list[tuple[int, int]] = []
        state = 0
        for i, ch in enumerate(folded):
            while True:
                nxt = goto[state].get(ch)
                if nxt is not None:
                    state = nxt
                    break
                if not state:
                    break
                state = fail[state]
            hit = state if out[state] >= 0 else out_link[state]
            while hit:
                found.append((i + 1, out[hit]))
                if first:
                    return found
                hit = out_link[hit]
        return found

    def _match(self, end: int, pattern: int, starts: list[int] | None, ends: list[int] | None) -> Match:
        start = end - self._lengths[pattern]
        if starts is not None and ends is not None:
            start, end = starts[start], ends[end - 1]
        return Match(self._labels[pattern], start, end, self._key)

    def find(self, text: str) -> list[Match]:
        """Every occurrence, overlapping and nested ones included, ordered by start, then longest first (by span,
        then by word: ``ss`` and ``s`` can both cover one ``ß``).

        Occurrences in the folded text that land on the same original span (``s`` twice in one ``ß``) are one."""
        return self._find_folded(self._fold(text))

    def _find_folded(self, fold: _Folded) -> list[Match]:
        folded, starts, ends = fold
        if not self._occurs(folded):
            return []
        matches = [self._match(end, pattern, starts, ends) for end, pattern in self._scan(folded, first=False)]
        if starts is not None:
            matches = list(dict.fromkeys(matches))
        matches.sort(key=lambda m: (m.start, -m.end, -len(m.word), m.word))
        return matches

    def first(self, text: str) -> Match | None:
        """The first match the scan meets — the one that ends earliest, the longest of those — or None.

        Stops there: the rest of the text is not scanned. Enough for a block list, which needs one reason."""
        return self._first_folded(self._fold(text))

    def _first_folded(self, fold: _Folded) -> Match | None:
        folded, starts, ends = fold
        if not self._occurs(folded):
            return None
        found = self._scan(folded, first=True)
        return self._match(*found[0], starts, ends) if found else None

    def mask(self, text: str, replacement: str = DEFAULT_REPLACEMENT) -> tuple[str, list[Match]]:
        """``text`` with each matched span replaced by ``replacement``, and the matches (as ``find`` gives them).

        Overlapping and touching spans merge into one replacement: ``赌博彩`` for ``赌博`` + ``博彩`` is one
        ``***``. When ``replacement`` folds to characters that appear in no word, the result contains no word
        (see ``screen``)."""
        matches = self.find(text)
        return _replace(text, matches, replacement), matches


_END = ""  # marks the end of a pattern in the trie ``_presence`` builds (no pattern is empty)
_NOTHING = re.compile("(?!)")  # the presence check of a list without words: never matches


def _presence(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """A regular expression that finds whether any of ``patterns`` occurs in a folded text, or None when it cannot
    be compiled (then every text is scanned by the automaton).

    The patterns become a trie with single-child chains written as one literal, so at each position the engine
    follows one branch, like the automaton. A pattern that has a shorter pattern as a prefix is left out: wherever
    it occurs, the shorter one does too."""
    root: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        node = root
        for ch in pattern:
            if _END in node:
                break
            node = node.setdefault(ch, {})
        else:
            node.clear()
            node[_END] = {}
    if not root:
        return _NOTHING
    try:
        return re.compile(_alternatives(root))
    except (RecursionError, re.error, OverflowError, MemoryError):
        return None


def _alternatives(node: dict[str, dict[str, Any]]) -> str:
    if _END in node:
        return ""
    branches = []
    for ch, child in node.items():
        chain = [ch]
        while _END not in child and len(child) == 1:
            ((following, child),) = child.items()
            chain.append(following)
        branches.append(re.escape("".join(chain)) + _alternatives(child))
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _replace(text: str, matches: Iterable[Match], replacement: str) -> str:
    spans = sorted((m.start, m.end) for m in matches)
    if not spans:
        return text
    parts: list[str] = []
    kept = 0  # text[:kept] is already in parts
    span_start, span_end = spans[0]
    for start, end in spans[1:]:
        if start <= span_end:  # overlapping or touching: one span
            span_end = max(span_end, end)
            continue
        parts += (text[kept:span_start], replacement)
        kept = span_end
        span_start, span_end = start, end
    parts += (text[kept:span_start], replacement, text[span_end:])
    return "".join(parts)


# --- screening a message ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Screening:
    """What the keyword policy decided for one text.

    ``blocked_by`` set: the message is filtered (``reason`` is ``keyword``, ``detail`` names the word and list),
    ``masked_text`` is the text unchanged. Otherwise ``masked_text`` is what to send and ``masks`` the masked
    matches, with offsets into the original text."""

    blocked_by: Match | None
    masked_text: str
    masks: list[Match]

    @property
    def blocked(self) -> bool:
        return self.blocked_by is not None

    @property
    def reason(self) -> str | None:
        return "keyword" if self.blocked_by is not None else None

    @property
    def detail(self) -> dict[str, object]:
        m = self.blocked_by
        if m is None:
            return {}
        return {"word": m.word, "list": m.list_key, "start": m.start, "end": m.end}


def screen(text: str, lists: Sequence[KeywordList], *, replacement: str = DEFAULT_REPLACEMENT) -> Screening:
    """Apply the keyword lists to one rendered text.

    Block lists come first, in the order given: the first one with a match blocks the message with its first
    match (``KeywordList.first``), and nothing is masked. Otherwise every mask list is applied: all their matches
    are found in the ORIGINAL text (so every offset refers to it, and one list's ``***`` can neither hide nor
    create another list's word), and the union of their spans is replaced, overlapping and touching spans
    merged. The result is what masking list after list would give when no two lists' matches overlap, and
    masks more (the whole union) when they do.

    Guarantee: if ``replacement`` is non-empty and no character of its folded form occurs in any folded mask
    word (true for ``***`` unless a word contains ``*``), then scanning ``masked_text`` with any of the mask lists
    finds nothing — any occurrence would have to sit inside an unmasked stretch of the original text, and
    every such occurrence was masked. With an empty replacement it does not hold: masking ``ab`` in ``aabb``
    leaves ``ab``.
    """
    folds: dict[tuple[bool, bool], _Folded] = {}
    for keyword_list in lists:
        if keyword_list._action == "block":
            hit = keyword_list._first_folded(_fold_once(text, keyword_list, folds))
            if hit is not None:
                return Screening(blocked_by=hit, masked_text=text, masks=[])
    masks: list[Match] = []
    for keyword_list in lists:
        if keyword_list._action == "mask":
            masks.extend(keyword_list._find_folded(_fold_once(text, keyword_list, folds)))
    if not masks:
        return Screening(blocked_by=None, masked_text=text, masks=[])
    masks.sort(key=lambda m: (m.start, -m.end))  # stable: list order among equal spans
    return Screening(blocked_by=None, masked_text=_replace(text, masks, replacement), masks=masks)


def _fold_once(text: str, keyword_list: KeywordList, folds: dict[tuple[bool, bool], _Folded]) -> _Folded:
    """``text`` folded as ``keyword_list`` folds, remembered in ``folds`` for the other lists that fold alike."""
    how = (keyword_list._casefold, keyword_list._normalize)
    found = folds.get(how)
    if found is None:
        found = folds[how] = keyword_list._fold(text)
    return found
