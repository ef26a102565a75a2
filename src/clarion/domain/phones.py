"""Phone numbers as Clarion holds them: E.164 (``+8613800138000``), from what people type.

Digits may be grouped with spaces, dashes, dots and parentheses (``+86 (138) 0013-8000``); full-width digits
and plus sign, as Chinese input methods give them, are digits too. Anything else is refused rather than guessed
at: letters (``+1-800-FLOWERS`` would otherwise be dialled as the keypad spells it), control characters and NUL
(a number is not silently cut at them), extensions. A number without ``+`` needs a ``region`` to say its country.
"""

from __future__ import annotations

import phonenumbers

__all__ = ["looks_like_phone", "normalize", "set_default_region"]

MAX_LENGTH = 64
_SEPARATORS = frozenset(" -.()")
_PLUS = frozenset("+＋")


#: the country a number typed without ``+`` belongs to (``CLARION_DEFAULT_REGION``, e.g. ``CN``: ``13912345678``
#: and ``0086 139…`` are ``+86139…``); None: such a number is refused. Set once at start-up by ``bootstrap``.
_default_region: str | None = None
_PHONE_LIKE = frozenset("0123456789+＋ -.()")


def set_default_region(region: str | None) -> None:
    global _default_region
    _default_region = region.upper() if region else None


def looks_like_phone(value: str) -> bool:
    """Whether an address someone typed is meant as a phone number (digits and the separators people type, at
    most 20 of them): a suppression or ID-list value so written is normalised like a user's phone, never stored
    in a form that can never match."""
    stripped = value.strip()
    return 5 <= len(stripped) <= 24 and all(c in _PHONE_LIKE or c.isdecimal() for c in stripped)


def normalize(raw: str, region: str | None = None) -> str:
    """``raw`` in E.164; ``ValueError`` saying what is wrong when it is not a valid phone number. A number without
    ``+`` is read in ``region``, else in the default region (``set_default_region``)."""
    region = region or _default_region
    if len(raw) > MAX_LENGTH:
        raise ValueError(f"not a phone number: longer than {MAX_LENGTH} characters")
    text = raw.strip(" ")
    digits = plus = False
    for c in text:
        if c.isdecimal():
            digits = True
            continue
        if c in _SEPARATORS:
            continue
        if c in _PLUS and not digits and not plus:
            plus = True
            continue
        if c.isalpha():
            raise ValueError("letters are not allowed in a phone number: give its digits")
        if not c.isprintable():
            raise ValueError(f"a phone number cannot hold the unprintable character {c!r}")
        raise ValueError(f"{c!r} is not allowed in a phone number: digits, spaces, - . ( ) and a leading +")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        if region is None and not plus:
            raise ValueError(
                "not an E.164 phone number (expected +<country code><number>, or set CLARION_DEFAULT_REGION "
                "for numbers written without it)"
            ) from None
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
