"""The checks of AI drafts, and the model client's reading of answers, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pydantic
import pytest

from clarion.copywriting import checks, generate, llm
from clarion.domain import keywords, model, pricing
from clarion.settings import Settings

SAMPLE = (
    model.User("u1", {"name": "李雷", "age": 25}),
    model.User("u2", {"name": "韩梅梅", "age": 35}),
    model.User("u3", {"name": "Lucy", "age": 61}),
    model.User("u4", {"age": 44}),
)
BLOCK = keywords.KeywordList("ad-law", ["最低价"], action="block")
MASK = keywords.KeywordList("soft", ["秒杀"], action="mask")


def rules(**overrides: object) -> checks.Rules:
    values: dict[str, object] = {
        "variables": frozenset({"name", "age"}),
        "conditions": True,
        "length": "short",
        "lists": [BLOCK, MASK],
    }
    values.update(overrides)
    return checks.Rules(**values)  # type: ignore[arg-type]


def test_a_syntax_error_is_reported_with_its_field_line_and_column() -> None:
    found = checks.check({"sms": {"text": "您好\n  <#if age gt 30>稳重"}}, rules(), SAMPLE)
    assert found.problems == [
        {"kind": "syntax", "field": "sms.text", "message": "unclosed <#if>", "line": 2, "column": 3}
    ]


def test_only_allowed_variables_pass_with_or_without_user_prefix() -> None:
    found = checks.check({"sms": {"text": "{name} ${user.age} {user.salary} {coupon.code}"}}, rules(), SAMPLE)
    assert found.problems == [
        {"kind": "unknown_variable", "field": "sms.text", "variables": ["coupon.code", "user.salary"]}
    ]
    assert found.variables == ["coupon.code", "name", "user.age", "user.salary"]


def test_conditions_report_the_share_of_the_sample_on_each_branch() -> None:
    text = "<#if age gte 60>银发专享<#elseif age gt 30>品质之选<#else>潮流新品</#if>"
    found = checks.check({"push": {"title": "上新", "body": text}}, rules(), SAMPLE)
    assert found.problems == []
    assert found.conditions == [
        {
            "field": "push.body",
            "branches": [
                {"branch": "age gte 60", "share": 0.25},
                {"branch": "age gt 30", "share": 0.5},
                {"branch": "else", "share": 0.25},
            ],
        }
    ]


def test_conditions_can_be_forbidden() -> None:
    found = checks.check({"sms": {"text": "<#if age gt 30>a</#if>"}}, rules(conditions=False), SAMPLE)
    assert found.problems == [{"kind": "conditions_not_allowed", "field": "sms.text"}]


def test_a_block_word_is_a_problem_and_a_mask_word_a_warning() -> None:
    found = checks.check({"sms": {"text": "全网最低价"}, "push": {"title": "秒杀", "body": "b"}}, rules(), SAMPLE)
    assert found.problems == [{"kind": "blocked_keyword", "list": "ad-law", "word": "最低价", "field": "sms.text"}]
    masked = checks.check({"push": {"title": "限时秒杀", "body": "b"}}, rules(), SAMPLE)
    assert masked.problems == []
    assert masked.warnings == [{"kind": "masked_keyword", "list": "soft", "word": "秒杀", "field": "push.title"}]


def test_a_variable_some_users_lack_is_a_warning_with_their_share() -> None:
    found = checks.check({"sms": {"text": "{name}，您好"}}, rules(), SAMPLE)
    assert found.warnings == [{"kind": "missing_variable", "variable": "name", "share": 0.25}]


def test_sms_segments_are_counted_filled_and_priced_and_bounded_by_the_length() -> None:
    prices = {"aliyun": pricing.parse({"currency": "CNY", "unit": "segment", "default": 0.045})}
    long_text = "双十一" * 30  # 90 Chinese characters: two segments
    found = checks.check({"sms": {"text": long_text}}, rules(prices=prices), SAMPLE)
    assert (found.sms or {})["segments"] == 2
    assert (found.sms or {})["cost"] == [{"provider": "aliyun", "currency": "CNY", "per_message": 0.09}]
    assert found.problems == [{"kind": "over_limit", "field": "sms.text", "segments": 2, "limit": 1}]
    assert checks.check({"sms": {"text": long_text}}, rules(length="long"), SAMPLE).problems == []


def test_push_lengths_are_measured_filled_against_the_platform_limits() -> None:
    found = checks.check({"push": {"title": "{name}" + "标" * 36, "body": "短"}}, rules(), SAMPLE[:3])
    assert (found.push or {})["title"] == {"length": 40, "limit": 40}  # Lucy: the longest name of the sample
    assert found.problems == []
    over = checks.check({"push": {"title": "{name}" + "标" * 37, "body": "短"}}, rules(), SAMPLE[:3])
    assert over.problems == [{"kind": "over_limit", "field": "push.title", "length": 41, "limit": 40}]


def test_the_audience_summary_counts_tags_and_attributes_of_the_sample_without_one_persons_values() -> None:
    users = [
        model.User("a", {"age": 20, "city": "北京", "name": "李雷"}, ("vip",)),
        model.User("b", {"age": 40, "city": "北京", "name": "韩梅梅"}, ("vip", "new")),
        model.User("c", {"age": 30, "city": "上海"}, ("vip",)),
        model.User("d", {"age": 50}),
    ]
    audience = checks.summarise("s", 1000, users, None)
    assert audience.tags == (("vip", 0.75), ("new", 0.25))
    assert audience.attributes["age"] == {"present": 1.0, "min": 20, "median": 35.0, "max": 50}
    assert audience.attributes["city"] == {"present": 0.75, "values": [{"value": "北京", "share": 0.5}], "distinct": 2}
    # a value one user alone has (a name) is never shown: it would leave Clarion in the prompt
    assert audience.attributes["name"] == {"present": 0.5, "values": [], "distinct": 2}


def test_the_output_shape_takes_exactly_n_drafts_with_the_channels_asked_and_nothing_else() -> None:
    shape = generate.output_shape(["sms"], 2)
    good = {"name": "a", "idea": "i", "sms": {"text": "t"}}
    assert len(shape.model_validate({"drafts": [good, good]}).drafts) == 2  # type: ignore[attr-defined]
    for wrong in (
        {"drafts": [good]},
        {"drafts": [good, {**good, "push": {"title": "t", "body": "b"}}]},
        {"drafts": [good, good], "note": "ignore the above"},
        {"drafts": [good, {"name": "b", "idea": "i"}]},
    ):
        with pytest.raises(pydantic.ValidationError):
            shape.model_validate(wrong)


def test_an_answer_is_read_from_json_a_fenced_block_or_prose_and_refused_otherwise() -> None:
    shape = generate.output_shape(["sms"], 1)
    body = '{"drafts": [{"name": "a", "idea": "i", "sms": {"text": "t"}}]}'
    for raw in (body, f"```json\n{body}\n```", f"Here you are: {body} Enjoy!"):
        assert llm._parse(raw, shape).drafts[0].sms.text == "t"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="drafts"):
        llm._parse('{"drafts": []}', shape)
    with pytest.raises(ValueError, match="not JSON"):
        llm._parse("no JSON here", shape)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert llm._retry_after("3") == 3.0
    assert llm._retry_after(None) is None and llm._retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 < (llm._retry_after(later) or 0) <= 20


def test_a_department_overrides_the_default_model() -> None:
    settings = Settings(
        llm_url="https://api.openai.com/v1/",
        llm_model="gpt-4o-mini",
        llm_departments={"growth": {"url": "https://api.deepseek.com", "model": "deepseek-chat"}},
    )
    default = llm.config_for(settings, None)
    assert (default.url, default.model) == ("https://api.openai.com/v1", "gpt-4o-mini")
    growth = llm.config_for(settings, "growth")
    assert (growth.url, growth.model, growth.department) == ("https://api.deepseek.com", "deepseek-chat", "growth")
    with pytest.raises(llm.NotConfigured, match="CLARION_LLM_URL"):
        llm.config_for(Settings(), None)
    with pytest.raises(llm.NotConfigured, match="cannot be used"):
        llm.config_for(Settings(llm_url="ftp://models.example.com", llm_model="m"), None)
