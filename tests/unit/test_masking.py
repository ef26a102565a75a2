"""Where provider secrets sit: every place is masked, and a masked value sent back keeps what is stored."""

from __future__ import annotations

import pytest

from clarion.channels import masking
from clarion.channels.base import MASK
from clarion.channels.sms_http import SmsHttpProvider
from clarion.channels.smtp import SmtpProvider

SMS = SmsHttpProvider.Config
STORED = {
    "url": "https://acct:pw@sms.example.com:8443/send?api_key=k1&region=eu&flag&empty=&api_key=k2#top",
    "headers": {"Authorization": "Token t0p", "X-Empty": ""},
    "body": {"account": "acme-key", "to": "{phone}", "msg": {"text": "【{sender}】{text}", "list": ["lit", 3]}},
    "sender": "Acme",
}


def test_every_place_is_masked() -> None:
    shown = masking.mask(SMS, STORED)
    assert shown == {
        "url": f"https://{MASK}:{MASK}@sms.example.com:8443/send?api_key={MASK}&region={MASK}&flag&empty=&api_key={MASK}#top",
        "headers": {"Authorization": MASK, "X-Empty": ""},
        "body": {"account": MASK, "to": "{phone}", "msg": {"text": "【{sender}】{text}", "list": [MASK, 3]}},
        "sender": "Acme",
    }
    assert masking.mask(SMS, shown) == shown  # masking what is masked changes nothing


def test_what_was_shown_sent_back_keeps_every_secret() -> None:
    assert masking.keep(SMS, masking.mask(SMS, STORED), STORED) == STORED


def test_query_values_are_kept_by_name_and_occurrence_and_edits_win() -> None:
    new = {**masking.mask(SMS, STORED)}
    new["url"] = f"https://{MASK}:new-pw@sms.example.com:8443/send?api_key={MASK}&api_key=k3&region=us"
    kept = masking.keep(SMS, new, STORED)
    assert kept["url"] == "https://acct:new-pw@sms.example.com:8443/send?api_key=k1&api_key=k3&region=us"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": f"https://sms.example.com:8443/send?missing={MASK}"}, "config.url"),
        ({"headers": {"X-New": MASK}}, "config.headers.X-New"),
        ({"body": {"nope": MASK}}, "config.body.nope"),
        (
            {"url": "https://evil.example.com:8443/send", "headers": {"Authorization": MASK}},
            "config.headers.Authorization",
        ),
    ],
)
def test_a_mask_with_nothing_behind_it_or_a_new_destination_is_refused(change: dict, field: str) -> None:
    new = {**STORED, **change}
    with pytest.raises(masking.NotKept) as caught:
        masking.keep(SMS, new, STORED)
    assert caught.value.field == field


def test_a_masked_user_alone_keeps_the_stored_user() -> None:
    new = {**STORED, "url": f"https://{MASK}@sms.example.com:8443/"}
    assert masking.keep(SMS, new, STORED)["url"] == "https://acct@sms.example.com:8443/"


def test_smtp_password_stays_with_its_host() -> None:
    stored = {"host": "smtp.example.com", "port": 587, "password": "s3cret!", "sender": "a@b.c"}
    assert masking.keep(SmtpProvider.Config, {**stored, "password": MASK, "port": 465}, stored)["password"] == "s3cret!"
    with pytest.raises(masking.NotKept) as caught:
        masking.keep(SmtpProvider.Config, {**stored, "password": MASK, "host": "evil.example.com"}, stored)
    assert caught.value.field == "config.password"
    assert masking.keep(SmtpProvider.Config, {**stored, "password": "new", "host": "evil.example.com"}, stored)


def test_an_unknown_kind_shows_nothing() -> None:
    assert masking.mask(None, {"a": "x", "b": 0}) == {"a": MASK, "b": 0}
