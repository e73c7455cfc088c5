"""The one lifecycle owner.

Start order: store -> recovery -> destinations -> pipelines -> sources.
Stop order is the reverse; failures while stopping are collected, not raised
one by one. Bound addresses are exposed so tests can listen on port 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import registry
from engine.config import Config
from engine.assembly import StudyAssembler
from engine.delivery import DeliveryWorker
from engine.ingest import Ingest
from engine.instances import InstanceIngest
from engine.logs import event
from engine.pipeline import Pipeline
from engine.processors import processor_for
from engine.retention import Retention
from engine.store.base import Store, open_store
from engine.store.clinical import CaseRow

log = logging.getLogger("radbridge.engine")


class Engine:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.store.url)
        self.sources: dict[str, Any] = {}
        self.ingests: dict[str, Ingest | InstanceIngest] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.workers: dict[str, DeliveryWorker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        self.case_listeners: list[Callable[[Sequence[CaseRow]], None]] = []
        self.assembler = StudyAssembler(self.store, self._on_cases)

    def _on_cases(self, cases: Sequence[CaseRow]) -> None:
        """New cases (order joined with a complete study): hand them to whoever listens."""
        for case in cases:
            event(log, "COR-201", "case ready", case=case.id, study=case.study_uid,
                  revision=case.revision, state=case.state)
        for listener in self.case_listeners:
            listener(cases)

    def address(self, channel: str) -> tuple[str, int]:
        addr = self.sources[channel].address
        if addr is None:
            raise RuntimeError(f"channel {channel} is not listening")
        return addr

    async def start(self) -> None:
        await self.store.open()
        try:
            self._start_destinations()
            self._start_pipelines()
            self._spawn(self.assembler.run(), "assembly")
            days = self.config.engine.instance_retention_days
            if days is not None:
                self._spawn(Retention(self.store, days).run(), "retention")
            await self._start_sources()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        event(log, "ENG-501", "engine started", channels=len(self.config.channel))

    def _start_destinations(self) -> None:
        for ch in self.config.channel:
            if ch.destination is None or not ch.enabled:
                continue
            spec = registry.get("destination", ch.destination.type)
            worker = DeliveryWorker(ch.name, spec.factory(ch.name, ch.destination), self.store)
            self.workers[ch.name] = worker
            self._spawn(worker.run(), f"deliver:{ch.name}")

    def _start_pipelines(self) -> None:
        for ch in self.config.channel:
            if ch.source is None or not ch.enabled:
                continue
            targets = [self.workers[t] for t in ch.forward_to if t in self.workers]

            def on_queued(targets: list[DeliveryWorker] = targets) -> None:
                for w in targets:
                    w.wake()

            pipeline = Pipeline(ch.name, self.store, processor_for(ch), on_queued, self._on_cases)
            self.pipelines[ch.name] = pipeline
            # The loop starts with whatever is left RECEIVED: that is the recovery.
            self._spawn(pipeline.run(), f"pipeline:{ch.name}")

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _start_sources(self) -> None:
        app, facility = self.config.engine.app_name, self.config.engine.facility
        for ch in self.config.channel:
            if ch.source is None or not ch.enabled:
                continue
            spec = registry.get("source", ch.source.type)
            sink = (await self._hl7_sink(ch, app, facility) if spec.sink == "hl7"
                    else self._dicom_sink(ch, app))
            source = spec.factory(ch.name, ch.source, sink)
            await source.start()
            self.ingests[ch.name] = sink
            self.sources[ch.name] = source
            host, port = source.address
            event(log, "ENG-502", "listening", channel=ch.name, type=ch.source.type,
                  address=f"{host}:{port}")

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
                              ch.study_quiet_secs, own_manufacturer=app)
        sink.bind(asyncio.get_running_loop())
        return sink

    async def stop(self) -> None:
        failures: list[BaseException] = []
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
            await self.store.close()
        except Exception as exc:
            failures.append(exc)
        self.sources.clear()
        self._tasks.clear()
        self.started = False
        for exc in failures:
            event(log, "ENG-509", "failure while stopping", reason=repr(exc),
                  level=logging.WARNING)
        event(log, "ENG-503", "engine stopped")
