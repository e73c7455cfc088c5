"""Pipeline work in worker processes: mapping never takes the event loop's interpreter.

A cpu_bound processor (parsing, mapping, the analyst steps, results building) holds the GIL
while it runs; in a thread of the engine's process it starves the event loop that reads
frames and writes ACKs. With ``[engine] pipeline_workers = N`` (default: one less than the
CPUs, at least 1) a pipeline sends its lanes to a pool of N worker processes instead; ``0``
keeps the threads of the engine's own interpreter (debugging).

* **Processors are never pickled.** A task carries a ``Recipe``: a module-level build
  function and its picklable arguments (for a channel: a snapshot of the configuration, as
  the plain data ``Config.model_dump`` gives, and the channel's name). Each worker builds
  the processor once per recipe ``key`` (a digest of the snapshot) and keeps it; a reload
  makes a new snapshot, hence a new key, and the workers build again. Outcomes (with their
  mapped domain events) come back pickled.
* **Order per key holds.** A lane (the messages of one key hash, in arrival order) is one
  task: one worker runs it front to back. The pipeline applies a batch's outcomes before it
  fetches the next batch.
* **A crashed worker loses nothing.** The pool breaks (``BrokenProcessPool``) and every task
  in flight fails, whoever caused it; the pool is replaced and the failed lanes run again,
  one message at a time, in a quarantine process of their own, so a crash there names its
  message. A message that kills its worker ``POISON_TRIES`` times ends ERROR with the reason;
  the others go on.
* **One pool per Python process,** shared by every engine in it (the test suite starts many):
  acquired on engine start, shut down (its processes joined) when the last engine stops.
  Processes start from a forkserver that has already imported the plugins (never ``fork``
  from a process with threads and an event loop), so a worker is ready in milliseconds; a
  worker whose engine process died exits on its own (``_watch_parent``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.logs import event
from engine.model import Message, Status
from engine.store.base import Outcome

log = logging.getLogger("radbridge.pipeline")
POISON_TRIES = 3  # crashes of a worker, on one message alone, before it ends ERROR
CACHED_PROCESSORS = 64  # per worker: recipes (channel and configuration) kept built
PARENT_POLL_SECS = 1.0


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a worker builds a processor: ``build(*args)``, where *build* is a module-level
    function (pickled by name) and *args* plain data. *key* names the result in a worker's
    cache: equal keys must build equal processors."""

    build: Callable[..., Any]
    args: tuple[Any, ...]
    key: str


def channel_recipe(config: Any, channel: str) -> Recipe:
    """The recipe of *channel*'s processor under *config* (any change to it: a new key).

    The snapshot carries what the engine loaded with the configuration beside its plain data:
    the directory it was read from and its lookup tables as read (a worker never reads a
    table file itself, so a file changed or gone since the load cannot differ between the
    engine and its workers)."""
    data = (config.model_dump(by_alias=True), str(getattr(config, "base_dir", "")),
            dict(getattr(config, "tables", {})) if getattr(config, "files_read", False) else {})
    snapshot = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    key = f"{hashlib.sha256(snapshot).hexdigest()[:16]}:{channel}"
    return Recipe(build_channel_processor, (snapshot, channel), key)


def build_channel_processor(snapshot: bytes, channel: str) -> Any:
    """In a worker: the configuration validated again from its snapshot (files and secrets
    are the engine's business: not looked at), with the engine's directory and lookup tables,
    and the channel's processor built from it."""
    from engine.config.base import CHECK_FILES
    from engine.config.schema import Config
    from engine.flow.bounds import bounded_processor

    data, base_dir, tables = pickle.loads(snapshot)
    config = Config.model_validate(data, context={CHECK_FILES: False})
    config.loaded_from(Path(base_dir), tables)
    return bounded_processor(config.channel_named(channel), config)


def default_workers() -> int:
    """One worker per CPU this process may use, less one for the event loop; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


# -- in the worker -----------------------------------------------------------------------------

_built: OrderedDict[str, Any] = OrderedDict()


def run_lane(processor: Any, msgs: list[Message]) -> list[Outcome]:
    """Each message's outcome, in order; a processor's exception fails its message only."""
    out = []
    for msg in msgs:
        try:
            out.append(processor.process(msg))
        except Exception as exc:  # a processor bug fails the message, never the pipeline
            out.append(Outcome(msg.id, Status.ERROR, error=f"{type(exc).__name__}: {exc}"))
    return out


def _processor(recipe: Recipe) -> Any:
    processor = _built.get(recipe.key)
    if processor is None:
        processor = recipe.build(*recipe.args)
        _built[recipe.key] = processor
        while len(_built) > CACHED_PROCESSORS:
            _built.popitem(last=False)
    _built.move_to_end(recipe.key)
    return processor


def work(recipe: Recipe, msgs: list[Message]) -> list[Outcome]:
    """The task a worker runs: one lane through the recipe's processor. A failure to build
    the processor raises (the batch stays RECEIVED and is tried again)."""
    return run_lane(_processor(recipe), msgs)


def _ready() -> int:
    return os.getpid()


def _init_worker(parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="watch-parent").start()


def _watch_parent(parent: int) -> None:
    """Exit when the engine's process is gone (killed: it could not shut the pool down)."""
    while True:
        time.sleep(PARENT_POLL_SECS)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the pid was reused by another user's process
            os._exit(0)


# -- in the engine -----------------------------------------------------------------------------

def _context() -> Any:
    """forkserver where there is one (preloaded with the plugins), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["engine.flow.worker_preload"])
        return ctx
    return multiprocessing.get_context("spawn")


def _start_executor(workers: int) -> tuple[ProcessPoolExecutor, set[int]]:
    """A pool with its processes started, and their pids (blocking: call it from a thread)."""
    executor = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_init_worker,
                                   initargs=(os.getpid(),))
    futures = [executor.submit(_ready) for _ in range(workers)]
    return executor, {fut.result() for fut in futures}


class WorkerPool:
    """The worker processes of one Python process (see the module docstring)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.users = 0
        self.restarts = 0  # pools replaced after a worker died
        self.pids: set[int] = set()  # of the processes started (some may have died since)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # not asyncio's: engines on other loops may share it

    async def _pool(self) -> ProcessPoolExecutor:
        executor = self._executor
        return executor if executor is not None else await asyncio.to_thread(self._ensure)

    def _ensure(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor, pids = _start_executor(self.workers)
                self.pids |= pids
            return self._executor

    def _broken(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
            self.restarts += 1
            event(log, "PIPE-311", "a pipeline worker process died; pool replaced",
                  workers=self.workers, level=logging.WARNING)
            executor.shutdown(wait=False, cancel_futures=True)

    async def run_lanes(self, recipe: Recipe, lanes: list[list[Message]]
                        ) -> list[list[Outcome]]:
        """Each lane's outcomes, in order. Lanes lost with a worker run again in quarantine.
        Raises what building the processor raised (nothing is applied then)."""
        executor, futures = await self._submit(recipe, lanes)
        done = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                    return_exceptions=True)
        out: list[list[Outcome]] = []
        for lane, res in zip(lanes, done, strict=True):
            if isinstance(res, BrokenProcessPool):
                self._broken(executor)
                res = await quarantine(recipe, lane)
            elif isinstance(res, BaseException):
                raise res
            out.append(res)
        return out

    async def _submit(self, recipe: Recipe, lanes: list[list[Message]]
                      ) -> tuple[ProcessPoolExecutor, list[Future[list[Outcome]]]]:
        """Every lane submitted to a pool that was not broken when they were: a worker that
        died while idle (the OOM killer) is noticed here, and its pool replaced."""
        while True:
            executor = await self._pool()
            try:
                return executor, [executor.submit(work, recipe, lane) for lane in lanes]
            except BrokenProcessPool:
                self._broken(executor)

    async def close(self) -> None:
        """Shut the processes down and wait for them (work in progress finishes first)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)


async def quarantine(recipe: Recipe, lane: list[Message]) -> list[Outcome]:
    """*lane* one message at a time in a process of its own: a crash names its message,
    which ends ERROR after ``POISON_TRIES`` crashes; the others are processed as usual."""
    executor = (await asyncio.to_thread(_start_executor, 1))[0]
    out: list[Outcome] = []
    try:
        for msg in lane:
            crashes = 0
            while True:
                try:
                    out += await asyncio.wrap_future(executor.submit(work, recipe, [msg]))
                    break
                except BrokenProcessPool:
                    crashes += 1
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = (await asyncio.to_thread(_start_executor, 1))[0]
                if crashes >= POISON_TRIES:
                    out.append(_poisoned(msg, crashes))
                    break
    finally:
        await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)
    return out


def _poisoned(msg: Message, crashes: int) -> Outcome:
    event(log, "PIPE-312", "message kills its worker process: ERROR", message=msg.id,
          channel=msg.channel, tries=crashes, level=logging.ERROR)
    return Outcome(msg.id, Status.ERROR,
                   error=f"poison: the worker process died {crashes} times processing it")


# -- one pool per process, shared by its engines ---------------------------------------------

_pools: dict[int, WorkerPool] = {}


def acquire(workers: int) -> WorkerPool:
    """The process's pool of *workers* processes (started on first use), for one more user."""
    pool = _pools.get(workers)
    if pool is None:
        pool = _pools[workers] = WorkerPool(workers)
    pool.users += 1
    return pool


async def release(pool: WorkerPool) -> None:
    """One user fewer; the last one shuts the processes down."""
    pool.users -= 1
    if pool.users <= 0 and _pools.get(pool.workers) is pool:
        del _pools[pool.workers]
        await pool.close()
