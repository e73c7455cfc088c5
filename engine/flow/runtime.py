"""The one lifecycle owner.

Start order: store -> signals cursor -> recovery -> destinations -> pipelines -> sources ->
admin. From then on the engine also acts on changes other processes announce in the store
(``engine.flow.signals``: the CLI completing a study, reprocessing messages).
Stop order is the reverse; failures while stopping are collected, not raised
one by one. Bound addresses are exposed so tests can listen on port 0.

One channel can be stopped, started or redeployed without touching the
others, a destination's queue paused and resumed, and a linted configuration
applied while running (``reload``): only the channels whose configuration
changed are restarted. These operations are serialised by one lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import registry
from engine.config.schema import Config, load_config
from engine.flow.assembly import StudyAssembler
from engine.flow.delivery import DeliveryWorker
from engine.flow.ingest import Ingest
from engine.flow.instances import InstanceIngest, instances_root
from engine.flow.pipeline import Pipeline
from engine.flow.processors import processor_for
from engine.flow.retention import Retention
from engine.flow.signals import SignalWatcher
from engine.logs import event
from engine.store.base import Store, open_store
from engine.store.clinical import CaseRow
from engine.store.signals import Signal, Topic

log = logging.getLogger("radbridge.engine")
# Sections that a running engine cannot swap: a change is reported, applied at the next start.
_RESTART_SECTIONS = ("store", "engine", "admin", "route", "model")


@dataclass(slots=True)
class ReloadPlan:
    """What applying a new configuration does, channel by channel."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # channel -> why it did not start


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two configurations; a channel is changed when any of its keys differ."""
    before: dict[str, Any] = {c.name: c for c in old.channel}
    after: dict[str, Any] = {c.name: c for c in new.channel}
    plan = ReloadPlan(restart_required=[s for s in _RESTART_SECTIONS
                                        if getattr(old, s, None) != getattr(new, s, None)])
    for name, ch in after.items():
        if name not in before:
            plan.added.append(name)
        elif before[name] != ch:
            plan.changed.append(name)
        else:
            plan.unchanged.append(name)
    plan.removed = [name for name in before if name not in after]
    return plan


class Engine:
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
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        self.case_listeners: list[Callable[[Sequence[CaseRow]], None]] = []
        self.assembler = StudyAssembler(self.store, self._on_cases)
        self.stopped: set[str] = set()  # channels an operator stopped
        self.paused: set[str] = set()  # destination queues an operator paused
        self._channel_tasks: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._control = asyncio.Lock()
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
        if ch.name not in self.paused:
            self._spawn(worker.run(), f"deliver:{ch.name}", ch.name)

    def _start_pipelines(self) -> None:
        for ch in self.config.channel:
            if ch.source is not None and ch.enabled:
                self._start_pipeline(ch)

    def _start_pipeline(self, ch: Any) -> None:
        targets = tuple(ch.forward_to)

        def on_queued() -> None:
            # Looked up when called: a redeployed destination has a new worker.
            for name in targets:
                if name in self.workers:
                    self.workers[name].wake()

        pipeline = Pipeline(ch.name, self.store, processor_for(ch, self.config), on_queued,
                            self._on_cases)
        self.pipelines[ch.name] = pipeline
        # The loop starts with whatever is left RECEIVED: that is the recovery.
        self._spawn(pipeline.run(), f"pipeline:{ch.name}", ch.name)

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
        self.sources.clear()
        self._tasks.clear()
        self._channel_tasks.clear()
        self.started = False
        for exc in failures:
            event(log, "ENG-509", "failure while stopping", reason=repr(exc),
                  level=logging.WARNING)
        event(log, "ENG-503", "engine stopped")

    def stalled_queues(self) -> list[str]:
        """Destinations whose queue head has not moved for ``[engine] stalled_queue_secs``."""
        limit = self.config.engine.stalled_queue_secs
        return sorted(name for name, worker in self.workers.items()
                      if worker.head is not None and worker.head_age() >= limit)

    # -- one channel at a time -------------------------------------------------------------
    def channel_state(self, name: str) -> str:
        """``running``, ``stopped`` (by an operator or engine down), ``disabled`` or ``failed``."""
        ch = next((c for c in self.config.channel if c.name == name), None)
        if ch is None:
            raise KeyError(name)
        if not ch.enabled:
            return "disabled"
        if name in self.stopped or not self.started:
            return "stopped"
        if any(t.done() for t in self._channel_tasks.get(name, {}).values()):
            return "failed"
        return "running"

    async def stop_channel(self, name: str) -> None:
        """Stop one channel (listener, pipeline, delivery); it stays stopped until started."""
        async with self._control:
            self._channel(name)  # KeyError when unknown
            await self._stop_channel(name)
            self.stopped.add(name)
            event(log, "ENG-510", "channel stopped", channel=name)

    async def start_channel(self, name: str) -> None:
        """Start a stopped channel with its current configuration (a no-op when running)."""
        async with self._control:
            ch = self._channel(name)
            if not ch.enabled:
                raise ValueError(f"channel {name} is disabled in the configuration")
            self.stopped.discard(name)
            if name not in self._channel_tasks and name not in self.sources:
                await self._start_channel(ch)
            event(log, "ENG-511", "channel started", channel=name)

    async def redeploy_channel(self, name: str) -> None:
        """Stop and start one channel: a new listener, pipeline and destination connection."""
        async with self._control:
            ch = self._channel(name)
            await self._stop_channel(name)
            self.stopped.discard(name)
            if ch.enabled:
                await self._start_channel(ch)
            event(log, "ENG-512", "channel redeployed", channel=name)

    async def pause_queue(self, name: str) -> None:
        """Stop sending from a destination's queue; messages keep queueing durably."""
        async with self._control:
            if name not in self.workers:
                raise KeyError(name)
            self.paused.add(name)
            task = self._channel_tasks.get(name, {}).pop("deliver", None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                self._tasks.remove(task)
            event(log, "ENG-513", "queue paused", channel=name)

    async def resume_queue(self, name: str) -> None:
        """Resume sending from a paused queue, oldest first."""
        async with self._control:
            worker = self.workers.get(name)
            if worker is None:
                raise KeyError(name)
            self.paused.discard(name)
            if "deliver" not in self._channel_tasks.get(name, {}):
                self._spawn(worker.run(), f"deliver:{name}", name)
            event(log, "ENG-514", "queue resumed", channel=name)

    async def reload(self, config: Config) -> ReloadPlan:
        """Apply a linted configuration: restart only the channels whose configuration changed.

        Sections that cannot change while running (store, engine, admin, routes, models)
        keep their running values and are listed in ``restart_required``. A channel that
        fails to start is listed in ``failed`` and left stopped; the others go on.
        """
        async with self._control:
            plan = plan_reload(self.config, config)
            for name in plan.removed + plan.changed:
                await self._stop_channel(name)
            self.stopped -= set(plan.removed)
            self.paused -= set(plan.removed)
            keep = {s: getattr(self.config, s) for s in plan.restart_required}
            self.config = config.model_copy(update=keep) if keep else config
            for name in plan.changed + plan.added:
                ch = self.config.channel_named(name)
                if name in self.stopped or not ch.enabled:
                    continue
                try:
                    await self._start_channel(ch)
                except Exception as exc:
                    plan.failed[name] = f"{type(exc).__name__}: {exc}"
            event(log, "ENG-515", "configuration reloaded", added=len(plan.added),
                  removed=len(plan.removed), changed=len(plan.changed),
                  failed=len(plan.failed) or None)
            return plan

    async def reload_file(self, path: str | None = None) -> ReloadPlan:
        """Lint ``channels.toml`` and apply it; raise ``ConfigErrors`` (nothing changes)."""
        target = path or self.config_path
        if target is None:
            raise ValueError("this engine was not started from a configuration file")
        return await self.reload(load_config(target))

    def _channel(self, name: str) -> Any:
        for ch in self.config.channel:
            if ch.name == name:
                return ch
        raise KeyError(name)

    async def _start_channel(self, ch: Any) -> None:
        try:
            if ch.destination is not None:
                self._start_destination(ch)
            if ch.source is not None:
                self._start_pipeline(ch)
                await self._start_source(ch)
        except BaseException:
            await self._stop_channel(ch.name)
            raise

    async def _stop_channel(self, name: str) -> None:
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
