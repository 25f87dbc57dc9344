"""Exchange rates and conversion of integer minor units between currencies."""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from syncline.canonical.money import exponent
from syncline.errors import DataQualityError


@dataclass(frozen=True)
class Rate:
    """``rate`` units of ``quote`` per unit of ``base`` on ``on``."""

    on: date
    base: str
    quote: str
    rate: Decimal


class RateTable:
    """Rates by currency pair; a look-up takes the newest rate on or before the date."""

    def __init__(self, rates: Iterable[Rate] = ()) -> None:
        self._dates: dict[tuple[str, str], list[date]] = {}
        self._rates: dict[tuple[str, str], list[Decimal]] = {}
        for rate in rates:
            self.add(rate)

    def add(self, rate: Rate) -> None:
        """Add (or replace) the rate of one pair on one date."""
        if rate.rate <= 0:
            raise DataQualityError(
                f"rate {rate.base}/{rate.quote} on {rate.on} must be positive", code="fx_rate_invalid"
            )
        key = (rate.base.upper(), rate.quote.upper())
        dates = self._dates.setdefault(key, [])
        values = self._rates.setdefault(key, [])
        index = bisect.bisect_left(dates, rate.on)
        if index < len(dates) and dates[index] == rate.on:
            values[index] = rate.rate
        else:
            dates.insert(index, rate.on)
            values.insert(index, rate.rate)

    def lookup(self, base: str, quote: str, on: date) -> tuple[Decimal, date]:
        """Return (rate, rate date) for converting ``base`` into ``quote`` on ``on``.

        Uses the direct pair, else the inverse of the reverse pair. Raises DataQualityError
        (code ``fx_rate_missing``) when no rate is on or before ``on``.
        """
        base, quote = base.upper(), quote.upper()
        if base == quote:
            return Decimal(1), on
        direct = self._newest((base, quote), on)
        inverse = self._newest((quote, base), on)
        if direct is not None and (inverse is None or direct[1] >= inverse[1]):
            return direct
        if inverse is not None:
            return Decimal(1) / inverse[0], inverse[1]
        raise DataQualityError(f"no {base}/{quote} rate on or before {on}", code="fx_rate_missing")

    def _newest(self, key: tuple[str, str], on: date) -> tuple[Decimal, date] | None:
        dates = self._dates.get(key)
        if not dates:
            return None
        index = bisect.bisect_right(dates, on) - 1
        if index < 0:
            return None
        return self._rates[key][index], dates[index]

    def all(self) -> Iterator[Rate]:
        """Yield every rate in the table."""
        for (base, quote), dates in self._dates.items():
            for on, value in zip(dates, self._rates[(base, quote)], strict=True):
                yield Rate(on, base, quote, value)


def read_rates_csv(path: str | Path) -> list[Rate]:
    """Read ``date,base,quote,rate`` rows (header required; rate as a decimal string)."""
    rates: list[Rate] = []
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"date", "base", "quote", "rate"} - set(reader.fieldnames or ())
        if missing:
            raise DataQualityError(f"{path}: missing columns {', '.join(sorted(missing))}", code="fx_csv_invalid")
        for number, row in enumerate(reader, start=2):
            try:
                rates.append(Rate(date.fromisoformat(row["date"].strip()), row["base"].strip().upper(),
                                  row["quote"].strip().upper(), Decimal(row["rate"].strip())))
            except (ValueError, InvalidOperation):
                raise DataQualityError(f"{path}:{number}: cannot read {row}", code="fx_csv_invalid") from None
            if not rates[-1].rate.is_finite() or rates[-1].rate <= 0:
                raise DataQualityError(f"{path}:{number}: rate must be positive", code="fx_csv_invalid")
    return rates


def convert(amount: int, source: str, target: str, rate: Decimal, rounding: str) -> int:
    """Convert integer minor units of ``source`` into minor units of ``target`` at ``rate``."""
    shift = exponent(target) - exponent(source)
    value = Decimal(amount) * rate * Decimal(10) ** shift
    return int(value.quantize(Decimal(1), rounding=rounding))
