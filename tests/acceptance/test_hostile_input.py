"""Hostile and careless input through the HTTP API: what the JSON codec, SQLite or PostgreSQL cannot hold, and
what is not a time zone or a phone number, is refused with 422 naming the field, and nothing is stored.

Bodies are sent as raw bytes: a client's JSON encoder would refuse (or rewrite) most of what is tested here."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import put_template, put_user

JSON = {"content-type": "application/json"}
#: as deep as the API's JSON parser goes inside the test process (whose stack is deeper than a server's)
DEEP = 800
NDJSON = {"content-type": "application/x-ndjson"}


def nested(levels: int, leaf: str = "1") -> str:
    """``levels`` arrays inside each other around ``leaf``, as JSON text."""
    return "[" * levels + leaf + "]" * levels


async def send(api: httpx.AsyncClient, method: str, url: str, body: str, headers: Any = JSON) -> httpx.Response:
    return await api.request(method, url, content=body.encode(), headers=headers)


def refused(response: httpx.Response, field: str) -> str:
    """Assert a 422 whose first named field is ``field`` (or lies under it); return its message."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    details = error["details"]
    named = details[0]["field"] if isinstance(details, list) else details["field"]
    assert named == field or named.startswith(f"{field}."), (named, field)
    assert error["message"].startswith(named), error["message"]
    return str(error["message"])


# -- user profiles -------------------------------------------------------------------------------------------

BAD_ATTRIBUTES = [
    pytest.param('{"n": 18446744073709551616}', "attributes.n", "integer out of range", id="int-2^64"),
    pytest.param('{"n": -9223372036854775809}', "attributes.n", "integer out of range", id="int-below-int64"),
    pytest.param('{"n": 9223372036854775808}', "attributes.n", "integer out of range", id="int-2^63"),
    pytest.param('{"a": {"b": [1, 2, 99999999999999999999999]}}', "attributes.a.b.2", "out of range", id="deep-int"),
    pytest.param('{"n": ' + nested(300) + "}", "attributes.n", "nested deeper than 32", id="nested-300"),
    pytest.param('{"n": ' + nested(DEEP) + "}", "attributes.n", "nested deeper than 32", id="nested-deep"),
    pytest.param('{"n": ' + nested(31) + "}", "attributes.n", "nested deeper than 32", id="nested-33"),
    pytest.param('{"n": "\\ud800"}', "attributes.n", "lone surrogate", id="surrogate-value"),
    pytest.param('{"n": ["ok", "x\\udfff"]}', "attributes.n.1", "lone surrogate", id="surrogate-low"),
    pytest.param('{"\\ud800": 1}', "attributes.\\ud800", "lone surrogate", id="surrogate-key"),
    pytest.param('{"n": "a\\u0000b"}', "attributes.n", "NUL", id="nul-value"),
    pytest.param('{"a\\u0000": 1}', "attributes.a\\x00", "NUL", id="nul-key"),
    pytest.param('{"n": NaN}', "attributes.n", "NaN", id="nan"),
    pytest.param('{"n": Infinity}', "attributes.n", "Infinity", id="infinity"),
    pytest.param('{"n": -Infinity}', "attributes.n", "Infinity", id="minus-infinity"),
    pytest.param('{"n": 1e999}', "attributes.n", "Infinity", id="overflowing-float"),
]


@pytest.mark.parametrize(("attributes", "field", "reason"), BAD_ATTRIBUTES)
async def test_unstorable_attributes_are_422_and_nothing_is_stored(
    api: httpx.AsyncClient, attributes: str, field: str, reason: str
) -> None:
    response = await send(api, "PUT", "/v1/users/x", '{"attributes": ' + attributes + "}")
    assert reason in refused(response, field)
    assert (await api.get("/v1/users/x")).status_code == 404


async def test_json_deeper_than_the_parser_goes_is_malformed_json(api: httpx.AsyncClient) -> None:
    response = await send(api, "PUT", "/v1/users/x", '{"attributes": {"n": ' + nested(100_000) + "}}")
    assert "malformed JSON" in refused(response, "body")
    assert (await api.get("/v1/users/x")).status_code == 404


async def test_an_unstorable_replacement_leaves_the_profile_as_it_was(api: httpx.AsyncClient) -> None:
    before = await put_user(api, "x", attributes={"n": 1})
    refused(await send(api, "PUT", "/v1/users/x", '{"attributes": {"n": NaN}}'), "attributes.n")
    assert (await api.get("/v1/users/x")).json() == before


BAD_ZONES = ["Asia", "America", "", "a" * 300, "Asia/" + "x" * 250, "../etc", "Asia/../Europe/Paris", "UTC\\u0000"]
BAD_ZONES += ["/etc/localtime", "localtime", "Asia/Shanghai/", " UTC", "zone.tab", "Asia\\\\Shanghai"]


@pytest.mark.parametrize("zone", BAD_ZONES)
async def test_a_timezone_that_is_not_an_iana_zone_is_422(api: httpx.AsyncClient, zone: str) -> None:
    response = await send(api, "PUT", "/v1/users/x", '{"timezone": "' + zone + '"}')
    refused(response, "timezone")
    assert (await api.get("/v1/users/x")).status_code == 404


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("+1-800-FLOWERS", "letters"),
        ("+1 800 356 9377 ext 5", "letters"),
        ("+18003569377\\u0000", "NUL"),
        ("+1800\\u00003569377", "NUL"),
        ("+1 800 356 9377\\u0007", "unprintable character"),
        ("+1\\t800 356 9377", "unprintable character"),
        ("+1 800 356 9377#", "'#'"),
    ],
)
async def test_a_phone_with_letters_or_control_characters_is_422(
    api: httpx.AsyncClient, phone: str, reason: str
) -> None:
    response = await send(api, "PUT", "/v1/users/p", '{"addresses": {"sms": "' + phone + '"}}')
    assert reason in refused(response, "addresses.sms")
    assert (await api.get("/v1/users/p")).status_code == 404


@pytest.mark.parametrize("phone", ["+1 800 356 9377", "+1-800-356-9377", "+1 (800) 356.9377", "(+1) 800 356 9377"])
async def test_a_phone_with_the_usual_separators_is_stored_in_e164(api: httpx.AsyncClient, phone: str) -> None:
    user = await put_user(api, "p", addresses={"sms": phone})
    assert user["addresses"]["sms"] == "+18003569377"


async def test_text_fields_of_a_profile_refuse_nul_and_lone_surrogates(api: httpx.AsyncClient) -> None:
    refused(await send(api, "PUT", "/v1/users/x", '{"tags": ["ok", "a\\u0000"]}'), "tags.1")
    refused(await send(api, "PUT", "/v1/users/x", '{"tags": ["\\udc00"]}'), "tags.0")
    refused(await send(api, "PUT", "/v1/users/x", '{"addresses": {"push": ["t\\u0000"]}}'), "addresses.push.0")
    assert (await api.get("/v1/users/x")).status_code == 404


async def test_the_largest_storable_values_are_accepted_and_read_back_equal(api: httpx.AsyncClient) -> None:
    # The body is one level and attributes a second: 30 arrays inside them reach the limit of 32.
    attributes = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "deep": orjson.loads(nested(30)),
        "text": "中文 ✓ \U0001f600",
        "small": 1e308,
        "key\u00e9": [0.5, -0.0, True, None],
    }
    response = await api.put("/v1/users/big", content=orjson.dumps({"attributes": attributes}), headers=JSON)
    assert response.status_code == 201, response.text
    assert response.json()["attributes"] == attributes
    assert (await api.get("/v1/users/big")).json()["attributes"] == attributes


# -- sends and events (the fast lane) ------------------------------------------------------------------------


@pytest.fixture
async def inbox_template(api: httpx.AsyncClient) -> None:
    await put_template(api, "hello", channels={"inbox": {"title": "Hi", "body": "Hello"}})
    await put_user(api, "u1")


async def _sent_to(api: httpx.AsyncClient, user_id: str) -> list[Any]:
    response = await api.get(f"/v1/users/{user_id}/messages")
    assert response.status_code == 200, response.text
    body = response.json()
    return list(body.get("messages", body.get("items", [])))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"n": 18446744073709551616}', "data.n"),
        ('{"a": {"b": -18446744073709551617}}', "data.a.b"),
        ('{"n": NaN}', "data.n"),
        ('{"n": [Infinity]}', "data.n.0"),
        ('{"n": "a\\u0000"}', "data.n"),
        ('{"n": ' + nested(100) + "}", "data.n"),
    ],
)
async def test_unstorable_send_data_is_422_and_nothing_is_sent(
    api: httpx.AsyncClient, inbox_template: None, data: str, field: str
) -> None:
    response = await send(api, "POST", "/v1/messages", '{"template": "hello", "to": "u1", "data": ' + data + "}")
    refused(response, field)
    assert await _sent_to(api, "u1") == []
    accepted = await send(api, "POST", "/v1/messages", '{"template": "hello", "to": "u1", "data": {"n": 1}}')
    assert accepted.status_code == 202, accepted.text  # the same send with storable data goes out
    assert len(await _sent_to(api, "u1")) == 1


async def test_a_nul_in_an_idempotency_key_is_422(api: httpx.AsyncClient, inbox_template: None) -> None:
    body = '{"template": "hello", "to": "u1", "idempotency_key": "k\\u0000"}'
    refused(await send(api, "POST", "/v1/messages", body), "idempotency_key")
    assert await _sent_to(api, "u1") == []


@pytest.mark.parametrize(("data", "field"), [('{"n": NaN}', "data.n"), ('{"n": 18446744073709551616}', "data.n")])
async def test_unstorable_event_data_is_422(api: httpx.AsyncClient, data: str, field: str) -> None:
    response = await send(api, "POST", "/v1/events", '{"name": "paid", "user_id": "u1", "data": ' + data + "}")
    refused(response, field)


# -- templates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (nested(300), "channels.webhook.body"),
        (nested(DEEP), "channels.webhook.body"),
        ('{"amount": 18446744073709551616}', "channels.webhook.body.amount"),
        ('{"amount": NaN}', "channels.webhook.body.amount"),
        ('{"\\ud800": "x"}', "channels.webhook.body.\\ud800"),
    ],
)
async def test_an_unstorable_webhook_body_is_422(api: httpx.AsyncClient, body: str, field: str) -> None:
    template = '{"name": "w", "category": "transactional", "channels": {"webhook": {"body": ' + body + "}}}"
    refused(await send(api, "PUT", "/v1/templates/w", template), field)
    assert (await api.get("/v1/templates/w")).status_code == 404


async def test_template_text_with_a_lone_surrogate_is_422(api: httpx.AsyncClient) -> None:
    template = '{"name": "s", "category": "transactional", "channels": {"sms": {"text": "code \\ud83d"}}}'
    refused(await send(api, "PUT", "/v1/templates/s", template), "channels.sms.text")
    assert (await api.get("/v1/templates/s")).status_code == 404


async def test_a_webhook_body_at_the_limit_is_stored_and_read_back(api: httpx.AsyncClient) -> None:
    # body, channels, webhook and body are four levels: 28 arrays more reach 32
    body = {"amount": 2**63 - 1, "deep": orjson.loads(nested(27))}
    await put_template(api, "w", channels={"webhook": {"body": body}})
    assert (await api.get("/v1/templates/w")).json()["channels"]["webhook"]["body"] == body


async def test_an_unstorable_provider_config_is_422(api: httpx.AsyncClient) -> None:
    body = '{"channel": "sms", "kind": "file", "config": {"n": 18446744073709551616}}'
    refused(await send(api, "PUT", "/v1/providers/p", body), "config.n")
    assert (await api.get("/v1/providers/p")).status_code == 404


# -- bulk: users:batch and track -----------------------------------------------------------------------------


def _failed_field(answer: dict[str, Any], index: int) -> str:
    failed = {f["index"]: f for f in answer["failed"]}
    return str(failed[index]["details"][0]["field"])


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        (nested(300), "attributes.n"),
        (nested(990), "attributes.n"),
        ("18446744073709551615", "attributes.n"),
        ('{"\\u0000": 1}', "attributes.n.\\x00"),
    ],
)
async def test_users_batch_refuses_unstorable_items_by_index_and_field(
    api: httpx.AsyncClient, attributes: str, field: str
) -> None:
    body = '[{"user_id": "ok", "attributes": {"n": 1}}, {"user_id": "bad", "attributes": {"n": ' + attributes + "}}]"
    response = await send(api, "POST", "/v1/users:batch", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["created"] == 1
    assert _failed_field(answer, 1).startswith(field)
    assert (await api.get("/v1/users/bad")).status_code == 404
    assert (await api.get("/v1/users/ok")).json()["attributes"] == {"n": 1}


async def test_users_batch_as_json_lines_refuses_unstorable_lines(api: httpx.AsyncClient) -> None:
    lines = [
        '{"user_id": "a", "attributes": {"n": ' + nested(500) + "}}",
        '{"user_id": "b", "attributes": {"n": 9223372036854775808}}',
        '{"user_id": "c", "attributes": {"n": "\\ud800"}}',
        '{"user_id": "d", "timezone": "Asia"}',
        '{"user_id": "e", "addresses": {"sms": "+1-800-FLOWERS"}}',
        '{"user_id": "f", "attributes": {"n": 9223372036854775807}}',
    ]
    response = await send(api, "POST", "/v1/users:batch", "\n".join(lines), headers=NDJSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["created"] == 1
    assert [f["line"] for f in answer["failed"]] == [1, 2, 3, 4, 5]
    assert _failed_field(answer, 0).startswith("attributes.n")
    assert _failed_field(answer, 1) == "attributes.n"
    assert answer["failed"][2]["error"].startswith("malformed JSON")  # the JSON parser refuses the surrogate
    assert _failed_field(answer, 3) == "timezone"
    assert _failed_field(answer, 4) == "addresses.sms"
    for user_id in "abcde":
        assert (await api.get(f"/v1/users/{user_id}")).status_code == 404
    assert (await api.get("/v1/users/f")).json()["attributes"] == {"n": 2**63 - 1}


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        (nested(300), "properties.n"),
        (nested(DEEP), "properties.n"),
        ("9223372036854775808", "properties.n"),
        ('"a\\u0000"', "properties.n"),
    ],
)
async def test_track_refuses_unstorable_properties(api: httpx.AsyncClient, properties: str, field: str) -> None:
    event = '{"user_id": "u1", "event": "viewed", "properties": {"n": ' + properties + "}}"
    response = await send(api, "POST", "/v1/track", '{"events": [' + event + "]}")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["recorded"] == 0
    assert _failed_field(answer, 0).startswith(field)


async def test_track_refuses_nan_in_a_json_body_and_in_json_lines(api: httpx.AsyncClient) -> None:
    event = '{"user_id": "u1", "event": "viewed", "properties": {"n": NaN}}'
    refused(await send(api, "POST", "/v1/track", '{"events": [' + event + "]}"), "body")
    good = '{"user_id": "u1", "event": "viewed", "properties": {"n": 1.5}}'
    response = await send(api, "POST", "/v1/track", event + "\n" + good, headers=NDJSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["recorded"] == 1
    assert [f["line"] for f in answer["failed"]] == [1]


# -- campaigns and policy settings ---------------------------------------------------------------------------

CAMPAIGN = '{"template": "promo", "audience": {"segment": "s"}, '


@pytest.mark.parametrize(
    ("rest", "field"),
    [
        ('"schedule": {"kind": "cron", "cron": "0 10 * * 1", "timezone": "Asia"}}', "schedule.timezone"),
        ('"schedule": {"kind": "cron", "cron": "0 10 * * 1", "timezone": "' + "x" * 300 + '"}}', "schedule.timezone"),
        ('"schedule": {"kind": "cron", "cron": "0 10 * * 1", "timezone": "../etc"}}', "schedule.timezone"),
        ('"schedule": {"kind": "cron", "cron": "0 10 * * 1", "timezone": ""}}', "schedule.timezone"),
        ('"data": {"n": 18446744073709551616}}', "data.n"),
        ('"data": {"n": NaN}}', "data.n"),
        ('"data": {"n": ' + nested(300) + "}}", "data.n"),
        ('"name": "spring \\ud800"}', "name"),
    ],
)
async def test_a_campaign_with_a_bad_zone_or_unstorable_data_is_422(
    api: httpx.AsyncClient, rest: str, field: str
) -> None:
    refused(await send(api, "PUT", "/v1/campaigns/c", CAMPAIGN + rest), field)
    assert (await api.get("/v1/campaigns/c")).status_code == 404


@pytest.mark.parametrize("zone", ["Asia", "", "x" * 300, "../etc", "UTC\\u0000"])
async def test_policy_settings_refuse_a_default_zone_that_is_not_one(api: httpx.AsyncClient, zone: str) -> None:
    before = (await api.get("/v1/policies/settings")).json()
    response = await send(api, "PUT", "/v1/policies/settings", '{"default_timezone": "' + zone + '"}')
    refused(response, "default_timezone")
    assert (await api.get("/v1/policies/settings")).json() == before


# -- segments ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['"a\\u0000"', '"a\\ud800"', '["ok", "\\udc00"]'])
async def test_a_segment_value_that_cannot_be_stored_is_422(api: httpx.AsyncClient, value: str) -> None:
    op = "in" if value.startswith("[") else "="
    body = '{"conditions": {"attr": "city", "op": "' + op + '", "value": ' + value + "}}"
    response = await send(api, "PUT", "/v1/segments/s", body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["path"].startswith("conditions.value")
    assert (await api.get("/v1/segments/s")).status_code == 404
