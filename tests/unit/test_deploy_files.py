"""The shipped Prometheus rules and Grafana dashboard use only metrics and labels Clarion exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from clarion import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

#: PromQL words that are not metric names: functions, aggregations, keywords (without their ``(`` too)
PROMQL_WORDS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bool",
        "bottomk",
        "by",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "day_of_month",
        "day_of_week",
        "delta",
        "deriv",
        "exp",
        "floor",
        "group",
        "group_left",
        "group_right",
        "histogram_quantile",
        "holt_winters",
        "idelta",
        "ignoring",
        "increase",
        "inf",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "nan",
        "offset",
        "on",
        "or",
        "and",
        "unless",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stddev_over_time",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
        "without",
    ]
)
IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exposed() -> dict[str, set[str]]:
    """Every sample name Clarion's registry exposes, with its labels: one child of each metric is made so that
    labelled metrics show their samples (counters ``_total``, histograms ``_bucket``/``_sum``/``_count``)."""
    m = metrics.Metrics()
    for collector in vars(m).values():
        if isinstance(collector, MetricWrapperBase):
            names = collector._labelnames
            if names:
                collector.labels(*["x"] * len(names))
    samples: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def _without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def _closing(text: str) -> int:
    """The index of the parenthesis closing the one ``text`` opens with."""
    depth = 0
    for index, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return index
    return len(text) - 1


def used(expr: str) -> tuple[set[str], dict[str, set[str]], list[tuple[set[str], set[str]]]]:
    """The metric names in a PromQL expression, the labels matched on each (``name{label=…}``), and each grouping
    clause (``by (…)``) with the metrics it groups: those inside the parentheses after it, else the whole expression."""
    text = _without_strings(expr)
    matched: dict[str, set[str]] = {}
    for name, body in MATCHERS.findall(text):
        matched.setdefault(name, set()).update(MATCHER_LABEL.findall(body))
    bare = MATCHERS.sub(lambda m: m.group(1), text)
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges and subqueries: durations are not names
    groupings = [
        (match.start(), match.end(), set(re.findall(r"\w+", match.group(1)))) for match in GROUPING.finditer(bare)
    ]
    for start, end, _ in reversed(groupings):
        bare = bare[:start] + " " * (end - start) + bare[end:]

    def names_in(fragment: str) -> set[str]:
        found = set()
        for match in IDENTIFIER.finditer(fragment):
            word = match.group(1)
            follows = fragment[match.end() :].lstrip()[:1]
            if word not in PROMQL_WORDS and follows != "(":
                found.add(word)
        return found

    names = names_in(bare)
    groups = []
    for _, end, labels in groupings:
        rest = bare[end:].lstrip()
        if rest.startswith("("):
            groups.append((labels, names_in(rest[: _closing(rest) + 1])))
        else:
            groups.append((labels, names))
    return names, matched, groups


def problems(expr: str, registry: dict[str, set[str]]) -> list[str]:
    names, matched, groups = used(expr)
    out = [f"unknown metric {n}" for n in sorted(names) if n not in registry]
    if not names:
        out.append("no metric in expression")
    for name, labels in matched.items():
        out += [f"{name} has no label {label}" for label in sorted(labels - registry.get(name, set()))]
    for labels, grouped in groups:
        for name in sorted(grouped & set(registry)):
            out += [f"{name} has no label {label} (grouped by)" for label in sorted(labels - registry[name])]
    return out


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[dict[str, Any]]:
    document = json.loads((DEPLOY / "grafana" / "clarion.json").read_text(encoding="utf-8"))
    return [target for panel in document["panels"] for target in panel["targets"]]


def test_the_extractor_finds_names_labels_and_groupings() -> None:
    names, matched, groups = used(
        'histogram_quantile(0.99, sum by (le, channel) (rate(clarion_made_up_bucket{kind="ok", x!~"a|b"}[5m])))'
        " / on (channel) sum(clarion_other_total offset 1d) > 2"
    )
    assert names == {"clarion_made_up_bucket", "clarion_other_total"}
    assert matched == {"clarion_made_up_bucket": {"kind", "x"}}
    assert groups[0] == ({"le", "channel"}, {"clarion_made_up_bucket"})
    assert groups[1][0] == {"channel"}
    registry = exposed()
    assert problems("sum by (provider) (rate(clarion_deliveries_snet_total[5m]))", registry) == [
        "unknown metric clarion_deliveries_snet_total"
    ]
    assert problems('rate(clarion_deliveries_sent_total{lane="0"}[5m])', registry) == [
        "clarion_deliveries_sent_total has no label lane"
    ]
    assert problems("sum by (kind) (rate(clarion_deliveries_sent_total[5m]))", registry) == [
        "clarion_deliveries_sent_total has no label kind (grouped by)"
    ]
    assert problems("sum by (provider) (rate(clarion_deliveries_sent_total[5m]))", registry) == []


def test_the_registry_is_what_metrics_py_declares() -> None:
    registry = exposed()
    assert registry["clarion_provider_outcomes_total"] == {"provider", "kind"}
    assert registry["clarion_accepted_to_sent_seconds_bucket"] == {"channel", "le"}
    assert registry["clarion_queue_depth"] == {"lane"}
    assert "clarion_provider_outcomes" not in registry  # counters are exposed as _total


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_rules_use_existing_metrics_and_labels(rule: dict[str, Any]) -> None:
    assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"]
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert problems(rule["expr"], exposed()) == []


def test_alert_rules_cover_what_operators_need() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for name in (
        "clarion_provider_outcomes_total",
        "clarion_deliveries_retried_total",
        "clarion_queue_depth",
        "clarion_provider_breaker_state",
        "clarion_provider_rate_limited_total",
        "clarion_accepted_to_sent_seconds_bucket",
    ):
        assert name in exprs


def test_dashboard_uses_existing_metrics_and_the_datasource_variable() -> None:
    document = json.loads((DEPLOY / "grafana" / "clarion.json").read_text(encoding="utf-8"))
    assert 36 <= document["schemaVersion"] <= 41
    assert {p["type"] for p in document["panels"]} <= {"timeseries", "stat"}
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in document["panels"])
    assert [v["name"] for v in document["templating"]["list"]] == ["DS_PROMETHEUS"]
    registry = exposed()
    failures = {t["expr"]: problems(t["expr"], registry) for t in dashboard_targets()}
    assert {expr: found for expr, found in failures.items() if found} == {}
    exprs = " ".join(failures)
    for name in (
        "clarion_deliveries_sent_total",
        "clarion_deliveries_failed_total",
        "clarion_provider_rate_limited_total",
    ):
        assert name in exprs
