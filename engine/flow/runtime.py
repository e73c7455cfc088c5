"""The one lifecycle owner.

Start order: store -> signals cursor -> recovery -> destinations -> pipelines -> sources ->
admin. From then on the engine also acts on changes other processes announce in the store
(``engine.flow.signals``: the CLI completing a study, reprocessing messages).
Stop order is the reverse; failures while stopping are collected, not raised
one by one. Bound addresses are exposed so tests can listen on port 0.

What an operator does to one channel while the engine runs (stop, start, redeploy, pause,
resume, reload) is ``engine.flow.controls``: ``Engine.controls``, which starts and stops a
channel's parts through the lifecycle's ``start_channel_parts``/``stop_channel_parts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import registry
from engine.config.schema import Config
from engine.flow import workers as pipeline_workers
from engine.flow.assembly import StudyAssembler
from engine.flow.bounds import bounded_processor
from engine.flow.controls import ChannelControls
from engine.flow.delivery import DeliveryWorker
from engine.flow.ingest import Ingest
from engine.flow.instances import InstanceIngest, instances_root
from engine.flow.pipeline import Pipeline
from engine.flow.retention import Retention
from engine.flow.signals import SignalWatcher
from engine.logs import event
from engine.store.base import Store, open_store
from engine.store.clinical import CaseRow
from engine.store.signals import Signal, Topic

log = logging.getLogger("radbridge.engine")
class Engine:
    """The lifecycle: start and stop in order, bound addresses; ``controls`` for operators."""

    def __init__(self, config: Config, store: Store | None = None,
                 config_path: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock  # how long queue heads wait (tests inject one: no sleeping)
        self.config_path = config_path  # where reload() reads channels.toml from
        self.store = store or open_store(config.store.url)
        self.sources: dict[str, Any] = {}
        self.ingests: dict[str, Ingest | InstanceIngest] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.workers: dict[str, DeliveryWorker] = {}
        self.pool: pipeline_workers.WorkerPool | None = None  # the pipelines' processes
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        self.case_listeners: list[Callable[[Sequence[CaseRow]], None]] = []
        self.assembler = StudyAssembler(self.store, self._on_cases)
        self._channel_tasks: dict[str, dict[str, asyncio.Task[None]]] = {}
        self.controls = ChannelControls(self)  # stop/start/redeploy/pause/resume/reload
        self.admin: Any = None  # engine.admin.AdminServer when [admin] is enabled
        self.result_listeners: list[Callable[[Any], Any]] = []  # see inference.service
        self.inference: Any = None  # InferenceService when models or routes are configured
        self.results_ingests: dict[str, Any] = {}  # ai_results channels (engine.results.channel)
        self.signals = SignalWatcher(self.store, {Topic.CASES: self._signalled_cases,
                                                  Topic.MESSAGES: self._signalled_messages},
                                     config.engine.signal_poll_secs)

    def _on_cases(self, cases: Sequence[CaseRow]) -> None:
        """New cases (order joined with a complete study): hand them to whoever listens."""
        for case in cases:
            event(log, "COR-201", "case ready", case=case.id, study=case.study_uid,
                  revision=case.revision, state=case.state)
        for listener in self.case_listeners:
            listener(cases)

    async def _signalled_cases(self, signals: list[Signal]) -> None:
        """Cases made by another process (``radbridge studies complete``): as if made here."""
        ids = sorted({int(i) for s in signals for i in s.subjects})
        cases = [c for c in [await self.store.get_case(i) for i in ids] if c is not None]
        if cases:
            self._on_cases(cases)

    async def _signalled_messages(self, signals: list[Signal]) -> None:
        """Messages put back to RECEIVED by another process: every pipeline looks now."""
        for pipeline in list(self.pipelines.values()):
            pipeline.wake()

    def address(self, channel: str) -> tuple[str, int]:
        addr = self.sources[channel].address
        if addr is None:
            raise RuntimeError(f"channel {channel} is not listening")
        return addr

    async def start(self) -> None:
        self._prepare_admin()  # refuses weak admin credentials before anything opens
        await self.store.open()
        try:
            await self.signals.open()  # before recovery: later changes arrive as signals
            self._acquire_pool()
            self._start_destinations()
            self._start_pipelines()
            self._spawn(self.assembler.run(), "assembly")
            self._prepare_results()  # listening before inference can report anything
            self.inference = await registry.start_service("inference", self)
            self._spawn(self.signals.run(), "signals")  # every case listener is in place
            self._start_retention()
            await self._start_sources()
            if self.admin is not None:
                await self.admin.start()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        event(log, "ENG-501", "engine started", channels=len(self.config.channel))

    def _start_retention(self) -> None:
        conf = self.config.engine
        if conf.instance_retention_days is None and conf.message_retention_days is None:
            return
        archive = Path(conf.message_archive_dir) if conf.message_archive_dir else None
        self._spawn(Retention(self.store, conf.instance_retention_days,
                              message_days=conf.message_retention_days,
                              archive_dir=archive,
                              instances_root=instances_root(conf.data_dir)).run(),
                    "retention")

    def _start_destinations(self) -> None:
        for ch in self.config.channel:
            if ch.destination is not None and ch.enabled:
                self._start_destination(ch)

    def _start_destination(self, ch: Any) -> None:
        spec = registry.get("destination", ch.destination.type)
        worker = DeliveryWorker(ch.name, spec.factory(ch.name, ch.destination), self.store,
                                self.clock)
        self.workers[ch.name] = worker
        if ch.name not in self.controls.paused:
            self._spawn(worker.run(), f"deliver:{ch.name}", ch.name)

    def _start_pipelines(self) -> None:
        for ch in self.config.channel:
            if ch.source is not None and ch.enabled:
                self._start_pipeline(ch)

    def _start_pipeline(self, ch: Any) -> None:
        channel = ch.name

        def on_queued() -> None:
            # Looked up when called: a redeployed destination has a new worker, and a reload
            # may have swapped the channel's routes (its forward_to) in place.
            current = next((c for c in self.config.channel if c.name == channel), ch)
            for name in current.destinations:
                if name in self.workers:
                    self.workers[name].wake()

        processor, recipe = self._processor_of(ch)
        pipeline = Pipeline(ch.name, self.store, processor, on_queued, self._on_cases,
                            self.pool, recipe)
        self.pipelines[ch.name] = pipeline
        # The loop starts with whatever is left RECEIVED: that is the recovery.
        self._spawn(pipeline.run(), f"pipeline:{ch.name}", ch.name)

    def _processor_of(self, ch: Any) -> tuple[Any, pipeline_workers.Recipe | None]:
        """Channel *ch*'s processor under the running configuration, and the recipe its
        worker processes build it from (None: it runs here). Raises what compiling raises."""
        processor = bounded_processor(ch, self.config)
        recipe = None
        if self.pool is not None and processor.cpu_bound:  # built again in each worker
            recipe = pipeline_workers.channel_recipe(self.config, ch.name)
        return processor, recipe

    async def swap_steps(self, name: str) -> bool:
        """Give channel *name*'s running pipeline the processor its configuration builds now
        (filters, steps, routes, mapping, its destinations' steps), and return once the
        pipeline uses it: from its next batch; the listener, its connections and the queues
        stay. False when no pipeline of it runs (nothing swapped). Raises what compiling
        the channel's steps raises (nothing swapped then)."""
        pipeline = self.pipelines.get(name)
        task = self._channel_tasks.get(name, {}).get("pipeline")
        if pipeline is None or task is None or task.done():
            return False
        processor, recipe = self._processor_of(self.channel(name))
        taken = pipeline.swap(processor, recipe)
        await asyncio.wait({taken, task}, return_when=asyncio.FIRST_COMPLETED)
        return taken.done()

    def _spawn(self, coro: Any, name: str, channel: str | None = None) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        if channel is not None:  # "deliver:x" / "pipeline:x" -> kind "deliver" / "pipeline"
            self._channel_tasks.setdefault(channel, {})[name.split(":", 1)[0]] = task

    async def _start_sources(self) -> None:
        for ch in self.config.channel:
            if ch.source is not None and ch.enabled:
                await self._start_source(ch)

    async def _start_source(self, ch: Any) -> None:
        app, facility = self.config.engine.app_name, self.config.engine.facility
        spec = registry.get("source", ch.source.type)
        sink: Any
        if spec.sink == "hl7":
            sink = await self._hl7_sink(ch, app, facility)
        elif spec.sink == "json":  # ai_results: the ingest listens from engine start
            sink = self.results_ingests[ch.name]
        else:
            sink = self._dicom_sink(ch, app)
        source = spec.factory(ch.name, ch.source, sink)
        await source.start()
        self.ingests[ch.name] = sink
        self.sources[ch.name] = source
        addr = source.address  # None for sources that poll rather than listen
        event(log, "ENG-502", "started", channel=ch.name, type=ch.source.type,
              address=f"{addr[0]}:{addr[1]}" if addr else None)

    def _prepare_results(self) -> None:
        """An ``ai_results`` channel stores every finished case's report. It listens for as
        long as the engine runs, even while an operator has the channel stopped (then its
        pipeline does not build or send): a result heard and dropped would be lost, because
        inference marks a case notified once its listeners returned."""
        from engine.results.channel import ResultsIngest

        for ch in self.config.channel:
            if ch.source is None or ch.source.type != "ai_results" or not ch.enabled:
                continue
            name = ch.name

            def wake(name: str = name) -> None:
                if name in self.pipelines:
                    self.pipelines[name].wake()

            ingest = ResultsIngest(name, self.store, self.config.model, wake)
            self.results_ingests[name] = ingest
            self.result_listeners.append(ingest.submit)

    async def _hl7_sink(self, ch: Any, app: str, facility: str) -> Ingest:
        ingest = Ingest(ch, self.store, app=app, facility=facility,
                        on_stored=self.pipelines[ch.name].wake)
        if ch.duplicates.window_secs > 0:
            now = time.time()
            ids = await self.store.recent_control_ids(ch.name, now - ch.duplicates.window_secs)
            ingest.seed_duplicates(ids, now)
        return ingest

    def _dicom_sink(self, ch: Any, app: str) -> InstanceIngest:
        sink = InstanceIngest(ch.name, self.store, Path(self.config.engine.data_dir),
                              ch.study_quiet_secs, on_added=self.assembler.instance_added,
                              own_manufacturer=app)
        sink.bind(asyncio.get_running_loop())
        return sink

    async def stop(self) -> None:
        failures: list[BaseException] = []
        await self._stop_admin(failures)
        for source in reversed(list(self.sources.values())):
            try:
                await source.stop()
            except Exception as exc:
                failures.append(exc)
        for task in self._tasks:
            task.cancel()
        for res in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(res, Exception):
                failures.append(res)
        for worker in self.workers.values():
            try:
                await worker.close()
            except Exception as exc:
                failures.append(exc)
        try:
            await self.signals.close()
            if self.inference is not None:
                await self.inference.stop()
                self.inference = None
            await self.store.close()
        except Exception as exc:
            failures.append(exc)
        await self._release_pool(failures)
        self.sources.clear()
        self._tasks.clear()
        self._channel_tasks.clear()
        self.started = False
        for failure in failures:
            event(log, "ENG-509", "failure while stopping", reason=repr(failure),
                  level=logging.WARNING)
        event(log, "ENG-503", "engine stopped")

    def stalled_queues(self) -> list[str]:
        """Destinations whose queue head has not moved for ``[engine] stalled_queue_secs``."""
        limit = self.config.engine.stalled_queue_secs
        return sorted(name for name, worker in self.workers.items()
                      if worker.head is not None and worker.head_age() >= limit)

    # -- one channel's parts, for the controls ---------------------------------------------
    def channel(self, name: str) -> Any:
        """The configuration of channel *name*; ``KeyError`` when there is none."""
        for ch in self.config.channel:
            if ch.name == name:
                return ch
        raise KeyError(name)

    def channel_running(self, name: str) -> bool:
        """Whether any part of the channel (listener, pipeline, delivery) is started."""
        return name in self._channel_tasks or name in self.sources

    def channel_failed(self, name: str) -> bool:
        """Whether one of the channel's loops (pipeline, delivery) has ended."""
        return any(t.done() for t in self._channel_tasks.get(name, {}).values())

    async def halt_delivery(self, name: str) -> None:
        """Cancel the delivery loop of destination *name* (its worker and queue stay)."""
        task = self._channel_tasks.get(name, {}).pop("deliver", None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._tasks.remove(task)

    def run_delivery(self, name: str) -> None:
        """Start the delivery loop of destination *name* unless it runs."""
        if "deliver" not in self._channel_tasks.get(name, {}):
            self._spawn(self.workers[name].run(), f"deliver:{name}", name)

    async def start_channel_parts(self, ch: Any) -> None:
        """Start one channel: destination, pipeline, then source (all stopped on failure)."""
        try:
            if ch.destination is not None:
                self._start_destination(ch)
            if ch.source is not None:
                self._start_pipeline(ch)
                await self._start_source(ch)
        except BaseException:
            await self.stop_channel_parts(ch.name)
            raise

    async def stop_channel_parts(self, name: str) -> None:
        """Stop one channel: source, loops, destination; failures are logged, not raised."""
        failures: list[BaseException] = []
        source = self.sources.pop(name, None)
        if source is not None:
            try:
                await source.stop()
            except Exception as exc:
                failures.append(exc)
        self.ingests.pop(name, None)
        tasks = list(self._channel_tasks.pop(name, {}).values())
        for task in tasks:
            task.cancel()
        for res in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(res, Exception):
                failures.append(res)
        self._tasks = [t for t in self._tasks if t not in tasks]
        self.pipelines.pop(name, None)
        worker = self.workers.pop(name, None)
        if worker is not None:
            try:
                await worker.close()
            except Exception as exc:
                failures.append(exc)
        if tasks:
            # Writes are serialised: an empty one returns only after whatever the cancelled
            # batch had already handed to the store is committed, so a restarted pipeline
            # never picks up a message twice.
            await self.store.reprocess([])
        for failure in failures:
            event(log, "ENG-509", "failure while stopping", channel=name, reason=repr(failure),
                  level=logging.WARNING)

    # -- the pipelines' worker processes ---------------------------------------------------
    def _acquire_pool(self) -> None:
        """The process's shared pool, unless ``[engine] pipeline_workers = 0`` (threads)."""
        n = self.config.engine.pipeline_workers
        n = pipeline_workers.default_workers() if n is None else n
        if n > 0 and self.pool is None:
            self.pool = pipeline_workers.acquire(n)

    async def _release_pool(self, failures: list[BaseException]) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                await pipeline_workers.release(pool)
            except Exception as exc:
                failures.append(exc)

    # -- admin ------------------------------------------------------------------------------
    def _prepare_admin(self) -> None:
        conf = getattr(self.config, "admin", None)
        if conf is None or not conf.enabled or self.admin is not None:
            return
        from engine.admin import AdminServer

        self.admin = AdminServer(self, conf)  # checks the credentials; raises when unsafe

    async def _stop_admin(self, failures: list[BaseException]) -> None:
        if self.admin is None:
            return
        try:
            await self.admin.stop()
        except Exception as exc:
            failures.append(exc)
        self.admin = None
