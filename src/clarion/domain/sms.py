"""SMS length the way carriers bill it: encoding, billing units and segment count.

An SMS is sent in the GSM 03.38 7-bit default alphabet when every character belongs to it, and in UCS-2
otherwise (a single character outside the alphabet switches the whole message).

* GSM-7 is counted in septets.  Characters of the basic table cost one septet; characters of the extension
  table (``^ { } \\ [ ~ ] | €`` and form feed) cost two, an escape septet followed by the character.
* UCS-2 is counted in UTF-16 code units, so a character outside the Basic Multilingual Plane (most emoji)
  costs two units, a surrogate pair.

A message that fits in one SMS holds 160 septets or 70 units.  A longer one is concatenated, and every part
loses room to the user data header: 153 septets or 67 units per segment.  Segments are packed greedily and a
two-unit character (an extension character's escape + septet, or a surrogate pair) is never split across two
segments; it moves whole to the next one, leaving a unit unused at the end of the previous segment.

Empty text is billed as one segment with 0 characters: carriers charge for an empty SMS like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "Segments", "count_segments", "is_gsm7"]

# The 127 printable characters of the GSM 03.38 default alphabet (position 0x1B, the escape, is left out).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters of the extension table; each is sent as escape + septet and costs two septets.
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

_GSM7_SINGLE, _GSM7_MULTI = 160, 153
_UCS2_SINGLE, _UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class Segments:
    """How a text is billed.

    ``characters`` is the number of billing units: GSM-7 septets (extension characters count 2) or UTF-16
    code units.  ``per_segment`` is 160/70 for a single-segment message and 153/67 when concatenated;
    ``remaining`` is how many units are still free in the last segment.
    """

    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    count: int
    per_segment: int
    remaining: int


_GSM7_ALL = frozenset(GSM7_BASIC) | frozenset(GSM7_EXTENSION)


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 default alphabet or its extension table."""
    return _GSM7_ALL.issuperset(text)


_WITHOUT_EXTENSION = {ord(ch): None for ch in GSM7_EXTENSION}


def count_segments(text: str) -> Segments:
    """Encoding, billing units and number of SMS segments for ``text`` (empty text is one segment)."""
    encoding: Literal["GSM-7", "UCS-2"]
    # the units counted in C (a single segment, the common case, needs no more)
    if is_gsm7(text):
        encoding, single, multi = "GSM-7", _GSM7_SINGLE, _GSM7_MULTI
        total = 2 * len(text) - len(text.translate(_WITHOUT_EXTENSION))
    else:
        encoding, single, multi = "UCS-2", _UCS2_SINGLE, _UCS2_MULTI
        total = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if total <= single:
        return Segments(encoding, total, 1, single, single - total)
    if encoding == "GSM-7":
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    else:
        widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    count, used = 1, 0
    for width in widths:
        if used + width > multi:  # never split a two-unit character across segments
            count += 1
            used = 0
        used += width
    return Segments(encoding, total, count, multi, multi - used)
