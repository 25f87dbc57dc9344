"""Ledger posting throughput: detailed versus summarised, engine alone and through the store.

    python benchmarks/ledger_bench.py --invoices 100000            # SQLite file in a temp folder
    python benchmarks/ledger_bench.py --invoices 20000 --store postgresql://postgres@127.0.0.1:5432/ledger_bench

Invoices are synthetic (:mod:`syncline.ledger.synthetic`: USD/EUR/GBP, two entities, a third of
the lines deferred on schedules, half taxed) and built before the clock starts. Figures:

* engine: ``Ledger.post`` only (pure function, no I/O); summarised adds ``summarise``;
* store: ``LedgerStore.post`` in transactions of ``--batch`` invoices (book look-ups, entries,
  schedules, outbox rows); summarised writes the detailed entries for drill-down and then
  releases the day summaries into the outbox.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from sqlalchemy import func, select

from syncline.ledger import (
    Book,
    Calendar,
    Ledger,
    LedgerConfig,
    LedgerStore,
    Period,
    PeriodStatus,
    summarise,
    synthetic,
)
from syncline.ledger.engine import BillingEvent
from syncline.store import create_store_engine, deliveries, migrate

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "ledger" / "data" / "ledger.yaml"


def _config(mode: str) -> LedgerConfig:
    import yaml

    raw = yaml.safe_load(CONFIG.read_text())
    raw["erp"] = {"connection": "netsuite", "mode": mode}
    return LedgerConfig.model_validate(raw)


def _periods() -> list[Period]:
    out = []
    for entity in ("us", "eu"):
        for year in (2026, 2027, 2028):
            for month in range(1, 13):
                start = date(year, month, 1)
                end = date.fromordinal(date(year + (month == 12), month % 12 + 1, 1).toordinal() - 1)
                out.append(Period(entity, f"{entity}-{year}-{month:02d}", start.strftime("%b %Y"), start, end,
                                  PeriodStatus.OPEN))
    return out


def engine_only(events: Sequence[BillingEvent], mode: str) -> float:
    """Return invoices/s of the pure engine (plus summarising in summarised mode)."""
    ledger = Ledger(_config(mode), synthetic.rates(), Calendar(_periods()))
    started = time.perf_counter()
    posting = ledger.post(events, Book())
    if mode == "summarised":
        summarise(posting.entries)
    return len(events) / (time.perf_counter() - started)


def through_store(events: Sequence[BillingEvent], mode: str, url: str, batch: int) -> tuple[float, int]:
    """Return (invoices/s, outbox rows) posting through the store in transactions of ``batch``."""
    engine = create_store_engine(url)
    try:
        migrate(engine)
        store = LedgerStore(engine, _config(mode))
        store.load_rates(synthetic.rates().all())
        store.load_periods(_periods(), origin="bench")
        started = time.perf_counter()
        for offset in range(0, len(events), batch):
            with engine.begin() as conn:
                store.post(conn, events[offset:offset + batch])
        if mode == "summarised":
            with engine.begin() as conn:
                store.release_summaries(conn, date(2030, 1, 1))
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            outbox = int(conn.execute(select(func.count()).select_from(deliveries)).scalar_one())
        return len(events) / elapsed, outbox
    finally:
        engine.dispose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--store", help="PostgreSQL URL (emptied first); default a SQLite file in a temp folder")
    parser.add_argument("--engine-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="engine runs per mode (alternating)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    events = synthetic.invoices(args.invoices)
    print(f"built {len(events)} invoices in {time.perf_counter() - started:.1f} s "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    # The machine is shared: alternate the modes and show the best and the median of the runs.
    runs: dict[str, list[float]] = {"detailed": [], "summarised": []}
    for _ in range(args.repeat):
        for mode in runs:
            runs[mode].append(engine_only(events, mode))
    for mode, rates in runs.items():
        print(f"engine   {mode:<10} {max(rates):>9,.0f} invoices/s best, {statistics.median(rates):,.0f} median "
              f"of {len(rates)}")
    if args.engine_only:
        return
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("detailed", "summarised"):
            if args.store:
                from tests.conftest import reset_postgres

                url = reset_postgres(args.store)
            else:
                url = f"sqlite:///{Path(folder) / f'{mode}.db'}"
            rate, outbox = through_store(events, mode, url, args.batch)
            print(f"store    {mode:<10} {rate:>9,.0f} invoices/s  ({outbox} outbox rows, {url.split(':')[0]}, "
                  f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
