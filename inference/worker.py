"""``radbridge worker``: an inference worker process (for GPU hosts).

It opens the same store as the engine, loads the configured models and claims
inference jobs from the durable queue; it listens on no socket. An engine with
``[engine] inference = "workers"`` routes its cases into that queue and runs
no model itself. When the last job of a case is final, the worker stores the
case's AI report on each ``ai_results`` channel (like the engine would); the
engine's results pipeline picks it up from the store.

Several workers on one store need the claims to be exclusive across
processes: the PostgreSQL store claims with ``FOR UPDATE SKIP LOCKED``. A
worker that starts resets jobs left running (a crash of the previous run), so
on SQLite run one worker per store.
"""

from __future__ import annotations

import asyncio
import signal

from engine.config.schema import load_config
from engine.logs import event, setup_logging
from engine.results.channel import ResultsIngest
from engine.store.base import open_store


async def run_worker(config_path: str) -> int:
    import logging

    from inference.service import InferenceService, ResultListener

    log = logging.getLogger("radbridge.worker")
    config = load_config(config_path)
    store = open_store(config.store.url)
    await store.open()
    listeners: list[ResultListener] = [
        ResultsIngest(ch.name, store, config.model, lambda: None).submit
        for ch in config.channel
        if ch.enabled and ch.source is not None and ch.source.type == "ai_results"]
    service = InferenceService(config, store, listeners)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        await service.ready.wait()
        event(log, "WRK-101", "worker ready", models=len(service.models),
              results_channels=len(listeners))
        print("READY", flush=True)
        await stop.wait()
    finally:
        await service.stop()
        await store.close()
    return 0


def main(config_path: str, log_level: str = "INFO") -> int:
    setup_logging(log_level)
    return asyncio.run(run_worker(config_path))
