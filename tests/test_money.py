from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from syncline.canonical import Money, exponent


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("VND", 0), ("BHD", 3), ("KWD", 3), ("TND", 3)],
)
def test_exponent_follows_iso_4217(currency: str, digits: int) -> None:
    assert exponent(currency) == digits
    assert exponent(currency.lower()) == digits


def test_to_decimal_uses_the_currency_exponent() -> None:
    assert Money(amount=1999, currency="USD").to_decimal() == Decimal("19.99")
    assert str(Money(amount=500, currency="jpy")) == "500 JPY"
    assert str(Money(amount=1500, currency="KWD")) == "1.500 KWD"


def test_from_decimal_refuses_precision_the_currency_lacks() -> None:
    assert Money.from_decimal("19.99", "USD").amount == 1999
    assert Money.from_decimal("500", "JPY").amount == 500
    assert Money.from_decimal("1.234", "KWD").amount == 1234
    with pytest.raises(ValueError, match="more precision"):
        Money.from_decimal("10.5", "JPY")
    with pytest.raises(ValueError, match="more precision"):
        Money.from_decimal("0.001", "USD")


def test_floats_are_refused() -> None:
    with pytest.raises(ValidationError, match="valid integer"):
        Money(amount=19.99, currency="USD")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Money(amount=1, currency="US")


def test_arithmetic_refuses_mixed_currencies() -> None:
    assert (Money(amount=100, currency="USD") + Money(amount=5, currency="USD")).amount == 105
    with pytest.raises(ValueError, match="cannot combine"):
        Money(amount=100, currency="USD") + Money(amount=5, currency="EUR")


@given(st.integers(min_value=-10**15, max_value=10**15), st.sampled_from(["USD", "JPY", "KWD", "CLF"]))
def test_decimal_round_trip_is_exact(amount: int, currency: str) -> None:
    money = Money(amount=amount, currency=currency)
    assert Money.from_decimal(money.to_decimal(), currency) == money
