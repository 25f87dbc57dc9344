"""The ledger: billing events become balanced journal entries for the ERP, under policy.

The engine (:class:`Ledger`) is a pure function of the configuration, a rate table, a period
calendar and the book of what was already posted; :class:`LedgerStore` binds it to Syncline's
store and outbox. See ``docs/ledger.md``.
"""

from syncline.ledger import synthetic
from syncline.ledger.calendar import Calendar, Period, PeriodStatus
from syncline.ledger.config import LedgerConfig
from syncline.ledger.engine import POSTED_EVENTS, BillingEvent, Book, Ledger, Posting
from syncline.ledger.fx import Rate, RateTable, read_rates_csv
from syncline.ledger.store import LedgerStats, LedgerStore
from syncline.ledger.summary import account_totals, summarise

__all__ = [
    "POSTED_EVENTS", "BillingEvent", "Book", "Calendar", "Ledger", "LedgerConfig", "LedgerStats", "LedgerStore",
    "Period", "PeriodStatus", "Posting", "Rate", "RateTable", "account_totals", "read_rates_csv", "summarise",
    "synthetic",
]
