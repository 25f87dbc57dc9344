"""Accounting period calendars per legal entity and the closed-period policy."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from syncline.ledger.config import ClosedPeriodPolicy, PeriodPolicy


class PeriodStatus(StrEnum):
    OPEN = "open"
    SOFT_CLOSED = "soft_closed"
    CLOSED = "closed"


@dataclass(frozen=True)
class Period:
    """One accounting period of one entity; ``start`` and ``end`` are both inclusive."""

    entity: str
    id: str
    name: str
    start: date
    end: date
    status: PeriodStatus

    def accepts(self, policy: PeriodPolicy) -> bool:
        """Whether automated postings may land in this period."""
        return self.status is PeriodStatus.OPEN or (
            self.status is PeriodStatus.SOFT_CLOSED and policy.post_into_soft_closed
        )


@dataclass(frozen=True)
class Placement:
    """Where an entry dated ``requested`` lands: a period and date, or held with a reason."""

    requested: date
    period: Period | None
    posting_date: date
    note: str | None = None
    held: str | None = None


class Calendar:
    """Periods of every entity. An entity without periods accepts any date (no period check)."""

    def __init__(self, periods: Iterable[Period] = ()) -> None:
        self._by_entity: dict[str, list[Period]] = {}
        for period in periods:
            self._by_entity.setdefault(period.entity, []).append(period)
        for entity, items in self._by_entity.items():
            items.sort(key=lambda p: p.start)
            for before, after in itertools.pairwise(items):
                if after.start <= before.end:
                    raise ValueError(f"periods {before.id} and {after.id} of {entity} overlap")
        self._starts = {entity: [p.start for p in items] for entity, items in self._by_entity.items()}

    def periods(self, entity: str) -> Sequence[Period]:
        """Return the entity's periods in date order."""
        return self._by_entity.get(entity, [])

    def find(self, entity: str, day: date) -> Period | None:
        """Return the period of ``entity`` containing ``day``, if any."""
        items = self._by_entity.get(entity)
        if not items:
            return None
        index = bisect.bisect_right(self._starts[entity], day) - 1
        if index >= 0 and items[index].start <= day <= items[index].end:
            return items[index]
        return None

    def place(self, entity: str, day: date, policy: PeriodPolicy) -> Placement:
        """Apply the closed-period policy to an entry of ``entity`` dated ``day``."""
        items = self._by_entity.get(entity)
        if not items:
            return Placement(day, None, day)
        period = self.find(entity, day)
        if period is None:
            return Placement(day, None, day, held=f"no accounting period of {entity} contains {day}")
        if period.accepts(policy):
            return Placement(day, period, day)
        if policy.closed is ClosedPeriodPolicy.HOLD:
            return Placement(day, None, day, held=f"period {period.name} of {entity} is {period.status.value}")
        for later in items[items.index(period) + 1:]:
            if later.accepts(policy):
                note = f"moved from {period.name} ({period.status.value}, {day}) to {later.name}"
                return Placement(day, later, later.start, note=note)
        return Placement(day, None, day, held=f"no open period of {entity} after {period.name}")

    def schedule_periods(self, entity: str, start: date, end: date) -> list[tuple[str, date, date]]:
        """Return (period id, first day, last day) slices covering ``start`` .. ``end`` (inclusive).

        Uses the entity's calendar where it has periods and calendar months elsewhere.
        """
        slices: list[tuple[str, date, date]] = []
        day = start
        while day <= end:
            period = self.find(entity, day)
            if period is not None:
                last = min(period.end, end)
                slices.append((period.id, day, last))
            else:
                month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
                last = min(month_end, end)
                slices.append((day.strftime("%Y-%m"), day, last))
            day = last + timedelta(days=1)
        return slices


def regular_periods(periods: Iterable[Period]) -> list[Period]:
    """Drop adjustment periods: those lying inside a longer period of the same entity.

    ERPs keep adjustment periods (NetSuite's "Adjust 2026", often just 31 Dec) that share dates
    with a regular period; automated postings go to the regular one, so the calendar keeps only it.
    """
    items = list(periods)
    kept = []
    for period in items:
        inside_longer = any(
            other is not period and other.entity == period.entity and other.start <= period.start
            and period.end <= other.end and (other.end - other.start) > (period.end - period.start)
            for other in items
        )
        if not inside_longer:
            kept.append(period)
    return kept
