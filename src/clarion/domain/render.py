"""Rendering: the one function that turns a template's channel content into the text a user receives.

Every string in a channel's content is a template in Clarion's template language (``domain.templating``):
placeholders ``{name}``, ``${user.city}``, ``{data.order.id}`` with filters, and ``<#if>``/``<#list>``
directives. A bare name is looked up in the request's data first, then in the user's attributes. A ``{``
that does not open a placeholder (JSON in a webhook body, a brace in prose) is left alone. A missing value
raises ``MissingVariable`` before any text is produced, so a message is never sent half-filled.

``compose`` is what a send uses: it picks the content of a channel (the A/B variant's, the template's, or the
template's ``default`` adapted to the channel), fills it, and applies the channel's platform rules
(``domain.adapt``). It fills all the fields of one channel's content within one operation budget
(``domain.budget.RENDER_BUDGET``); past it the message fails with ``render_budget_exceeded`` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from clarion.domain import adapt, budget, errors, model, templating, variants


def context_for(user: model.User | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The values a template may use: ``data.*`` from the request, ``user.*`` from the user's profile."""
    profile: dict[str, Any] = {}
    if user is not None:
        profile = dict(user.attributes)
        profile.update(user_id=user.user_id, id=user.user_id, locale=user.locale, timezone=user.timezone)
    return {"data": data, "user": profile}


def render_text(text: str, context: Mapping[str, Any]) -> str:
    if "{" not in text and "<#" not in text:
        return text
    return templating.compile_template(text).render(context)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render_text(value, context)
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, context) for k, v in value.items()}
    return value


def render(
    channel: model.Channel, content: Mapping[str, Any], context: Mapping[str, Any], *, source: str | None = None
) -> dict[str, Any]:
    """Fill one channel's content for one user. Raises ``RenderError`` (never a half-filled result); past the
    budget, ``RenderBudgetExceeded`` naming the field (``sms.text``; ``default.text`` with ``source="default"``)."""
    filled: dict[str, Any] = {}
    for key, value in content.items():
        try:
            filled[key] = _render_value(value, context)
        except errors.RenderBudgetExceeded as exc:
            field = f"{source or channel.value}.{key}"
            raise errors.RenderBudgetExceeded(exc.message, limit=exc.limit, field=field) from None
    return filled


def compose(
    template: model.Template, channel: model.Channel, context: Mapping[str, Any], variant: str | None
) -> dict[str, Any]:
    """The content ``channel`` sends for one user: the variant's entry for the channel if it has one, else the
    template's; an empty entry is the default (the variant's if it has one, else the template's) adapted to the
    channel. Raises ``RenderError`` (never a half-filled result), also for a channel the template lacks."""
    token = budget.ACTIVE.set(budget.Budget(budget.RENDER_BUDGET, errors.RenderBudgetExceeded))
    try:
        return _compose(template, channel, context, variant)
    finally:
        budget.ACTIVE.reset(token)


def _compose(
    template: model.Template, channel: model.Channel, context: Mapping[str, Any], variant: str | None
) -> dict[str, Any]:
    chosen = variants.find(template, variant)
    if variant is not None and chosen is None:
        raise errors.RenderError(f"unknown_variant: {variant}")
    content = chosen.channels.get(channel) if chosen is not None else None
    if content is None:
        content = template.channels.get(channel)
    if content is None:
        raise errors.RenderError(f"no_content: the template has no {channel.value} content")
    default = chosen.default if chosen is not None and chosen.default is not None else template.default
    if content:
        filled = render(channel, content, context)
    elif default is not None:
        try:
            filled = adapt.from_default(channel, render(channel, default, context, source="default"))
        except ValueError as exc:
            raise errors.RenderError(f"no_content: {exc}") from None
    else:
        raise errors.RenderError(f"no_content: {channel.value} is to be adapted but there is no default content")
    # the SMS signature is the brand's: a variant's default without one keeps the template's
    signature = next((d["signature"] for d in (default, template.default) if d and d.get("signature")), None)
    return adapt.finish(channel, filled, signature=signature)


def contents(channels: Mapping[str, Any], variant_list: list[dict[str, Any]] | None) -> Iterator[tuple[str, Any]]:
    """Every content of a stored template as (field, content): ``channels.<name>`` (``default`` included) and
    ``variants.<i>.channels.<name>``, for checks, variables and keyword screening over the whole template."""
    for name, content in channels.items():
        yield f"channels.{name}", content
    for i, v in enumerate(variant_list or ()):
        for name, content in (v.get("channels") or {}).items():
            yield f"variants.{i}.channels.{name}", content


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}.{i}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")


def check(content: Mapping[str, Any], field: str) -> None:
    """Compile every text of a channel's content, so a template with a syntax error is refused when saved;
    the error names the field and the line and column inside it."""
    for path, text in _strings(dict(content), field):
        try:
            templating.compile_template(text)
        except templating.TemplateSyntaxError as exc:
            raise errors.InvalidInput(
                f"{path}: {exc.message} at line {exc.line}, column {exc.column}",
                code="invalid_template",
                details={"field": path, "message": exc.message, "line": exc.line, "column": exc.column},
            ) from None


def variables(content: Mapping[str, Any]) -> set[str]:
    """The variables a channel content uses (shown to operators; a send lacking one fails that message)."""
    found: set[str] = set()
    for _, text in _strings(dict(content), ""):
        try:
            found |= templating.compile_template(text).variables
        except templating.TemplateSyntaxError:
            continue  # stored before the language was stricter: shown without its variables
    return found
