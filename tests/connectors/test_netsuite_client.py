"""NetSuite wire pieces without a server: OAuth signing, exact JSON, error translation."""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal
from typing import Any

import httpx
import pytest

from syncline.connectors.netsuite.client import (
    TokenAuth,
    base_string_uri,
    dumps,
    loads,
    parse_authorization,
    realm_for,
    signature_base_string,
)
from syncline.connectors.netsuite.errors import error_from_response, transport_errors
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    DataQualityError,
    DependencyMissingError,
    RateLimitedError,
    TransientError,
)


# -- OAuth 1.0a -------------------------------------------------------------------------------
def test_base_string_matches_rfc5849_example() -> None:
    """RFC 5849 section 3.4.1.1: the worked example, body parameters passed as extras."""
    url = httpx.URL("http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b")
    oauth = {
        "oauth_consumer_key": "9djdj82h48djs9d2",
        "oauth_token": "kkk9d7dh3k39sjv7",
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": "137131201",
        "oauth_nonce": "7d8f3e4a",
    }
    expected = (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D"
        "%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a"
        "%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
    )
    assert signature_base_string("POST", url, oauth, [("c2", ""), ("a3", "2 q")]) == expected


def test_base_string_uri_normalises_scheme_host_and_default_port() -> None:
    """RFC 5849 section 3.4.1.2 examples."""
    assert base_string_uri(httpx.URL("HTTP://EXAMPLE.COM:80/r%20v/X?id=123")) == "http://example.com/r%20v/X"
    assert base_string_uri(httpx.URL("https://www.example.net:8080/?q=1")) == "https://www.example.net:8080/"


def test_realm_is_the_account_id_in_upper_case_with_underscores() -> None:
    assert realm_for("123456-sb1") == "123456_SB1"
    assert realm_for("TSTDRV1") == "TSTDRV1"


def test_token_auth_header_known_answer() -> None:
    """Fixed nonce and timestamp give one header, signed with HMAC-SHA256 over both secrets."""
    auth = TokenAuth("123456-sb1", "ck1", "cs1", "tk1", "ts1", nonce=lambda: "abc123", clock=lambda: 1718000000.7)
    url = httpx.URL("https://123456-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/customer/eid:account_1")
    header = auth.authorization("put", url)

    base = (
        "PUT&https%3A%2F%2F123456-sb1.suitetalk.api.netsuite.com%2Fservices%2Frest%2Frecord%2Fv1%2Fcustomer"
        "%2Feid%3Aaccount_1&oauth_consumer_key%3Dck1%26oauth_nonce%3Dabc123%26oauth_signature_method"
        "%3DHMAC-SHA256%26oauth_timestamp%3D1718000000%26oauth_token%3Dtk1%26oauth_version%3D1.0"
    )
    signature = base64.b64encode(hmac.new(b"cs1&ts1", base.encode(), hashlib.sha256).digest()).decode()
    # Computed independently: printf %s "$base" | openssl dgst -sha256 -hmac "cs1&ts1" -binary | base64
    assert signature == "18+JytWdTbeP0oNz0xaM7nH7SX0g1JY9QFWHOF9ljZo="
    quoted = signature.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    assert header == (
        'OAuth realm="123456_SB1", oauth_consumer_key="ck1", oauth_token="tk1", '
        'oauth_signature_method="HMAC-SHA256", oauth_timestamp="1718000000", oauth_nonce="abc123", '
        f'oauth_version="1.0", oauth_signature="{quoted}"'
    )
    parsed = parse_authorization(header)
    assert parsed is not None and parsed["oauth_signature"] == signature and parsed["realm"] == "123456_SB1"


def test_token_auth_signs_every_request_afresh_and_hides_secrets() -> None:
    nonces = iter(["n1", "n2"])
    auth = TokenAuth("TSTDRV1", "ck", "very-secret-consumer", "tk", "very-secret-token", nonce=lambda: next(nonces))
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        client.get("https://x.test/a")
        client.get("https://x.test/a")
    assert 'oauth_nonce="n1"' in seen[0] and 'oauth_nonce="n2"' in seen[1]
    assert all("very-secret" not in header for header in seen)
    assert "very-secret" not in repr(auth)


# -- exact JSON -------------------------------------------------------------------------------
def test_dumps_writes_decimals_as_exact_numbers() -> None:
    body = {"amount": Decimal("1.500"), "jpy": Decimal("500"), "usd": Decimal("19.90"), "n": 2, "ok": True,
            "none": None, "text": 'quote " and é', "items": [{"x": Decimal("-0.01")}]}
    raw = dumps(body)
    assert raw == (b'{"amount":1.500,"jpy":500,"usd":19.90,"n":2,"ok":true,"none":null,'
                   b'"text":"quote \\" and \\u00e9","items":[{"x":-0.01}]}')
    assert loads(raw)["amount"] == Decimal("1.500")
    assert str(loads(raw)["amount"]) == "1.500"


def test_dumps_refuses_floats() -> None:
    with pytest.raises(TypeError):
        dumps({"amount": 19.99})


# -- error translation ------------------------------------------------------------------------
def ns_error(status: int, code: str, detail: str, path: str | None = None, **headers: str) -> httpx.Response:
    item: dict[str, Any] = {"detail": detail, "o:errorCode": code}
    if path:
        item["o:errorPath"] = path
    return httpx.Response(status, json={"title": "x", "status": status, "o:errorDetails": [item]}, headers=headers)


INVALID_REF = "Error while accessing a resource. You have entered an Invalid Field Value 7 for the following field: "


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(429, headers={"Retry-After": "3"}), RateLimitedError),
        (ns_error(400, "SSS_REQUEST_LIMIT_EXCEEDED", "limit"), RateLimitedError),
        (ns_error(403, "CONCURRENCY_LIMIT_EXCEEDED", "limit"), RateLimitedError),
        (ns_error(401, "INVALID_LOGIN", "Invalid login attempt."), AuthConfigError),
        (ns_error(403, "INSUFFICIENT_PERMISSION", "no role"), AuthConfigError),
        (ns_error(500, "UNEXPECTED_ERROR", "boom"), TransientError),
        (httpx.Response(503, text="<html>maintenance</html>"), TransientError),
        (ns_error(400, "INVALID_CONTENT", INVALID_REF + "entity", "entity"), DependencyMissingError),
        (ns_error(400, "USER_ERROR", INVALID_REF + "customer"), DependencyMissingError),
        (ns_error(400, "INVALID_CONTENT", INVALID_REF + "doc", "apply.items[0].doc"), DependencyMissingError),
        (ns_error(400, "INVALID_CONTENT", INVALID_REF + "createdFrom", "createdFrom"), DependencyMissingError),
        (ns_error(400, "INVALID_CONTENT", INVALID_REF + "currency", "currency"), DataQualityError),
        (ns_error(400, "PERIOD_CLOSED", "The accounting period is closed.", "tranDate"), BusinessRuleError),
        (ns_error(400, "USER_ERROR", "The accounting period is closed."), BusinessRuleError),
        (ns_error(400, "USER_ERROR", "Please enter value(s) for: entity", "entity"), DataQualityError),
        (ns_error(404, "NONEXISTENT_ID", "The record instance does not exist."), DataQualityError),
    ],
)
def test_error_from_response(response: httpx.Response, expected: type[Exception]) -> None:
    error = error_from_response(response)
    assert type(error) is expected


def test_error_details_carry_vendor_code_path_and_retry_after() -> None:
    error = error_from_response(ns_error(400, "SSS_REQUEST_LIMIT_EXCEEDED", "too many", **{"Retry-After": "3"}))
    assert isinstance(error, RateLimitedError) and error.retry_after == 3.0
    error = error_from_response(ns_error(400, "USER_ERROR", "bad value", "item.items[0].amount"))
    assert isinstance(error, DataQualityError)
    assert error.details["vendor_code"] == "USER_ERROR"
    assert error.details["error_path"] == "item.items[0].amount"
    assert "bad value" in error.message


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("timed out"), "timeout"),
        (httpx.ConnectTimeout("timed out"), "timeout"),
        (httpx.ConnectError("refused"), "transient"),
        (httpx.RemoteProtocolError("peer closed"), "transient"),
    ],
)
def test_transport_errors_become_transient(exc: Exception, code: str) -> None:
    with pytest.raises(TransientError) as caught, transport_errors("upsert_invoice x"):
        raise exc
    assert caught.value.code == code
    assert not isinstance(caught.value, httpx.HTTPError)
