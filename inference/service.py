"""The glue between the engine and inference: cases in, jobs through, results out.

``InferenceService`` is started by ``Engine.start`` (through the ``inference`` service
registered here) when the configuration has models or routes; ``radbridge worker``
(``inference.worker``) runs one on a GPU host:

1. load the models (a thread; failures are recorded in ``model_loads``, and
   the jobs for such a model fail with the reason), one ``DeviceWorker`` thread
   per device, one ``Batcher`` per model, a preprocessing thread pool;
2. recovery: running jobs back to queued; cases never routed are routed;
   cases whose jobs all finished but whose listeners were never told are told;
3. ``on_cases`` (an ``Engine.case_listeners`` entry) routes each new case and
   persists its jobs (or its ``no_model`` job) before anything runs; ingest
   never waits for any of it;
4. the scheduler claims queued jobs, STAT lane first, up to ``max_inflight`` at a
   time (the bounded in-memory queue: the rest waits durably in the store);
5. when every job of a case is final, ``Engine.result_listeners`` are called
   with a ``CaseResult`` (the case, its findings, its jobs).

Result listeners are observers: ``listener(result)`` may return an awaitable,
which is awaited. The case is marked notified only after they all returned
without an exception; a listener that failed (INF-403: the results channel
could not store the report, say) is told again by the sweep every
``renotify_secs`` and at the next start, so a listener must be idempotent
(at least once). Shadow-mode findings arrive with ``finding.mode == "shadow"``:
never send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from engine import registry
from engine.logs import event
from engine.store.clinical import CaseRow
from engine.store.inference import CaseResult, JobRow, JobState
from engine.store.protocols import JobQueue

if TYPE_CHECKING:
    from engine.config.schema import Config

log = logging.getLogger("radbridge.inference")

ResultListener = Callable[[CaseResult], Any]
ROUTED_STATES = ("ready", "study_only")


class InferenceService:
    reverify_secs = 15.0  # a deferred remote model's server is tried this often
    retry_backoff_secs = 2.0  # a failed attempt waits this long, doubled each time

    def __init__(self, config: Config, store: JobQueue, result_listeners: list[ResultListener],
                 *, preprocess_threads: int = 2, max_inflight: int | None = None,
                 retry_backoff_secs: float | None = None, poll_secs: float = 1.0,
                 loader: Callable[[list[Any]], Any] | None = None,
                 run_jobs: bool = True) -> None:
        from inference.routing import Router

        self.config = config
        self.store: JobQueue = store
        self.result_listeners = result_listeners
        self.router = Router(config.route)
        self.pool = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="radbridge-prep")
        self.max_inflight = max_inflight or max(8, 2 * sum(m.batch_max for m in config.model))
        if retry_backoff_secs is not None:
            self.retry_backoff_secs = retry_backoff_secs
        self.poll_secs = poll_secs
        self.loader = loader  # default: inference.registry.load_all (tests pass fakes)
        self.run_jobs = run_jobs  # False: route and enqueue only (workers run the jobs)
        self.models: dict[str, Any] = {}
        self.workers: dict[str, Any] = {}
        self.batchers: dict[str, Any] = {}
        self.runner: Any = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._notifying: set[int] = set()
        self.renotify_secs = 30.0
        self.ready = asyncio.Event()  # set once the models are loaded and jobs run

    async def start(self) -> None:
        """Returns at once: models load in the background (torch import, weights, dry runs)
        while cases are already routed and their jobs persisted."""
        self._spawn(self._boot(), self._tasks)

    async def _boot(self) -> None:
        from inference.dispatch import Batcher, DeviceWorker
        from inference.registry import load_all
        from inference.runner import JobRunner

        if not self.run_jobs:
            event(log, "INF-104", "inference by workers: routing cases only")
            self.ready.set()
            self._spawn(self._recover(), self._tasks)
            return
        loader = self.loader or load_all
        models, failed, loads = await asyncio.to_thread(loader, list(self.config.model))
        for load in loads:
            await self.store.record_model_load(load)
            if load.status == "deferred":
                self._spawn(self._verify_deferred(models[load.name], load), self._tasks)
        loop = asyncio.get_running_loop()
        for model in models.values():
            if model.device not in self.workers:
                self.workers[model.device] = DeviceWorker(model.device, loop)
                self.workers[model.device].start()
            self.batchers[model.name] = Batcher(model, self.workers[model.device])
        self.models = models
        self.runner = JobRunner(self.store, models, failed, self.batchers, self.pool,
                                self.retry_backoff_secs)
        reset = await self.store.reset_running_jobs()
        event(log, "INF-102", "inference ready", models=len(models), failed=len(failed) or None,
              devices=",".join(sorted(self.workers)) or None, recovered=reset or None)
        self.ready.set()
        self._spawn(self._recover(), self._tasks)
        self._spawn(self._schedule(), self._tasks)

    async def _verify_deferred(self, model: Any, load: Any) -> None:
        """A remote model whose server was down at start: check it until the server answers,
        then record the load (with the server's metadata checksum) or why it failed. Its jobs
        meanwhile retry with backoff (the first batch also verifies)."""
        from dataclasses import replace

        from inference.errors import ModelLoadError, TransientInferenceError

        while True:
            try:
                await asyncio.to_thread(model.verify)
            except TransientInferenceError:
                await asyncio.sleep(self.reverify_secs)
                continue
            except ModelLoadError as exc:
                await self.store.record_model_load(replace(load, status="failed",
                                                           error=str(exc), at=0.0))
                return
            await self.store.record_model_load(replace(load, status="loaded",
                                                       checksum=model.checksum, at=0.0))
            return

    def on_cases(self, cases: Sequence[CaseRow]) -> None:
        """An ``Engine.case_listeners`` entry: route new cases (in a task; never blocks)."""
        for case in cases:
            if case.state in ROUTED_STATES:
                self._spawn(self._route(case.id), self._tasks)

    def wake(self) -> None:
        self._wake.set()

    def _spawn(self, coro: Any, into: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)
        return task

    async def _recover(self) -> None:
        for case_id in await self.store.cases_without_jobs():
            await self._route(case_id)
        while True:
            try:
                pending = await self.store.unnotified_cases()
            except Exception as exc:
                event(log, "INF-407", "cannot read unnotified cases", reason=type(exc).__name__,
                      level=logging.ERROR)
                pending = []
            for case_id in pending:
                if case_id not in self._notifying:
                    await self._notify(case_id)
            await asyncio.sleep(self.renotify_secs)

    async def _route(self, case_id: int) -> None:
        try:
            case = await self.store.inference_case(case_id)
            if case is None:
                return
            plan = self.router.route(case)
            jobs = await self.store.enqueue_jobs(case_id, plan.models, plan.lane, plan.reason)
        except Exception as exc:  # store trouble: the case is routed again at the next start
            event(log, "INF-404", "routing failed", case=case_id, reason=type(exc).__name__,
                  level=logging.ERROR)
            return
        event(log, "INF-201", "case routed", case=case_id, models=",".join(plan.models) or None,
              lane="stat" if plan.lane == 0 else "routine", no_model=plan.reason and "yes")
        if jobs and all(j.state == JobState.NO_MODEL for j in jobs):
            await self._notify(case_id)
        self.wake()

    async def _schedule(self) -> None:
        while True:
            self._wake.clear()  # before claiming: a wake meanwhile is not lost
            free = self.max_inflight - len(self._inflight)
            jobs: list[JobRow] = []
            if free > 0:
                try:
                    jobs = await self.store.claim_jobs(free, time.time())
                except Exception as exc:
                    event(log, "INF-405", "claiming jobs failed", reason=type(exc).__name__,
                          level=logging.ERROR)
            for job in jobs:
                self._spawn(self._run(job), self._inflight)
            # Full, or nothing due: a finished job, a new case or the poll (retries) wakes us.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_secs)

    async def _run(self, job: JobRow) -> None:
        try:
            final = await self.runner.run(job)
        except Exception as exc:  # the store failed under us: the job is re-driven at start
            event(log, "INF-406", "job not recorded", job=job.id, reason=type(exc).__name__,
                  level=logging.ERROR)
            final = False
        finally:
            self.wake()
        if final:
            await self._notify(job.case_id)

    async def _notify(self, case_id: int) -> None:
        if case_id in self._notifying:
            return
        self._notifying.add(case_id)
        try:
            await self._notify_once(case_id)
        finally:
            self._notifying.discard(case_id)

    async def _notify_once(self, case_id: int) -> None:
        case = await self.store.inference_case(case_id)
        if case is None:
            return
        jobs, stored = await self.store.case_result(case_id)
        result = CaseResult(case, [s.finding for s in stored], jobs)
        failed = False
        for listener in list(self.result_listeners):
            try:
                outcome = listener(result)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:  # told again by the sweep: results are never dropped
                failed = True
                event(log, "INF-403", "result listener failed, will retry", case=case_id,
                      reason=type(exc).__name__, level=logging.WARNING)
        if failed:
            return
        await self.store.mark_notified(case_id)
        event(log, "INF-203", "case results final", case=case_id, findings=len(stored),
              jobs=",".join(f"{j.model or '-'}:{j.state}" for j in jobs))

    async def stop(self) -> None:
        """Stop scheduling, fail what waits in the batchers (re-driven at the next start), stop
        the device threads and the preprocessing pool."""
        tasks = [*self._tasks, *self._inflight]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for batcher in self.batchers.values():
            batcher.drain()
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            await asyncio.to_thread(worker.join, 30)
        for batcher in self.batchers.values():
            batcher.model.close()  # after its device thread: nothing uses it any more
        self.pool.shutdown(wait=False, cancel_futures=True)
        event(log, "INF-103", "inference stopped")


@registry.register_service("inference")
async def start_inference(engine: Any) -> InferenceService | None:
    """Called by ``Engine.start`` after the store is open: a running service, or None when
    the configuration has neither models nor routes."""
    if not engine.config.model and not engine.config.route:
        return None
    service = InferenceService(engine.config, engine.store, engine.result_listeners,
                               run_jobs=engine.config.engine.inference == "local")
    await service.start()
    engine.case_listeners.append(service.on_cases)
    return service
