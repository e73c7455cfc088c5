"""Study assembly: receiving -> complete, by quiet period, expected count or trigger.

State lives in the store (``studies``), so a restart resumes where it was:
the sweeper simply asks the store which receiving studies are due. Completing
a study correlates it with its order in the same transaction; new cases are
handed to ``on_cases`` (the inference dispatcher, when there is one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from engine.logs import event
from engine.store.base import Store
from engine.store.clinical import CaseRow

log = logging.getLogger("radbridge.assembly")

CasesHook = Callable[[Sequence[CaseRow]], None]


class StudyAssembler:
    def __init__(self, store: Store, on_cases: CasesHook, sweep_secs: float = 1.0) -> None:
        self.store = store
        self.on_cases = on_cases
        self.sweep_secs = sweep_secs
        self._wake = asyncio.Event()
        self.completed = 0

    def wake(self) -> None:
        """Check now (an instance arrived that may complete its study)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # store trouble: try again next round
                event(log, "ASM-401", "sweep failed", reason=type(exc).__name__,
                      level=logging.ERROR)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.sweep_secs)
            except TimeoutError:
                pass

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
