"""``radbridge run``: the process around the Engine (event loop, signals, ready line)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from typing import Any

from engine.config.schema import load_config
from engine.errors import ConfigErrors, RadbridgeError
from engine.logs import setup_logging

# The cyclic collector, tuned for a long-running server (issue 15). With the defaults (700, 10,
# 10) a full collection walked every object the engine made at start-up (about 240,000:
# configuration models, plugins, imported modules) and stopped the event loop, and with it the
# ACK path, for up to half a second several times a minute under load; young collections ran a
# thousand times a minute. Start-up objects live as long as the engine: frozen, no collection
# looks at them again. Young ones are collected every GC_THRESHOLDS[0] allocations instead of
# every 700 (cyclic garbage waits a little longer; reference counting still frees the rest).
# Models load after start-up (torch alone brings about 100,000 objects): frozen again once
# inference is ready.
GC_THRESHOLDS = (20_000, 20, 20)
INFERENCE_READY_WAIT_SECS = 300.0


def tune_gc() -> None:
    """Collect once, move every surviving object out of the collector's sight (``gc.freeze``)
    and set ``GC_THRESHOLDS``: call once the engine has started. Raises nothing."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _tune_gc_when_loaded(engine: Any) -> None:
    """``tune_gc`` again once inference has loaded its models (if it does, within a bound)."""
    ready = getattr(engine.inference, "ready", None)
    if ready is None:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ready.wait(), INFERENCE_READY_WAIT_SECS)
        tune_gc()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()


async def _main(config_path: str) -> int:
    from engine.flow.runtime import Engine

    config = load_config(config_path)
    engine = Engine(config, config_path=config_path)
    await engine.start()
    tune_gc()
    gc_task = asyncio.ensure_future(_tune_gc_when_loaded(engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()  # SIGHUP: reload channels.toml

    def on_hup() -> None:
        task = asyncio.ensure_future(_reload(engine))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    # One machine-readable line per listener, then READY: tests and scripts wait for it.
    for name, source in engine.sources.items():
        if source.address is not None:  # pollers listen on nothing
            host, port = source.address
            print(f"listening {name} {host}:{port}", flush=True)
    if engine.admin is not None and engine.admin.address is not None:
        host, port = engine.admin.address
        print(f"listening admin {host}:{port}", flush=True)
        print(engine.admin.dashboard_line(), flush=True)
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        gc_task.cancel()
        await engine.stop()
    return 0


async def _reload(engine: Any) -> None:
    """Lint channels.toml again and apply it: one ``reloaded:`` line on stdout saying what
    changed (scripts and tests wait for it), what did not apply on stderr; problems go to
    stderr and nothing changes."""
    try:
        plan = await engine.controls.reload_file()
        print(reload_line(plan), flush=True)
        for section in plan.restart_required:
            print(f"radbridge run: reload: [{section}] changed: applied at the next start",
                  file=sys.stderr)
        for name, why in plan.failed.items():
            print(f"radbridge run: reload: channel {name} did not start: {why}", file=sys.stderr)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    except Exception as exc:
        print(f"radbridge run: reload failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def reload_line(plan: Any) -> str:
    """``reloaded: changed ris, archive (steps swapped in place: ris); added -; removed -``."""
    def names(items: list[str]) -> str:
        return ", ".join(items) or "-"

    return (f"reloaded: changed {names(plan.changed)} (steps swapped in place: "
            f"{names(plan.swapped)}); added {names(plan.added)}; removed {names(plan.removed)}")


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
    except RadbridgeError as exc:  # e.g. weak admin credentials on a network address
        print(f"radbridge run: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
