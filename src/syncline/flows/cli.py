"""``syncline tasks ...`` and ``syncline trace``: the flows seen from the terminal.

The CLI works on the store directly; the person at the terminal is the operator, named with
``--as`` in the audit log and on the task.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from syncline._cli_support import DEFAULT_CONFIG, ConfigOption, console, err, open_store
from syncline.errors import SynclineError

tasks_app = typer.Typer(help="Human tasks opened by flows: list, show, claim, complete.", no_args_is_help=True)

AsOption = Annotated[str | None, typer.Option("--as", help="your name, recorded in the audit log")]


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _run(action: Any) -> Any:
    try:
        return action()
    except SynclineError as exc:
        err.print(f"[bold red]error:[/] {exc} ({exc.code})", highlight=False)
        raise typer.Exit(code=1) from None


@tasks_app.command("list")
def tasks_list(
    config: ConfigOption = DEFAULT_CONFIG,
    state: Annotated[str, typer.Option(help="open, claimed, completed, cancelled or active")] = "active",
    kind: Annotated[str | None, typer.Option(help="task kind")] = None,
    role: Annotated[str | None, typer.Option(help="owner role")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List tasks (default: open and claimed)."""
    from syncline.flows.tasks import list_tasks

    engine = open_store(config)
    try:
        found = list_tasks(engine, state=state, kind=kind, owner_role=role, limit=1000)
    finally:
        engine.dispose()
    if as_json:
        console.print_json(json.dumps([task.as_dict() for task in found]))
        return
    table = Table("id", "kind", "role", "state", "due", "claimed by", "title")
    for task in found:
        table.add_row(task.id, task.kind, task.owner_role, task.state, _when(task.due_at), task.claimed_by or "-",
                      task.title)
    console.print(table)


@tasks_app.command("show")
def tasks_show(task_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Show one task with the data needed to decide and its allowed outcomes."""
    from syncline.flows.tasks import get_task

    engine = open_store(config)
    try:
        task = _run(lambda: get_task(engine, task_id))
    finally:
        engine.dispose()
    console.print_json(json.dumps(task.as_dict()))


@tasks_app.command("claim")
def tasks_claim(
    task_id: str,
    config: ConfigOption = DEFAULT_CONFIG,
    actor: AsOption = None,
    force: Annotated[bool, typer.Option(help="take over a task someone else claimed")] = False,
) -> None:
    """Claim a task."""
    from syncline.flows.tasks import claim_task

    who = actor or getpass.getuser()
    engine = open_store(config)
    try:
        task = _run(lambda: claim_task(engine, task_id, who, force=force))
    finally:
        engine.dispose()
    console.print(f"{task.id} claimed by {task.claimed_by}")


@tasks_app.command("complete")
def tasks_complete(
    task_id: str,
    outcome: Annotated[str, typer.Argument(help="one of the task's allowed outcomes")],
    config: ConfigOption = DEFAULT_CONFIG,
    reason: Annotated[str | None, typer.Option(help="why (recorded in the audit log)")] = None,
    actor: AsOption = None,
) -> None:
    """Decide a task; the flow waiting for it resumes."""
    from syncline.flows.tasks import complete_task

    who = actor or getpass.getuser()
    engine = open_store(config)
    try:
        task = _run(lambda: complete_task(engine, task_id, outcome, who, reason=reason))
    finally:
        engine.dispose()
    console.print(f"{task.id} completed by {task.completed_by}: {task.outcome}")


def trace_command(
    reference: Annotated[str, typer.Argument(help="opportunity id (canonical or the CRM's record id)")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the whole timeline of one deal across all systems."""
    from syncline.flows.trace import trace

    engine = open_store(config)
    try:
        found = trace(engine, reference)
    finally:
        engine.dispose()
    if as_json:
        console.print_json(json.dumps({"subject": found.subject, "instances": found.instances,
                                       "entries": [entry.__dict__ for entry in found.entries]}))
        return
    if not found.entries and not found.instances:
        err.print(f"nothing is known about {reference}")
        raise typer.Exit(code=1)
    for instance in found.instances:
        console.print(f"[bold]{instance['flow']} v{instance['version']}[/] {instance['id']}: {instance['state']} "
                      f"at {instance['step']} (correlation {instance['correlation_id']})", highlight=False)
    table = Table("time (UTC)", "stage", "system", "detail")
    for entry in found.entries:
        table.add_row(_when(entry.at), entry.stage, entry.connection or "syncline", entry.detail or "")
    console.print(table)
