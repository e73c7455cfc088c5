"""Processing from the durable queue: filter -> transform -> queue for destinations.

A pipeline per channel pulls RECEIVED messages in arrival order, processes
them in lanes (one lane per key, e.g. the patient id, so that order holds per
key while keys run in parallel), and records every outcome of the batch in
one transaction. Transform work runs in worker processes (``engine.flow.workers``;
with ``[engine] pipeline_workers = 0`` in threads): the event loop never parses, and
never waits on the GIL of a thread that does. At start-up the same loop picks up
whatever was left RECEIVED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

from engine.flow.workers import Recipe, WorkerPool, run_lane
from engine.logs import event
from engine.model import Message, Status
from engine.store.base import Outcome
from engine.store.clinical import CaseRow
from engine.store.protocols import MessageQueue

log = logging.getLogger("radbridge.pipeline")
BATCH = 512
LANES = 8
RESCAN_SECS = 5.0
# After a batch that was not full (the pipeline has caught up), wait this long before the next
# one: under load, batches grow instead of the pipeline committing a few messages at a time and
# competing with ingest for the store's writer. Bounds how long a message stays RECEIVED.
GATHER_SECS = 0.05
NOTHING = (0, 0)  # no id range left out of a fetch (ids start at 1)


class Processor(Protocol):
    """Turns one stored message into its outcome. Pure and thread-safe.

    ``cpu_bound`` processors (parsing, mapping) run in an executor so the
    event loop never parses; trivial ones run inline.
    """

    cpu_bound: bool
    needs_raw: bool

    def process(self, msg: Message) -> Outcome: ...


class Passthrough:
    """Forward the message unchanged to every destination channel in ``forward_to``."""

    cpu_bound = False
    needs_raw = False  # deliveries reference the stored raw bytes

    def __init__(self, forward_to: Sequence[str]) -> None:
        self.forward_to = list(forward_to)

    def process(self, msg: Message) -> Outcome:
        return Outcome(msg.id, Status.TRANSFORMED,
                       deliveries=[(dest, None) for dest in self.forward_to])


def _lane_of(msg: Message) -> int:
    key = msg.key or str(msg.id)
    return zlib.crc32(key.encode()) % LANES


class Pipeline:
    """One channel's loop. With a worker *pool* and the *recipe* that builds the processor
    there, cpu_bound work runs in the pool's processes; otherwise in threads."""

    def __init__(self, channel: str, store: MessageQueue, processor: Processor,
                 on_queued: Callable[[], None],
                 on_cases: Callable[[list[CaseRow]], None] | None = None,
                 pool: WorkerPool | None = None, recipe: Recipe | None = None) -> None:
        self.channel = channel
        self.store: MessageQueue = store
        self.processor = processor
        self.pool, self.recipe = pool, recipe
        self.on_queued = on_queued
        self.on_cases = on_cases
        self._wake = asyncio.Event()
        self.processed = 0
        self._next: tuple[Processor, Recipe | None, asyncio.Future[None]] | None = None

    def wake(self) -> None:
        self._wake.set()

    def swap(self, processor: Processor, recipe: Recipe | None = None) -> asyncio.Future[None]:
        """Process with *processor* (built in workers from *recipe*) from the next batch on;
        the future is done once it is in use. The batch in hand finishes with the processor it
        was fetched for; the queue and its order are untouched (a reload that changed only a
        channel's steps: ``engine.flow.controls``). Raises nothing."""
        if self._next is not None:  # superseded before it was taken up
            self._next[2].set_result(None)
        self._next = (processor, recipe, asyncio.get_running_loop().create_future())
        self.wake()
        return self._next[2]

    async def run(self) -> None:
        """Fetch, map and record batches until cancelled. A batch is mapped while the one
        before it is being recorded (fetched leaving out that batch's id range, whose rows are
        still RECEIVED): the worker processes and the store's writer work at once instead of
        taking turns. Only that range is left out, never everything below it: a row older
        than the batch (a lease another process left, a message put back) is still taken
        oldest first. The batches are recorded one after the other, in order; when a
        recording fails, the batch mapped meanwhile is dropped and everything still RECEIVED
        is fetched again, oldest first."""
        recording: asyncio.Future[None] | None = None  # the previous batch's outcomes
        besides = NOTHING  # that batch's first and last message id
        try:
            while True:
                if self._next is not None:  # between batches: a swapped processor takes over
                    self.processor, self.recipe, taken = self._next
                    self._next = None
                    taken.set_result(None)
                try:
                    msgs = await self.store.fetch_received(self.channel, BATCH,
                                                           self.processor.needs_raw, besides)
                    if msgs:
                        outcomes = await self._map(msgs)
                        if recording is not None:
                            await recording
                        recording = asyncio.ensure_future(self._record(outcomes))
                        besides = (msgs[0].id, msgs[-1].id)
                        if len(msgs) < BATCH:
                            await asyncio.sleep(GATHER_SECS)
                        continue
                    if recording is not None:  # caught up: look again from the oldest
                        await recording
                        recording, besides = None, NOTHING
                        continue
                except Exception as exc:  # store trouble: keep going, nothing is lost
                    if recording is not None:  # settled before anything is fetched again
                        with contextlib.suppress(Exception):
                            await recording
                    recording, besides = None, NOTHING
                    event(log, "PIPE-301", "batch failed, will retry", channel=self.channel,
                          reason=type(exc).__name__, level=logging.ERROR)
                    await asyncio.sleep(1.0)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RESCAN_SECS)
        finally:
            if recording is not None:
                recording.cancel()

    async def _map(self, msgs: list[Message]) -> list[Outcome]:
        """The outcome of each of *msgs*, in their order: in lanes (one per key) on the
        worker processes (or threads) when the processor is cpu_bound, inline otherwise."""
        if self.processor.cpu_bound:
            lanes: dict[int, list[Message]] = {}
            for msg in msgs:
                lanes.setdefault(_lane_of(msg), []).append(msg)
            if self.pool is not None and self.recipe is not None:
                results = await self.pool.run_lanes(self.recipe, list(lanes.values()))
            else:
                loop = asyncio.get_running_loop()
                results = await asyncio.gather(*(
                    loop.run_in_executor(None, run_lane, self.processor, lane)
                    for lane in lanes.values()))
        else:  # inline, in arrival order: lanes only matter when they run in parallel
            results = [run_lane(self.processor, msgs)]
        return [o for lane in results for o in lane]

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Record a batch's outcomes in one transaction, then hand on its cases and wake the
        destinations. Raises what the store raised (nothing recorded)."""
        cases = await self.store.apply_outcomes(outcomes)
        self.processed += len(outcomes)
        if cases and self.on_cases is not None:
            self.on_cases(cases)
        if any(o.deliveries for o in outcomes):
            self.on_queued()
