"""The worked example in docs/ledger.md is what the engine produces, not hand-typed numbers."""

from __future__ import annotations

from . import worked_example


def test_doc_tables_match_the_engine() -> None:
    documented = worked_example.section(worked_example.DOC.read_text())
    assert documented == worked_example.render(), (
        "docs/ledger.md drifted from the engine: run `python -m tests.ledger.worked_example --write` and review"
    )


def test_example_covers_the_month_the_issue_asks_for() -> None:
    rendered = worked_example.render()
    for needle in ("annual subscription", "upgrades", "partial refund", "payment fails", "pays out",
                   "→ USD at", "entity `eu`", "entity `us`", "revenue.released"):
        assert needle in rendered
