from __future__ import annotations

import pytest

from clarion.domain import errors, model, render

USER = model.User("u1", attributes={"name": "Li", "city": "Beijing", "vip": True, "n": 0})


def ctx(data: dict | None = None, user: model.User | None = USER) -> dict:
    return render.context_for(user, data or {})


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    [
        ("Hi {name}", {}, "Hi Li"),
        ("Hi ${name}", {}, "Hi Li"),
        ("Hi {name}", {"name": "Han"}, "Hi Han"),  # request data wins over profile
        ("{user.name} in {user.city}", {"name": "Han"}, "Li in Beijing"),
        ("order {data.order.id}", {"order": {"id": 42}}, "order 42"),
        ("vip={vip} n={n}", {}, "vip=true n=0"),
        ('{"json": 1} {not a placeholder} { name }', {}, '{"json": 1} {not a placeholder} { name }'),
        ("no braces at all", {}, "no braces at all"),
        ("{user.user_id}", {}, "u1"),
    ],
)
def test_render_text(text: str, data: dict, expected: str) -> None:
    assert render.render_text(text, ctx(data)) == expected


@pytest.mark.parametrize("text", ["{missing}", "${data.code}", "{user.age}", "ok {name} then {nope}"])
def test_missing_value_raises_before_any_output(text: str) -> None:
    with pytest.raises(errors.MissingVariable) as info:
        render.render(model.Channel.SMS, {"text": text}, ctx())
    assert info.value.reason.startswith("missing_variable: ")


def test_null_counts_as_missing() -> None:
    with pytest.raises(errors.MissingVariable, match="missing_variable: code"):
        render.render_text("{code}", ctx({"code": None}))


def test_webhook_body_is_filled_inside_nested_strings_only() -> None:
    content = {"body": {"event": "paid", "user": "{user.user_id}", "items": ["{data.sku}", 3], "ok": True}}
    out = render.render(model.Channel.WEBHOOK, content, ctx({"sku": "A-1"}))
    assert out == {"body": {"event": "paid", "user": "u1", "items": ["A-1", 3], "ok": True}}
    assert content["body"]["user"] == "{user.user_id}"  # the template itself is untouched


def test_variables_are_listed() -> None:
    content = {"subject": "Hi {name}", "html": "<p>${data.code}</p>", "text": "{ x } {user.city}"}
    assert render.variables(content) == {"name", "data.code", "user.city"}


def test_unknown_user_has_only_data() -> None:
    assert render.render_text("{code}", ctx({"code": "1"}, user=None)) == "1"
    with pytest.raises(errors.MissingVariable):
        render.render_text("{user.name}", ctx({}, user=None))
