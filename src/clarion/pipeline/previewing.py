"""Previewing a template: what each channel would send to one user, without sending anything — the use case
behind ``POST /v1/templates/{key}/preview``, and the console editor's live preview of a text not yet saved.

A preview shows the content as it would go out (keyword-list words masked), the keyword findings, for SMS its
billing segments, and the A/B variant used; a channel that cannot be rendered (a missing variable) reports its
``error`` and the others are still shown. ``author_view`` adds what an author needs while typing: the syntax errors
of every field at their line and column, the variables the chosen user and data lack, and an SMS's estimated
cost (the campaign estimate's price per segment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clarion.domain import errors, model, render, sms, templating, variants
from clarion.domain.policy import decision, keywords
from clarion.store import records, templates
from clarion.store import tables as t

if TYPE_CHECKING:
    from clarion import bootstrap
    from clarion.api import schemas


async def preview(
    clarion: bootstrap.Clarion,
    key: str,
    *,
    user_id: str | None = None,
    data: dict[str, Any] | None = None,
    channels: list[model.Channel] | None = None,
    variant: str | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """The saved template (the latest version, or ``version``) previewed for ``user_id`` and ``data``."""
    template = await saved_template(clarion, key, version)
    return await preview_of(clarion, template, user_id=user_id, data=data, channels=channels, variant=variant)


async def preview_of(
    clarion: bootstrap.Clarion,
    template: model.Template,
    *,
    user_id: str | None = None,
    data: dict[str, Any] | None = None,
    channels: list[model.Channel] | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """``template`` previewed: ``NotFound`` for an unknown user, ``InvalidInput`` for an unknown variant or a
    channel the template lacks."""
    user = await _user(clarion, user_id)
    chosen = template.channels_for(channels)
    picked = _variant(template, variant, user_id)
    context = render.context_for(user, data or {})
    lists = await clarion.catalog.keyword_lists()
    return {
        "template": template.key,
        "version": template.version,
        "user_id": user_id,
        "variant": picked,
        "variants": [{"name": v.name, "weight": v.weight} for v in template.variants],
        "channels": {c.value: _channel(template, c, context, picked, lists) for c in chosen},
    }


async def saved_template(clarion: bootstrap.Clarion, key: str, version: int | None) -> model.Template:
    """The template as last saved (the version under review, when approval is pending), or version ``version``."""
    async with clarion.db.read() as conn:
        row = (await conn.execute(sa.select(t.templates).where(t.templates.c.key == key))).first()
        if row is None:
            raise errors.NotFound("template", key)
        if version is None or version == row.version:
            return records.template_from_row(row)
        v = t.template_versions.c
        query = sa.select(v.body).where(v.template_key == key, v.version == version)
        saved = (await conn.execute(query)).scalar()
    if saved is None:
        raise errors.NotFound("template version", f"{key}@{version}")
    return templates.template_at(row, saved, version)


def draft_template(key: str, body: schemas.TemplateIn) -> model.Template:
    """The template ``body`` would save under ``key``, as a send would read it, without storing anything."""
    values = body.model_dump(mode="json", exclude={"channels", "policy"})
    values["channels"] = body.channels.model_dump(mode="json", exclude_none=True)
    return records.template_from_row(SimpleNamespace(**values, key=key, version=0, policy=None))


async def _user(clarion: bootstrap.Clarion, user_id: str | None) -> model.User | None:
    if user_id is None:
        return None
    user = (await clarion.intake.users.load_many([user_id])).get(user_id)
    if user is None:
        raise errors.NotFound("user", user_id)
    return user


def _variant(template: model.Template, asked: str | None, user_id: str | None) -> str | None:
    if asked is not None:
        if variants.find(template, asked) is None:
            raise errors.InvalidInput(
                f"template {template.key!r} has no variant {asked!r}",
                details={"field": "variant", "known": [v.name for v in template.variants]},
            )
        return asked
    if user_id is not None:
        return variants.choose(template, user_id)
    return template.variants[0].name if template.variants else None


def _channel(
    template: model.Template,
    channel: model.Channel,
    context: dict[str, Any],
    variant: str | None,
    lists: list[Any],
) -> dict[str, Any]:
    try:
        content = render.compose(template, channel, context, variant)
    except errors.RenderError as exc:
        code = exc.reason.split(":", 1)[0] if ":" in exc.reason else "render_error"
        error: dict[str, Any] = {"code": code, "message": exc.reason}
        if isinstance(exc, errors.MissingVariable):
            error["variable"] = exc.name
        return {"content": None, "error": error}
    verdict, screened, masked = keywords.screen(content, lists)
    findings: dict[str, Any] = {"masked": masked, "blocked": None}
    if isinstance(verdict, decision.Drop):
        findings["blocked"] = {k: verdict.detail.get(k) for k in ("list", "word", "field")}
    out: dict[str, Any] = {"content": screened, "keywords": findings}
    if channel is model.Channel.SMS and isinstance(screened.get("text"), str):
        segments = sms.count_segments(screened["text"])
        out["segments"] = {"encoding": segments.encoding, "characters": segments.characters, "count": segments.count}
    return out


# -- what an author sees while typing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Channel:
    """One channel of an author's preview: ``shown`` is the preview's entry (content, keyword findings, SMS
    segments; or an ``error``), None when a field does not compile; ``syntax`` lists those fields (each
    ``{field, message, line, column}``); ``unknown`` the variables the user and data lack; ``cost`` an SMS's
    estimated cost; ``open_braces`` the ``{name`` openings sent as text (``{field, path, line, column}``)."""

    channel: str
    shown: dict[str, Any] | None
    syntax: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    cost: str | None = None
    open_braces: list[dict[str, Any]] = field(default_factory=list)


def open_braces(content: dict[str, Any], field_name: str) -> list[dict[str, Any]]:
    """The likely forgotten braces of ``content``'s texts (``templating.unclosed_braces``), by field."""
    return [
        {"field": f"{field_name}.{key}", "path": path, "line": line, "column": column}
        for key, value in content.items()
        if isinstance(value, str)
        for path, line, column in templating.unclosed_braces(value)
    ]


def syntax_errors(content: dict[str, Any], field_name: str) -> list[dict[str, Any]]:
    """Every field of ``content`` that does not compile, each as the save-time check names it (``render.check``
    stops at the first)."""
    found = []
    for key, value in content.items():
        try:
            render.check({key: value}, field_name)
        except errors.InvalidInput as exc:
            found.append(dict(exc.details))
    return found


async def author_view(
    clarion: bootstrap.Clarion, template: model.Template, *, user_id: str | None, data: dict[str, Any]
) -> list[Channel]:
    """Every channel of ``template`` (saved or not) previewed for ``user_id`` and ``data``, with what an author
    needs to fix: a channel whose text does not compile shows its syntax errors instead of a rendering."""
    context = render.context_for(await _user(clarion, user_id), data)
    picked = _variant(template, None, user_id)
    lists = await clarion.catalog.keyword_lists()
    prices, currency = clarion.settings.campaign_prices, clarion.settings.campaign_currency
    found = []
    for channel, own in template.channels.items():
        content = own or template.default or {}
        syntax = syntax_errors(content, f"channels.{channel.value}")
        if syntax:
            found.append(Channel(channel.value, None, syntax=syntax))
            continue
        shown = _channel(template, channel, context, picked, lists)
        unknown = sorted(v for v in render.variables(content) if not templating.resolves(v, context))
        segments, price = shown.get("segments"), prices.get(channel.value)
        cost = f"{segments['count'] * price:.4f} {currency}" if segments and price is not None else None
        braces = open_braces(content, f"channels.{channel.value}")
        found.append(Channel(channel.value, shown, unknown=unknown, cost=cost, open_braces=braces))
    return found
