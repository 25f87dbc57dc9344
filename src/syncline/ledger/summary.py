"""Summarised posting: detailed entries folded into one entry per day, entity and currency.

Each account gets one net line; the entry keeps the ids of the detailed entries and source
documents it folds (the drill-down), which Syncline stores next to the summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from syncline.canonical import objects as o
from syncline.canonical.money import Money


def _money(*, amount: int, currency: str) -> Money:
    # Entries are built from validated documents (integer amounts, upper-case ISO codes): skip
    # re-validating the ~10 Money objects per entry, which would otherwise dominate posting time.
    return Money.model_construct(amount=amount, currency=currency)

SummaryGroup = tuple[date, str, str, str | None, str | None, str | None, date | None]


def summary_group(entry: o.JournalEntry) -> SummaryGroup:
    """Return what must be equal for two entries to share a summary.

    Day, entity, currency, and also period and rate so a summary never mixes two rates.
    """
    return (entry.posting_date, entry.legal_entity_id, entry.currency, entry.posting_period,
            entry.functional_currency, entry.exchange_rate, entry.rate_date)


def summary_key(group: SummaryGroup) -> str:
    """Return the stable key of a summary group (used for its entry id and drill-down)."""
    day, entity, currency, period, functional, rate, rate_day = group
    text = f"{day}/{entity}/{currency}/{period}/{functional}/{rate}/{rate_day}"
    return "js_" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass
class _Totals:
    """Net amounts per account of one summary group, and what went in."""

    net: dict[str, int] = field(default_factory=dict)
    functional: dict[str, int] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)


def summarise(entries: Iterable[o.JournalEntry]) -> list[tuple[o.JournalEntry, list[str], list[str]]]:
    """Fold ``entries`` into summary entries; return (summary, detailed entry ids, source documents).

    Lines are netted per account; an account that nets to zero in both currencies is left out,
    so a group whose entries cancel out yields a summary without lines (nothing to send).
    """
    groups: dict[SummaryGroup, _Totals] = {}
    for entry in entries:
        totals = groups.setdefault(summary_group(entry), _Totals())
        totals.entries.append(entry.id)
        totals.documents.extend(entry.source_documents)
        for line in entry.lines:
            amount = (line.debit.amount if line.debit else 0) - (line.credit.amount if line.credit else 0)
            totals.net[line.account] = totals.net.get(line.account, 0) + amount
            func = (line.functional_debit.amount if line.functional_debit else 0) - (
                line.functional_credit.amount if line.functional_credit else 0
            )
            totals.functional[line.account] = totals.functional.get(line.account, 0) + func
    out: list[tuple[o.JournalEntry, list[str], list[str]]] = []
    for group, totals in sorted(groups.items(), key=lambda item: str(item[0])):
        day, entity, currency, period, functional, rate, rate_day = group
        converted = functional is not None and functional != currency
        lines: list[o.JournalLine] = []
        for account in sorted(totals.net):
            net, func = totals.net[account], totals.functional[account]
            if net == 0 and (func == 0 or not converted):
                continue
            # The side follows the transaction amount; a rounding-only account (zero transaction
            # amount) follows its functional amount.
            debit = net > 0 or (net == 0 and func > 0)
            money = _money(amount=abs(net), currency=currency)
            line = o.JournalLine.model_construct(account=account, debit=money if debit else None,
                                                 credit=None if debit else money, memo=None, source_document=None,
                                                 functional_debit=None, functional_credit=None)
            if converted:
                assert functional is not None
                signed = func if debit else -func
                fmoney = _money(amount=abs(func), currency=functional)
                on_same_side = signed >= 0
                line = line.model_copy(update={
                    "functional_debit": fmoney if debit == on_same_side else None,
                    "functional_credit": None if debit == on_same_side else fmoney,
                })
            lines.append(line)
        key = summary_key(group)
        summary = o.JournalEntry.model_construct(
            object_type="journal_entry", source_documents=[],
            id=key, legal_entity_id=entity, currency=currency, posting_date=day,
            memo=f"Syncline summary of {len(totals.entries)} entries ({day}, {entity}, {currency})",
            lines=lines, posting_period=period, functional_currency=functional, exchange_rate=rate,
            rate_date=rate_day, summary_key=key,
        )
        out.append((summary, totals.entries, sorted(set(totals.documents))))
    return out


def account_totals(entries: Iterable[o.JournalEntry]) -> dict[tuple[str, str, str], int]:
    """Return net (debit - credit) per (entity, currency, account): what both modes must agree on."""
    totals: dict[tuple[str, str, str], int] = {}
    for entry in entries:
        for line in entry.lines:
            amount = (line.debit.amount if line.debit else 0) - (line.credit.amount if line.credit else 0)
            key = (entry.legal_entity_id, entry.currency, line.account)
            totals[key] = totals.get(key, 0) + amount
    return {key: value for key, value in totals.items() if value}
