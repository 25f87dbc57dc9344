"""NetSuite accounting periods: read over SuiteQL, and the posting period of a transaction date.

NetSuite books every transaction into an accounting period (``postingPeriod``). The account's
calendar holds years, quarters and the posting periods (months, or 4-4-5 periods, and
adjustment periods) inside them; only the posting periods matter here, so the query leaves
quarters and years out. A closed period refuses new postings: a delivery dated into one is a
:class:`~syncline.errors.BusinessRuleError` with code ``period_closed``, parked for a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from syncline.errors import TransientError

#: The posting periods of the account (quarters and years left out).
PERIODS_QUERY = (
    "SELECT id, periodname, startdate, enddate, closed FROM accountingperiod WHERE isquarter='F' AND isyear='F'"
)
#: SuiteQL writes dates in the user's date-format preference; the US default is ``1/31/2024``.
DEFAULT_DATE_FORMAT = "%m/%d/%Y"


@dataclass(frozen=True)
class AccountingPeriod:
    """One posting period of the NetSuite account's calendar (``start`` and ``end`` inclusive)."""

    id: str
    name: str
    start: date
    end: date
    closed: bool

    def contains(self, day: date) -> bool:
        """Whether ``day`` falls inside this period."""
        return self.start <= day <= self.end


def period_from_row(row: Mapping[str, Any], *, date_format: str = DEFAULT_DATE_FORMAT) -> AccountingPeriod:
    """Return the period of one SuiteQL row of :data:`PERIODS_QUERY`.

    Raises :class:`~syncline.errors.TransientError` (code ``netsuite_bad_period``) for a row
    that cannot be read: the calendar is NetSuite's own data, so a bad row is an answer to
    retry or investigate, never a reason to guess a period.
    """
    try:
        return AccountingPeriod(
            id=str(row["id"]),
            name=str(row.get("periodname") or row["id"]),
            start=parse_date(str(row["startdate"]), date_format),
            end=parse_date(str(row["enddate"]), date_format),
            closed=_flag(row.get("closed")),
        )
    except (KeyError, ValueError) as exc:
        raise TransientError(f"NetSuite answered an unreadable accounting period row: {exc}",
                             code="netsuite_bad_period") from exc


def parse_date(value: str, date_format: str = DEFAULT_DATE_FORMAT) -> date:
    """Parse a SuiteQL date: ISO ``2024-01-31`` or the account's format (default ``1/31/2024``)."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        return datetime.strptime(value, date_format).date()


def period_for(periods: Iterable[AccountingPeriod], day: date) -> AccountingPeriod | None:
    """Return the posting period ``day`` falls in, or None when the calendar has none.

    An adjustment period shares its dates with a regular period (often just the year's last
    day); a transaction goes to the regular one, the longest period covering the day.
    """
    candidates = [period for period in periods if period.contains(day)]
    if not candidates:
        return None
    return max(candidates, key=lambda period: ((period.end - period.start).days, -_id_order(period.id)))


def sort_periods(periods: Sequence[AccountingPeriod]) -> list[AccountingPeriod]:
    """Return the periods in calendar order (by start date, then id)."""
    return sorted(periods, key=lambda period: (period.start, _id_order(period.id)))


def _flag(value: Any) -> bool:
    """Read SuiteQL's ``"T"``/``"F"`` (or a JSON boolean) as a bool; anything else is an error."""
    if isinstance(value, bool):
        return value
    if value in ("T", "t", "true"):
        return True
    if value in ("F", "f", "false"):
        return False
    raise ValueError(f"closed={value!r} is not T or F")


def _id_order(internal_id: str) -> int:
    return int(internal_id) if internal_id.isdigit() else 0
