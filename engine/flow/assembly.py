"""Study assembly: receiving -> complete, by quiet period, expected count or trigger.

State lives in the store (``studies``), so a restart resumes where it was:
the sweeper simply asks the store which receiving studies are due, every
``sweep_secs`` and at once when woken (``wake``). The engine wires each DICOM
ingest's ``on_added`` to ``instance_added``: an arrival that carries the
study's expected count (the QIDO-RS poller's) may have completed it, so the
sweep runs now rather than on the next tick. An arrival without a count can
only postpone a quiet period, so it wakes nothing. Completing
a study correlates it with its order in the same transaction; new cases are
handed to ``on_cases`` (the inference dispatcher, when there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.logs import event
from engine.store.clinical import CaseRow
from engine.store.protocols import StudyAssembly

if TYPE_CHECKING:
    from engine.flow.instances import IngestResult

log = logging.getLogger("radbridge.assembly")

CasesHook = Callable[[Sequence[CaseRow]], None]


class StudyAssembler:
    def __init__(self, store: StudyAssembly, on_cases: CasesHook, sweep_secs: float = 1.0) -> None:
        self.store: StudyAssembly = store
        self.on_cases = on_cases
        self.sweep_secs = sweep_secs
        self._wake = asyncio.Event()
        self.completed = 0

    def wake(self) -> None:
        """Check now (an instance arrived that may complete its study)."""
        self._wake.set()

    def instance_added(self, result: IngestResult) -> None:
        """``InstanceIngest.on_added``: wake when *result* may have completed its study by
        count (it carried one, and is not our own output, which triggers nothing)."""
        if result.expected is not None and not result.added.ignored:
            self.wake()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before the sweep: a wake during it means sweep again
            try:
                await self.sweep()
            except Exception as exc:  # store trouble: try again next round
                event(log, "ASM-401", "sweep failed", reason=type(exc).__name__,
                      level=logging.ERROR)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_secs)

    async def sweep(self) -> int:
        """Complete every study that is due; return how many completed."""
        due = await self.store.studies_due(time.time())
        for study in due:
            await self.complete(study.uid, why="quiet period" if study.expected_count is None
                                or study.instance_count < study.expected_count
                                else "expected count")
        return len(due)

    async def complete(self, uid: str, why: str = "trigger") -> list[CaseRow]:
        cases = await self.store.complete_study(uid)
        self.completed += 1
        event(log, "ASM-201", "study complete", study=uid, why=why, cases=len(cases))
        if cases:
            self.on_cases(cases)
        return cases
