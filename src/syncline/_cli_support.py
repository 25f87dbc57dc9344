"""What every ``syncline`` sub-command shares: consoles, the --config option, one-line errors, the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import Engine

from syncline.errors import SynclineError

console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="project configuration file")]
DEFAULT_CONFIG = Path("syncline.yaml")


def fail(message: str) -> typer.Exit:
    """Print ``message`` as one readable error line; return the Exit (code 2) to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def open_store(config: Path) -> Engine:
    """Return the project's store, migrated, or exit with the configuration problem."""
    from syncline.config import load_config
    from syncline.store import create_store_engine, migrate

    try:
        engine = create_store_engine(load_config(config).store)
        migrate(engine)
    except SynclineError as exc:
        raise fail(str(exc)) from None
    return engine
