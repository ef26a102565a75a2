"""SMS replies (上行短信) and the keyword table that turns one into an unsubscribe.

A user answering a marketing SMS with ``TD`` or ``退订`` asks to get no more of them. The keyword table says which
replies mean that; it is per sending number or sign name (``scope``), as carriers require each sender's
keywords to be unambiguous, with ``*`` for every sender. A reply matches a keyword when its text, trimmed of
spaces and trailing punctuation and compared without case, is the keyword itself: "td" and "退订。" match,
"I will not TD" does not (an unsubscribe is not guessed from a sentence).

Pure: the table is validated here, and ``match`` is a function of the table and a reply."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clarion.domain import errors

#: what a fresh installation takes as an unsubscribe reply, from every sender
DEFAULT_WORDS = ("TD", "退订", "T", "N", "STOP", "UNSUBSCRIBE")
ANY_SENDER = "*"
MAX_KEYWORDS = 200
MAX_WORD = 32
MAX_CONFIRMATION = 500
_TRAILING = "。.!！?？,，;；~～ \t\r\n"


@dataclass(frozen=True, slots=True)
class Keyword:
    word: str
    #: the sending number or sign name it applies to; ``*`` for every sender
    scope: str = ANY_SENDER
    #: the SMS sent back to confirm (None: nothing is sent)
    confirmation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "scope": self.scope, "confirmation": self.confirmation}


def default_table() -> tuple[Keyword, ...]:
    return tuple(Keyword(w) for w in DEFAULT_WORDS)


def fold(text: str) -> str:
    """The form a reply and a keyword are compared in: NFKC (full-width letters are letters), upper case, trimmed."""
    return unicodedata.normalize("NFKC", text).strip(_TRAILING).upper()


def table_from_json(document: Any) -> tuple[Keyword, ...]:
    """The keyword table of ``{"keywords": [{"word", "scope", "confirmation"}]}``; ``InvalidInput`` naming the
    entry otherwise. A word appears once per scope (compared as replies are)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keywords"), list):
        raise errors.InvalidInput('give {"keywords": [...]}', details=[{"field": "keywords", "message": "required"}])
    entries = document["keywords"]
    if len(entries) > MAX_KEYWORDS:
        raise errors.InvalidInput(f"at most {MAX_KEYWORDS} keywords", details=[{"field": "keywords"}])
    problems: list[dict[str, str]] = []
    seen: dict[tuple[str, str], int] = {}
    table: list[Keyword] = []
    for i, entry in enumerate(entries):
        where = f"keywords.{i}"
        if not isinstance(entry, Mapping) or set(entry) - {"word", "scope", "confirmation"}:
            problems.append({"field": where, "message": "an object with word, and optionally scope and confirmation"})
            continue
        word, scope, confirmation = entry.get("word"), entry.get("scope", ANY_SENDER), entry.get("confirmation")
        if not isinstance(word, str) or not fold(word) or len(word) > MAX_WORD:
            problems.append({"field": f"{where}.word", "message": f"a word of 1 to {MAX_WORD} characters"})
            continue
        if not isinstance(scope, str) or not scope.strip() or len(scope) > 64:
            problems.append({"field": f"{where}.scope", "message": "a sending number, a sign name, or *"})
            continue
        if confirmation is not None and (not isinstance(confirmation, str) or not 0 < len(confirmation) <= 500):
            problems.append({"field": f"{where}.confirmation", "message": f"a text of at most {MAX_CONFIRMATION}"})
            continue
        key = (scope.strip(), fold(word))
        if key in seen:
            problems.append({"field": f"{where}.word", "message": f"{word!r} is already keywords.{seen[key]}"})
            continue
        seen[key] = i
        table.append(Keyword(word.strip(), scope.strip(), confirmation))
    if problems:
        raise errors.InvalidInput(f"invalid keyword table: {problems[0]['field']}", details=problems)
    return tuple(table)


def table_to_json(table: Sequence[Keyword]) -> dict[str, Any]:
    return {"keywords": [k.to_json() for k in table]}


def match(table: Sequence[Keyword], text: str, senders: Sequence[str | None]) -> Keyword | None:
    """The keyword ``text`` is, for the reply's ``senders`` (the number it was sent to, the sign name the vendor
    names): a keyword of one of those senders wins over one for every sender."""
    folded = fold(text)
    if not folded:
        return None
    mine = {s for s in senders if s}
    general = None
    for keyword in table:
        if fold(keyword.word) != folded:
            continue
        if keyword.scope in mine:
            return keyword
        if keyword.scope == ANY_SENDER and general is None:
            general = keyword
    return general
