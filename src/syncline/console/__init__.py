"""The operations console: server-rendered pages at ``/console`` for finance operators and engineers."""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["mount_console"]


def mount_console(app: FastAPI) -> None:
    """Add the console's routes to ``app`` (``app.state.syncline`` must be set)."""
    from syncline.console.pages import mount

    mount(app)
