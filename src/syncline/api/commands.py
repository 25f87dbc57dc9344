"""``syncline keys ...`` and ``syncline audit ...``: API keys, console users and the audit log."""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from syncline._cli_support import DEFAULT_CONFIG, ConfigOption, console, err, open_store
from syncline.api.auth import Principal, Role

__all__ = ["audit_app", "keys_app"]

keys_app = typer.Typer(help="API keys and console users.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)



def _local_admin() -> Principal:
    """Whoever runs the CLI on the host holds the store: record them as an admin by OS user name."""
    return Principal("cli", f"cli:{getpass.getuser()}", Role.ADMIN)


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else ""


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    role: Annotated[Role, typer.Option(help="viewer, operator or admin")] = Role.VIEWER,
    rate_per_minute: Annotated[int | None, typer.Option(help="requests per minute (default: configured)")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from syncline.api.auth import create_key
    from syncline.observe.audit import audit

    engine = open_store(config)
    try:
        principal = _local_admin()
        key_id, key = create_key(engine, name, role, created_by=principal.name, rate_per_minute=rate_per_minute)
        audit(engine, principal, "key.create", f"key:{key_id}", {"name": name, "role": str(role),
                                                                 "rate_per_minute": rate_per_minute})
    finally:
        engine.dispose()
    err.print(f"created key {key_id} ({role}) for {name}; store it now, it is not shown again:")
    # The key alone on stdout so it can be piped into a secret store.
    typer.echo(key)


@keys_app.command("list")
def list_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """List API keys (ids, names, roles; never the keys)."""
    from syncline.api.auth import list_keys

    engine = open_store(config)
    try:
        rows = list_keys(engine)
    finally:
        engine.dispose()
    table = Table(title="API keys")
    for column in ("key id", "name", "role", "rate/min", "created", "by", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["key_id"], row["name"], row["role"], str(row["rate_per_minute"] or "default"),
                      _when(row["created_at"]), row["created_by"], _when(row["revoked_at"]))
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key id shown by `syncline keys list`")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Revoke an API key at once."""
    from syncline.api.auth import revoke_key
    from syncline.observe.audit import audit

    engine = open_store(config)
    try:
        if not revoke_key(engine, key_id):
            err.print(f"[bold red]error:[/] no active key {key_id!r}")
            raise typer.Exit(code=2)
        audit(engine, _local_admin(), "key.revoke", f"key:{key_id}", {})
    finally:
        engine.dispose()
    console.print(f"key {key_id} revoked")


@keys_app.command("add-user")
def add_user(
    username: Annotated[str, typer.Argument(help="console login name")],
    role: Annotated[Role, typer.Option(help="viewer, operator or admin")] = Role.VIEWER,
    password_env: Annotated[str | None, typer.Option(help="read the password from this environment variable "
                                                          "instead of prompting")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Create or reset a console user (username and password login); the password is stored hashed."""
    from syncline.api.auth import create_user
    from syncline.observe.audit import audit

    password = os.environ.get(password_env, "") if password_env else typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    engine = open_store(config)
    try:
        try:
            create_user(engine, username, password, role)
        except ValueError as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None
        audit(engine, _local_admin(), "user.set", f"user:{username}", {"role": str(role)})
    finally:
        engine.dispose()
    console.print(f"console user {username} ({role}) saved")


@audit_app.command("verify")
def verify_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check the audit log's hash chain; exit 1 if any row was edited or deleted."""
    from syncline.observe.audit import verify

    engine = open_store(config)
    try:
        checked, breaks = verify(engine)
    finally:
        engine.dispose()
    if breaks:
        for item in breaks:
            err.print(f"[bold red]row {item.seq}:[/] {item.problem}", highlight=False)
        err.print(f"audit log TAMPERED: {len(breaks)} problem(s) in {checked} rows")
        raise typer.Exit(code=1)
    console.print(f"audit log intact: {checked} rows, chain verified")


@audit_app.command("list")
def list_entries(
    limit: Annotated[int, typer.Option(help="newest N entries")] = 20,
    action: Annotated[str | None, typer.Option(help="only this action, e.g. exceptions.retry")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Show the newest audit entries."""
    from syncline.observe.audit import entries

    engine = open_store(config)
    try:
        rows = entries(engine, action=action, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.__dict__, sort_keys=True))
        return
    table = Table(title="audit log (newest first)")
    for column in ("seq", "when", "who", "role", "action", "target", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row.seq), _when(row.at), row.actor_name, row.actor_role, row.action, row.target,
                      json.dumps(row.detail, sort_keys=True)[:120])
    console.print(table)
