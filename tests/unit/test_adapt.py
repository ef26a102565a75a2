"""One content, many channels: the default adapted per channel, the platform rules, and ``render.compose``."""

from __future__ import annotations

from typing import Any

import pytest

from clarion.domain import adapt, errors, model, render

C = model.Channel
USER = model.User("u1", attributes={"name": "Li"})
DEFAULT = {
    "title": "Order {data.id} shipped",
    "body": "Hi {name}, your parcel is on its way.",
    "url": "https://shop.example.com/o/{data.id}",
    "link_type": "h5",
    "signature": "Shop",
}


def template(channels: dict[C, dict[str, Any]], default: dict[str, Any] | None = DEFAULT, **kw: Any) -> model.Template:
    return model.Template(
        "shipped", "Shipped", model.Category.TRANSACTIONAL, model.Priority.NORMAL, channels, default=default, **kw
    )


def compose(t: model.Template, channel: C, data: dict[str, Any] | None = None, variant: str | None = None) -> Any:
    return render.compose(t, channel, render.context_for(USER, data or {"id": "A7"}), variant)


def test_sms_from_default_is_signed_body_then_url() -> None:
    out = compose(template({C.SMS: {}}), C.SMS)
    assert out == {"text": "【Shop】Hi Li, your parcel is on its way. https://shop.example.com/o/A7"}


def test_push_from_default_keeps_the_link_and_its_type() -> None:
    out = compose(template({C.PUSH: {}}), C.PUSH)
    assert out == {
        "title": "Order A7 shipped",
        "body": "Hi Li, your parcel is on its way.",
        "url": "https://shop.example.com/o/A7",
        "link_type": "h5",
    }


def test_push_title_and_body_are_cut_to_the_platform_limits() -> None:
    default = {"title": "T" * 60, "body": "word " * 40}
    out = compose(template({C.PUSH: {}}, default), C.PUSH)
    assert len(out["title"]) == adapt.PUSH_TITLE_LIMIT and out["title"].endswith("…")
    assert len(out["body"]) <= adapt.PUSH_BODY_LIMIT and out["body"].endswith("word…")
    short = compose(template({C.PUSH: {"title": "Hi", "body": "x" * adapt.PUSH_BODY_LIMIT}}), C.PUSH)
    assert short["body"] == "x" * adapt.PUSH_BODY_LIMIT  # exactly at the limit: untouched


def test_email_from_default_has_subject_html_and_text() -> None:
    default = {"title": "News", "body": "Line <1>\nline 2\n\nSecond & last", "url": "https://x.example/a?b=1&c=2"}
    out = compose(template({C.EMAIL: {}}, default), C.EMAIL)
    assert out["subject"] == "News"
    assert out["html"] == (
        "<p>Line &lt;1&gt;<br>\nline 2</p>\n<p>Second &amp; last</p>\n"
        '<p><a href="https://x.example/a?b=1&amp;c=2">https://x.example/a?b=1&amp;c=2</a></p>'
    )
    assert out["text"] == "Line <1>\nline 2\n\nSecond & last\n\nhttps://x.example/a?b=1&c=2"


def test_inbox_webhook_and_dingtalk_from_default() -> None:
    t = template({C.INBOX: {}, C.WEBHOOK: {}, C.DINGTALK: {}})
    title, body, url = "Order A7 shipped", "Hi Li, your parcel is on its way.", "https://shop.example.com/o/A7"
    assert compose(t, C.INBOX) == {"title": title, "body": body, "url": url}
    assert compose(t, C.WEBHOOK) == {"body": {"title": title, "body": body, "url": url}}
    no_link = template({C.DINGTALK: {}}, {"title": "T", "body": "B"})
    assert compose(no_link, C.DINGTALK) == {"title": "T", "markdown": "### T\n\nB"}


def test_markdown_from_default_links_the_url() -> None:
    out = compose(template({C.FEISHU: {}}), C.FEISHU)
    assert out["markdown"].endswith("\n\n[https://shop.example.com/o/A7](https://shop.example.com/o/A7)")


def test_wechat_cannot_be_adapted() -> None:
    with pytest.raises(ValueError, match="wechat"):
        adapt.from_default(C.WECHAT, {"title": "t", "body": "b"})
    with pytest.raises(errors.RenderError, match="no_content"):
        compose(template({C.WECHAT: {}}), C.WECHAT)


def test_channel_content_overrides_the_default_but_keeps_the_signature() -> None:
    t = template({C.SMS: {"text": "Parcel {data.id} shipped"}, C.PUSH: {"title": "Own", "body": "own body"}})
    assert compose(t, C.SMS) == {"text": "【Shop】Parcel A7 shipped"}
    assert compose(t, C.PUSH) == {"title": "Own", "body": "own body"}


def test_sms_own_signature_wins_and_is_applied_once() -> None:
    t = template({C.SMS: {"text": "【Other】code 1", "signature": "Other"}})
    assert compose(t, C.SMS) == {"text": "【Other】code 1"}
    assert compose(template({C.SMS: {"text": "no brand"}}, None), C.SMS) == {"text": "no brand"}


def test_html_only_email_gets_a_text_alternative() -> None:
    html = (
        "<html><head><title>x</title><style>p{color:red}</style></head><body>"
        "<h1>Hello&nbsp;{name}</h1><p>Your   order\n is <b>ready</b>.</p>"
        '<ul><li>one</li><li>two</li></ul><p><a href="https://x.example/o">Track it</a> or '
        '<a href="https://x.example/h">https://x.example/h</a><br>Bye<img src="a.png" alt="[logo]"></p>'
        "<script>alert(1)</script></body></html>"
    )
    out = compose(template({C.EMAIL: {"subject": "S", "html": html}}, None), C.EMAIL)
    assert out["html"] == html.replace("{name}", "Li")
    assert out["text"] == (
        "Hello Li\n\nYour order is ready.\n\n- one\n- two\n\n"
        "Track it (https://x.example/o) or https://x.example/h\nBye[logo]"
    )


def test_email_with_its_own_text_keeps_it() -> None:
    out = compose(template({C.EMAIL: {"subject": "S", "html": "<p>a</p>", "text": "mine"}}, None), C.EMAIL)
    assert out["text"] == "mine"


def test_missing_variable_in_the_default_raises_before_any_output() -> None:
    with pytest.raises(errors.MissingVariable, match=r"data\.id"):
        render.compose(template({C.SMS: {}}), C.SMS, render.context_for(USER, {}), None)


def test_channel_the_template_lacks_is_a_render_error() -> None:
    with pytest.raises(errors.RenderError, match="no_content"):
        compose(template({C.SMS: {}}), C.EMAIL)


def test_variant_entries_replace_the_templates() -> None:
    variants = (
        model.Variant("A", 50),
        model.Variant("B", 50, {C.SMS: {"text": "B {data.id}"}}),
        model.Variant("C", 0, default={"title": "C title", "body": "C body"}),
    )
    t = template({C.SMS: {}, C.PUSH: {}}, variants=variants)
    assert compose(t, C.SMS, variant="A") == compose(t, C.SMS)
    assert compose(t, C.SMS, variant="B") == {"text": "【Shop】B A7"}
    assert compose(t, C.PUSH, variant="B")["title"] == "Order A7 shipped"  # B keeps the template's push
    assert compose(t, C.PUSH, variant="C") == {"title": "C title", "body": "C body"}
    assert compose(t, C.SMS, variant="C") == {"text": "【Shop】C body"}  # the brand's signature stays
    with pytest.raises(errors.RenderError, match="unknown_variant: Z"):
        compose(t, C.SMS, variant="Z")


def test_the_template_itself_is_untouched() -> None:
    t = template({C.SMS: {"text": "x", "signature": "Own"}})
    compose(t, C.SMS)
    assert t.channels[C.SMS] == {"text": "x", "signature": "Own"}
    assert t.default == DEFAULT


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abc", 3, "abc"), ("abcd", 3, "ab…"), ("ab  cd", 4, "ab…"), ("", 1, "")],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert adapt.truncate(text, limit) == expected


def test_sign_accepts_a_signature_given_with_brackets() -> None:
    assert adapt.sign("hi", "【Shop】") == "【Shop】hi"
    assert adapt.sign("hi", None) == "hi"
