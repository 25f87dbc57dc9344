"""The amounts a posting rule may name, per billing event, as combinations of independent parts.

An invoice splits into three independent parts: revenue recognised now, revenue deferred to a
schedule, and tax. ``total`` is their sum, ``subtotal`` the first two. Per-item amounts
(``line.*``, ``tax.*``) produce one journal line per invoice line or tax line and sum to their
part. Writing every amount as a vector over the parts lets the configuration check prove that a
rule balances for every document, not just for the examples someone tried.
"""

from __future__ import annotations

from collections.abc import Mapping

_INVOICE_LIKE: dict[str, dict[str, int]] = {
    "total": {"recognized": 1, "deferred": 1, "tax": 1},
    "subtotal": {"recognized": 1, "deferred": 1},
    "recognized": {"recognized": 1},
    "deferred": {"deferred": 1},
    "tax": {"tax": 1},
    "line.amount": {"recognized": 1, "deferred": 1},
    "line.recognized": {"recognized": 1},
    "line.deferred": {"deferred": 1},
    "tax.amount": {"tax": 1},
}

_SINGLE: dict[str, dict[str, int]] = {"amount": {"amount": 1}}

QUANTITIES: Mapping[str, Mapping[str, Mapping[str, int]]] = {
    "invoice.issued": _INVOICE_LIKE,
    "credit_memo.before_payment": _INVOICE_LIKE,
    "credit_memo.after_payment": _INVOICE_LIKE,
    "payment.succeeded": _SINGLE,
    "refund.succeeded": _SINGLE,
    "dispute.opened": _SINGLE,
    "dispute.won": _SINGLE,
    "dispute.lost": _SINGLE,
    "invoice.uncollectible": _SINGLE,
    "revenue.released": _SINGLE,
    "payout.paid": {
        "amount": {"net": 1},
        "net": {"net": 1},
        "fees": {"fees": 1},
        "gross": {"net": 1, "fees": 1},
    },
}

#: Billing events (and derived events) a posting rule can be declared for.
RULE_KEYS = frozenset(QUANTITIES)


def quantity_vector(rule_key: str, amount: str) -> Mapping[str, int]:
    """Return ``amount`` of ``rule_key`` as weights over independent parts; KeyError names the problem."""
    known = QUANTITIES[rule_key]
    if amount not in known:
        raise KeyError(f"unknown amount {amount!r} for {rule_key} (known: {', '.join(sorted(known))})")
    return known[amount]
