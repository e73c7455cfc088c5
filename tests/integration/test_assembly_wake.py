"""An arrival that completes its study by count completes it at once, and a study whose
quiet period ends completes then, not on the next sweep: the engine wires each DICOM
ingest's ``on_added`` to ``StudyAssembler``. Every test here turns the sweep timer off (an
hour), so only the wake can complete a study."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.flow.assembly import StudyAssembler
from engine.flow.instances import InstanceIngest
from engine.flow.runtime import Engine
from tests.conftest import make_config, wait_for
from tests.fixtures.dicom import ingest_config, write_study
from tests.fixtures.orthanc import Orthanc
from tests.integration.test_dicomweb import poll_config, upload_study

HOUR = 3600.0
StartEngine = Callable[[str], Awaitable[Engine]]


@pytest.fixture
async def sweepless() -> AsyncIterator[StartEngine]:
    """Start an engine whose assembler never sweeps on its own (after the first, at start)."""
    engines: list[Engine] = []

    async def start(text: str) -> Engine:
        engine = Engine(make_config(text))
        engine.assembler.sweep_secs = HOUR
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.stop()


async def state_of(engine: Engine, uid: str) -> str | None:
    row = await engine.store.get_study(uid)
    return row.state if row is not None else None


def scp_config(db_url: str, data_dir: Path) -> str:
    return ingest_config(db_url, data_dir, quiet_secs=HOUR, stow=False)


async def test_the_instance_that_reaches_the_expected_count_completes_its_study_at_once(
    sweepless: StartEngine, db_url: str, tmp_path: Path
) -> None:
    engine = await sweepless(scp_config(db_url, tmp_path / "data"))
    study = write_study(tmp_path / "s", [("CT", 2), ("CR", 1)])
    ingest = engine.ingests["pacs"]  # the engine's own, wired ingest of the channel
    assert isinstance(ingest, InstanceIngest)
    for path in study.paths[:-1]:
        await ingest.ingest(path.read_bytes(), expected=3)
    await asyncio.sleep(0)  # a woken assembler runs now: the study is one short, so it waits
    assert await state_of(engine, study.uid) == "receiving"
    await ingest.ingest(study.paths[-1].read_bytes(), expected=3)
    await wait_for(lambda: _is(engine, study.uid, "complete"), timeout=60)
    assert engine.assembler.completed == 1


async def test_a_polled_study_completes_on_its_qido_count_with_the_sweep_timer_off(
    sweepless: StartEngine, db_url: str, tmp_path: Path, orthanc: Orthanc
) -> None:
    study = write_study(
        tmp_path / "q", [("CT", 2), ("CR", 1)], study_date=f"{dt.date.today():%Y%m%d}"
    )
    await upload_study(orthanc, study)
    text = poll_config(
        db_url, tmp_path / "data", orthanc.dicomweb, ', flavour = "qido", start_from = "beginning"'
    )
    engine = await sweepless(
        text.replace('name = "poll"\n', f'name = "poll"\nstudy_quiet_secs = {HOUR}\n')
    )
    await wait_for(lambda: _is(engine, study.uid, "complete"), timeout=60)
    row = await engine.store.get_study(study.uid)
    assert row is not None and (row.instance_count, row.expected_count) == (3, 3)


async def _is(engine: Engine, uid: str, state: str) -> bool:
    return await state_of(engine, uid) == state


class _SlowStore:
    """``studies_due`` that holds its first call until released (what a sweep reads)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_started = asyncio.Event()
        self.release = asyncio.Event()

    async def studies_due(self, now: float) -> list[Any]:
        self.calls += 1
        if self.calls == 1:
            self.first_started.set()
            await self.release.wait()
        return []


async def test_a_wake_during_a_sweep_is_not_lost() -> None:
    store = _SlowStore()
    assembler = StudyAssembler(store, lambda cases: None, sweep_secs=HOUR)  # type: ignore[arg-type]
    task = asyncio.create_task(assembler.run())
    try:
        await store.first_started.wait()
        assembler.wake()  # an instance arrived while the store was being read
        store.release.set()
        await wait_for(lambda: store.calls == 2, timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_study_completes_when_its_quiet_period_ends_with_the_sweep_timer_off(
    sweepless: StartEngine, db_url: str, tmp_path: Path
) -> None:
    engine = await sweepless(ingest_config(db_url, tmp_path / "data", quiet_secs=0.3))
    study = write_study(tmp_path / "s", [("CR", 2)])
    ingest = engine.ingests["pacs"]
    assert isinstance(ingest, InstanceIngest)
    for path in study.paths:
        await ingest.ingest(path.read_bytes())  # no count: only the quiet period completes it
    await wait_for(lambda: _is(engine, study.uid, "complete"), timeout=60)
    assert engine.assembler.completed == 1


async def test_a_shorter_quiet_period_arriving_later_is_not_kept_waiting_for_a_longer_one(
    sweepless: StartEngine, db_url: str, tmp_path: Path
) -> None:
    text = ingest_config(db_url, tmp_path / "data", quiet_secs=HOUR).replace(
        'name = "web"\nsource = { type = "dicomweb", listen = "127.0.0.1:0" }\n'
        f"study_quiet_secs = {HOUR}",
        'name = "web"\nsource = { type = "dicomweb", listen = "127.0.0.1:0" }\n'
        "study_quiet_secs = 0.3")
    engine = await sweepless(text)
    slow, quick = write_study(tmp_path / "a", [("CT", 1)]), write_study(tmp_path / "b", [("CR", 1)])
    await engine.ingests["pacs"].ingest(slow.paths[0].read_bytes())  # the sweeper waits an hour
    await asyncio.sleep(0)
    await engine.ingests["web"].ingest(quick.paths[0].read_bytes())
    await wait_for(lambda: _is(engine, quick.uid, "complete"), timeout=60)
    assert await state_of(engine, slow.uid) == "receiving"
