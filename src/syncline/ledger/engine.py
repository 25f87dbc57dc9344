"""The posting engine: billing events → balanced journal entries, as a pure function of its inputs.

Inputs are the configuration (rules, chart of accounts, routing), a :class:`~syncline.ledger.fx.RateTable`,
a :class:`~syncline.ledger.calendar.Calendar` and a :class:`Book` (what was already posted: the
entity of earlier documents, revenue schedules). The engine touches no database; the store-backed
part (:mod:`syncline.ledger.store`) loads the book for a batch, runs the engine and saves it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel

from syncline.canonical import objects as o
from syncline.canonical.events import CloudEvent, event_type
from syncline.canonical.money import Money
from syncline.errors import DataQualityError
from syncline.ledger.calendar import Calendar, Placement
from syncline.ledger.config import LedgerConfig, RuleLine
from syncline.ledger.fx import RateTable, convert
from syncline.ledger.schedules import ScheduleSlice, ratable, reduce_remaining, service_days

#: Canonical event types the ledger posts.
POSTED_EVENTS = frozenset({
    "invoice.issued", "payment.succeeded", "refund.succeeded", "credit_memo.issued", "dispute.opened",
    "dispute.won", "dispute.lost", "payout.paid", "invoice.uncollectible",
})


@dataclass(frozen=True)
class BillingEvent:
    """A canonical billing event the ledger posts: its type, document and time."""

    type: str
    document: BaseModel
    time: datetime

    @classmethod
    def from_cloud_event(cls, event: CloudEvent) -> BillingEvent:
        """Validate the event's data into its canonical object."""
        model = event_type(event.type).data_model
        return cls(event.type, model.model_validate(event.data), event.time)


@dataclass
class DocumentRecord:
    """What the ledger remembers of a posted document: its entity and links."""

    id: str
    kind: str
    entity: str
    currency: str
    invoice_id: str | None = None
    paid: int = 0


@dataclass
class LineSchedule:
    """A revenue schedule of one invoice line."""

    line_id: str
    invoice_id: str
    entity: str
    currency: str
    product_line: str | None
    slices: list[ScheduleSlice]


@dataclass
class Book:
    """The ledger's memory between batches. The engine records what it changed."""

    documents: dict[str, DocumentRecord] = field(default_factory=dict)
    schedules: dict[str, LineSchedule] = field(default_factory=dict)
    #: ``rule key/document id`` of every source already posted (a replay posts nothing).
    posted: set[str] = field(default_factory=set)
    changed_documents: set[str] = field(default_factory=set)
    changed_schedules: set[str] = field(default_factory=set)
    new_posted: set[str] = field(default_factory=set)

    def remember(self, record: DocumentRecord) -> None:
        self.documents[record.id] = record
        self.changed_documents.add(record.id)

    def save_schedule(self, schedule: LineSchedule) -> None:
        self.schedules[schedule.line_id] = schedule
        self.changed_schedules.add(schedule.line_id)


@dataclass(frozen=True)
class Held:
    """A posting that could not be placed (closed period under ``hold``, missing rate)."""

    entry: o.JournalEntry | None
    source: str
    code: str
    reason: str


@dataclass
class Posting:
    """What posting a batch produced."""

    entries: list[o.JournalEntry] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class _Item:
    """One amount of a document with what the chart of accounts may narrow on."""

    amount: int
    product_line: str | None = None
    region: str | None = None
    tax_code: str | None = None
    source_line: str | None = None


def entry_id(*parts: str) -> str:
    """Return a deterministic journal entry id: the same source and rule always give the same id."""
    return "je_" + hashlib.blake2b("/".join(parts).encode(), digest_size=12).hexdigest()


def _money(*, amount: int, currency: str) -> Money:
    # Entries are built from validated documents (integer amounts, upper-case ISO codes): skip
    # re-validating the ~10 Money objects per entry, which would otherwise dominate posting time.
    return Money.model_construct(amount=amount, currency=currency)


class Ledger:
    """Posting engine for one configuration, rate table and calendar."""

    def __init__(self, config: LedgerConfig, rates: RateTable, calendar: Calendar) -> None:
        self.config = config
        self.rates = rates
        self.calendar = calendar
        self._rounding = config.rounding.decimal_mode
        self._account_cache: dict[tuple[str, str, str | None, str | None, str | None], str] = {}

    # -- routing and accounts ------------------------------------------------------------------

    def route(self, *, account_id: str | None, currency: str, country: str | None = None,
              company_code: str | None = None) -> str:
        """Return the legal entity of a document by the routing policy (first matching rule)."""
        if company_code:
            for name, entity in self.config.entities.items():
                if company_code in entity.company_codes:
                    return name
        for rule in self.config.routing:
            if rule.accounts and account_id not in rule.accounts:
                continue
            if rule.countries and country not in rule.countries:
                continue
            if rule.currencies and currency not in rule.currencies:
                continue
            if rule.company_codes and company_code not in rule.company_codes:
                continue
            return rule.entity
        raise DataQualityError(f"no routing rule matches account {account_id} in {currency}", code="entity_unrouted")

    def account(self, entity: str, role: str, item: _Item) -> str:
        """Resolve ``role`` for ``entity`` through the chart of accounts (most specific entry wins)."""
        key = (entity, role, item.product_line, item.region, item.tax_code)
        cached = self._account_cache.get(key)
        if cached is not None:
            return cached
        best: tuple[int, str] | None = None
        for mapping in self.config.chart_of_accounts:
            if mapping.role != role or mapping.entity not in (entity, "*"):
                continue
            qualifiers = ((mapping.product_line, item.product_line), (mapping.region, item.region),
                          (mapping.tax_code, item.tax_code))
            if any(wanted is not None and wanted != actual for wanted, actual in qualifiers):
                continue
            score = sum(1 for wanted, _ in qualifiers if wanted is not None) * 2 + (mapping.entity == entity)
            if best is None or score > best[0]:
                best = (score, mapping.account)
        if best is None:  # the configuration check makes this unreachable for configured rules
            raise DataQualityError(f"no account for role {role} in {entity}", code="account_unmapped")
        self._account_cache[key] = best[1]
        return best[1]

    # -- posting -------------------------------------------------------------------------------

    def post(self, events: Iterable[BillingEvent], book: Book) -> Posting:
        """Post ``events`` in order; entries of documents already in ``book.posted`` are skipped."""
        result = Posting()
        for event in events:
            try:
                self._post_one(event, book, result)
            except DataQualityError as exc:
                source = str(getattr(event.document, "id", "?"))
                result.held.append(Held(None, source, exc.code, exc.message))
        return result

    def _post_one(self, event: BillingEvent, book: Book, result: Posting) -> None:
        doc = event.document
        if isinstance(doc, o.Invoice) and event.type == "invoice.issued":
            self._invoice(doc, book, result)
        elif isinstance(doc, o.Invoice) and event.type == "invoice.uncollectible":
            entity = self._entity_of_invoice(doc, book)
            self._emit("invoice.uncollectible", doc.id, entity, doc.currency, event.time.date(),
                       {"amount": [_Item(doc.amount_due.amount)]}, book, result)
        elif isinstance(doc, o.Payment) and event.type == "payment.succeeded":
            self._payment(doc, book, result)
        elif isinstance(doc, o.Refund):
            entity = self._entity_of_payment(doc.payment_id, doc.invoice_id, doc.account_id, doc.amount.currency, book)
            self._emit("refund.succeeded", doc.id, entity, doc.amount.currency, doc.refunded_at.date(),
                       {"amount": [_Item(doc.amount.amount)]}, book, result)
        elif isinstance(doc, o.CreditMemo):
            self._credit_memo(doc, book, result)
        elif isinstance(doc, o.Dispute) and event.type in ("dispute.opened", "dispute.won", "dispute.lost"):
            entity = self._entity_of_payment(doc.payment_id, None, doc.account_id, doc.amount.currency, book)
            on = doc.opened_at.date() if event.type == "dispute.opened" else event.time.date()
            self._emit(event.type, doc.id, entity, doc.amount.currency, on,
                       {"amount": [_Item(doc.amount.amount)]}, book, result)
        elif isinstance(doc, o.Payout):
            entity = self.route(account_id=None, currency=doc.amount.currency)
            fees = doc.fees.amount if doc.fees is not None else 0
            self._emit("payout.paid", doc.id, entity, doc.amount.currency, doc.paid_at.date(),
                       {"amount": [_Item(doc.amount.amount)], "net": [_Item(doc.amount.amount)],
                        "fees": [_Item(fees)], "gross": [_Item(doc.amount.amount + fees)]}, book, result)
        else:
            result.skipped += 1

    def _country(self, invoice: o.Invoice) -> str | None:
        for line in invoice.lines:
            for tax in line.taxes:
                if tax.jurisdiction and len(tax.jurisdiction) >= 2 and tax.jurisdiction[:2].isalpha():
                    return tax.jurisdiction[:2].upper()
        return None

    def _entity_of_invoice(self, invoice: o.Invoice, book: Book) -> str:
        known = book.documents.get(invoice.id)
        if known is not None:
            return known.entity
        return self.route(account_id=invoice.account_id, currency=invoice.currency, country=self._country(invoice),
                          company_code=invoice.legal_entity_id)

    def _entity_of_payment(self, payment_id: str | None, invoice_id: str | None, account_id: str | None,
                           currency: str, book: Book) -> str:
        for ref in (payment_id, invoice_id):
            known = book.documents.get(ref) if ref else None
            if known is not None:
                return known.entity
        return self.route(account_id=account_id, currency=currency)

    def _invoice(self, invoice: o.Invoice, book: Book, result: Posting) -> None:
        subtotal = sum(line.amount.amount for line in invoice.lines)
        tax = sum(t.amount.amount for line in invoice.lines for t in line.taxes)
        if subtotal != invoice.subtotal.amount or tax != invoice.tax.amount or invoice.total.amount != subtotal + tax:
            raise DataQualityError(
                f"invoice {invoice.id}: lines sum to {subtotal} + tax {tax}, header says "
                f"{invoice.subtotal.amount} + {invoice.tax.amount} = {invoice.total.amount}",
                code="invoice_totals_inconsistent",
            )
        entity = self._entity_of_invoice(invoice, book)
        if invoice.issued_at is None:
            raise DataQualityError(f"invoice {invoice.id} has no issue date", code="invoice_undated")
        on = invoice.issued_at.date()
        region = self._country(invoice)
        amounts: dict[str, list[_Item]] = {k: [] for k in ("line.amount", "line.recognized", "line.deferred",
                                                          "tax.amount")}
        recognized = deferred = 0
        schedules: list[LineSchedule] = []
        for line in invoice.lines:
            product_line = self.config.product_lines.get(line.product_id or "")
            item = _Item(line.amount.amount, product_line, region, None, line.id)
            amounts["line.amount"].append(item)
            if self.config.revenue_schedules and line.period is not None and line.amount.amount:
                amounts["line.deferred"].append(item)
                deferred += line.amount.amount
                first, last = service_days(line.period.start, line.period.end)
                slices = ratable(line.id, line.amount.amount, self.calendar.schedule_periods(entity, first, last),
                                 self._rounding)
                schedules.append(LineSchedule(line.id, invoice.id, entity, invoice.currency, product_line, slices))
            else:
                amounts["line.recognized"].append(item)
                recognized += line.amount.amount
            for tax_line in line.taxes:
                amounts["tax.amount"].append(
                    _Item(tax_line.amount.amount, product_line, region, tax_line.tax_code, line.id)
                )
        amounts.update({
            "total": [_Item(invoice.total.amount, region=region)],
            "subtotal": [_Item(subtotal, region=region)],
            "recognized": [_Item(recognized, region=region)],
            "deferred": [_Item(deferred, region=region)],
            "tax": [_Item(tax, region=region)],
        })
        if self._emit("invoice.issued", invoice.id, entity, invoice.currency, on, amounts, book, result):
            book.remember(DocumentRecord(invoice.id, "invoice", entity, invoice.currency,
                                         paid=invoice.amount_paid.amount))
            for schedule in schedules:
                if schedule.line_id not in book.schedules:
                    book.save_schedule(schedule)

    def _payment(self, payment: o.Payment, book: Book, result: Posting) -> None:
        currency = payment.amount.currency
        entity = self._entity_of_payment(None, payment.invoice_id, payment.account_id, currency, book)
        if self._emit("payment.succeeded", payment.id, entity, currency, payment.paid_at.date(),
                      {"amount": [_Item(payment.amount.amount)]}, book, result):
            book.remember(DocumentRecord(payment.id, "payment", entity, currency, invoice_id=payment.invoice_id))
            invoice = book.documents.get(payment.invoice_id) if payment.invoice_id else None
            if invoice is not None:
                invoice.paid += payment.amount.amount
                book.changed_documents.add(invoice.id)

    def _credit_memo(self, memo: o.CreditMemo, book: Book, result: Posting) -> None:
        invoice = book.documents.get(memo.invoice_id) if memo.invoice_id else None
        key = "credit_memo.after_payment" if invoice is not None and invoice.paid > 0 else "credit_memo.before_payment"
        if f"{key}/{memo.id}" in book.posted:
            return
        entity = invoice.entity if invoice is not None else self.route(account_id=memo.account_id,
                                                                       currency=memo.currency)
        lines_total = sum(line.amount.amount for line in memo.lines)
        tax = memo.total.amount - lines_total
        amounts: dict[str, list[_Item]] = {"line.amount": [], "line.recognized": [], "line.deferred": [],
                                           "tax.amount": [_Item(tax)]}
        recognized = deferred = 0
        on = memo.issued_at.date()
        changed: list[LineSchedule] = []
        for line in memo.lines:
            schedule = book.schedules.get(line.invoice_line_id) if line.invoice_line_id else None
            product_line = schedule.product_line if schedule is not None else None
            taken = 0
            if schedule is not None:
                slices, taken = reduce_remaining(schedule.slices, line.amount.amount, on)
                if taken:
                    changed.append(replace(schedule, slices=slices))
            rest = line.amount.amount - taken
            amounts["line.amount"].append(_Item(line.amount.amount, product_line, source_line=line.id))
            if taken:
                amounts["line.deferred"].append(_Item(taken, product_line, source_line=line.id))
            if rest:
                amounts["line.recognized"].append(_Item(rest, product_line, source_line=line.id))
            deferred += taken
            recognized += rest
        amounts.update({"total": [_Item(memo.total.amount)], "subtotal": [_Item(lines_total)],
                        "recognized": [_Item(recognized)], "deferred": [_Item(deferred)], "tax": [_Item(tax)]})
        if self._emit(key, memo.id, entity, memo.currency, on, amounts, book, result):
            book.remember(DocumentRecord(memo.id, "credit_memo", entity, memo.currency, invoice_id=memo.invoice_id))
            for schedule in changed:
                book.save_schedule(schedule)

    def release(self, book: Book, through: date) -> Posting:
        """Release every unreleased schedule slice ending on or before ``through``."""
        result = Posting()
        for line_id in sorted(book.schedules):
            schedule = book.schedules[line_id]
            slices = list(schedule.slices)
            changed = False
            for index, item in enumerate(slices):
                if item.released or item.end > through:
                    continue
                source = f"{line_id}@{item.period}"
                posted = item.amount == 0 or self._emit(
                    "revenue.released", source, schedule.entity, schedule.currency, item.end,
                    {"amount": [_Item(item.amount, schedule.product_line, source_line=line_id)]}, book, result,
                    documents=[schedule.invoice_id],
                )
                if posted or f"revenue.released/{source}" in book.posted:
                    slices[index] = replace(item, released=True)
                    changed = True
            if changed:
                book.save_schedule(replace(schedule, slices=slices))
        return result

    # -- building one entry --------------------------------------------------------------------

    def _emit(self, key: str, source: str, entity: str, currency: str, on: date,
              amounts: dict[str, list[_Item]], book: Book, result: Posting,
              documents: Sequence[str] | None = None) -> bool:
        """Build the entries of rule ``key`` for one source; return False if none were produced."""
        rule = self.config.rules.get(key)
        marker = f"{key}/{source}"
        if rule is None or marker in book.posted:
            result.skipped += 1
            return False
        parts: list[tuple[str, str, Sequence[RuleLine]]] = [("main", entity, rule.lines)]
        if rule.intercompany is not None and rule.intercompany.entity != entity:
            parts = [("main", entity, rule.intercompany.lines),
                     ("counterparty", rule.intercompany.entity, rule.intercompany.counterparty_lines)]
        # Build every part before recording any, so a failure (missing rate) posts none of them.
        built = [self._entry(key, source, part, part_entity, currency, on, lines, amounts, documents)
                 for part, part_entity, lines in parts]
        for entry in built:
            if isinstance(entry, Held):
                result.held.append(entry)
            elif entry is not None:
                result.entries.append(entry)
        book.posted.add(marker)
        book.new_posted.add(marker)
        return True

    def _entry(self, key: str, source: str, part: str, entity: str, currency: str, on: date,
               rule_lines: Sequence[RuleLine], amounts: dict[str, list[_Item]],
               documents: Sequence[str] | None) -> o.JournalEntry | Held | None:
        lines: list[o.JournalLine] = []
        debits = credits = 0
        for rule_line in rule_lines:
            for item in amounts.get(rule_line.amount, ()):
                if item.amount == 0:
                    continue
                debit = (rule_line.side == "debit") == (item.amount > 0)
                value = _money(amount=abs(item.amount), currency=currency)
                if debit:
                    debits += value.amount
                else:
                    credits += value.amount
                lines.append(o.JournalLine.model_construct(
                    account=self.account(entity, rule_line.role, item),
                    debit=value if debit else None, credit=None if debit else value,
                    memo=rule_line.memo, source_document=item.source_line or source,
                    functional_debit=None, functional_credit=None,  # every field given: no default look-ups
                ))
        if not lines:
            return None
        if debits != credits:  # the configuration check proves this cannot happen; refuse loudly if it does
            raise DataQualityError(f"{key} for {source} does not balance: {debits} ≠ {credits}", code="unbalanced")
        functional = self.config.entities[entity].functional_currency
        rate_text: str | None = None
        rate_date: date | None = None
        if functional != currency:
            rate, rate_date = self.rates.lookup(currency, functional, on)
            rate_text = str(rate)
            lines = self._functional(lines, currency, functional, rate, entity)
        placement: Placement = self.calendar.place(entity, on, self.config.periods)
        memo = f"{key} {source}"
        if placement.note:
            memo = f"{memo}; {placement.note}"
        entry = o.JournalEntry.model_construct(
            object_type="journal_entry", summary_key=None,
            id=entry_id(key, source, entity, part), legal_entity_id=entity, currency=currency,
            posting_date=placement.posting_date, memo=memo, lines=lines,
            posting_period=placement.period.id if placement.period else None,
            functional_currency=functional, exchange_rate=rate_text, rate_date=rate_date,
            source_documents=list(documents) if documents else [source],
        )
        if placement.held:
            return Held(entry, source, "period_closed", placement.held)
        return entry

    def _functional(self, lines: list[o.JournalLine], currency: str, functional: str, rate: Decimal,
                    entity: str) -> list[o.JournalLine]:
        out: list[o.JournalLine] = []
        balance = 0
        for line in lines:
            txn = line.debit or line.credit
            assert txn is not None
            value = _money(amount=convert(txn.amount, currency, functional, rate, self._rounding), currency=functional)
            balance += value.amount if line.debit is not None else -value.amount
            out.append(line.model_copy(update={
                "functional_debit": value if line.debit is not None else None,
                "functional_credit": value if line.credit is not None else None,
            }))
        if balance:
            # Rounding each line separately can leave functional debits ≠ credits by a few minor
            # units; post the difference to the rounding account instead of dropping it.
            fix = _money(amount=abs(balance), currency=functional)
            zero = Money.zero(currency)
            account = self.account(entity, self.config.rounding_role, _Item(0))
            out.append(o.JournalLine.model_construct(
                account=account, memo="FX rounding", source_document=None,
                debit=zero if balance < 0 else None, credit=zero if balance > 0 else None,
                functional_debit=fix if balance < 0 else None, functional_credit=fix if balance > 0 else None,
            ))
        return out
