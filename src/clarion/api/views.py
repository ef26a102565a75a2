"""What the HTTP API answers: one pydantic model per response body, the counterpart of ``schemas`` (what it
takes). They are the routes' ``response_model``: OpenAPI documents them, and FastAPI checks every answer
against them, so the document and the wire cannot drift apart unnoticed (an answer with a field its model
does not declare is a 500 in the test suite, not a silently different document).

A field with a default here (``= None``) is one its route gives only sometimes; its view is a ``Partial``,
which leaves it out of the answer when the route left it out, as it always was, rather than sending ``null``.
Timestamps are the ISO 8601 strings the routes write; open-ended JSON (template content, attributes, a
policy's detail) is ``dict[str, Any]``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, WithJsonSchema, model_serializer

from clarion.domain import approval, model

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Json = dict[str, Any]


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Partial(View):
    """A view with fields that its route gives only sometimes: left out when not given, not sent as null.
    (Only these pay for the serializer that does it; a plain view shows every field.)"""

    # no return annotation: with one, pydantic would document the serializer's return type, not the fields
    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler):
        shown = handler(self)
        return {k: v for k, v in shown.items() if k in self.model_fields_set}


def created(view: type[View]) -> dict[int | str, dict[str, Any]]:
    """The 201 of a PUT (or POST) that answers 200 when it replaced what was there and 201 when it created it."""
    return {201: {"model": view, "description": "Created"}}


def page(description: str) -> dict[str, Any]:
    """An answer that is an HTML page for a person, not JSON for a program."""
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


#: a send's 202, with the header that marks the stored answer to a repeated ``idempotency_key``
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: the messages are stored and queued",
        "headers": {
            "Idempotent-Replayed": {
                "description": "`true` when this is the stored answer to an earlier request with the same "
                "idempotency key (nothing was sent again)",
                "schema": {"type": "string", "const": "true"},
            }
        },
    }
}


class Open(Partial):
    """An object whose fields are not fixed (a vendor's or a policy's own)."""

    model_config = ConfigDict(extra="allow")


# -- users and inbox -----------------------------------------------------------------------------------------


class UserAddresses(Open):
    email: str | None = None
    sms: str | None = None
    push: list[str | dict[str, Any]] | None = None
    webhook: str | None = None
    wechat: str | None = None
    wecom: str | None = None
    dingtalk: str | None = None
    feishu: str | None = None


class CategoryChoice(View):
    channels: dict[str, bool]


class Preferences(View):
    channels: dict[str, bool]
    categories: dict[str, bool | CategoryChoice]
    marketing_consent: bool | None
    do_not_disturb: str | None


class User(View):
    user_id: str
    attributes: Json
    tags: list[str]
    timezone: str | None
    locale: str | None
    addresses: UserAddresses
    preferences: Preferences
    created_at: Timestamp
    updated_at: Timestamp


class TimelineEvent(Partial):
    status: str
    reason: str | None
    at: Timestamp | None
    detail: Json | None = None


class DecidedBy(View):
    policy: str
    reason: str | None
    detail: Json


class Delivery(Partial):
    id: str
    channel: model.Channel
    provider: str | None
    status: model.DeliveryStatus
    attempts: int
    provider_message_id: str | None
    last_error: str | None
    run_at: Timestamp | None
    sent_at: Timestamp | None
    segments: int | None = None
    cost: float | None = Field(default=None, description="what handing it over cost, at the account's prices then")
    cost_currency: str | None = None
    fallback_of: str | None = Field(
        default=None, description="the delivery of the same message this one stands behind (channel fallback)"
    )
    timeline: list[TimelineEvent] | None = None
    decided_by: DecidedBy | None = None


class Message(View):
    id: str
    request_id: str
    user_id: str
    template: str
    template_version: int
    variant: str | None
    category: model.Category
    priority: model.Priority
    status: model.MessageStatus
    reason: str | None
    created_at: Timestamp | None
    updated_at: Timestamp | None


class SentMessage(Message):
    deliveries: list[Delivery]


class MessageDetail(Message):
    """A message with its data, its own timeline (accepted, failed before any delivery) and its deliveries',
    each with every status change and the policy that filtered or deferred it."""

    data: Json
    timeline: list[TimelineEvent]
    deliveries: list[Delivery]


class SendRecord(View):
    messages: list[SentMessage]
    next_cursor: str | None


class InboxItem(View):
    message_id: str
    title: str
    body: str
    url: str | None
    created_at: Timestamp | None
    read_at: Timestamp | None


class Inbox(View):
    items: list[InboxItem]
    next_cursor: str | None


class InboxCount(View):
    total: int
    unread: int


class Updated(View):
    updated: int


class ReadItem(View):
    message_id: str
    read: bool


# -- sending -------------------------------------------------------------------------------------------------


class AcceptedMessage(Partial):
    id: str
    user_id: str
    template: str
    status: model.MessageStatus
    reason: str | None = None


class Accepted(View):
    """The messages of a send, stored and queued; ``status`` is each one's as intake decided it."""

    request_id: str
    messages: list[AcceptedMessage]


class RuleOutcome(Partial):
    rule: str
    template: str
    matched: bool
    reason: str | None = None


class EventAccepted(Accepted):
    event: str
    rules: list[RuleOutcome]


class TestSendAccepted(Accepted):
    version: int
    prefix: str


# -- templates and rules -------------------------------------------------------------------------------------


class KeywordHit(View):
    list: str
    word: str
    field: str


class Template(View):
    key: str
    name: str
    category: model.Category
    priority: model.Priority
    department: str | None
    owner: str | None
    version: int
    live_version: int | None
    status: approval.Status | None
    channels: Json
    variants: list[Json] | None
    policy: Json | None
    ttl_seconds: int | None = Field(description="deliveries not handed to a provider this long after acceptance expire")
    fallback: list[Json] | None = Field(description='the channel fallback chain: [{"from", "to", "when", "within"}]')
    goal: Json | None = Field(description='the conversion goal: {"event", "within_hours", "attribution"}')
    experiment: Json | None = Field(
        description='how the A/B test is decided: {"metric", "min_sample", "alpha", "auto_apply"}'
    )
    variables: list[str]
    created_at: Timestamp
    updated_at: Timestamp


class SavedTemplate(Template):
    warnings: list[KeywordHit]


class Templates(View):
    templates: list[Template]
    next_cursor: str | None


class Rule(View):
    key: str
    event: str
    template: str
    condition: str | None
    channels: list[model.Channel] | None
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp


class Rules(View):
    rules: list[Rule]


class Approval(Open):
    level: str
    by: str
    at: Timestamp
    comment: str | None = None


class Version(Partial):
    template: str
    version: int
    status: approval.Status
    author: str | None
    approvals: list[Approval]
    awaiting: str | None
    comment: str | None
    created_at: Timestamp
    updated_at: Timestamp
    origin: dict[str, Any] | None = Field(
        default=None,
        description="who wrote it: null, an operator; {kind: llm, model} for AI copy (one version: with the prompt "
        "and the model's raw answer)",
    )
    body: Json | None = None
    live_version: int | None = None


class Versions(View):
    versions: list[Version]
    next_cursor: int | None


class Change(Partial):
    path: str
    change: Literal["added", "removed", "changed"]
    old: Any
    new: Any
    text_diff: str | None = None


class Diff(View):
    template: str
    version: int
    against: int
    changes: list[Change]


class TestRecipient(View):
    user_id: str
    note: str | None
    created_at: Timestamp


class TestRecipients(View):
    recipients: list[TestRecipient]


class PreviewError(Partial):
    code: str
    message: str
    variable: str | None = None


class PreviewKeywords(View):
    masked: list[Json]
    blocked: Json | None


class SmsSegments(View):
    encoding: str
    characters: int
    count: int


class PreviewChannel(Partial):
    """The channel's content as it would go out, or the ``error`` that keeps it from rendering."""

    content: Json | None
    error: PreviewError | None = None
    keywords: PreviewKeywords | None = None
    segments: SmsSegments | None = None


class VariantWeight(View):
    name: str
    weight: int


class Preview(View):
    template: str
    version: int
    user_id: str | None
    variant: str | None
    variants: list[VariantWeight]
    channels: dict[str, PreviewChannel]


class ApprovalSettings(View):
    levels: dict[str, list[str]]
    test_prefix: str


# -- policies ------------------------------------------------------------------------------------------------


class Window(Partial):
    unit: Literal["day", "week"] | None = None
    seconds: int | None = None


class SafetyValve(View):
    limit: int
    window: Window


class PolicySettings(View):
    default_timezone: str
    marketing_consent: Literal["opt_out", "opt_in"]
    send_windows: dict[str, str]
    quiet_hours: dict[str, Literal["defer", "drop", "ignore"]]
    dedup_seconds: int
    safety_valve: SafetyValve | None
    enabled: dict[str, bool]
    fallback: dict[str, list[Json]] = Field(
        description="the default channel fallback chain per category, for templates without their own: "
        '{"notification": [{"from": "push", "to": "sms", "when": "not_delivered", "within": 120}]}',
    )


class Cap(View):
    key: str
    limit: int
    window: Window
    channel: model.Channel | None
    category: model.Category | None
    per_department: bool
    enabled: bool
    description: str | None
    summary: str


class Caps(View):
    caps: list[Cap]


class KeywordList(Partial):
    """A keyword list; listed without its ``words`` (GET the list for them)."""

    key: str
    action: Literal["block", "mask"]
    words: list[str] | None = None
    case_sensitive: bool
    enabled: bool
    description: str | None
    version: int
    word_count: int


class KeywordLists(View):
    keyword_lists: list[KeywordList]


class Suppression(View):
    id: str
    user_id: str | None
    address: str | None
    channel: model.Channel | None
    category: model.Category | None
    reason: str | None
    source: str
    created_at: Timestamp


class Suppressions(View):
    suppressions: list[Suppression]
    next: str | None


class SmsKeyword(View):
    word: str
    scope: str = Field(description="the sending number or sign name it applies to; * for every sender")
    confirmation: str | None = Field(description="the SMS sent back to confirm; null: none")


class SmsKeywords(View):
    keywords: list[SmsKeyword]


class SmsReply(View):
    id: int
    provider: str
    phone: str
    text: str
    to: str | None
    sign: str | None
    keyword: str | None = Field(description="the keyword the reply was, if any")
    action: str | None = Field(description="unsubscribed: marketing SMS to this phone are suppressed")
    suppression_id: str | None
    confirmation: str | None = Field(description="sent, failed (see confirmation_reason), or null: none configured")
    confirmation_reason: str | None
    received_at: Timestamp


class SmsReplies(View):
    replies: list[SmsReply]
    next: int | None = Field(description="``before`` for the next (older) page; null on the last")


class RepliesTaken(View):
    accepted: int
    duplicates: int = Field(description="replies the vendor had reported before: nothing done again")
    unsubscribed: int


class ChannelCheck(Open):
    """One channel's verdict: each policy's own answer in order (``policies``), the counters the caps saw,
    the final ``decision`` and the rendered ``content`` the keyword lists judged."""

    channel: model.Channel
    timezone: str
    policies: list[Json]
    counters: list[Json] | None = None
    decision: Json
    content: Json | None


class PolicyCheck(Partial):
    user_id: str
    template: str
    category: model.Category
    priority: model.Priority
    at: Timestamp
    channels: list[ChannelCheck]
    render_error: str | None = None


# -- bulk user data ------------------------------------------------------------------------------------------


class ItemFailure(Partial):
    """An invalid item of a batch: its ``index`` (and ``line`` in JSON lines) and why."""

    index: int
    user_id: Any
    error: str
    details: Any = None
    line: int | None = None


class UsersBatch(View):
    created: int
    updated: int
    failed: list[ItemFailure]


class Retagged(View):
    tag: str
    changed: int
    unchanged: int
    unknown: list[str]


class Triggered(Partial):
    """A tracked event sent through the trigger rules: its ``request_id`` and messages, or its ``error``."""

    index: int
    request_id: str | None = None
    messages: list[AcceptedMessage] | None = None
    error: str | None = None


class Tracked(View):
    recorded: int
    converted: int = Field(description="events that converted a message (a template's goal), each counted once")
    failed: list[ItemFailure]
    unknown_users: list[str]
    triggered: list[Triggered]


# -- segments and ID lists -----------------------------------------------------------------------------------


class Segment(View):
    key: str
    name: str | None
    conditions: Any
    created_at: Timestamp
    updated_at: Timestamp


class SavedSegment(Segment):
    count: int


class SegmentList(View):
    segments: list[Segment]


class Count(View):
    count: int
    took_ms: float


class SegmentCount(Count):
    key: str


class SampledUser(View):
    user_id: str
    attributes: Json
    tags: list[str]


class Sample(View):
    key: str
    users: list[SampledUser]


class IdList(View):
    key: str
    name: str | None
    kind: Literal["user_id", "phone", "email"]
    size: int
    unknown: int
    created_at: Timestamp
    updated_at: Timestamp


class UploadedList(IdList):
    """The stored list and what the upload held: ``lines`` read, ``matched`` values, ``invalid`` ones, and the
    first values that matched no user or could not be read (``unknown_values``)."""

    lines: int
    matched: int
    invalid: int
    unknown_values: list[str]


class IdLists(View):
    lists: list[IdList]


# -- campaigns -----------------------------------------------------------------------------------------------


class Schedule(Partial):
    kind: Literal["now", "at", "cron"]
    at: Timestamp | None = None
    cron: str | None = None
    timezone: str | None = None


class Run(Partial):
    """A run's progress; ``queued``, ``sent``, ``failed`` and ``statuses`` (its messages now) are given for the
    latest run only."""

    id: str
    status: str
    audience: int
    processed: int
    progress: float
    excluded: int
    skipped: int
    messages: int
    filtered: dict[str, int]
    deferred: dict[str, int]
    failed_at_intake: dict[str, int]
    started_at: Timestamp
    finished_at: Timestamp | None
    error: Any = None
    ab: Json | None = Field(
        default=None,
        description="the A/B test's progress: state testing | deciding | decided, test_size, test_sent_at, and "
        "once decided the winner, by (rule: a tested winner; deadline: the best so far), stated, arms",
    )
    queued: int | None = None
    sent: int | None = None
    failed: int | None = None
    statuses: dict[str, int] | None = None


class CampaignApproval(Open):
    level: str
    by: str
    at: Timestamp
    comment: str | None
    decision: Literal["approved", "rejected"]


class CampaignSummary(Partial):
    key: str
    name: str | None = None
    template: str
    audience: Json
    channels: list[model.Channel] = []
    schedule: Schedule
    rate: float | None = None
    exclude_reached_days: float | None = None
    department: str | None = None
    goal: str | None = None
    data: Json = {}
    send_time: Literal["now", "optimal"] = Field(
        default="now", description="optimal: each user at their most responsive hour within 24 h, in their zone"
    )
    ab: Json | None = Field(
        default=None,
        description='an A/B test on a cohort first: {"test_share", "decide_after_hours", "metric", "min_sample", '
        '"alpha"}; the rest gets the winner',
    )
    status: str
    author: str | None
    approvals: list[CampaignApproval]
    next_run_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class Campaign(CampaignSummary):
    run: Run | None
    runs: list[Run]


class Campaigns(View):
    campaigns: list[CampaignSummary]
    next_cursor: str | None


class EstimatedAudience(View):
    size: int
    excluded: int
    eligible: int
    unknown_users: int
    reached: int


class EstimatedChannel(Partial):
    deliveries: int
    send: int
    dropped: dict[str, int]
    deferred: dict[str, int]
    segments: int | None = None
    segments_per_message: float | None = None
    cost: float
    price: float


class Cost(View):
    total: float
    currency: str


class Estimate(View):
    """The dry run; with ``exact`` false the counts are from a sample of ``judged`` users, and ``intervals``
    gives the 95% bounds of each, by its path (``channels.sms.send``)."""

    campaign: str
    template: str
    version: int
    at: Timestamp
    audience: EstimatedAudience
    exact: bool
    judged: int
    confidence: float | None
    channels: dict[str, EstimatedChannel]
    policies: dict[str, dict[str, int]]
    render_errors: int
    cost: Cost
    intervals: dict[str, list[int]]


# -- providers -----------------------------------------------------------------------------------------------


class Provider(View):
    name: str
    channel: str
    kind: str
    config: Json = Field(description="the account's settings; every secret in it shown as ``********``")
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp


class Providers(View):
    providers: list[Provider]


class ProbeError(View):
    code: str = Field(description="the vendor's code (or Clarion's, e.g. invalid_address)")
    message: str
    transient: bool = Field(description="a delivery would be retried after it")
    misconfigured: bool = Field(description="the account is at fault: its breaker would open")
    dead_address: bool = Field(description="the vendor says the address is gone for good")


class ProbeResult(View):
    provider: str
    channel: str
    ok: bool
    seconds: float = Field(description="how long the vendor took to answer")
    provider_message_id: str | None
    status: str | None = Field(description="sent, or delivered when the send itself proves it")
    error: ProbeError | None


# -- governance and system -----------------------------------------------------------------------------------


class AuditEntry(View):
    id: int
    at: Timestamp
    actor: str | None
    action: str
    subject: str
    detail: Any


class AuditLog(View):
    entries: list[AuditEntry]
    next_cursor: int | None


class Health(View):
    status: Literal["ok", "unavailable"]
    database: str
