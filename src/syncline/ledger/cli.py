"""``syncline ledger ...``: load rates and periods, release summaries and revenue, drill down."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from syncline._cli_support import DEFAULT_CONFIG, ConfigOption, console, fail
from syncline.errors import SynclineError

ledger_app = typer.Typer(help="The ledger: journal entries, FX rates, accounting periods.", no_args_is_help=True)
periods_app = typer.Typer(help="Accounting period calendars.", no_args_is_help=True)
rates_app = typer.Typer(help="Exchange rates.", no_args_is_help=True)
ledger_app.add_typer(periods_app, name="periods")
ledger_app.add_typer(rates_app, name="rates")



def _open(config: Path) -> tuple[Any, Any]:
    """Return (Syncline, LedgerStore) for the project, or exit with the configuration problem."""
    from syncline.config import load_config
    from syncline.ledger.store import LedgerStore
    from syncline.runtime import Syncline

    try:
        syncline = Syncline(load_config(config))
        syncline.migrate()
    except SynclineError as exc:
        raise fail(str(exc)) from None
    ledger = syncline.config.ledger
    if ledger is None:
        syncline.close()
        raise fail(f"{config} has no ledger: section")
    if ledger.erp is not None and ledger.erp.connection not in syncline.connectors:
        syncline.close()
        raise fail(f"ledger.erp.connection {ledger.erp.connection!r} is not a configured connection")
    return syncline, LedgerStore(syncline.engine, ledger)


@rates_app.command("load")
def rates_load(csv_path: Annotated[Path, typer.Argument(help="CSV with date,base,quote,rate")],
               config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Load exchange rates from a CSV file into the store (replacing same pair and date)."""
    from syncline.ledger.fx import read_rates_csv

    try:
        rates = read_rates_csv(csv_path)
    except (SynclineError, OSError) as exc:
        raise fail(str(exc)) from None
    syncline, store = _open(config)
    try:
        console.print(f"loaded {store.load_rates(rates)} rates from {csv_path}")
    finally:
        syncline.close()


@periods_app.command("load")
def periods_load(csv_path: Annotated[Path, typer.Argument(help="CSV with entity,id,name,start,end,status")],
                 config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Load accounting periods from a CSV file (status: open, soft_closed or closed)."""
    from syncline.ledger.calendar import Period, PeriodStatus

    try:
        with csv_path.open(newline="") as handle:
            periods = [Period(row["entity"], row["id"], row["name"], date.fromisoformat(row["start"]),
                              date.fromisoformat(row["end"]), PeriodStatus(row["status"]))
                       for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError) as exc:
        raise fail(f"{csv_path}: cannot read periods: {exc}") from None
    syncline, store = _open(config)
    try:
        console.print(f"loaded {store.load_periods(periods, origin='file')} periods from {csv_path}")
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        syncline.close()


@periods_app.command("sync")
def periods_sync(
    connection: Annotated[str, typer.Argument(help="ERP connection whose calendar to load")],
    entity: Annotated[list[str] | None, typer.Option(help="entities the calendar applies to (default: all)")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Load the ERP's accounting periods (open/closed) into the ledger's calendar."""
    syncline, store = _open(config)
    try:
        periods = asyncio.run(_read_erp(syncline, connection, entity or list(store.config.entities)))
        console.print(f"loaded {store.load_periods(periods, origin=connection)} periods from {connection}")
    except SynclineError as exc:
        raise fail(str(exc)) from None
    finally:
        syncline.close()


@periods_app.command("check")
def periods_check(
    connection: Annotated[str, typer.Argument(help="ERP connection to compare the calendar with")],
    entity: Annotated[list[str] | None, typer.Option(help="entities the calendar applies to (default: all)")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Compare the ledger's calendar with the ERP's; exit 1 and list the differences if any."""
    syncline, store = _open(config)
    try:
        erp = asyncio.run(_read_erp(syncline, connection, entity or list(store.config.entities)))
        with syncline.engine.connect() as conn:
            calendar = store.calendar(conn)
    except SynclineError as exc:
        raise fail(str(exc)) from None
    finally:
        syncline.close()
    differences = calendar_differences(calendar, erp)
    for line in differences:
        console.print(line, highlight=False, soft_wrap=True)
    if differences:
        raise typer.Exit(code=1)
    console.print(f"calendar matches {connection} ({len(erp)} periods)")


def calendar_differences(calendar: Any, erp: list[Any]) -> list[str]:
    """Return one line per period whose dates or status differ between Syncline and the ERP."""
    out: list[str] = []
    for period in erp:
        mine = next((p for p in calendar.periods(period.entity) if p.id == period.id), None)
        if mine is None:
            out.append(f"{period.entity} {period.name} ({period.id}): missing in Syncline")
        elif (mine.start, mine.end, mine.status) != (period.start, period.end, period.status):
            out.append(f"{period.entity} {period.name} ({period.id}): Syncline {mine.start}..{mine.end} "
                       f"{mine.status.value}, ERP {period.start}..{period.end} {period.status.value}")
    return out


async def _read_erp(syncline: Any, connection: str, entities: list[str]) -> list[Any]:
    from syncline.ledger.calendar import Period, PeriodStatus, regular_periods

    connector = syncline.connectors.get(connection)
    if connector is None:
        raise SynclineError(f"unknown connection {connection!r}", code="connection_unknown")
    reader = getattr(connector, "accounting_periods", None)
    if reader is None:
        raise SynclineError(f"{connector.vendor} cannot list accounting periods", code="operation_unknown")
    async with connector.http_client(syncline.limits[connection]) as http:
        found = await reader(http)
    return regular_periods(
        Period(name, p.id, p.name, p.start, p.end, PeriodStatus.CLOSED if p.closed else PeriodStatus.OPEN)
        for name in entities for p in found
    )


@ledger_app.command("release")
def release(
    through: Annotated[str | None, typer.Option(help="last day to release (default: yesterday, UTC)")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Release revenue schedule slices and daily summaries up to a day, into the outbox."""
    day = date.fromisoformat(through) if through else date.fromordinal(datetime.now(UTC).date().toordinal() - 1)
    syncline, store = _open(config)
    try:
        with syncline.engine.begin() as conn:
            revenue = store.release_revenue(conn, day)
        with syncline.engine.begin() as conn:
            summaries = store.release_summaries(conn, day)
    finally:
        syncline.close()
    console.print(f"through {day}: {revenue.entries} revenue releases ({revenue.held} held), "
                  f"{summaries.summaries} summaries of {summaries.entries} entries")


@ledger_app.command("drill-down")
def drill_down(summary_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """List the detailed entries and source documents behind a summarised journal entry."""
    syncline, store = _open(config)
    try:
        with syncline.engine.connect() as conn:
            entries = store.drill_down(conn, summary_id)
    finally:
        syncline.close()
    if not entries:
        raise fail(f"no entries folded into {summary_id}")
    table = Table("entry", "date", "entity", "currency", "source documents", "memo")
    for entry in entries:
        table.add_row(entry.id, str(entry.posting_date), entry.legal_entity_id, entry.currency,
                      ", ".join(entry.source_documents), entry.memo or "")
    console.print(table)


@ledger_app.command("post-held")
def post_held(
    entry_id: Annotated[str, typer.Argument(help="id of the held journal entry (see the exception's ref)")],
    period: Annotated[str, typer.Option(help="period id to post it into (not closed)")],
    by: Annotated[str, typer.Option(help="who decided, for the entry memo and the exception")] = "operator",
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Post an entry held for a closed period into the period finance chose."""
    syncline, store = _open(config)
    try:
        with syncline.engine.begin() as conn:
            entry = store.post_held(conn, entry_id, period, by=by)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        syncline.close()
    console.print(f"{entry.id}: posted {entry.posting_date} into period {entry.posting_period}")
