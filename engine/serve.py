"""``radbridge run``: the process around the Engine (event loop, signals, ready line)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from engine.config import load_config
from engine.errors import ConfigErrors
from engine.logs import setup_logging


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()


async def _main(config_path: str) -> int:
    from engine.runtime import Engine

    config = load_config(config_path)
    engine = Engine(config)
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # One machine-readable line per listener, then READY: tests and scripts wait for it.
    for name, source in engine.sources.items():
        host, port = source.address
        print(f"listening {name} {host}:{port}", flush=True)
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        await engine.stop()
    return 0


def serve(config_path: str, log_level: str = "INFO") -> int:
    setup_logging(log_level)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_main(config_path))
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
