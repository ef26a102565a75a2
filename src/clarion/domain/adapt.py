"""One content, many channels: a template's ``default`` (title, body, url) adapted to each channel's format, and
the platform rules every rendered content obeys, adapted or written per channel.

Adapting (``from_default``), on the *rendered* default:

* sms — the body as plain text, then the url after a space (short links are made later, by the delivery's
  finisher); the signature is applied by ``finish``.
* push — title and body (truncated by ``finish``), url with its link type (and the mini program's appid).
* email — subject = title; html = the body escaped, in paragraphs, with the link; text = body and url.
* inbox — title, body, url.  webhook — ``{"body": {"title", "body", "url"}}``.
* wecom / dingtalk / feishu — title and markdown (a heading, the body, the link).
* wechat cannot be adapted: a template message needs the template id and field map the operator registered.
  Nor can voice: a call speaks a TTS template registered with the vendor (``vendor_template``), and only urgent
  templates call.

Finishing (``finish``), on every rendered content:

* sms — the signature ``【Brand】`` (from the sms content's ``signature``, else the default's) is put in front of
  the text, once; carriers bill it, so segments are counted on the signed text.
* push — title and body cut to ``PUSH_TITLE_LIMIT`` / ``PUSH_BODY_LIMIT`` characters, ending with ``…``.
* email — html without text gets a plain-text alternative made from the html.

Adapting happens after rendering (never before): a default's ``<#if>`` directives look like tags to the html
converter, and a truncation must count the characters the user sees.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

from clarion.domain import model

C = model.Channel

#: Android vendor push channels cut what they show; the strictest (vivo) allows a 40-character title and a
#: 100-character body, which is also about what a lock screen shows of a notification
PUSH_TITLE_LIMIT = 40
PUSH_BODY_LIMIT = 100
ELLIPSIS = "…"

#: channels a default content can be adapted to
ADAPTABLE = frozenset({C.INBOX, C.SMS, C.PUSH, C.EMAIL, C.WEBHOOK, C.WECOM, C.DINGTALK, C.FEISHU})
_MARKDOWN = frozenset({C.WECOM, C.DINGTALK, C.FEISHU})


def from_default(channel: model.Channel, default: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``channel`` made from a rendered default; ValueError for a channel that cannot be adapted."""
    title, body, url = default["title"], default["body"].rstrip(), default.get("url")
    if channel is C.SMS:
        return {"text": f"{body} {url}" if url else body}
    if channel is C.PUSH:
        link = {k: default[k] for k in ("url", "link_type", "appid") if default.get(k) is not None}
        return {"title": title, "body": body, **link}
    if channel is C.EMAIL:
        return {
            "subject": title,
            "html": html_from_text(body, url),
            "text": f"{body}\n\n{url}" if url else body,
        }
    if channel is C.INBOX:
        return {"title": title, "body": body, **({"url": url} if url else {})}
    if channel is C.WEBHOOK:
        return {"body": {"title": title, "body": body, **({"url": url} if url else {})}}
    if channel in _MARKDOWN:
        markdown = f"### {title}\n\n{body}" + (f"\n\n[{url}]({url})" if url else "")
        return {"title": title, "markdown": markdown}
    raise ValueError(f"{channel.value} content cannot be adapted from the default content")


def finish(channel: model.Channel, content: Mapping[str, Any], *, signature: str | None = None) -> dict[str, Any]:
    """Apply the platform rules to a rendered content; ``signature`` is the default's SMS signature, used when
    the sms content has none of its own."""
    out = dict(content)
    if channel is C.SMS:
        own = out.pop("signature", None)
        if isinstance(out.get("text"), str):
            out["text"] = sign(out["text"], own or signature)
    elif channel is C.PUSH:
        for key, limit in (("title", PUSH_TITLE_LIMIT), ("body", PUSH_BODY_LIMIT)):
            if isinstance(out.get(key), str):
                out[key] = truncate(out[key], limit)
    elif channel is C.EMAIL and isinstance(out.get("html"), str) and not out.get("text"):
        out["text"] = html_to_text(out["html"])
    return out


def sign(text: str, signature: str | None) -> str:
    """``【Brand】`` in front of ``text``, unless it already starts with it."""
    if not signature:
        return text
    mark = f"【{signature.strip('【】')}】"
    return text if text.startswith(mark) else mark + text


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last of them ``…`` when something was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def html_from_text(body: str, url: str | None = None) -> str:
    """Plain text as html: escaped, blank lines separate paragraphs, single newlines become ``<br>``."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    parts = ["<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs]
    if url:
        href = html.escape(url, quote=True)
        parts.append(f'<p><a href="{href}">{href}</a></p>')
    return "\n".join(parts)


def html_to_text(markup: str) -> str:
    """The plain-text alternative of an html e-mail: blocks on their own lines, list items with ``- ``, links
    followed by their address, scripts and styles left out, entities decoded."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.out)
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_BLOCKS = frozenset(
    {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "ul", "ol", "blockquote", "pre", "hr"}
    | {"section", "article", "header", "footer", "address"}
)
_HIDDEN = frozenset({"script", "style", "head", "title", "template"})


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.links: list[tuple[str | None, int]] = []  # (href, where its label starts in out)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), len(self.out)))
        elif tag in _BLOCKS:
            self.out.append("\n\n")
            self.pre += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN and tag != "a":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.out[start:]).strip()
            if href and not href.startswith(("#", "mailto:", "javascript:")) and href != label:
                self.out.append(f" ({href})" if label else href)
        elif tag in _BLOCKS:
            self.out.append("\n\n")
            self.pre -= tag == "pre" and self.pre > 0

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        self.out.append(data if self.pre else re.sub(r"\s+", " ", data))
