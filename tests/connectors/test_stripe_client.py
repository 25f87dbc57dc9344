"""Stripe client pieces: form encoding, auth headers and the error translation table."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from syncline.connectors.base import ConnectionSettings
from syncline.connectors.stripe import StripeConnector
from syncline.connectors.stripe.client import API_VERSION, form_encode
from syncline.connectors.stripe.errors import error_from_response, raise_for_stripe, translate_transport_errors
from syncline.connectors.stripe.sandbox import form_decode
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    ConfigError,
    DataQualityError,
    DependencyMissingError,
    RateLimitedError,
    TransientError,
)


def test_form_encode_nests_like_stripe() -> None:
    pairs = form_encode({
        "customer": "cus_1", "amount": 1999, "period": {"start": 1, "end": 2},
        "lines": [{"type": "custom_line_item", "unit_amount": 500}], "metadata": {"order": "A-1"},
        "auto_advance": False, "description": None, "percentage": Decimal("7.25"),
    })
    assert pairs == [
        ("customer", "cus_1"), ("amount", "1999"), ("period[start]", "1"), ("period[end]", "2"),
        ("lines[0][type]", "custom_line_item"), ("lines[0][unit_amount]", "500"), ("metadata[order]", "A-1"),
        ("auto_advance", "false"), ("description", ""), ("percentage", "7.25"),
    ]


def test_form_encode_refuses_floats() -> None:
    with pytest.raises(TypeError, match="amount"):
        form_encode({"amount": 19.99})


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=10)
_params = st.recursive(
    _values,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=3), st.dictionaries(_keys, inner, min_size=1,
                                                                                     max_size=3)),
    max_leaves=8,
)


@given(st.dictionaries(_keys, _params, min_size=1, max_size=4))
def test_sandbox_decodes_what_the_client_encodes(params: dict[str, Any]) -> None:
    assert form_decode(urlencode(form_encode(params))) == params


def connector(**secrets: str) -> StripeConnector:
    return StripeConnector(ConnectionSettings(
        name="stripe", vendor="stripe", base_url="https://api.stripe.test",
        secrets={key: SecretStr(value) for key, value in secrets.items()},
    ))


def test_http_client_sends_bearer_key_and_pinned_version() -> None:
    stripe = connector(api_key="sk_test_123")
    client = stripe.http_client(stripe.default_limits)
    try:
        assert client.headers["authorization"] == "Bearer sk_test_123"
        assert client.headers["stripe-version"] == API_VERSION == "2024-06-20"
        assert str(client.base_url) == "https://api.stripe.test"
    finally:
        asyncio.run(client.aclose())
    assert stripe.default_limits.rate_per_second == 25.0 and stripe.default_limits.concurrency == 4


def test_http_client_without_api_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        connector().http_client(connector().default_limits)


def response(status: int, error: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "https://api.stripe.test/v1/invoices")
    return httpx.Response(status, json={"error": error or {}}, headers=headers, request=request)


@pytest.mark.parametrize(("status", "error", "headers", "expected", "code"), [
    (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}, {"Retry-After": "7"},
     RateLimitedError, "rate_limited"),
    (401, {"type": "invalid_request_error", "message": "Invalid API Key provided"}, {}, AuthConfigError,
     "auth_config"),
    (403, {"type": "invalid_request_error", "message": "restricted key"}, {}, AuthConfigError, "auth_config"),
    (500, {"type": "api_error", "message": "boom"}, {}, TransientError, "transient"),
    (503, {}, {}, TransientError, "transient"),
    (409, {"type": "invalid_request_error", "code": "lock_timeout", "message": "locked"},
     {"Stripe-Should-Retry": "true"}, TransientError, "transient"),
    (400, {"type": "idempotency_error", "message": "Keys for idempotent requests ..."}, {}, DataQualityError,
     "idempotency_key_reused"),
    (409, {"type": "idempotency_error", "message": "another request in progress"}, {}, TransientError,
     "idempotency_in_progress"),
    (402, {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}, {},
     BusinessRuleError, "card_declined"),
    (400, {"type": "invalid_request_error", "code": "resource_missing", "param": "customer",
           "message": "No such customer: 'cus_1'"}, {}, DependencyMissingError, "dependency_missing"),
    (404, {"type": "invalid_request_error", "code": "resource_missing", "param": "id",
           "message": "No such invoice: 'in_1'"}, {}, DataQualityError, "not_found"),
    (409, {"type": "invalid_request_error", "code": "lock_timeout", "message": "locked"}, {}, TransientError,
     "lock_timeout"),
    (402, {"type": "invalid_request_error", "message": "payment required"}, {}, BusinessRuleError, "card_error"),
    (400, {"type": "invalid_request_error", "code": "parameter_missing", "param": "amount",
           "message": "Missing required param: amount."}, {}, DataQualityError, "data_quality"),
])
def test_error_translation(status: int, error: dict[str, Any], headers: dict[str, str], expected: type,
                           code: str) -> None:
    translated = error_from_response(response(status, error, **headers))
    assert type(translated) is expected
    assert translated.code == code
    assert translated.details.get("status", status) == status
    if error.get("message"):
        assert error["message"] in translated.message


def test_rate_limit_honours_retry_after() -> None:
    translated = error_from_response(response(429, {"type": "invalid_request_error"}, **{"Retry-After": "7"}))
    assert isinstance(translated, RateLimitedError) and translated.retry_after == 7.0
    assert error_from_response(response(429, {})).retry_after is None  # type: ignore[attr-defined]
    # Stripe names why it limited without saying how long: wait the default rather than not at all
    reasoned = error_from_response(response(429, {}, **{"Stripe-Rate-Limited-Reason": "global-rate"}))
    assert isinstance(reasoned, RateLimitedError) and reasoned.retry_after == 1.0


def test_bad_parameter_names_the_field() -> None:
    translated = error_from_response(response(400, {"type": "invalid_request_error", "param": "items[0][price]",
                                                    "message": "Invalid string"}))
    assert isinstance(translated, DataQualityError)
    assert translated.details["field"] == "items[0][price]"


def test_raise_for_stripe_passes_success_and_raises_failures() -> None:
    raise_for_stripe(response(200))
    with pytest.raises(DataQualityError):
        raise_for_stripe(response(400, {"type": "invalid_request_error", "message": "bad"}))


def test_non_json_error_body_still_translates() -> None:
    bare = httpx.Response(502, text="<html>bad gateway</html>", request=httpx.Request("GET", "https://x"))
    assert isinstance(error_from_response(bare), TransientError)


def test_transport_errors_become_transient() -> None:
    with pytest.raises(TransientError) as caught, translate_transport_errors("List Events"):
        raise httpx.ConnectError("refused")
    assert caught.value.code == "network"
    with pytest.raises(TransientError) as caught, translate_transport_errors("List Events"):
        raise httpx.ReadTimeout("slow")
    assert caught.value.code == "timeout"
