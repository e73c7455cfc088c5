"""A pipeline maps its next batch while the last one is being recorded (issue 15), on both
stores: the batches are still recorded one after the other in arrival order, and when a
recording fails the batch mapped meanwhile is dropped and everything is fetched again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from engine.errors import StoreUnavailable
from engine.flow import pipeline as pipeline_module
from engine.flow.pipeline import Pipeline
from engine.model import Message, Status
from engine.store.base import NewMessage, Outcome
from tests.conftest import wait_for


class Seen:
    """A processor that notes every message it maps."""

    cpu_bound = False
    needs_raw = False

    def __init__(self) -> None:
        self.ids: list[int] = []

    def process(self, msg: Message) -> Outcome:
        self.ids.append(msg.id)
        return Outcome(msg.id, Status.TRANSFORMED)


class Holding(Seen):
    """Maps in threads (``cpu_bound``) and holds the mapping of message *hold* until
    ``release`` is set."""

    cpu_bound = True

    def __init__(self, hold: int) -> None:
        super().__init__()
        self.hold, self.held = hold, threading.Event()
        self.release = threading.Event()

    def process(self, msg: Message) -> Outcome:
        if msg.id == self.hold:
            self.held.set()
            self.release.wait(30)
        return super().process(msg)


class Recording:
    """The real store; each ``apply_outcomes`` call noted, held while ``gate`` is clear, and
    the first *fail* of them refused as a store that is down would."""

    def __init__(self, store: Any, fail: int = 0) -> None:
        self.store, self.fail = store, fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[list[int]] = []
        self.recorded: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def apply_outcomes(self, outcomes: Sequence[Outcome]) -> Any:
        ids = [o.message_id for o in outcomes]
        self.calls.append(ids)
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the database is restarting")
        cases = await self.store.apply_outcomes(outcomes)
        self.recorded.append(ids)
        return cases


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "BATCH", 4)
    monkeypatch.setattr(pipeline_module, "GATHER_SECS", 0.0)


async def transformed(store: Any, n: int) -> bool:
    counts = await store.counts()
    return bool(counts.get(("ris", "TRANSFORMED"), 0) == n)


async def run_pipeline(store: Any, processor: Seen, until: Any) -> None:
    task = asyncio.create_task(Pipeline("ris", store, processor, lambda: None).run())
    try:
        await wait_for(until, timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_next_batch_is_mapped_while_one_is_recorded_and_they_land_in_order(
        store: Any) -> None:
    real = store
    ids = [await real.insert_message(NewMessage("ris", 0.0, b"MSH|%d" % i,
                                                key=f"P{i % 3}")) for i in range(10)]
    store, seen = Recording(real), Seen()
    store.gate.clear()  # the first batch's recording waits ...

    async def second_batch_mapped() -> bool:
        if set(ids[4:8]) <= set(seen.ids):  # ... until the next batch has been mapped
            store.gate.set()
        return await transformed(real, len(ids))

    await run_pipeline(store, seen, second_batch_mapped)
    assert store.recorded == [ids[0:4], ids[4:8], ids[8:10]]


async def test_a_failed_recording_drops_the_batch_mapped_meanwhile_and_starts_again(
        store: Any) -> None:
    real = store
    ids = [await real.insert_message(NewMessage("ris", 0.0, b"MSH|%d" % i,
                                                key=f"P{i % 3}")) for i in range(12)]
    store, seen = Recording(real, fail=1), Seen()
    await run_pipeline(store, seen, lambda: transformed(real, len(ids)))
    assert store.calls[0] == ids[0:4]  # refused: nothing of it was recorded
    assert store.recorded == [ids[0:4], ids[4:8], ids[8:12]]  # once each, in order


async def test_a_message_older_than_the_batch_being_recorded_is_still_taken_first(
        store: Any) -> None:
    """Only the batch in flight is left out of the next fetch, not every id below it: a
    message put back (here: reprocessed) meanwhile is taken oldest first, as before."""
    real = store
    ids = [await real.insert_message(NewMessage("ris", 0.0, b"MSH|%d" % i,
                                                key=f"P{i % 3}")) for i in range(11)]
    await real.apply_outcomes([Outcome(m, Status.TRANSFORMED) for m in ids[:3]])
    store, mapper = Recording(real), Holding(hold=ids[6])
    store.gate.clear()  # the first batch (ids[3:7]) stays in flight ...
    state = {"put_back": False}

    async def older_one_taken() -> bool:
        if mapper.held.is_set() and not state["put_back"]:
            state["put_back"] = True  # ... while ids[1] goes back to RECEIVED
            assert await real.reprocess([ids[1]]) == 1
            mapper.release.set()
        if mapper.ids.count(ids[1]) == 1:
            store.gate.set()
        return await transformed(real, len(ids))

    task = asyncio.create_task(Pipeline("ris", store, mapper, lambda: None).run())
    try:
        await wait_for(older_one_taken, timeout=30)
    finally:
        mapper.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # (in lanes per key, so sorted: each lane keeps its order)
    assert [sorted(c) for c in store.recorded] == [ids[3:7], [ids[1], *ids[7:10]],
                                                    ids[10:11]]
