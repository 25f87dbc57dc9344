"""The ``syncline`` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncline._cli_support import DEFAULT_CONFIG, ConfigOption, console, err, fail
from syncline.errors import SynclineError

app = typer.Typer(help="Syncline: quote-to-cash integration middleware.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
def _load(config: Path) -> Any:
    from syncline.config import load_config
    from syncline.runtime import Syncline

    try:
        syncline = Syncline(load_config(config))
        syncline.migrate()
    except SynclineError as exc:
        raise fail(str(exc)) from None
    return syncline


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="project folder to create")] = Path("."),
    force: Annotated[bool, typer.Option(help="overwrite an existing syncline.yaml")] = False,
) -> None:
    """Create a project folder with a commented syncline.yaml."""
    from syncline.project import TEMPLATE

    target = directory / "syncline.yaml"
    if target.exists() and not force:
        raise fail(f"{target} exists; pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(TEMPLATE)
    console.print(f"wrote {target}: set the secrets it references, then `syncline run -c {target}`")


def _serve(config: Path, *, workers: bool, host: str | None, port: int | None) -> None:
    import uvicorn

    from syncline.api import create_app
    from syncline.observe import configure_logging

    configure_logging()
    syncline = _load(config)
    api = syncline.config.api
    uvicorn.run(create_app(syncline, run_workers=workers), host=host or api.host, port=port or api.port,
                log_level="warning", access_log=False)


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="bind address (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config)")] = None,
) -> None:
    """Run the API and the workers in one process."""
    _serve(config, workers=True, host=host, port=port)


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="bind address (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config)")] = None,
) -> None:
    """Run the API only (webhook ingest); workers run elsewhere."""
    _serve(config, workers=False, host=host, port=port)


@app.command()
def worker(
    config: ConfigOption = DEFAULT_CONFIG,
    lease: Annotated[float | None, typer.Option(help="delivery lease in seconds")] = None,
) -> None:
    """Run the normalizer and delivery workers (no HTTP)."""
    from syncline.observe import configure_logging

    configure_logging()
    syncline = _load(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await syncline.run_workers(stop, lease_seconds=lease)

    asyncio.run(main())


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show inbox and outbox counts by state, open exceptions and paused connections."""
    from syncline.pipeline import operations

    syncline = _load(config)
    report = operations.status(syncline.engine)
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(title="outbox by connection")
    states = ["pending", "inflight", "done", "parked", "skipped"]
    table.add_column("connection")
    for state in states:
        table.add_column(state, justify="right")
    for connection, counts in sorted(report["outbox"].items()):
        paused = " (paused)" if connection in report["paused"] else ""
        table.add_row(connection + paused, *(str(counts.get(s, 0)) for s in states))
    console.print("inbox: " + ", ".join(f"{k} {v}" for k, v in sorted(report["inbox"].items())) or "inbox: empty")
    console.print(table)
    console.print(f"open exceptions: {report['open_exceptions']}")
    for connection, reason in report["paused"].items():
        console.print(f"[yellow]{connection} is paused:[/] {reason} — `syncline resume {connection}` when fixed")


def _filter(ids: list[int] | None, connection: str | None, error_class: str | None, correlation_id: str | None,
            since_hours: float | None) -> Any:
    from syncline.pipeline.operations import Filter

    since = time.time() - since_hours * 3600 if since_hours else None
    return Filter(ids=tuple(ids or ()), connection=connection, error_class=error_class,
                  correlation_id=correlation_id, since=since)


@app.command()
def retry(
    config: ConfigOption = DEFAULT_CONFIG,
    delivery: Annotated[list[int] | None, typer.Option("--id", help="delivery id (repeatable)")] = None,
    connection: Annotated[str | None, typer.Option(help="only this target connection")] = None,
    error_class: Annotated[str | None, typer.Option(help="only this error class, e.g. data_quality")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="only this business transaction")] = None,
    inbox: Annotated[bool, typer.Option(help="re-decode parked inbox events instead")] = False,
) -> None:
    """Retry parked deliveries, one by one (--id) or in bulk by filter."""
    from syncline.pipeline import operations

    syncline = _load(config)
    if inbox:
        count = operations.retry_parked_inbox(syncline.engine, connection)
        console.print(f"re-queued {count} parked inbox events for decoding")
        return
    where = _filter(delivery, connection, error_class, correlation_id, None)
    count = operations.retry_parked(syncline.engine, where)
    console.print(f"re-queued {count} parked deliveries; the workers send them within the connection budgets")


@app.command()
def replay(
    config: ConfigOption = DEFAULT_CONFIG,
    delivery: Annotated[list[int] | None, typer.Option("--id", help="delivery id (repeatable)")] = None,
    connection: Annotated[str | None, typer.Option(help="only this target connection")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="only this business transaction")] = None,
    since_hours: Annotated[float | None, typer.Option(help="only rows created in the last N hours")] = None,
) -> None:
    """Deliver already-delivered rows again (same idempotency keys: no duplicates at the vendor)."""
    from syncline.pipeline import operations

    if not (delivery or connection or correlation_id or since_hours):
        raise fail("replay needs a filter: --id, --connection, --correlation-id or --since-hours")
    syncline = _load(config)
    count = operations.replay(syncline.engine, _filter(delivery, connection, None, correlation_id, since_hours))
    console.print(f"re-queued {count} deliveries for replay")


@app.command()
def pause(
    connection: Annotated[str, typer.Argument(help="connection to pause")],
    reason: Annotated[str, typer.Option(help="why (shown in status)")] = "paused by operator",
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Stop deliveries to a connection; rows wait in the outbox."""
    from syncline.pipeline import operations

    syncline = _load(config)
    if connection not in syncline.connectors:
        raise fail(f"no connection named {connection!r}")
    operations.pause(syncline.engine, connection, reason)
    console.print(f"{connection} paused")


@app.command()
def resume(
    connection: Annotated[str, typer.Argument(help="connection to resume")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Resume deliveries to a paused connection."""
    from syncline.pipeline import operations

    syncline = _load(config)
    if connection not in syncline.connectors:
        raise fail(f"no connection named {connection!r}")
    operations.resume(syncline.engine, connection)
    console.print(f"{connection} resumed")


@app.command("catch-up")
def catch_up_command(
    connection: Annotated[str, typer.Argument(help="connection to fetch missed events from")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Fetch events the vendor holds but never delivered (e.g. Stripe List Events) into the inbox."""
    from syncline.pipeline.catchup import catch_up

    syncline = _load(config)
    connector = syncline.connectors.get(connection)
    if connector is None:
        raise fail(f"no connection named {connection!r}")
    try:
        seen, new = asyncio.run(
            catch_up(syncline.engine, connector, syncline.limits[connection], syncline.budgets[connection])
        )
    except SynclineError as exc:
        raise fail(str(exc)) from None
    console.print(f"{connection}: {seen} events listed, {new} were missing and are now in the inbox")


@app.command()
def schemas(
    directory: Annotated[Path, typer.Argument(help="folder to write <type>.v<n>.json files into")],
) -> None:
    """Export the JSON Schema of every canonical event type."""
    from syncline.canonical import json_schemas

    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (directory / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n")
    console.print(f"wrote {len(json_schemas())} schemas to {directory}")


@app.command()
def demo(
    invoices: Annotated[int, typer.Option(help="Stripe invoices to create, finalize and pay")] = 200,
    workdir: Annotated[Path | None, typer.Option(help="folder for the demo store (default: a temp dir)")] = None,
    concurrency: Annotated[int, typer.Option(help="NetSuite sandbox concurrency limit = our budget")] = 5,
) -> None:
    """Run Stripe → Syncline → NetSuite on local sandboxes and print what happened."""
    from syncline.api import create_app
    from syncline.demo import DemoEnvironment, drive_stripe, sandbox_json
    from syncline.observe import configure_logging
    from syncline.pipeline import operations
    from syncline.runtime import Syncline
    from syncline.sandbox import Faults, ServerThread

    configure_logging(level="ERROR")
    folder = workdir or Path(tempfile.mkdtemp(prefix="syncline-demo-"))
    env = DemoEnvironment(
        folder, netsuite_concurrency=concurrency,
        netsuite_faults=Faults(server_error_rate=0.03, rate_limited_rate=0.01, timeout_rate=0.01,
                               latency_seconds=0.01, hang_seconds=2.5, seed=1),
        stripe_webhooks={"duplicate_rate": 0.05, "shuffle_window": 4},
    ).start()
    syncline = Syncline(env.config())
    syncline.migrate()
    api = ServerThread(create_app(syncline, run_workers=True)).start()
    env.subscribe(api.url)
    console.print(f"sandboxes: Stripe {env.stripe_server.url}, NetSuite {env.netsuite_server.url}; "
                  f"Syncline {api.url}; store {env.store}")
    started = time.monotonic()
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            drive = progress.add_task("Stripe: invoices created and paid", total=invoices)
            result = asyncio.run(drive_stripe(
                env.stripe_server.url, env.env["SYNCLINE_DEMO_STRIPE_KEY"], invoices=invoices,
                on_progress=lambda n: progress.advance(drive, n),
            ))
            deliver = progress.add_task("NetSuite: invoices delivered", total=invoices)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                stats = sandbox_json(env.netsuite_server.url, "/_sandbox/stats")
                progress.update(deliver, completed=min(invoices, stats["records"].get("invoice", 0)))
                idle = sandbox_json(env.stripe_server.url, "/_sandbox/webhooks/idle").get("idle")
                if idle and not any(syncline.backlog().values()):
                    break
                time.sleep(0.25)
        elapsed = time.monotonic() - started
        report = operations.status(syncline.engine)
        ns = sandbox_json(env.netsuite_server.url, "/_sandbox/stats")
        stripe = sandbox_json(env.stripe_server.url, "/_sandbox/stats")
        duplicates = sum(
            1 for invoice_id in result.invoices[:50]
            if sandbox_json(env.netsuite_server.url, f"/_sandbox/records?type=invoice&externalId={_eid(invoice_id)}")
            ["count"] != 1
        )
        outbox = report["outbox"].get("netsuite", {})
        table = Table(title=f"syncline demo: {invoices} invoices in {elapsed:.1f}s")
        table.add_column("what")
        table.add_column("count", justify="right")
        webhooks = stripe.get("webhooks", {})
        rows = [
            ("Stripe events created", stripe.get("events", 0)),
            ("webhook deliveries received (incl. duplicates and retries)", webhooks.get("succeeded", 0)),
            ("events stored in the inbox", sum(report["inbox"].values())),
            ("duplicate webhooks dropped by the inbox", webhooks.get("succeeded", 0) - sum(report["inbox"].values())),
            ("events ignored (no canonical meaning)", report["inbox"].get("ignored", 0)),
            ("deliveries done in NetSuite", outbox.get("done", 0)),
            ("stale snapshots skipped", outbox.get("skipped", 0)),
            ("parked for a person", outbox.get("parked", 0) + report["inbox"].get("parked", 0)),
            ("NetSuite creates / updates", f"{ns.get('creates', 0)} / {ns.get('updates', 0)}"),
            ("NetSuite faults injected (5xx, 429, timeouts)", sum(ns.get("faults", {}).values())),
            ("NetSuite requests over its concurrency limit", ns.get("over_limit", 0)),
            ("NetSuite invoices", ns["records"].get("invoice", 0)),
            ("sampled invoices not exactly once in NetSuite", duplicates),
        ]
        for what, count in rows:
            table.add_row(what, str(count))
        console.print(table)
        if duplicates or ns["records"].get("invoice", 0) != invoices:
            raise fail("some invoices did not reach NetSuite exactly once; see `syncline status`")
    finally:
        api.stop()
        syncline.close()
        env.stop()


def _eid(stripe_invoice_id: str) -> str:
    from syncline.canonical import canonical_id

    return canonical_id("stripe", "invoice", stripe_invoice_id)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="smaller volumes (a smoke run)")] = False,
) -> None:
    """Measure ingest, normalize and delivery throughput on this machine."""
    from syncline.bench import run_benchmarks
    from syncline.observe import configure_logging

    # Per-record debug lines would measure the terminal, not the pipeline.
    configure_logging(level="WARNING")
    run_benchmarks(console, quick=quick)


from syncline.api.commands import audit_app, keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
from syncline.ledger.cli import ledger_app  # noqa: E402

app.add_typer(ledger_app, name="ledger")
from syncline.flows.cli import tasks_app, trace_command  # noqa: E402

app.add_typer(tasks_app, name="tasks")
app.command("trace")(trace_command)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except SynclineError as exc:
        err.print(f"error: {exc}")
        sys.exit(2)
