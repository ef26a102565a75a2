"""The console speaks 简体中文 and English: chosen from Accept-Language, overridden by the switcher (a cookie),
every string from the Babel catalogues, which hold every string the console's code and templates use."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages import extract

from clarion import bootstrap
from clarion.console import i18n
from tests.acceptance.console_client import browser, console_app, page, post, signed_in

CONSOLE = Path(i18n.__file__).parent


@pytest.mark.parametrize(
    ("accept", "lang", "words"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN", ["登录", "用户名", "密码"]),
        ("en-US,en;q=0.9", "en", ["Log in", "Name", "Password"]),
        ("fr-FR, en;q=0.5", "en", ["Log in"]),
        ("fr-FR", "zh-CN", ["登录"]),  # nothing we speak: Chinese, the default
    ],
)
async def test_the_language_follows_accept_language(
    clarion: bootstrap.Clarion, accept: str, lang: str, words: list[str]
) -> None:
    async with browser(console_app(clarion), language=accept) as client:
        shown = await page(client, "/console/login")
    assert f'<html lang="{lang}">' in shown
    for word in words:
        assert word in shown


async def test_the_switcher_keeps_the_chosen_language(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "sue", "support", language="zh-CN") as sue:
        assert "发送记录查询" in await page(sue, "/console/record")
        answer = await post(
            sue, "/console/language", {"language": "en", "next": "/console/record"}, from_page="/console/record"
        )
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/record")
        shown = await page(sue, "/console/record")
        assert "Send record" in shown and "发送记录查询" not in shown
        bad = await post(sue, "/console/language", {"language": "de"}, from_page="/console/record")
        assert bad.status_code == 422 and "language" in bad.text


def _used() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = extract.extract_from_dir(str(CONSOLE), method_map, options, keywords={"_": None, "gettext": None})
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def test_every_string_the_console_uses_is_in_both_catalogues_and_translated_to_chinese() -> None:
    used = _used()
    assert len(used) > 50
    for locale in i18n.LOCALES:
        catalog = i18n.read(locale)
        ids = {m.id for m in catalog if m.id}
        assert used - ids == set(), locale
        if locale == "zh_CN":
            assert [m.id for m in catalog if m.id and not m.string] == []
