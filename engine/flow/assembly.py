"""Study assembly: receiving -> complete, by quiet period, expected count or trigger.

State lives in the store (``studies``), so a restart resumes where it was:
the sweeper simply asks the store which receiving studies are due, every
``sweep_secs``, at once when woken (``wake``), and when the quiet period of a
study it saw arrive runs out. The engine wires each DICOM ingest's ``on_added``
to ``instance_added``: an arrival that carries the study's expected count (the
QIDO-RS poller's) may have completed it, so the sweep runs now rather than on
the next tick; an arrival without a count sets (or postpones) the moment its
study's quiet period ends, and the sweeper sleeps until the earliest such
moment, not a whole ``sweep_secs`` tick past it. The periodic sweep remains for
what this process did not see arrive (studies from before a restart, or from
another engine on the same PostgreSQL store). Completing a study correlates it
with its order in the same transaction; new cases are handed to ``on_cases``
(the inference dispatcher, when there is one).
"""

from __future__ import annotations

import asyncio
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
        self._wake = asyncio.Event()  # set: sweep now, or look again at when to
        self._sweep_now = False
        self._quiet_ends: dict[str, float] = {}  # study -> its quiet period's end, as seen here
        self.completed = 0

    def wake(self) -> None:
        """Check now (an instance arrived that may complete its study)."""
        self._sweep_now = True
        self._wake.set()

    def instance_added(self, result: IngestResult) -> None:
        """``InstanceIngest.on_added``: wake when *result* may have completed its study by
        count (it carried one); otherwise note when its study's quiet period now ends, and
        wake the sweeper only if that is a study it was not waiting for (the end of another's
        quiet period may be later). Our own output triggers nothing."""
        if result.added.ignored:
            return
        if result.expected is not None:
            self.wake()
            return
        uid = result.meta.study_uid
        known = uid in self._quiet_ends
        self._quiet_ends[uid] = time.time() + result.quiet_secs
        if not known:
            self._wake.set()

    async def run(self) -> None:
        while True:
            self._sweep_now = False
            self._wake.clear()  # before the sweep: a wake during it means sweep again
            try:
                await self.sweep()
            except Exception as exc:  # store trouble: try again next round
                event(log, "ASM-401", "sweep failed", reason=type(exc).__name__,
                      level=logging.ERROR)
            await self._until_due()

    async def _until_due(self) -> None:
        """Sleep until woken to sweep, until the first quiet period seen ends, or for
        ``sweep_secs``, whichever comes first."""
        while not self._sweep_now:
            first = min(self._quiet_ends.values(), default=float("inf"))
            delay = min(self.sweep_secs, first - time.time())
            if delay <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                return

    async def sweep(self) -> int:
        """Complete every study that is due; return how many completed."""
        now = time.time()
        self._quiet_ends = {uid: end for uid, end in self._quiet_ends.items() if end > now}
        due = await self.store.studies_due(now)
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
