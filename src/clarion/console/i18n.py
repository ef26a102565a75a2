"""The console's languages: 简体中文 and English, every string from the Babel catalogues under ``locale/``.

The ``.po`` files are the only source: they are compiled in memory when the console starts (no ``.mo`` to
build or to forget to rebuild). The language is the ``clarion_lang`` cookie's (the switcher sets it), else the
best match of the browser's Accept-Language, else Chinese."""

from __future__ import annotations

import gettext
import io
from collections.abc import Mapping
from pathlib import Path

from babel.messages import mofile, pofile
from babel.messages.catalog import Catalog

LOCALES = ("zh_CN", "en")
DEFAULT = "zh_CN"
#: what the switcher shows, each in its own language
NAMES: Mapping[str, str] = {"zh_CN": "简体中文", "en": "English"}
HTML_LANG: Mapping[str, str] = {"zh_CN": "zh-CN", "en": "en"}
DOMAIN = "console"
LOCALE_DIR = Path(__file__).parent / "locale"


def read(locale: str) -> Catalog:
    """The messages of ``locale`` (one of ``LOCALES``), from its ``console.po`` (``make catalogue`` refreshes it)."""
    with (LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        return pofile.read_po(po, locale=locale, domain=DOMAIN)


def catalogue(locale: str) -> gettext.GNUTranslations:
    """The compiled catalogue of ``locale``."""
    compiled = io.BytesIO()
    mofile.write_mo(compiled, read(locale), use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def _accepted(header: str) -> list[tuple[float, str]]:
    ranked = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if tag:
            ranked.append((-quality, position, tag.strip().lower().replace("_", "-")))
    return [(-q, tag) for q, _, tag in sorted(ranked)]


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LOCALES:
        return str(cookie)
    for quality, tag in _accepted(accept_language or ""):
        if quality <= 0:
            continue
        if tag.startswith("zh"):
            return "zh_CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT
