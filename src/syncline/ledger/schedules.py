"""Ratable revenue schedules: an invoice line's amount released per accounting period by day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal


@dataclass(frozen=True)
class ScheduleSlice:
    """The part of one invoice line's amount that belongs to one accounting period."""

    line_id: str
    period: str
    start: date
    end: date
    amount: int
    released: bool = False


def ratable(
    line_id: str, amount: int, slices: Sequence[tuple[str, date, date]], rounding: str
) -> list[ScheduleSlice]:
    """Split ``amount`` over ``slices`` in proportion to their days; the remainder goes to the last.

    The result sums to ``amount`` exactly, whatever the rounding mode.
    """
    if not slices:
        raise ValueError("a schedule needs at least one period")
    days = [(last - first).days + 1 for _, first, last in slices]
    total_days = sum(days)
    out: list[ScheduleSlice] = []
    allocated = 0
    for index, ((period, first, last), count) in enumerate(zip(slices, days, strict=True)):
        if index == len(slices) - 1:
            part = amount - allocated
        else:
            part = int((Decimal(amount) * count / total_days).quantize(Decimal(1), rounding=rounding))
        allocated += part
        out.append(ScheduleSlice(line_id, period, first, last, part))
    return out


def service_days(start: date, end: date) -> tuple[date, date]:
    """Return the inclusive first and last day of a service period whose ``end`` is exclusive.

    Billing systems (Stripe) give the period end as the start of the next period; a period
    whose end equals its start is one day.
    """
    return start, max(start, end - timedelta(days=1))


def reduce_remaining(
    schedule: Sequence[ScheduleSlice], reduction: int, after: date
) -> tuple[list[ScheduleSlice], int]:
    """Take up to ``reduction`` out of the unreleased slices ending on or after ``after``.

    The reduction is spread in proportion to the slices' amounts (remainder on the last one).
    Returns the new schedule and how much was actually taken (never more than remains, and
    never changing the sign of the remaining amount).
    """
    open_indexes = [i for i, s in enumerate(schedule) if not s.released and s.end >= after]
    remaining = sum(schedule[i].amount for i in open_indexes)
    if remaining == 0 or reduction == 0 or (remaining > 0) != (reduction > 0):
        return list(schedule), 0
    taken = reduction if abs(reduction) <= abs(remaining) else remaining
    out = list(schedule)
    allocated = 0
    for position, index in enumerate(open_indexes):
        item = schedule[index]
        # Truncate each share; the last slice takes the rest so the reduction is exact.
        last = position == len(open_indexes) - 1
        part = taken - allocated if last else int(Decimal(taken) * item.amount / remaining)
        allocated += part
        out[index] = replace(item, amount=item.amount - part)
    return out, taken
