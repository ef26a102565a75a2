"""Short links: the URLs of a delivery's content become ``{public_url}/s/{code}``, one code per URL per delivery,
so a click says which user, message (and so A/B variant) and channel it came from. Pure: finding URLs in text,
making codes, adding UTM parameters and rewriting a content dict; storing and counting clicks is
``clarion.store.links``.

Which fields are rewritten: SMS ``text`` always (while short links are on); with the all-channels option also
push and inbox ``url`` and ``body``, and e-mail ``text`` and the ``href`` of ``<a>`` tags in ``html`` (only
anchors: a stylesheet or image loading is not a click). Webhook bodies are never rewritten: they are machine
content, read by a program that wants the real URL, not a person whose click means something. Titles and
subjects are left alone: they are not clicked. URLs already on Clarion's own domain (the unsubscribe page, a
short link) are left as they are.

Codes are 8 base62 characters from ``secrets`` (62^8 ≈ 2^47.6): guessing a live one takes about
2·10^14 / (live codes) tries, and every try is one HTTP request.
"""

from __future__ import annotations

import html
import re
import secrets
import string
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from clarion.domain import model

CODE_LENGTH = 8
ALPHABET = string.digits + string.ascii_letters
#: what ``GET /s/{code}`` accepts before looking anything up (the column holds up to 16)
CODE = re.compile(r"[0-9A-Za-z]{1,16}")
#: the placeholders an operator may use in the UTM setting
UTM_PLACEHOLDERS = frozenset({"channel", "template", "category"})

# A URL is ASCII (anything else is percent-encoded in practice), so it ends at the first character that cannot
# be in one: a space, a quote, a bracket, or CJK text and full-width punctuation written right after it.
_URL = re.compile(r"(?<![A-Za-z0-9])https?://[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]+", re.IGNORECASE)
# Characters that end a sentence more often than they end a URL.
_TRAILING = ".,;:!?*"
_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{(\w*)\}")
_PAIRS = {")": "(", "]": "["}


def new_code(length: int = CODE_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def is_code(text: str) -> bool:
    return CODE.fullmatch(text) is not None


def _trimmed(url: str) -> str:
    """``url`` without the punctuation after it: ``.`` ending the sentence, a ``)`` closing the writer's
    parenthesis (kept when the URL opened it, as in ``/wiki/Foo_(bar)``)."""
    while url:
        last = url[-1]
        if last in _TRAILING or (last in _PAIRS and url.count(_PAIRS[last]) < url.count(last)):
            url = url[:-1]
        else:
            break
    return url


def _spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _URL.finditer(text):
        url = _trimmed(match.group())
        if urlsplit(url).netloc:
            spans.append((match.start(), match.start() + len(url)))
    return spans


def find_urls(text: str) -> list[str]:
    """The http(s) URLs in ``text``, in order, without the punctuation or prose around them."""
    return [text[start:end] for start, end in _spans(text)]


def utm_template(spec: str | None) -> tuple[tuple[str, str], ...]:
    """Parse the UTM setting (``"utm_source=clarion&utm_medium={channel}"``) into pairs; raises ``ValueError``
    for a malformed one or an unknown placeholder, so a typo stops the start-up instead of every link."""
    if not spec or not spec.strip():
        return ()
    try:
        pairs = parse_qsl(spec.strip(), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = []
    if not pairs or not all(name for name, _ in pairs):
        raise ValueError(f"not a query string like 'utm_source=clarion&utm_medium={{channel}}': {spec!r}")
    for name, value in pairs:
        unknown = {p for p in _PLACEHOLDER.findall(name + value) if p not in UTM_PLACEHOLDERS}
        if unknown:
            known = ", ".join(sorted(f"{{{p}}}" for p in UTM_PLACEHOLDERS))
            raise ValueError(f"unknown placeholder(s) {', '.join(sorted(unknown))} in {spec!r}; known: {known}")
    return tuple(pairs)


def utm_values(template: Sequence[tuple[str, str]], values: Mapping[str, str]) -> list[tuple[str, str]]:
    """The parameters for one delivery: the template's placeholders filled from ``values``."""

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)

    return [(fill(name), fill(value)) for name, value in template]


def with_params(url: str, params: Sequence[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to its query; its own query (and fragment) is kept byte for byte, and a
    parameter it already has (a ``utm_campaign`` the operator chose for this link) is not overridden."""
    if not params:
        return url
    parts = urlsplit(url)
    present = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = [(name, value) for name, value in params if name not in present]
    if not added:
        return url
    extra = urlencode(added)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


_TEXT_FIELDS: dict[model.Channel, tuple[str, ...]] = {
    model.Channel.SMS: ("text",),
    model.Channel.PUSH: ("url", "body"),
    model.Channel.INBOX: ("url", "body"),
    model.Channel.EMAIL: ("text",),
}
_HTML_FIELDS: dict[model.Channel, tuple[str, ...]] = {model.Channel.EMAIL: ("html",)}


def fields_for(channel: model.Channel, *, everywhere: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(plain-text fields, HTML fields) whose URLs are rewritten on ``channel``; see the module docstring."""
    if channel is model.Channel.SMS:
        return _TEXT_FIELDS[channel], ()
    if not everywhere:
        return (), ()
    return _TEXT_FIELDS.get(channel, ()), _HTML_FIELDS.get(channel, ())


@dataclass(frozen=True, slots=True)
class ShortLink:
    code: str
    #: where the link redirects: the URL from the content, with the UTM parameters added
    target: str


class Shortener:
    """Rewrites one delivery's content at a time. ``base_url`` is Clarion's public URL; ``utm`` the parsed UTM
    setting (``utm_template``); ``codes`` makes a candidate code (a fake in tests)."""

    def __init__(
        self,
        base_url: str,
        *,
        everywhere: bool = False,
        utm: Sequence[tuple[str, str]] = (),
        codes: Callable[[], str] = new_code,
        attempts: int = 10,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.everywhere = everywhere
        self.utm = tuple(utm)
        self.codes = codes
        self.attempts = attempts

    def url_for(self, code: str) -> str:
        return f"{self.base}/s/{code}"

    def rewrite(
        self,
        channel: model.Channel,
        content: dict[str, Any],
        values: Mapping[str, str] | None = None,
        taken: Container[str] = (),
    ) -> tuple[dict[str, Any], list[ShortLink]]:
        """``content`` with its URLs replaced by short links, and the links made (one per distinct URL).
        ``values`` fill the UTM placeholders; ``taken`` holds codes already given out that must not be reused.
        The content is returned as it was (the same object) when it has no URL to rewrite."""
        text_fields, html_fields = fields_for(channel, everywhere=self.everywhere)
        if not any("://" in value for f in (*text_fields, *html_fields) if isinstance(value := content.get(f), str)):
            return content, []  # most texts (codes, order updates) hold no link: nothing to scan
        made: dict[str, ShortLink] = {}
        params = utm_values(self.utm, values or {})

        def short(url: str) -> str:
            if url == self.base or url.startswith(self.base + "/"):
                return url  # ours already: the unsubscribe page, a short link
            link = made.get(url)
            if link is None:
                link = made[url] = ShortLink(self._code(taken, made), with_params(url, params))
            return self.url_for(link.code)

        changed: dict[str, Any] = {}
        for name in text_fields:
            value = content.get(name)
            if isinstance(value, str) and (new := self._in_text(value, short)) != value:
                changed[name] = new
        for name in html_fields:
            value = content.get(name)
            if isinstance(value, str) and (new := self._in_html(value, short)) != value:
                changed[name] = new
        if not changed:
            return content, list(made.values())
        return {**content, **changed}, list(made.values())

    def _code(self, taken: Container[str], made: Mapping[str, ShortLink]) -> str:
        mine = {link.code for link in made.values()}
        for _ in range(self.attempts):
            code = self.codes()
            if code not in taken and code not in mine:
                return code
        raise RuntimeError(f"no free short-link code after {self.attempts} attempts")

    @staticmethod
    def _in_text(text: str, short: Callable[[str], str]) -> str:
        spans = _spans(text)
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:
            out += [text[at:start], short(text[start:end])]
            at = end
        out.append(text[at:])
        return "".join(out)

    @staticmethod
    def _in_html(document: str, short: Callable[[str], str]) -> str:
        def href(match: re.Match[str]) -> str:
            quoted = match.group(2) if match.group(2) is not None else match.group(3)
            url = html.unescape(quoted).strip()
            if _URL.fullmatch(url) is None or not urlsplit(url).netloc:
                return match.group()
            quote = '"' if match.group(2) is not None else "'"
            return f"{match.group(1)}{quote}{html.escape(short(url))}{quote}"

        return _ANCHOR.sub(lambda tag: _HREF.sub(href, tag.group()), document)


_BOTS = re.compile(
    r"bot/|\+https?://|crawl|spider|slurp|preview|unfurl|embedly|facebookexternalhit|whatsapp"
    r"|(?:google|bing|yandex|baidu|duckduck|apple|slack|discord|telegram|twitter|linkedin|face|petal|sogou)bot",
    re.IGNORECASE,
)


def is_bot(user_agent: str | None) -> bool:
    """Whether a request looks like a link previewer or crawler (chat apps unfurling the link, mail scanners,
    search engines) rather than a person: its fetch is redirected like any other but not counted as a click.
    A short list of the common ones, not a classifier; a request without a user agent counts."""
    return bool(user_agent) and _BOTS.search(user_agent or "") is not None
