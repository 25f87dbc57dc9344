"""Structured logging: JSON lines (or console in a terminal) through structlog."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


class _StreamLoggerFactory:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def __call__(self, *args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(self.stream or sys.stderr)


def configure_logging(*, json: bool = True, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure structlog to emit one structured line per event, to ``stream`` or the current stderr."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # Resolve sys.stderr at each call, not once: a stream swapped or closed after
        # configuration (test capture, daemonising) must not turn a log line into an exception.
        logger_factory=_StreamLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
