"""Aliyun's RPC signature (HMAC-SHA1, SignatureVersion 1.0), pinned to the example in Aliyun's documentation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion.channels import aliyun_rpc
from clarion.domain.errors import PermanentSendError, TransientSendError

# Aliyun's published example ("Signature method", ECS DescribeRegions; AccessKeySecret "testsecret")
DOC_PARAMS = {
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
}
DOC_STRING_TO_SIGN = (
    "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1"
    "%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0"
    "%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
)
DOC_SIGNATURE = "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_the_string_to_sign_and_signature_match_aliyuns_published_example() -> None:
    assert aliyun_rpc.string_to_sign("GET", DOC_PARAMS) == DOC_STRING_TO_SIGN
    assert aliyun_rpc.sign("testsecret", "GET", DOC_PARAMS) == DOC_SIGNATURE


def test_the_signature_parameter_itself_is_not_signed() -> None:
    with_signature = {**DOC_PARAMS, "Signature": "anything"}
    assert aliyun_rpc.sign("testsecret", "GET", with_signature) == DOC_SIGNATURE


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("a b", "a%20b"),
        ("a*b", "a%2Ab"),
        ("a~b-_.", "a~b-_."),
        ("a+b", "a%2Bb"),
        ("/", "%2F"),
        ('{"code":"1"}', "%7B%22code%22%3A%221%22%7D"),
        ("验证码", "%E9%AA%8C%E8%AF%81%E7%A0%81"),
    ],
)
def test_values_are_percent_encoded_as_aliyun_documents(raw: str, encoded: str) -> None:
    assert aliyun_rpc.percent_encode(raw) == encoded


def test_signed_adds_the_common_parameters_and_a_signature_over_them() -> None:
    at = datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC)
    form = aliyun_rpc.signed(
        "SingleCallByTts",
        {"CalledNumber": "13800138000"},
        access_key_id="id",
        access_key_secret="secret",
        version="2017-05-25",
        now=at,
        nonce="n-1",
    )
    assert form["Timestamp"] == "2026-12-02T08:00:00Z"
    assert (form["Action"], form["Version"], form["SignatureNonce"]) == ("SingleCallByTts", "2017-05-25", "n-1")
    assert (form["SignatureMethod"], form["SignatureVersion"], form["Format"]) == ("HMAC-SHA1", "1.0", "JSON")
    assert form["Signature"] == aliyun_rpc.sign("secret", "POST", form)
    assert form["Signature"] != aliyun_rpc.sign("other", "POST", form)


@pytest.mark.parametrize(
    ("code", "kind", "misconfigured"),
    [
        ("SignatureDoesNotMatch", PermanentSendError, True),
        ("InvalidAccessKeyId.NotFound", PermanentSendError, True),
        ("Throttling", TransientSendError, False),
        ("SignatureNonceUsed", TransientSendError, False),
        ("isv.SOMETHING_NEW", PermanentSendError, False),
    ],
)
def test_gateway_codes_classify_and_keep_the_vendor_code_and_message(
    code: str, kind: type, misconfigured: bool
) -> None:
    error = aliyun_rpc.error_for({"Code": code, "Message": "the vendor says", "RequestId": "R-1"}, {})
    assert type(error) is kind
    assert error.code == code and "the vendor says" in error.message and "R-1" in error.message
    assert getattr(error, "misconfigured", False) is misconfigured


def test_a_kinds_own_table_wins_over_the_common_codes() -> None:
    error = aliyun_rpc.error_for({"Code": "Throttling", "Message": "m"}, {"Throttling": "permanent"})
    assert isinstance(error, PermanentSendError)
