"""Money as integer minor units plus an ISO 4217 code; never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

#: ISO 4217 currencies whose minor unit is not 2 digits. Everything else has 2.
_EXPONENTS: dict[str, int] = {
    # zero-decimal (Stripe's list, plus ISK which ISO gives 0)
    **dict.fromkeys(
        ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX",
         "VND", "VUV", "XAF", "XOF", "XPF"],
        0,
    ),
    # three-decimal
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    # four-decimal units of account
    **dict.fromkeys(["CLF", "UYW"], 4),
}

CurrencyCode = Annotated[
    str,
    StringConstraints(to_upper=True, pattern=r"^[A-Za-z]{3}$"),
    Field(description="ISO 4217 alphabetic code"),
]


def exponent(currency: str) -> int:
    """Return the number of minor-unit digits of an ISO 4217 currency (JPY 0, USD 2, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


class Money(BaseModel):
    """An amount in integer minor units of one currency.

    ``Money(amount=1999, currency="USD")`` is 19.99 USD; ``Money(amount=500, currency="JPY")``
    is 500 JPY; ``Money(amount=1500, currency="KWD")`` is 1.500 KWD.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Strict: 19.99, Decimal("19.99"), "1999" and True are refused, not coerced.
    amount: StrictInt = Field(description="integer amount in the currency's minor unit")
    currency: CurrencyCode

    @classmethod
    def zero(cls, currency: str) -> Self:
        """Return zero in ``currency``."""
        return cls(amount=0, currency=currency)

    @classmethod
    def from_decimal(cls, value: Decimal | str, currency: str) -> Self:
        """Build from a major-unit decimal ("19.99"); refuses values finer than the minor unit."""
        quantum = Decimal(1).scaleb(-exponent(currency))
        as_decimal = Decimal(value)
        if as_decimal != as_decimal.quantize(quantum):
            raise ValueError(f"{value} has more precision than {currency.upper()} allows")
        return cls(amount=int(as_decimal.scaleb(exponent(currency))), currency=currency)

    def to_decimal(self) -> Decimal:
        """Return the major-unit value as an exact Decimal (1999 USD → Decimal('19.99'))."""
        return Decimal(self.amount).scaleb(-exponent(self.currency)).quantize(
            Decimal(1).scaleb(-exponent(self.currency))
        )

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __neg__(self) -> Money:
        return Money(amount=-self.amount, currency=self.currency)

    def __str__(self) -> str:
        return f"{self.to_decimal()} {self.currency}"
