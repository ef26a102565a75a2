"""The checks every AI draft passes before anyone sees it, and the audience facts it is measured against.

Pure: values in, a ``Checked`` out. A draft is what an operator could have typed, so it gets an operator's checks:
every text compiles (``domain.templating``; a syntax error names the field, line and column), uses only the
allowed variables, uses ``<#if>`` only where conditions are allowed, has no word of a block list (a mask-list
word is a warning: it would go out as ``***``), and stays within the channel's limits (SMS segments by the
carriers' count, ``domain.sms``; push title and body by ``domain.adapt``'s platform limits, past which a send
cuts them). Each problem is a dict with a ``kind``; a draft with problems is not handed over as good.

Against the audience's sample it also reports what an operator would want to know before sending: for each
``<#if>``, the share of the sample taking each branch; the users for whom a variable is missing (their message
would fail); the SMS segments and cost; the push lengths once filled.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clarion.domain import adapt, errors, keywords, model, pricing, render, sms, templating
from clarion.domain.policy import decision
from clarion.domain.policy import keywords as screening

#: the SMS segments a draft may take, by the brief's length
SMS_SEGMENTS = {"short": 1, "long": 3}
TOP_TAGS = 10
TOP_VALUES = 5
MAX_ATTRIBUTES = 30
#: a value is shown to the model only when this many users of the sample share it: a name or a phone number,
#: one person's, never leaves Clarion in a prompt
SHARED_BY = 2
_TAG = re.compile(r"<(/?)#(if|elseif|else)\b")


@dataclass(frozen=True, slots=True)
class Audience:
    """Who the copy is for: a segment's size and a sample of its users, summarised for the prompt."""

    segment: str | None
    size: int | None
    sample: tuple[model.User, ...]
    tags: tuple[tuple[str, float], ...]  # (tag, share of the sample), most common first
    attributes: Mapping[str, Mapping[str, Any]]  # name → its distribution in the sample
    description: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "size": self.size,
            "sample_size": len(self.sample),
            "top_tags": [{"tag": tag, "share": share} for tag, share in self.tags],
            "attributes": dict(self.attributes),
            "description": self.description,
        }


def summarise(segment: str | None, size: int | None, users: Sequence[model.User], description: str | None) -> Audience:
    """The top tags and, per attribute seen, how often it is present and how it is distributed (numbers: min,
    median, max; other values: how many distinct, and the most common of those ``SHARED_BY`` users share)."""
    count = len(users) or 1
    tags = Counter(tag for u in users for tag in u.tags)
    values: dict[str, list[Any]] = {}
    for user in users:
        for name, value in user.attributes.items():
            values.setdefault(name, []).append(value)
    attributes: dict[str, dict[str, Any]] = {}
    for name, seen in sorted(values.items(), key=lambda item: -len(item[1]))[:MAX_ATTRIBUTES]:
        numbers = [v for v in seen if isinstance(v, int | float) and not isinstance(v, bool)]
        entry: dict[str, Any] = {"present": round(len(seen) / count, 3)}
        if numbers and len(numbers) == len(seen):
            entry.update(min=min(numbers), median=statistics.median(numbers), max=max(numbers))
        else:
            counted = Counter(str(v)[:40] for v in seen)
            common = [(v, n) for v, n in counted.most_common(TOP_VALUES) if n >= SHARED_BY]
            entry["values"] = [{"value": v, "share": round(n / count, 3)} for v, n in common]
            entry["distinct"] = len(counted)
        attributes[name] = entry
    top = tuple((tag, round(n / count, 3)) for tag, n in tags.most_common(TOP_TAGS))
    return Audience(segment, size, tuple(users), top, attributes, description)


@dataclass(frozen=True, slots=True)
class Rules:
    """What a draft must obey: the variables it may use, whether it may branch, its length, the keyword lists,
    and the SMS accounts' prices (account name → ``pricing.Prices``) to cost it with."""

    variables: frozenset[str]
    conditions: bool
    length: str
    lists: Sequence[keywords.KeywordList]
    prices: Mapping[str, pricing.Prices] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checked:
    contents: dict[str, dict[str, str]]
    variables: list[str]
    conditions: list[dict[str, Any]]
    sms: dict[str, Any] | None
    push: dict[str, Any] | None
    warnings: list[dict[str, Any]]
    problems: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "channels": self.contents,
            "variables": self.variables,
            "conditions": self.conditions,
            "sms": self.sms,
            "push": self.push,
            "warnings": self.warnings,
            "problems": self.problems,
        }


def check(contents: dict[str, dict[str, str]], rules: Rules, sample: Sequence[model.User]) -> Checked:
    """Every check of one draft (``{channel: {field: text}}``)."""
    problems: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    used: set[str] = set()
    conditions: list[dict[str, Any]] = []
    for channel, content in contents.items():
        for name, text in content.items():
            where = f"{channel}.{name}"
            try:
                compiled = templating.compile_template(text)
            except templating.TemplateSyntaxError as exc:
                problems.append(
                    {"kind": "syntax", "field": where, "message": exc.message, "line": exc.line, "column": exc.column}
                )
                continue
            used |= compiled.variables
            unknown = sorted(v for v in compiled.variables if not allowed(v, rules.variables))
            if unknown:
                problems.append({"kind": "unknown_variable", "field": where, "variables": unknown})
            chains = if_chains(text)
            if chains and not rules.conditions:
                problems.append({"kind": "conditions_not_allowed", "field": where})
            conditions += [{"field": where, "branches": shares(chain, sample)} for chain in chains]
    verdict, _, masked = screening.screen(dict(contents), rules.lists)
    if isinstance(verdict, decision.Drop):
        problems.append({"kind": "blocked_keyword", **{k: verdict.detail[k] for k in ("list", "word", "field")}})
    warnings += [{"kind": "masked_keyword", "list": m["list"], "word": m["word"], "field": m["field"]} for m in masked]
    filled = [] if any(p["kind"] == "syntax" for p in problems) else _fill(contents, sample, warnings)
    sms_facts = push_facts = None
    if "sms" in contents:
        sms_facts, over = _sms(contents, filled, rules)
        problems += over
    if "push" in contents:
        push_facts, over = _push(contents, filled)
        problems += over
    return Checked(contents, sorted(used), conditions, sms_facts, push_facts, warnings, problems)


def allowed(variable: str, names: frozenset[str]) -> bool:
    """Whether a template variable (``userName``, ``user.city``, ``user.address.city``) reads an allowed
    attribute: its first name, without ``user.``, is one of ``names``."""
    path = variable.removeprefix("user.")
    return path in names or path.split(".", 1)[0] in names


def if_chains(source: str) -> list[list[str]]:
    """The conditions of each ``<#if>…<#elseif>…</#if>`` of a template that compiles, innermost first."""
    chains: list[list[str]] = []
    stack: list[list[str]] = []
    for match in _TAG.finditer(source):
        closing, name = match.group(1) == "/", match.group(2)
        if closing:
            if stack:
                chains.append(stack.pop())
        elif name in ("if", "elseif"):
            condition = source[match.end() : _tag_end(source, match.end())].strip()
            if name == "if":
                stack.append([condition])
            elif stack:
                stack[-1].append(condition)
    return chains


def _tag_end(source: str, start: int) -> int:
    """Where a directive tag closes: the first ``>`` outside parentheses, brackets and strings, as the parser."""
    depth, quote, i = 0, "", start
    while i < len(source):
        c = source[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth = max(depth - 1, 0)
        elif c == ">" and depth == 0:
            return i
        i += 1
    return i


def shares(chain: Sequence[str], sample: Sequence[model.User]) -> list[dict[str, Any]]:
    """The share of ``sample`` taking each branch of a chain (the last one: ``else``), evaluated by the template
    language itself: a probe template answers the number of the branch it took."""
    probe = "".join(f"<#{'if' if i == 0 else 'elseif'} {c}>{i}" for i, c in enumerate(chain))
    taken: Counter[int] = Counter()
    compiled = templating.compile_template(f"{probe}<#else>{len(chain)}</#if>")
    for user in sample:
        try:
            taken[int(compiled.render(render.context_for(user, {})))] += 1
        except (errors.RenderError, errors.ExpressionError):
            taken[-1] += 1
    count = len(sample) or 1
    branches = [*chain, "else"]
    found = [{"branch": b, "share": round(taken[i] / count, 3) if sample else None} for i, b in enumerate(branches)]
    if taken[-1]:
        found.append({"branch": "error", "share": round(taken[-1] / count, 3)})
    return found


def _fill(
    contents: Mapping[str, Mapping[str, str]], sample: Sequence[model.User], warnings: list[dict[str, Any]]
) -> list[dict[str, dict[str, str]]]:
    """The draft filled for each sample user it can be filled for; the users it cannot are a warning per
    variable (a send to them would fail with ``missing_variable``)."""
    filled = []
    missing: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for user in sample:
        context = render.context_for(user, {})
        try:
            filled.append({c: render.render(model.Channel(c), body, context) for c, body in contents.items()})
        except errors.MissingVariable as exc:
            missing[exc.name] += 1
        except errors.RenderError as exc:
            failed[exc.reason] += 1
    for name, n in sorted(missing.items()):
        warnings.append({"kind": "missing_variable", "variable": name, "share": round(n / len(sample), 3)})
    for reason, n in sorted(failed.items()):
        warnings.append({"kind": "render_error", "reason": reason, "share": round(n / len(sample), 3)})
    return filled


def _sms(
    contents: Mapping[str, Mapping[str, str]], filled: Sequence[Mapping[str, Any]], rules: Rules
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """How the text is billed once filled (the longest of the sample's; as written without a sample), what that
    costs on each priced SMS account, and the problem when it takes more segments than the brief's length."""
    texts = [f["sms"]["text"] for f in filled] or [contents["sms"]["text"]]
    counted = max((sms.count_segments(text) for text in texts), key=lambda s: (s.count, s.characters))
    costs = []
    for account, prices in sorted(rules.prices.items()):
        micros = prices.cost(counted.count, None)
        if micros is not None:
            costs.append({"provider": account, "currency": prices.currency, "per_message": pricing.amount(micros)})
    limit = SMS_SEGMENTS.get(rules.length, SMS_SEGMENTS["long"])
    facts = {
        "encoding": counted.encoding,
        "characters": counted.characters,
        "segments": counted.count,
        "segments_limit": limit,
        "cost": costs,
    }
    over = [{"kind": "over_limit", "field": "sms.text", "segments": counted.count, "limit": limit}]
    return facts, over if counted.count > limit else []


def _push(
    contents: Mapping[str, Mapping[str, str]], filled: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Title and body lengths once filled (the longest of the sample), against what the platforms show."""
    facts: dict[str, Any] = {}
    over = []
    for name, limit in (("title", adapt.PUSH_TITLE_LIMIT), ("body", adapt.PUSH_BODY_LIMIT)):
        length = max(len(f["push"][name]) for f in filled) if filled else len(contents["push"][name])
        facts[name] = {"length": length, "limit": limit}
        if length > limit:
            over.append({"kind": "over_limit", "field": f"push.{name}", "length": length, "limit": limit})
    return facts, over


def describe(problem: Mapping[str, Any]) -> str:
    """One problem in words, for the model's next try and for people."""
    kind = problem["kind"]
    if kind == "syntax":
        return f"{problem['field']}: {problem['message']} at line {problem['line']}, column {problem['column']}"
    if kind == "unknown_variable":
        return f"{problem['field']} uses variable(s) not allowed: {', '.join(problem['variables'])}"
    if kind == "conditions_not_allowed":
        return f"{problem['field']} uses <#if>, which is not allowed here"
    if kind == "blocked_keyword":
        return f"{problem['field']} contains the forbidden word {problem['word']!r}"
    if "segments" in problem:
        return f"{problem['field']} takes {problem['segments']} SMS segments; at most {problem['limit']}"
    return f"{problem['field']} is {problem['length']} characters; at most {problem['limit']}"


def limits_text(channel: str, length: str) -> str:
    """A channel's limits, said to the model."""
    if channel == "sms":
        segments = SMS_SEGMENTS.get(length, SMS_SEGMENTS["long"])
        return f"sms.text within {segments} SMS segment(s) (70 Chinese characters, or 160 Latin ones, for one)"
    if channel == "push":
        return f"push.title at most {adapt.PUSH_TITLE_LIMIT} characters, push.body at most {adapt.PUSH_BODY_LIMIT}"
    return f"{channel}: a short title or subject and a body"
