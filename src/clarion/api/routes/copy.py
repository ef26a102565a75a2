"""AI copy: ``POST /v1/copy:generate`` drafts copy from a brief in Clarion's template language, every draft checked
like a template an operator wrote (``copywriting.generate``). Needs ``editor`` or ``admin``.

Without a model configured it answers 503 saying how to configure one; a model that does not answer in time
is a 504, one that is unavailable (429/5xx on every attempt, no connection) a 503, one that answers wrongly a
502 — and in every one of those cases nothing is saved."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from clarion.api import deps, problems
from clarion.api.responses import JSON
from clarion.api.routes import costs
from clarion.api.schemas import Key, Stored, Strict
from clarion.copywriting import generate, llm
from clarion.domain import model, pricing

router = APIRouter(prefix="/v1", tags=["copy"], dependencies=deps.AUTH)
Line = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Facts = Line | dict[str, Any]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {"model": problems.ErrorBody, "description": "the model refused the request or answered wrongly"},
    503: {"model": problems.ErrorBody, "description": "no model is configured (CLARION_LLM_URL …), or unavailable"},
    504: {"model": problems.ErrorBody, "description": "the model did not answer in time; nothing was saved"},
}


class AudienceIn(Strict):
    segment: Key | None = Field(default=None, description="a saved segment: summarised from the index")
    description: Line | None = Field(default=None, description="who they are, in words")


class BriefIn(Strict):
    product: Facts = Field(description="the product, as text or structured fields")
    offer: Facts | None = None
    campaign: Facts | None = None
    audience: AudienceIn = Field(default_factory=AudienceIn)
    channels: list[generate.Channel] = Field(min_length=1, max_length=4)
    tone: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    length: Literal["short", "long"] = "short"
    language: Literal["zh-CN", "en"] = "zh-CN"
    variables: list[Name] | None = Field(
        default=None, max_length=50, description="what may be personalised; default: the attributes of the sample"
    )
    conditions: bool = Field(default=True, description="allow <#if> branches on those variables")


class GenerateIn(Stored):
    brief: BriefIn
    n: int = Field(default=2, ge=1, le=5, description="how many drafts (2 or more: for an A/B test)")
    department: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None, description="whose model configuration and budget; the saved template's department"
    )
    category: model.Category = model.Category.MARKETING
    save_as: Key | None = Field(
        default=None, description="save the passing drafts as this template's variants, submitted for review"
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    def to_request(self) -> generate.Request:
        brief = self.brief
        return generate.Request(
            brief=generate.Brief(
                product=brief.product,
                channels=tuple(dict.fromkeys(brief.channels)),
                offer=brief.offer,
                campaign=brief.campaign,
                segment=brief.audience.segment,
                audience=brief.audience.description,
                tone=brief.tone,
                length=brief.length,
                language=brief.language,
                variables=tuple(brief.variables) if brief.variables is not None else None,
                conditions=brief.conditions,
            ),
            n=self.n,
            department=self.department,
            category=self.category,
            save_as=self.save_as,
            name=self.name,
        )


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DraftOut(_View):
    name: str
    idea: str
    status: Literal["ok", "repaired", "refused", "broken"]
    tries: int
    channels: dict[str, dict[str, str]] = Field(description="per channel, its content in the template language")
    variables: list[str]
    conditions: list[dict[str, Any]] = Field(description="per <#if>: the share of the sample taking each branch")
    sms: dict[str, Any] | None = Field(description="segments, encoding, characters and cost per SMS account")
    push: dict[str, Any] | None = Field(description="title and body lengths against the platform limits")
    warnings: list[dict[str, Any]]
    problems: list[dict[str, Any]] = Field(description="why a refused or broken draft is not usable")
    earlier_problems: list[dict[str, Any]] = Field(description="what the versions written before this one failed")


class AudienceOut(_View):
    segment: str | None
    size: int | None
    sample_size: int
    top_tags: list[dict[str, Any]]
    attributes: dict[str, Any]
    description: str | None


class UsageOut(_View):
    calls: list[int]
    prompt_tokens: int
    completion_tokens: int


class SavedOut(_View):
    template: str
    version: int
    status: str
    live_version: int | None
    variants: list[str]


class GenerateOut(_View):
    model: str
    audience: AudienceOut
    drafts: list[DraftOut]
    usage: UsageOut
    saved: SavedOut | None


@router.post(
    "/copy:generate",
    response_model=GenerateOut,
    responses=problems.answers(403) | MODEL_ERRORS,
)
async def generate_copy(body: GenerateIn, clarion: deps.Services, caller: deps.Caller) -> Any:
    """``n`` drafts of copy for the brief, in Clarion's template language, each with its checks: its variables,
    the share of the audience taking each ``<#if>`` branch, SMS segments and cost, push lengths, warnings, and
    a ``status`` — ``ok``, ``repaired`` (written again after a failed check), ``refused`` (a block-list word,
    named in ``problems``) or ``broken`` (its syntax or variables, with line and column). ``save_as`` saves the
    passing drafts as a template's variants with equal weights, submitted for review; the model, prompt and raw
    answer are kept with the version (``origin``) and the audit log names the model."""
    try:
        result = await generate.generate(clarion, body.to_request(), actor=caller.name, roles=caller.roles)
    except llm.ModelError as exc:
        return JSON(problems.error_body(exc.code, exc.message, exc.details), status_code=exc.status)
    return result.to_json()


class ModelUsage(_View):
    department: str | None = Field(description="null: calls made for no department")
    model: str
    calls: int = Field(description="calls to the model, failed ones included")
    failed: int = Field(description="calls that gave no usable answer (an HTTP error, a timeout, not the schema)")
    prompt_tokens: int
    completion_tokens: int


class UsageReport(_View):
    month: str
    usage: list[ModelUsage] = Field(description="per department and model, as the model's server reported it")


@router.get("/copy/usage", response_model=UsageReport, responses=problems.answers(422))
async def copy_usage(clarion: deps.Services, month: str | None = costs.Month) -> Any:
    """What AI copy cost in the month: the calls to each model per department and the tokens they used (a cost
    like SMS; the price per token is the model vendor's)."""
    start, end = pricing.month_bounds(month or pricing.month_of(datetime.now(UTC)).strftime("%Y-%m"))
    async with clarion.db.read() as conn:
        rows = await llm.usage(conn, start, end)
    return {"month": start.strftime("%Y-%m"), "usage": [dataclasses.asdict(r) for r in rows]}
