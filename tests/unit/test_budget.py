"""Operation budgets: charging, measuring values, and one budget for all the fields of a channel's content."""

from __future__ import annotations

import pytest

from clarion.domain import budget, errors, model, render


def test_a_budget_raises_its_own_error_once_spent() -> None:
    spending = budget.Budget(100, errors.ConditionBudgetExceeded)
    spending.charge(60, "a step")
    spending.charge(40, "another")
    assert (spending.spent, spending.left) == (100, 0)
    with pytest.raises(errors.ConditionBudgetExceeded, match="one more needs 1 operations, more than the 0 left"):
        spending.charge(1, "one more")
    rendering = budget.Budget(10, errors.RenderBudgetExceeded)
    with pytest.raises(errors.RenderBudgetExceeded, match="budget of 10") as info:
        rendering.charge(11, "a loop")
    assert info.value.reason.startswith("render_budget_exceeded: a loop needs 11 operations")


def test_charge_outside_any_budget_is_not_metered() -> None:
    assert budget.ACTIVE.get() is None
    budget.charge(10**12, "anything")  # nothing to spend: no error


def test_weight_counts_all_the_way_down() -> None:
    assert budget.weight(5, 100) == 1
    assert budget.weight([1, 2, 3], 100) == 4
    assert budget.weight({"a": [1, 2], "b": {"c": None}}, 100) == 1 + 1 + 2 + 1 + 1
    assert budget.weight("x" * (budget.CHARS_PER_OPERATION * 10), 100) == 11


def test_weight_stops_soon_after_the_cap() -> None:
    huge = [[0] * 10 for _ in range(1_000_000)]
    assert budget.weight(huge, 100) > 100  # one look at the outer length is enough
    assert 100 < budget.weight([[0] * 10] * 50, 100) <= 100 + 11


def test_measured_charges_the_walk_and_stops_within_the_budget() -> None:
    spending = budget.Budget(1_000, errors.RenderBudgetExceeded)
    token = budget.ACTIVE.set(spending)
    try:
        assert budget.measured([0] * 9, "a walk") == 10
        assert spending.spent == 10 * budget.WALK_COST
        with pytest.raises(errors.RenderBudgetExceeded, match="a walk"):
            budget.measured([[0]] * 1_000_000, "a walk")
    finally:
        budget.ACTIVE.reset(token)


def _inbox(title: str, body: str) -> model.Template:
    return model.Template(
        key="t",
        name="t",
        category=model.Category.NOTIFICATION,
        priority=model.Priority.NORMAL,
        channels={model.Channel.INBOX: {"title": title, "body": body}},
    )


def test_compose_spends_one_budget_over_all_the_fields_of_a_channel() -> None:
    spend = "<#if -1 in data.b>y</#if>"
    context = render.context_for(None, {"b": [0] * (budget.RENDER_BUDGET * 3 // 5)})
    assert render.compose(_inbox(spend, "B"), model.Channel.INBOX, context, None)["title"] == ""
    assert render.compose(_inbox("T", spend), model.Channel.INBOX, context, None)["body"] == ""
    with pytest.raises(errors.RenderBudgetExceeded) as info:  # each field alone fits; both together do not
        render.compose(_inbox(spend, spend), model.Channel.INBOX, context, None)
    assert info.value.field == "inbox.body"
    assert info.value.reason.startswith("render_budget_exceeded: inbox.body: 'in' over a list needs")
    assert budget.ACTIVE.get() is None  # the composer's budget ends with it
