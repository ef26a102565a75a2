"""Clarion's schema: the one MetaData that Alembic migrations must reproduce (tests check they do)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps are always UTC: stored without zone on SQLite, as timestamptz on PostgreSQL, read back aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # On SQLite a timestamp is text. On the hot path (every message, delivery and event row) SQLAlchemy's two
    # steps per value (its DATETIME processor, then the methods above) are folded into one: the same text written
    # by ``isoformat``, read by ``fromisoformat``; what that cannot read goes to SQLAlchemy's own processing, which
    # reads or refuses it as before.

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is UTC and value.year >= 1000:  # most are: then the text is isoformat's, less "+00:00"
                return value.isoformat(" ", "microseconds")[:26]
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        general = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return general

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            try:
                parsed = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                return general(value) if general is not None else value
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

        return process


JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(32)
Key = sa.String(128)
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", Key, nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("roles", JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime()),  # refused from then on; none: never expires
    sa.Column("revoked_at", UTCDateTime()),  # refused from then on; the row stays for the audit log and the list
    sa.Column("last_used_at", UTCDateTime()),  # flushed from memory, at most a minute behind (see apikeys)
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", Key, primary_key=True),
    sa.Column("attributes", JSON, nullable=False),
    sa.Column("tags", JSON, nullable=False),
    sa.Column("timezone", sa.String(64)),
    sa.Column("locale", sa.String(35)),
    sa.Column("addresses", JSON, nullable=False),
    sa.Column("preferences", JSON),
    *_timestamps(),
    sa.Index(None, "updated_at"),  # the segment index follows other processes' changes by it
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("priority", sa.String(10), nullable=False),
    sa.Column("department", sa.String(100)),
    sa.Column("owner", sa.String(100)),
    sa.Column("channels", JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("policy", JSON),
    sa.Column("variants", JSON),  # A/B variants of the content with their weights
    # the version sends use where the template's category needs approval (None: none approved yet)
    sa.Column("live_version", sa.Integer),
    sa.Column("ttl_seconds", sa.Integer),  # a delivery not handed over within this long of acceptance expires
    sa.Column("fallback", JSON),  # [{"from", "to", "when", "within"}]: the channel to try when one does not reach
    sa.Column("goal", JSON),  # {"event", "within_hours", "attribution"}: what converts its messages
    sa.Column("experiment", JSON),  # {"metric", "min_sample", "alpha", "auto_apply"}: how its A/B test is decided
    *_timestamps(),
)

# Every saved state of a template, kept for diffs, approval and to know what a message was rendered from.
template_versions = sa.Table(
    "template_versions",
    metadata,
    sa.Column("template_key", Key, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("body", JSON, nullable=False),  # the template as saved: name, category, channels, variants, ...
    sa.Column("status", sa.String(20), nullable=False),  # draft | pending_review | approved | rejected
    sa.Column("author", Key),
    sa.Column("approvals", JSON, nullable=False),  # [{"level", "by", "at", "comment"}]
    sa.Column("comment", sa.Text),
    *_timestamps(),
    # where a machine wrote this version: {"kind": "llm", "model", "prompt", "raw", "call"}; None when typed
    sa.Column("origin", JSON),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", Key),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),  # e.g. "template:welcome@3"
    sa.Column("detail", JSON),
    sa.Index(None, "subject", "at"),
)

test_recipients = sa.Table(
    "test_recipients",
    metadata,
    sa.Column("user_id", Key, primary_key=True),
    sa.Column("note", sa.String(200)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

rules = sa.Table(
    "rules",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("event", Key, nullable=False, index=True),
    sa.Column("template_key", Key, nullable=False),
    sa.Column("condition", sa.Text),
    sa.Column("channels", JSON),
    sa.Column("enabled", sa.Boolean, nullable=False),
    *_timestamps(),
)

providers = sa.Table(
    "providers",
    metadata,
    sa.Column("name", Key, primary_key=True),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("config", JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    *_timestamps(),
)

# Which provider accounts send a channel's deliveries: the most specific route whose ``match`` fits a delivery
# picks among its ``providers`` by weight, and ``failover`` when none of them can send.
routes = sa.Table(
    "routes",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("match", JSON, nullable=False),  # category, template, department, priority, signature, country_code
    sa.Column("providers", JSON, nullable=False),  # [{"name", "weight"}], in order
    sa.Column("failover", JSON, nullable=False),  # [provider name, ...]
    sa.Column("enabled", sa.Boolean, nullable=False),
    *_timestamps(),
)

# Receipts that could not be applied when they came (the delivery's sent outcome not written yet, or an id no
# delivery carries yet): kept, and applied when the outcome that names the id is recorded.
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("provider", Key, nullable=False),
    sa.Column("provider_message_id", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("detail", JSON),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index(None, "provider", "provider_message_id"),
)

#: users' SMS replies (上行), as their vendors reported them, and what Clarion did with each (``pipeline.replies``)
sms_replies = sa.Table(
    "sms_replies",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("provider", Key, nullable=False),
    sa.Column("vendor_id", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("to", sa.String(64)),
    sa.Column("sign", sa.String(64)),
    sa.Column("keyword", sa.String(32)),
    #: ``unsubscribed`` (a keyword matched: a marketing-SMS suppression), or None (kept, nothing done)
    sa.Column("action", sa.String(20)),
    sa.Column("suppression_id", Id),
    #: the confirmation sent back: ``sent``, ``failed`` (with its reason), or None (none configured)
    sa.Column("confirmation", sa.String(10)),
    sa.Column("confirmation_reason", sa.Text),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("provider", "vendor_id"),
    sa.Index(None, "phone"),
)

send_requests = sa.Table(
    "send_requests",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("idempotency_key", sa.String(200), unique=True),  # an answered request's key
    # a claim's key: the row that holds it while its request is composed, with no response (``store.idempotency``)
    sa.Column("claimed_key", sa.String(200), unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("response", JSON),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("request_id", Id, nullable=False, index=True),
    sa.Column("user_id", Key, nullable=False),
    sa.Column("template_key", Key, nullable=False),
    sa.Column("template_version", sa.Integer, nullable=False),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("priority", sa.String(10), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("data", JSON, nullable=False),
    sa.Column("variant", sa.String(64)),
    sa.Column("campaign_key", Key),  # the campaign run that sent it (None: a triggered send)
    sa.Column("campaign_run", Id),
    sa.Column("department", sa.String(100)),  # its template's when it was accepted (None: accepted before 0012)
    *_timestamps(),
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "campaign_run", "user_id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("message_id", Id, nullable=False, index=True),
    sa.Column("user_id", Key, nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("provider", Key),
    sa.Column("address", JSON),
    sa.Column("content", JSON),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("lane", sa.SmallInteger, nullable=False),
    sa.Column("run_at", UTCDateTime(), nullable=False),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("provider_message_id", sa.String(300)),
    sa.Column("last_error", sa.Text),
    sa.Column("sent_at", UTCDateTime()),
    sa.Column("segments", sa.SmallInteger),  # SMS: billed segments of the rendered text
    # not handed to a provider by then (the template's ttl after the message was accepted): expired, never late
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("fallback_of", Id),  # the delivery of the same message this one replaces, on another channel
    # what it cost when handed over, in micro-units of ``cost_currency`` (``domain.pricing``; None: unpriced)
    sa.Column("cost", sa.BigInteger),
    sa.Column("cost_currency", sa.String(3)),
    *_timestamps(),
    # the outbox: what workers claim, in lane order
    sa.Index("ix_deliveries_claim", "status", "lane", "run_at"),
    sa.Index(None, "provider", "provider_message_id"),  # receipts name the vendor's id
    sa.Index(None, "provider", "status", "sent_at"),  # the receipt poller: an account's deliveries still sent
    sa.Index(None, "sent_at"),  # the cost report and budgets: a month's handed-over deliveries
)

delivery_events = sa.Table(
    "delivery_events",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", Id, index=True),
    sa.Column("message_id", Id, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("detail", JSON),
    sa.Column("at", UTCDateTime(), nullable=False),
)

# A channel fallback waiting to fire (see ``pipeline.fallback``): the held delivery ``fallback_id`` goes out when
# ``original_id`` has not reached the user by ``run_at`` (None: when it fails, or when the step before it fires).
fallback_steps = sa.Table(
    "fallback_steps",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("message_id", Id, nullable=False, index=True),
    sa.Column("original_id", Id, nullable=False, index=True),
    sa.Column("fallback_id", Id, nullable=False),
    sa.Column("step", sa.SmallInteger, nullable=False),  # its index in the chain
    sa.Column("when", sa.String(16), nullable=False),
    sa.Column("within", sa.Integer),
    sa.Column("run_at", UTCDateTime()),
    sa.Column("state", sa.String(16), nullable=False),  # pending | fired | cancelled
    sa.Column("reason", sa.Text),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_until", UTCDateTime()),
    *_timestamps(),
    sa.Index(None, "state", "run_at"),
)

inbox_items = sa.Table(
    "inbox_items",
    metadata,
    sa.Column("message_id", Id, primary_key=True),
    sa.Column("delivery_id", Id, nullable=False),
    sa.Column("user_id", Key, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("url", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("read_at", UTCDateTime()),
    sa.Index(None, "user_id", "created_at"),
)

# -- policies ------------------------------------------------------------------------------------------------

# The operator's policy settings: one JSON document per key (today only "policies").
policy_settings = sa.Table(
    "policy_settings",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("value", JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

caps = sa.Table(
    "caps",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("definition", JSON, nullable=False),
    *_timestamps(),
)

keyword_lists = sa.Table(
    "keyword_lists",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("action", sa.String(10), nullable=False),
    sa.Column("words", JSON, nullable=False),
    sa.Column("case_sensitive", sa.Boolean, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("description", sa.Text),
    *_timestamps(),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", Key, index=True),
    sa.Column("address", sa.String(320), index=True),
    sa.Column("channel", sa.String(20)),
    sa.Column("category", sa.String(20)),
    sa.Column("reason", sa.Text),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# -- short links -----------------------------------------------------------------------------------------------

short_links = sa.Table(
    "short_links",
    metadata,
    sa.Column("code", sa.String(16), primary_key=True),
    sa.Column("delivery_id", Id, nullable=False, index=True),
    sa.Column("message_id", Id, nullable=False),
    sa.Column("user_id", Key, nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("clicks", sa.Integer, nullable=False),
    sa.Column("first_clicked_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# -- audiences and campaigns ---------------------------------------------------------------------------------

# Behaviour events (POST /v1/track): what segments ask ("login in the last 3 days"); ordered by id for the
# index's catch-up.
user_events = sa.Table(
    "user_events",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("user_id", Key, nullable=False),
    sa.Column("event", Key, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("properties", JSON),
    sa.Index(None, "user_id", "event", "at"),
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("definition", JSON, nullable=False),
    *_timestamps(),
)

id_lists = sa.Table(
    "id_lists",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("kind", sa.String(10), nullable=False),  # what was uploaded: user_id | phone | email
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("unknown", sa.Integer, nullable=False),
    *_timestamps(),
)

id_list_members = sa.Table(
    "id_list_members",
    metadata,
    sa.Column("list_key", Key, primary_key=True),
    sa.Column("user_id", Key, primary_key=True),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("definition", JSON, nullable=False),  # template, audience, channels, schedule, rate, goal, ...
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("author", Key),
    sa.Column("approvals", JSON, nullable=False),
    sa.Column("next_run_at", UTCDateTime()),
    *_timestamps(),
    sa.Index(None, "status", "next_run_at"),
)

# One run of a campaign: its audience is frozen at the start, written in batches with the cursor recorded,
# so a restart resumes after the last committed batch and nobody is sent twice.
campaign_runs = sa.Table(
    "campaign_runs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("campaign_key", Key, nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),  # running | paused | completed | cancelled | failed
    sa.Column("audience", sa.Integer, nullable=False),
    sa.Column("processed", sa.Integer, nullable=False),
    sa.Column("cursor", sa.Integer, nullable=False),  # how many of the frozen audience are done
    sa.Column("counts", JSON, nullable=False),  # queued / filtered by reason / failed ...
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
)

# A run's frozen audience in parts, each advanced by one runner at a time (its lease), so several runners — the
# campaign loops of several ``clarion worker`` processes — fan one run out together. ``cursor`` is the next
# position of the part to write; it moves in the transaction that writes the batch, as the run's counts do.
campaign_run_parts = sa.Table(
    "campaign_run_parts",
    metadata,
    sa.Column("run_id", Id, primary_key=True),
    sa.Column("part", sa.Integer, primary_key=True),
    sa.Column("start", sa.Integer, nullable=False),
    sa.Column("stop", sa.Integer, nullable=False),
    sa.Column("cursor", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_until", UTCDateTime()),
)

# The frozen audience of a run, in the order it is sent.
campaign_audience = sa.Table(
    "campaign_audience",
    metadata,
    sa.Column("run_id", Id, primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("user_id", Key, nullable=False),
)

# -- analytics ---------------------------------------------------------------------------------------------------

#: the dimensions a funnel count is filed under ('' where there is none, so the unique key holds)
FUNNEL_DIMS = (
    "template_key",
    "template_version",
    "variant",
    "campaign_key",
    "campaign_run",
    "category",
    "department",
    "channel",
    "provider",
)


def _funnel(name: str) -> sa.Table:
    """A funnel rollup: how many deliveries (messages, for ``requested``) reached each stage, per bucket (an hour,
    or a day) and dimensions, kept with the timeline events that feed it (``store.rollups``)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("bucket", UTCDateTime(), nullable=False),
        sa.Column("template_key", Key, nullable=False),
        sa.Column("template_version", sa.Integer, nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("campaign_key", Key, nullable=False),
        sa.Column("campaign_run", sa.String(32), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("department", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("provider", Key, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),  # filtered/deferred: the policy that decided
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("revenue", sa.Float, nullable=False),  # converted: the sum of the goal events' amounts
        sa.Index(f"ux_{name}_key", "bucket", *FUNNEL_DIMS, "stage", "policy", unique=True),
    )


funnel_hourly = _funnel("funnel_hourly")
funnel_daily = _funnel("funnel_daily")

#: the dimensions of the narrow rollups: what the usual answers (totals, per day or hour, per channel and
#: provider) group and filter by
FUNNEL_NARROW_DIMS = ("channel", "provider")


def _narrow(name: str) -> sa.Table:
    """A narrow funnel rollup: the same counts as its wide counterpart, summed over every dimension but channel and
    provider, so the usual answers read a few thousand cells instead of every template's (``store.rollups``)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("bucket", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("provider", Key, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("revenue", sa.Float, nullable=False),
        sa.Index(f"ux_{name}_key", "bucket", *FUNNEL_NARROW_DIMS, "stage", "policy", unique=True),
    )


funnel_hourly_channels = _narrow("funnel_hourly_channels")
funnel_daily_channels = _narrow("funnel_daily_channels")

# -- the closed loop: tag feedback and alerts ----------------------------------------------------------------------

# What a click, a conversion or an unsubscribe on a template or campaign does to the user: add or remove tags, set
# attributes (``pipeline.feedback_rules``). ``definition`` holds ``on``, ``match`` and ``actions``.
feedback_rules = sa.Table(
    "feedback_rules",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("definition", JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    *_timestamps(),
)

# Each time a feedback rule changed a user: on the user's record, with what triggered it.
feedback_firings = sa.Table(
    "feedback_firings",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("rule_key", Key, nullable=False),
    sa.Column("user_id", Key, nullable=False),
    sa.Column("message_id", Id),
    sa.Column("trigger", sa.String(20), nullable=False),  # click | convert | unsubscribe
    sa.Column("detail", JSON),  # the event, the link, the actions applied
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "user_id", "at"),
    sa.Index(None, "rule_key", "message_id", unique=True),  # once per (rule, message); events of no message: any
)

# Stored alert rules (``analytics.alerts.AlertRule.to_json``), evaluated by the alert loop.
alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("key", Key, primary_key=True),
    sa.Column("rule", JSON, nullable=False),
    *_timestamps(),
)

# What the alert loop keeps between evaluations, per rule and subject (``analytics.alerts.AlertState``).
alert_states = sa.Table(
    "alert_states",
    metadata,
    sa.Column("rule_key", Key, primary_key=True),
    sa.Column("subject", sa.String(300), primary_key=True),  # e.g. "provider:aliyun-a", "all:"
    sa.Column("firing_since", UTCDateTime()),
    sa.Column("notified_at", UTCDateTime()),
    sa.Column("value", sa.Float),
)

# The alert history (GET /v1/alerts): every notice, fired, repeated or recovered, and whether it went out.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("rule_key", Key, nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("action", sa.String(10), nullable=False),  # fire | repeat | recover
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("notified", sa.String(10), nullable=False),  # sent | failed
    sa.Column("error", sa.Text),  # why the notice did not go out
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "rule_key", "at"),
    sa.Index(None, "at"),
)

# -- costs ---------------------------------------------------------------------------------------------------------

# A department's monthly budget (``store.costs``): its marketing refused once spent, where ``refuse_marketing``.
budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("department", sa.String(100), primary_key=True),
    sa.Column("monthly", sa.BigInteger, nullable=False),  # micro-units of ``currency``
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("refuse_marketing", sa.Boolean, nullable=False),
    *_timestamps(),
)

# The lines of a vendor's bill as uploaded (POST /v1/reconciliation/{provider}), reconciled against deliveries.
bill_lines = sa.Table(
    "bill_lines",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("provider", Key, nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("line", sa.Integer, nullable=False),  # its line in the upload
    sa.Column("vendor_message_id", sa.String(300), nullable=False),
    sa.Column("recipient", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # delivered | failed | pending, read from ``vendor_status``
    sa.Column("vendor_status", sa.String(64)),
    sa.Column("segments", sa.Integer),
    sa.Column("fee", sa.BigInteger),  # micro-units of ``currency``
    sa.Column("currency", sa.String(3)),
    sa.Column("uploaded_at", UTCDateTime(), nullable=False),
    sa.Index(None, "provider", "day"),
    sa.Index(None, "provider", "vendor_message_id"),
)

# A vendor's own count of an account's day, from its statistics API (POST /v1/reconciliation/{provider}:fetch):
# one row per account and day as the vendor reckons it (``utc_offset``: its zone, minutes east of UTC); a fetch
# again replaces it. A count the vendor does not report is null.
vendor_statistics = sa.Table(
    "vendor_statistics",
    metadata,
    sa.Column("provider", Key, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("utc_offset", sa.Integer, nullable=False),
    sa.Column("sent", sa.Integer),
    sa.Column("delivered", sa.Integer),
    sa.Column("failed", sa.Integer),
    sa.Column("billed_segments", sa.Integer),
    sa.Column("fee", sa.BigInteger),  # micro-units of ``currency``
    sa.Column("currency", sa.String(3)),
    sa.Column("reported", JSON, nullable=False),  # the vendor's counts under its own names
    sa.Column("fetched_at", UTCDateTime(), nullable=False),
)

# -- operators -----------------------------------------------------------------------------------------------------

# The console's accounts (``console.operators``): a person with a password (argon2) and one role; disabled, never
# deleted, so the audit log's ``operator:<name>`` keeps naming someone.
operators = sa.Table(
    "operators",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # admin | editor | approver | sender | support
    sa.Column("disabled", sa.Boolean, nullable=False),
    *_timestamps(),
    sa.Column("last_login_at", UTCDateTime()),
)

# -- AI copy -------------------------------------------------------------------------------------------------------

# Every call to the language model (``copywriting``): what it cost in tokens, per department, like an SMS bill line.
llm_calls = sa.Table(
    "llm_calls",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("department", sa.String(100)),
    sa.Column("actor", Key),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # ok | http_error | timeout | invalid
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Index(None, "department", "at"),
)

# An operator's word on one copy of the knowledge base: pinned (always offered as an example) or banned (never).
copy_examples = sa.Table(
    "copy_examples",
    metadata,
    sa.Column("template_key", Key, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(10), nullable=False),  # pinned | banned
    sa.Column("reason", sa.String(500)),
    sa.Column("actor", Key),
    *_timestamps(),
)
