"""The NetSuite sandbox's accounting calendar and the small SuiteQL it answers.

The calendar is NetSuite's default fiscal calendar: per year a year period, four quarters,
twelve monthly posting periods and one adjustment period on the year's last day, numbered
the way NetSuite numbers them (a parent before its children). A month closes when its
``YYYY-MM`` key is in the sandbox's ``closed_periods``; a quarter or year when all its months
are; the adjustment period when ``YYYY-13`` is.

SuiteQL here is the subset integrations use against one table: ``SELECT cols FROM
accountingperiod [WHERE col = 'v' AND ...] [ORDER BY col [ASC|DESC]]``. Anything else is
refused with the error body NetSuite gives for a query it cannot run. Every value comes back
as a string, booleans as ``T``/``F`` and dates in the US format ``1/31/2024``, as SuiteQL
writes them for an account with that date preference.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

_SELECT = re.compile(
    r"^\s*SELECT\s+(?P<columns>.+?)\s+FROM\s+(?P<table>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<direction>ASC|DESC))?)?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(r"^\s*(\w+)\s*=\s*(?:'([^']*)'|(\d+))\s*$")
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
COLUMNS = ("id", "periodname", "startdate", "enddate", "closed", "isquarter", "isyear", "isadjust", "isposting",
           "parent")


class QueryError(ValueError):
    """A query the sandbox's SuiteQL cannot run; the message is NetSuite's detail text."""


@dataclass(frozen=True)
class Period:
    """One period of the calendar; ``keys`` are the ``closed_periods`` entries that close it."""

    id: str
    name: str
    start: date
    end: date
    kind: str  # "year", "quarter", "month" or "adjust"
    keys: tuple[str, ...]
    parent: str | None

    @property
    def posting(self) -> bool:
        """Whether transactions can post into it (months and adjustment periods)."""
        return self.kind in ("month", "adjust")

    def closed(self, closed_keys: set[str]) -> bool:
        """Whether every key that closes this period is closed."""
        return all(key in closed_keys for key in self.keys)


def build_calendar(first_year: int, last_year: int) -> list[Period]:
    """Return the periods of ``first_year``..``last_year`` in NetSuite's numbering."""
    periods: list[Period] = []
    next_id = iter(range(1, 1_000_000))
    for year in range(first_year, last_year + 1):
        year_id = str(next(next_id))
        year_keys = tuple(f"{year}-{month:02d}" for month in range(1, 13))
        periods.append(Period(year_id, f"FY {year}", date(year, 1, 1), date(year, 12, 31), "year", year_keys, None))
        for quarter in range(4):
            quarter_id = str(next(next_id))
            months = range(quarter * 3 + 1, quarter * 3 + 4)
            last = months[-1]
            periods.append(Period(
                quarter_id, f"Q{quarter + 1} {year}", date(year, months[0], 1),
                date(year, last, calendar.monthrange(year, last)[1]), "quarter",
                tuple(f"{year}-{month:02d}" for month in months), year_id,
            ))
            for month in months:
                periods.append(Period(
                    str(next(next_id)), f"{_MONTHS[month - 1]} {year}", date(year, month, 1),
                    date(year, month, calendar.monthrange(year, month)[1]), "month", (f"{year}-{month:02d}",),
                    quarter_id,
                ))
        periods.append(Period(str(next(next_id)), f"Adjust {year}", date(year, 12, 31), date(year, 12, 31),
                              "adjust", (f"{year}-13",), year_id))
    return periods


def row(period: Period, closed_keys: set[str]) -> dict[str, str]:
    """Return the SuiteQL row of a period (every value a string)."""
    values = {
        "id": period.id,
        "periodname": period.name,
        "startdate": _us_date(period.start),
        "enddate": _us_date(period.end),
        "closed": _flag(period.closed(closed_keys)),
        "isquarter": _flag(period.kind == "quarter"),
        "isyear": _flag(period.kind == "year"),
        "isadjust": _flag(period.kind == "adjust"),
        "isposting": _flag(period.posting),
    }
    if period.parent is not None:
        values["parent"] = period.parent
    return values


def run_query(query: str, tables: dict[str, Callable[[], Iterable[dict[str, str]]]]) -> list[dict[str, str]]:
    """Run a one-table SuiteQL ``query`` over ``tables`` (name → rows); raise QueryError if unsupported."""
    match = _SELECT.match(query)
    if match is None:
        raise QueryError(f"Invalid search query. Search error occurred: cannot parse {query[:200]!r}.")
    table = match["table"].lower()
    if table not in tables:
        raise QueryError(f"Invalid search query. Search error occurred: Record '{match['table']}' was not found.")
    rows = list(tables[table]())
    known = set(COLUMNS)
    columns = [column.strip().lower() for column in match["columns"].split(",")]
    if columns == ["*"]:
        columns = list(COLUMNS)
    conditions: list[tuple[str, str]] = []
    if match["where"]:
        for part in _AND.split(match["where"]):
            condition = _CONDITION.match(part)
            if condition is None:
                raise QueryError(f"Invalid search query. Search error occurred: unsupported condition {part!r}.")
            conditions.append((condition[1].lower(), condition[2] if condition[2] is not None else condition[3]))
    order = (match["order"] or "id").lower()
    for column in [*columns, *(name for name, _ in conditions), order]:
        if column not in known:
            raise QueryError(f"Invalid search query. Search error occurred: Field '{column}' for record "
                             f"'{table}' was not found.")
    selected = [item for item in rows if all(item.get(name) == value for name, value in conditions)]
    selected.sort(key=lambda item: _sort_key(item.get(order, "")), reverse=(match["direction"] or "").upper() == "DESC")
    # A NULL column is left out of the row, as NetSuite does.
    return [{column: item[column] for column in columns if column in item} for item in selected]


def _sort_key(value: str) -> tuple[int, Any]:
    if value.isdigit():
        return (0, int(value))
    month, _, rest = value.partition("/")
    day, _, year = rest.partition("/")
    if month.isdigit() and day.isdigit() and year.isdigit():
        return (1, (int(year), int(month), int(day)))
    return (2, value)


def _us_date(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def _flag(value: bool) -> str:
    return "T" if value else "F"
