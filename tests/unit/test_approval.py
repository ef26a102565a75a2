"""The approval rules as values: levels per category, the state machine, who may act, and the reviewer's diff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion.domain import approval, errors, model

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
S = approval.Status
EDITOR = approval.Actor("ed", ("editor",))
ANA = approval.Actor("ana", ("approver",))
BO = approval.Actor("bo", ("approver",))


def version(
    status: approval.Status = S.PENDING_REVIEW,
    *,
    author: str = "ed",
    approvals: tuple[approval.Approval, ...] = (),
    category: model.Category = model.Category.MARKETING,
    number: int = 2,
) -> approval.Version:
    return approval.Version("promo", number, category, status, author, approvals)


def refused(outcome: approval.Outcome | approval.Refusal) -> approval.Refusal:
    assert isinstance(outcome, approval.Refusal), outcome
    return outcome


def allowed(outcome: approval.Outcome | approval.Refusal) -> approval.Outcome:
    assert isinstance(outcome, approval.Outcome), outcome
    return outcome


# -- settings ------------------------------------------------------------------------------------------------


def test_by_default_only_marketing_needs_approval_in_two_levels() -> None:
    settings = approval.Settings()
    assert settings.levels_for(model.Category.MARKETING) == ("business", "compliance")
    for category in (model.Category.TRANSACTIONAL, model.Category.VERIFICATION, model.Category.NOTIFICATION):
        assert not settings.needs_approval(category)
        assert approval.initial_status(settings, category) is S.APPROVED
    assert approval.initial_status(settings, model.Category.MARKETING) is S.DRAFT
    assert settings.to_json() == {"levels": {"marketing": ["business", "compliance"]}, "test_prefix": "[TEST] "}


def test_settings_levels_replace_the_whole_table_and_round_trip() -> None:
    settings = approval.Settings.from_json({"levels": {"transactional": ["compliance"]}})
    assert settings.needs_approval(model.Category.TRANSACTIONAL)
    assert not settings.needs_approval(model.Category.MARKETING)
    assert settings.test_prefix == "[TEST] "
    again = approval.Settings.from_json(settings.to_json())
    assert again == settings
    prefixed = approval.Settings.from_json({"test_prefix": "(test) "}, settings)
    assert prefixed.test_prefix == "(test) "
    assert prefixed.levels == settings.levels
    assert not approval.Settings.from_json({"levels": {"marketing": []}}).needs_approval(model.Category.MARKETING)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"levels": {"spam": ["a"]}}, "levels.spam"),
        ({"levels": {"marketing": "business"}}, "levels.marketing"),
        ({"levels": {"marketing": ["a", "a"]}}, "levels.marketing"),
        ({"levels": {"marketing": [""]}}, "levels.marketing"),
        ({"levels": {"marketing": ["a", "b", "c", "d", "e", "f"]}}, "levels.marketing"),
        ({"levels": []}, "levels"),
        ({"test_prefix": 3}, "test_prefix"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_settings_name_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        approval.Settings.from_json(document)
    assert caught.value.code == "invalid_approval_settings"
    assert caught.value.details == {"field": field}


# -- roles ---------------------------------------------------------------------------------------------------


def test_roles_grant_permissions_and_admin_grants_all() -> None:
    for permission in approval.PERMISSIONS:
        assert approval.may(("admin",), permission)
    assert approval.may(("editor",), approval.EDIT)
    assert not approval.may(("editor",), approval.REVIEW)
    assert not approval.may(("approver",), approval.EDIT)
    assert approval.may(("approver",), approval.REVIEW)
    assert approval.may(("sender",), approval.SEND)
    assert not approval.may(("sender",), approval.TEST)
    assert not approval.may(("editor", "approver"), approval.ADMINISTER)
    with pytest.raises(approval.Forbidden) as caught:
        approval.require(("editor",), approval.REVIEW)
    assert caught.value.status == 403
    assert caught.value.code == "forbidden"
    assert caught.value.details == {"needs": ["admin", "approver"], "roles": ["editor"]}


def test_unknown_and_missing_roles_are_refused() -> None:
    assert approval.check_roles(["editor", "approver", "editor"]) == ("editor", "approver")
    with pytest.raises(errors.InvalidInput) as caught:
        approval.check_roles(["editor", "root"])
    assert caught.value.code == "unknown_role"
    assert caught.value.details["unknown"] == ["root"]
    with pytest.raises(errors.InvalidInput):
        approval.check_roles([])


# -- the state machine ---------------------------------------------------------------------------------------


def test_submit_moves_a_draft_to_review_and_nothing_else() -> None:
    assert allowed(approval.submit(version(S.DRAFT), EDITOR)).status is S.PENDING_REVIEW
    for status in (S.PENDING_REVIEW, S.APPROVED, S.REJECTED):
        refusal = refused(approval.submit(version(status), EDITOR))
        assert (refusal.code, refusal.status) == ("invalid_transition", 409)
    assert refused(approval.submit(version(S.DRAFT), ANA)).code == "forbidden"


def test_two_levels_need_two_different_approvers_in_order() -> None:
    settings = approval.Settings()
    first = allowed(approval.approve(version(), ANA, settings, at=NOW, comment="copy ok"))
    assert first.status is S.PENDING_REVIEW
    assert first.live is False
    assert first.level == "business"
    assert first.approvals == (approval.Approval("business", "ana", NOW, "copy ok"),)

    halfway = version(approvals=first.approvals)
    again = refused(approval.approve(halfway, ANA, settings, at=NOW))
    assert (again.code, again.status, dict(again.details)) == ("already_approved", 403, {"level": "business"})

    second = allowed(approval.approve(halfway, BO, settings, at=NOW))
    assert second.status is S.APPROVED
    assert second.live is True
    assert second.level == "compliance"
    assert [a.by for a in second.approvals] == ["ana", "bo"]


def test_one_level_approves_at_once() -> None:
    settings = approval.Settings.from_json({"levels": {"transactional": ["compliance"]}})
    outcome = allowed(approval.approve(version(category=model.Category.TRANSACTIONAL), ANA, settings, at=NOW))
    assert (outcome.status, outcome.live, outcome.level) == (S.APPROVED, True, "compliance")


def test_a_version_waiting_when_its_levels_were_removed_finishes_with_one_review() -> None:
    outcome = allowed(approval.approve(version(), ANA, approval.Settings.from_json({"levels": {}}), at=NOW))
    assert (outcome.status, outcome.live) == (S.APPROVED, True)


def test_the_author_cannot_approve_or_reject_their_own_version() -> None:
    author = approval.Actor("ed", ("admin",))
    refusal = refused(approval.approve(version(), author, approval.Settings(), at=NOW))
    assert (refusal.code, refusal.status) == ("own_version", 403)
    assert refused(approval.reject(version(), author, comment="no")).code == "own_version"
    error = refusal.error()
    assert (error.status, error.code) == (403, "own_version")


def test_only_reviewers_approve_or_reject() -> None:
    for actor in (approval.Actor("x", ("editor",)), approval.Actor("y", ("sender",))):
        assert refused(approval.approve(version(), actor, approval.Settings(), at=NOW)).code == "forbidden"
        assert refused(approval.reject(version(), actor, comment="no")).code == "forbidden"
    assert allowed(approval.approve(version(), approval.Actor("z", ("admin",)), approval.Settings(), at=NOW))


@pytest.mark.parametrize("status", [S.DRAFT, S.APPROVED, S.REJECTED])
def test_only_a_pending_version_is_approved_or_rejected(status: approval.Status) -> None:
    assert refused(approval.approve(version(status), ANA, approval.Settings(), at=NOW)).code == "invalid_transition"
    assert refused(approval.reject(version(status), ANA, comment="no")).code == "invalid_transition"


@pytest.mark.parametrize("comment", [None, "", "   "])
def test_a_rejection_needs_a_comment(comment: str | None) -> None:
    refusal = refused(approval.reject(version(), ANA, comment=comment))
    assert (refusal.code, refusal.status) == ("comment_required", 422)


def test_a_rejection_keeps_its_comment() -> None:
    outcome = allowed(approval.reject(version(), ANA, comment=" tone it down "))
    assert (outcome.status, outcome.comment, outcome.live) == (S.REJECTED, "tone it down", False)


def test_a_version_older_than_the_live_one_cannot_be_approved() -> None:
    refusal = refused(approval.approve(version(number=2), ANA, approval.Settings(), at=NOW, live_version=3))
    assert (refusal.code, refusal.status) == ("superseded", 409)
    assert allowed(approval.approve(version(number=4), ANA, approval.Settings(), at=NOW, live_version=3))


def test_approvals_round_trip_through_json() -> None:
    entry = approval.Approval("business", "ana", NOW, None)
    assert approval.Approval.from_json(entry.to_json()) == entry


# -- diff ----------------------------------------------------------------------------------------------------


def test_diff_lists_changed_paths_with_old_new_and_a_text_diff() -> None:
    old = {"name": "Promo", "channels": {"sms": {"text": "Sale today"}, "inbox": {"title": "Sale", "body": "b"}}}
    new = {"name": "Promo", "channels": {"sms": {"text": "Sale tomorrow"}, "push": {"title": "T", "body": "b"}}}
    changes = approval.diff(old, new, old_label="promo@1", new_label="promo@2")
    assert [(c["path"], c["change"]) for c in changes] == [
        ("channels.inbox.body", "removed"),
        ("channels.inbox.title", "removed"),
        ("channels.push.body", "added"),
        ("channels.push.title", "added"),
        ("channels.sms.text", "changed"),
    ]
    sms = changes[-1]
    assert (sms["old"], sms["new"]) == ("Sale today", "Sale tomorrow")
    assert sms["text_diff"].splitlines() == [
        "--- promo@1:channels.sms.text",
        "+++ promo@2:channels.sms.text",
        "@@ -1 +1 @@",
        "-Sale today",
        "+Sale tomorrow",
    ]
    assert changes[0]["new"] is None


def test_diff_of_equal_bodies_is_empty_and_types_count() -> None:
    body = {"priority": "normal", "policy": None, "channels": {"webhook": {"body": {"n": 1, "tags": ["a"]}}}}
    assert approval.diff(body, body, old_label="a", new_label="b") == []
    changed = {**body, "channels": {"webhook": {"body": {"n": 1.5, "tags": ["a", "b"]}}}}
    changes = approval.diff(body, changed, old_label="a", new_label="b")
    assert [(c["path"], c["old"], c["new"]) for c in changes] == [
        ("channels.webhook.body.n", 1, 1.5),
        ("channels.webhook.body.tags.1", None, "b"),
    ]
    assert "text_diff" not in changes[0]
