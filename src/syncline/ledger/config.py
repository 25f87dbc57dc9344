"""The ``ledger:`` section of ``syncline.yaml``: entities, routing, chart of accounts, posting rules.

Posting rules are data, not code. Each rule names, for one billing event, the journal lines to
produce: a side (``debit``/``credit``), an account *role* (resolved per legal entity through the
chart of accounts) and an *amount* (a quantity of the source document, see
:mod:`syncline.ledger._quantities`). Building a :class:`LedgerConfig` checks that every rule
balances for every possible document, and refuses the configuration naming the rule that does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import time
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncline.canonical.money import CurrencyCode
from syncline.ledger._quantities import RULE_KEYS, quantity_vector

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rounding(StrEnum):
    """Decimal rounding modes allowed for FX conversion and proration."""

    HALF_EVEN = "half_even"
    HALF_UP = "half_up"
    DOWN = "down"
    UP = "up"
    FLOOR = "floor"
    CEILING = "ceiling"

    @property
    def decimal_mode(self) -> str:
        """Return the :mod:`decimal` constant for this mode."""
        return {
            "half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP, "down": ROUND_DOWN, "up": ROUND_UP,
            "floor": ROUND_FLOOR, "ceiling": ROUND_CEILING,
        }[self.value]


class ClosedPeriodPolicy(StrEnum):
    """What to do with an entry dated in a closed (or soft-closed) period."""

    MOVE_TO_NEXT_OPEN = "move_to_next_open"
    HOLD = "hold"


class PostingMode(StrEnum):
    DETAILED = "detailed"
    SUMMARISED = "summarised"


class EntityConfig(_Strict):
    """One legal entity (subsidiary / company code) that books revenue."""

    name: str
    country: str = Field(pattern=r"^[A-Z]{2}$")
    functional_currency: CurrencyCode
    #: Company codes that name this entity on source documents (``Invoice.legal_entity_id``).
    company_codes: list[str] = Field(default_factory=list)
    #: The ERP's id for the entity (NetSuite subsidiary internal id), passed through on entries.
    erp_id: str | None = None


class RoutingRule(_Strict):
    """Route a document to ``entity`` when every given condition holds (empty = always)."""

    entity: str
    accounts: list[str] = Field(default_factory=list, description="billing account canonical ids")
    countries: list[str] = Field(default_factory=list, description="ISO 3166 alpha-2 of the customer")
    currencies: list[CurrencyCode] = Field(default_factory=list)
    company_codes: list[str] = Field(default_factory=list)


class AccountMapping(_Strict):
    """One chart-of-accounts entry: ``role`` → ``account`` for an entity, optionally narrowed.

    The most specific matching entry wins (most qualifiers given); ``entity: "*"`` applies to
    every entity with a lower priority than the entity's own entries.
    """

    entity: str
    role: str = Field(pattern=_NAME)
    account: str = Field(min_length=1)
    product_line: str | None = None
    region: str | None = None
    tax_code: str | None = None


class RuleLine(_Strict):
    """One line of a posting rule: exactly one of ``debit``/``credit`` (an account role) and an amount."""

    debit: str | None = None
    credit: str | None = None
    amount: str
    memo: str | None = None

    @model_validator(mode="after")
    def _one_side(self) -> RuleLine:
        if (self.debit is None) == (self.credit is None):
            raise ValueError("a rule line names exactly one of debit or credit")
        return self

    @property
    def side(self) -> Literal["debit", "credit"]:
        return "debit" if self.debit is not None else "credit"

    @property
    def role(self) -> str:
        return self.debit if self.debit is not None else str(self.credit)


class Intercompany(_Strict):
    """Intercompany pair: when the document's entity differs from ``entity`` (e.g. the entity
    whose bank collects the cash), post ``lines`` in the document's entity and
    ``counterparty_lines`` in ``entity`` instead of the rule's own lines."""

    entity: str
    lines: list[RuleLine]
    counterparty_lines: list[RuleLine]


class PostingRule(_Strict):
    lines: list[RuleLine] = Field(min_length=1)
    intercompany: Intercompany | None = None


class PeriodPolicy(_Strict):
    closed: ClosedPeriodPolicy = ClosedPeriodPolicy.HOLD
    #: Soft-closed periods accept automated postings only when this is true.
    post_into_soft_closed: bool = False


class BatchWindow(_Strict):
    """Daily UTC window in which the ERP accepts postings (start < end, or wrapping midnight)."""

    start: time
    end: time


class ErpConfig(_Strict):
    """Where journal entries go and how."""

    connection: str = Field(pattern=_NAME)
    operation: str = "post_journal_entry"
    mode: PostingMode = PostingMode.DETAILED
    window: BatchWindow | None = None


class LedgerConfig(_Strict):
    """The ledger section of ``syncline.yaml``."""

    rounding: Rounding = Rounding.HALF_EVEN
    entities: dict[str, EntityConfig]
    routing: list[RoutingRule] = Field(min_length=1)
    #: Product id → product line, used to pick revenue accounts by product line.
    product_lines: dict[str, str] = Field(default_factory=dict)
    chart_of_accounts: list[AccountMapping]
    rules: dict[str, PostingRule]
    #: Role receiving FX rounding differences (functional currency), never dropped.
    rounding_role: str = "fx_rounding"
    periods: PeriodPolicy = Field(default_factory=PeriodPolicy)
    #: Lines with a service period get a ratable revenue schedule (role ``deferred_revenue``).
    revenue_schedules: bool = True
    erp: ErpConfig | None = None

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, value: dict[str, EntityConfig]) -> dict[str, EntityConfig]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"entity name {name!r} must match {_NAME}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LedgerConfig:
        for index, route in enumerate(self.routing):
            if route.entity not in self.entities:
                raise ValueError(f"routing[{index}]: unknown entity {route.entity!r}")
        for index, mapping in enumerate(self.chart_of_accounts):
            if mapping.entity != "*" and mapping.entity not in self.entities:
                raise ValueError(f"chart_of_accounts[{index}]: unknown entity {mapping.entity!r}")
        for key, rule in self.rules.items():
            if key not in RULE_KEYS:
                raise ValueError(f"rules.{key}: unknown billing event (known: {', '.join(sorted(RULE_KEYS))})")
            _check_balanced(key, "lines", rule.lines)
            self._check_roles(key, rule.lines, self.entities)
            if rule.intercompany is not None:
                if rule.intercompany.entity not in self.entities:
                    raise ValueError(f"rules.{key}.intercompany: unknown entity {rule.intercompany.entity!r}")
                _check_balanced(key, "intercompany.lines", rule.intercompany.lines)
                _check_balanced(key, "intercompany.counterparty_lines", rule.intercompany.counterparty_lines)
                self._check_roles(key, rule.intercompany.lines, self.entities)
                self._check_roles(key, rule.intercompany.counterparty_lines, [rule.intercompany.entity])
        roles = {m.role for m in self.chart_of_accounts}
        if self.rounding_role not in roles:
            raise ValueError(f"rounding_role {self.rounding_role!r} has no account in chart_of_accounts")
        if self.revenue_schedules and "revenue.released" not in self.rules:
            raise ValueError("revenue_schedules is on but rules has no revenue.released rule")
        return self

    def _check_roles(self, key: str, lines: list[RuleLine], entities: Iterable[str]) -> None:
        for entity in entities:
            for line in lines:
                if not any(m.role == line.role and m.entity in (entity, "*") for m in self.chart_of_accounts):
                    raise ValueError(
                        f"rules.{key}: role {line.role!r} has no account for entity {entity!r} in chart_of_accounts"
                    )


def _check_balanced(key: str, where: str, lines: list[RuleLine]) -> None:
    """Refuse ``lines`` unless debits equal credits for every possible document.

    Each amount is a linear combination of the document's independent quantities (an invoice's
    total is recognised + deferred + tax); the rule balances for all documents exactly when the
    debit and credit combinations are equal.
    """
    balance: dict[str, int] = {}
    for index, line in enumerate(lines):
        try:
            vector = quantity_vector(key, line.amount)
        except KeyError as exc:
            raise ValueError(f"rules.{key}.{where}[{index}]: {exc.args[0]}") from None
        sign = 1 if line.side == "debit" else -1
        for basis, weight in vector.items():
            balance[basis] = balance.get(basis, 0) + sign * weight
    off = {basis: weight for basis, weight in balance.items() if weight}
    if off:
        detail = ", ".join(
            f"{'debits' if w > 0 else 'credits'} exceed by {abs(w)} x {b}" for b, w in sorted(off.items())
        )
        raise ValueError(f"rules.{key}.{where} cannot balance: {detail}")
