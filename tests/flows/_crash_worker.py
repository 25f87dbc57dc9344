"""A Syncline worker process with the quote-to-cash flows on the recorder connector (for crash tests)."""

from __future__ import annotations

import asyncio
import signal
import sys

from syncline.config import load_config
from syncline.connectors.base import ConnectorRegistry
from syncline.flows import QUOTE_TO_CASH
from syncline.runtime import Syncline
from tests.flows._recorder import RecorderConnector


async def main(path: str) -> None:
    syncline = Syncline(load_config(path), registry=ConnectorRegistry([RecorderConnector]), flows=QUOTE_TO_CASH)
    syncline.migrate()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await syncline.run_workers(stop)
    finally:
        syncline.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
