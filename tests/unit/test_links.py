"""Short links, the pure part: finding URLs in prose (English and Chinese), rewriting a delivery's content, codes,
and UTM parameters."""

from __future__ import annotations

import itertools
from urllib.parse import parse_qsl, urlsplit

import pytest

from clarion.domain import links
from clarion.domain.model import Channel

BASE = "https://go.example.com"


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("See https://shop.example.com/sale.", ["https://shop.example.com/sale"]),
        (
            "Go to https://a.example.com/x?y=1, then https://b.example.com!",
            ["https://a.example.com/x?y=1", "https://b.example.com"],
        ),
        ("(details: https://example.com/faq)", ["https://example.com/faq"]),
        ("https://en.wikipedia.org/wiki/Foo_(bar) is a page", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
        ("点击https://m.example.cn/a?b=1查看详情。", ["https://m.example.cn/a?b=1"]),
        ("详情见 https://m.example.cn/p/42。谢谢", ["https://m.example.cn/p/42"]),
        ("链接：https://m.example.cn/q，请查收", ["https://m.example.cn/q"]),
        ("（https://m.example.cn/r）", ["https://m.example.cn/r"]),
        ("HTTP://EXAMPLE.COM/UP; next", ["HTTP://EXAMPLE.COM/UP"]),
        ('<"https://example.com/q#frag">', ["https://example.com/q#frag"]),
        ("no link here, not even example.com or ftp://example.com", []),
        ("a bare https:// is not a link", []),
        ("xhttps://example.com is glued to a word", []),
    ],
)
def test_find_urls_leaves_out_punctuation_and_prose(text: str, urls: list[str]) -> None:
    assert links.find_urls(text) == urls


def test_codes_are_eight_base62_characters_and_unique() -> None:
    codes = [links.new_code() for _ in range(2000)]
    assert all(len(c) == 8 and links.is_code(c) for c in codes)
    assert set("".join(codes)) <= set(links.ALPHABET)
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("code", ["", "abc-def", "a" * 17, "abc/def", "短链接"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert not links.is_code(code)


def test_sms_text_is_rewritten_one_code_per_distinct_url() -> None:
    shortener = links.Shortener(BASE)
    content = {"text": "Sale: https://shop.example.com/a. Again https://shop.example.com/a, or https://b.example.com"}
    out, made = shortener.rewrite(Channel.SMS, content)
    assert len(made) == 2
    first, second = made
    assert first.target == "https://shop.example.com/a" and second.target == "https://b.example.com"
    assert out["text"] == (f"Sale: {BASE}/s/{first.code}. Again {BASE}/s/{first.code}, or {BASE}/s/{second.code}")
    assert content["text"].startswith("Sale: https://shop")  # the rendered content is not mutated


def test_chinese_text_keeps_its_punctuation_around_the_short_link() -> None:
    out, [link] = links.Shortener(BASE).rewrite(Channel.SMS, {"text": "点击https://m.example.cn/a?b=1查看。"})
    assert out["text"] == f"点击{BASE}/s/{link.code}查看。"
    assert link.target == "https://m.example.cn/a?b=1"


def test_links_on_clarions_own_domain_are_left_alone() -> None:
    text = f"Stop: {BASE}/u/token123 or {BASE}/s/abcdefgh"
    out, made = links.Shortener(BASE + "/").rewrite(Channel.SMS, {"text": text})
    assert made == [] and out["text"] == text


def test_only_sms_is_rewritten_unless_every_channel_is_asked_for() -> None:
    email = {
        "subject": "https://x.example.com",
        "text": "https://x.example.com",
        "html": '<a href="https://x.example.com">x</a>',
    }
    card = {"title": "https://x.example.com", "body": "see https://x.example.com", "url": "https://x.example.com/p"}
    webhook = {"body": {"link": "https://x.example.com", "text": "https://x.example.com"}}
    sms_only = links.Shortener(BASE)
    for channel, content in [
        (Channel.EMAIL, email),
        (Channel.PUSH, card),
        (Channel.INBOX, card),
        (Channel.WEBHOOK, webhook),
    ]:
        assert sms_only.rewrite(channel, content) == (content, [])

    everywhere = links.Shortener(BASE, everywhere=True)
    out, made = everywhere.rewrite(Channel.EMAIL, email)
    [link] = made  # the same URL in text and html: one link
    assert out["subject"] == "https://x.example.com"  # subjects are not clicked
    assert out["text"] == f"{BASE}/s/{link.code}"
    assert out["html"] == f'<a href="{BASE}/s/{link.code}">x</a>'
    for channel in (Channel.PUSH, Channel.INBOX):
        out, made = everywhere.rewrite(channel, card)
        assert out["title"] == card["title"]
        assert {out["url"], out["body"].removeprefix("see ")} == {f"{BASE}/s/{m.code}" for m in made}
        assert {m.target for m in made} == {"https://x.example.com", "https://x.example.com/p"}
    assert everywhere.rewrite(Channel.WEBHOOK, webhook) == (webhook, [])


def test_html_rewrites_anchor_hrefs_only() -> None:
    html = (
        '<link rel="stylesheet" href="https://cdn.example.com/s.css">'
        "<p>Visit https://plain.example.com</p>"
        "<a class='b' href='https://shop.example.com/?a=1&amp;b=2'>Shop</a>"
        '<A HREF="mailto:help@example.com">Mail</A><img src="https://cdn.example.com/i.png">'
    )
    out, [link] = links.Shortener(BASE, everywhere=True).rewrite(Channel.EMAIL, {"subject": "s", "html": html})
    assert link.target == "https://shop.example.com/?a=1&b=2"
    assert out["html"] == html.replace("https://shop.example.com/?a=1&amp;b=2", f"{BASE}/s/{link.code}")


def test_content_without_urls_is_returned_as_it_was() -> None:
    content = {"text": "Your code is 123456."}
    out, made = links.Shortener(BASE).rewrite(Channel.SMS, content)
    assert out is content and made == []


def test_a_taken_code_is_never_given_again() -> None:
    codes = iter(["AAAAAAAA", "AAAAAAAA", "BBBBBBBB", "CCCCCCCC"])
    shortener = links.Shortener(BASE, codes=lambda: next(codes))
    _, made = shortener.rewrite(
        Channel.SMS, {"text": "https://a.example.com https://b.example.com"}, taken={"BBBBBBBB"}
    )
    assert [m.code for m in made] == ["AAAAAAAA", "CCCCCCCC"]


def test_no_free_code_is_an_error_not_a_reused_code() -> None:
    shortener = links.Shortener(BASE, codes=lambda: "AAAAAAAA", attempts=3)
    with pytest.raises(RuntimeError, match="no free short-link code"):
        shortener.rewrite(Channel.SMS, {"text": "https://a.example.com"}, taken={"AAAAAAAA"})


def test_utm_parameters_are_added_to_the_target() -> None:
    utm = links.utm_template("utm_source=clarion&utm_medium={channel}&utm_campaign={template}")
    shortener = links.Shortener(BASE, utm=utm)
    _, [link] = shortener.rewrite(
        Channel.SMS, {"text": "https://shop.example.com/p?id=7#top"}, {"channel": "sms", "template": "spring sale"}
    )
    parts = urlsplit(link.target)
    assert parts.fragment == "top" and parts.path == "/p"
    assert parse_qsl(parts.query) == [
        ("id", "7"),
        ("utm_source", "clarion"),
        ("utm_medium", "sms"),
        ("utm_campaign", "spring sale"),
    ]


def test_utm_keeps_the_urls_own_query_and_parameters() -> None:
    params = [("utm_source", "clarion"), ("utm_campaign", "x")]
    assert links.with_params("https://e.com/?utm_campaign=mine&q=a%20b", params) == (
        "https://e.com/?utm_campaign=mine&q=a%20b&utm_source=clarion"
    )
    assert links.with_params("https://e.com", params) == "https://e.com?utm_source=clarion&utm_campaign=x"
    assert links.with_params("https://e.com/?utm_source=a&utm_campaign=b", params) == (
        "https://e.com/?utm_source=a&utm_campaign=b"
    )


@pytest.mark.parametrize("spec", ["utm_source=clarion&utm_medium={chanel}", "utm_source", "=x"])
def test_a_bad_utm_setting_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        links.utm_template(spec)


@pytest.mark.parametrize(
    ("user_agent", "bot"),
    [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", False),
        ("Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36", False),
        (None, False),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", True),
        ("facebookexternalhit/1.1 Facebot Twitterbot/1.0", True),
        ("WhatsApp/2.23.20.0", True),
        ("TelegramBot (like TwitterBot)", True),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
    ],
)
def test_previewers_and_crawlers_are_told_apart_from_people(user_agent: str | None, bot: bool) -> None:
    assert links.is_bot(user_agent) is bot


def test_codes_differ_across_many_deliveries() -> None:
    shortener = links.Shortener(BASE)
    made = itertools.chain.from_iterable(
        shortener.rewrite(Channel.SMS, {"text": "https://a.example.com"})[1] for _ in range(500)
    )
    codes = [m.code for m in made]
    assert len(set(codes)) == 500
