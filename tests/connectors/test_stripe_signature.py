"""Stripe webhook signatures: the connector accepts what Stripe signs and nothing else."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from syncline.connectors.base import ConnectionSettings
from syncline.connectors.stripe import StripeConnector
from syncline.errors import ConfigError, SignatureError

SECRET = "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
BODY = b'{"id":"evt_1","object":"event","type":"customer.created"}'
NOW = 1_719_792_000


def connector(**options: object) -> StripeConnector:
    return StripeConnector(ConnectionSettings(
        name="stripe", vendor="stripe", base_url="http://127.0.0.1:1",
        secrets={"api_key": SecretStr("sk_test_x"), "webhook_secret": SecretStr(SECRET)}, options=options,
    ))


def sign(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    # computed independently of the connector, straight from Stripe's documentation
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def check(header: str | None, *, body: bytes = BODY, now: float = NOW, **options: object) -> None:
    headers = {} if header is None else {"stripe-signature": header}
    connector(**options).verify_webhook(headers, body, now=now)


def test_valid_signature_is_accepted() -> None:
    check(f"t={NOW},v1={sign(BODY, NOW)}")


def test_header_name_is_case_insensitive() -> None:
    connector().verify_webhook({"Stripe-Signature": f"t={NOW},v1={sign(BODY, NOW)}"}, BODY, now=NOW)


def test_one_matching_v1_among_several_is_enough() -> None:
    old = sign(BODY, NOW, "whsec_rolled_out_secret")
    check(f"t={NOW},v1={old},v0=ignored,v1={sign(BODY, NOW)}")


def test_timestamp_within_tolerance_either_way_is_accepted() -> None:
    check(f"t={NOW - 299},v1={sign(BODY, NOW - 299)}")
    check(f"t={NOW + 299},v1={sign(BODY, NOW + 299)}")


def expect(code: str, header: str | None, **kwargs: object) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        check(header, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert SECRET not in caught.value.message
    return caught.value


def test_forged_body_is_rejected() -> None:
    error = expect("signature_mismatch", f"t={NOW},v1={sign(BODY, NOW)}", body=BODY + b" ")
    assert sign(BODY + b" ", NOW) not in error.message


def test_wrong_secret_is_rejected() -> None:
    expect("signature_mismatch", f"t={NOW},v1={sign(BODY, NOW, 'whsec_other')}")


def test_signature_over_another_timestamp_is_rejected() -> None:
    # replaying a valid v1 with a fresh t must not work: t is part of what is signed
    expect("signature_mismatch", f"t={NOW},v1={sign(BODY, NOW - 1000)}")


def test_stale_signature_is_rejected() -> None:
    error = expect("signature_stale", f"t={NOW - 301},v1={sign(BODY, NOW - 301)}")
    assert "301" in error.message


def test_tolerance_comes_from_options() -> None:
    check(f"t={NOW - 900},v1={sign(BODY, NOW - 900)}", tolerance_seconds=1000)
    expect("signature_stale", f"t={NOW - 20},v1={sign(BODY, NOW - 20)}", tolerance_seconds=10)


def test_missing_header_is_rejected() -> None:
    expect("signature_missing", None)
    expect("signature_missing", "")


@pytest.mark.parametrize("header", [
    f"v1={sign(BODY, NOW)}",                                   # no t
    f"t=,v1={sign(BODY, NOW)}",                                # empty t
    f"t=yesterday,v1={sign(BODY, NOW)}",                       # t not a number
    f"t={NOW},t={NOW},v1={sign(BODY, NOW)}",                   # two t
    f"t={NOW}",                                                # no v1
    f"t={NOW},v0={sign(BODY, NOW)}",                           # only an unknown scheme
    "garbage",                                                 # not key=value
])
def test_malformed_header_is_rejected(header: str) -> None:
    expect("signature_malformed", header)


def test_bad_tolerance_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        connector(tolerance_seconds="five minutes")


def test_missing_webhook_secret_is_a_config_error() -> None:
    bare = StripeConnector(ConnectionSettings(name="stripe", vendor="stripe", base_url="http://x"))
    with pytest.raises(ConfigError, match="webhook_secret"):
        bare.verify_webhook({"stripe-signature": f"t={NOW},v1=00"}, BODY, now=NOW)
