"""The dispatcher: dynamic batching, max_wait flush, the STAT lane, timeouts and retries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.config.inference import ModelConfig
from engine.store.base import Store, open_store
from engine.store.clinical import CaseRow, InstanceMeta
from engine.store.inference import CaseResult, JobState
from inference.dispatch import Batcher, DeviceWorker
from inference.models import InferenceModel, ModelOutput, Prepared, StudyInput
from inference.service import InferenceService
from tests.conftest import make_config, wait_for
from tests.unit.test_inference_series import write_instance


class FakeModel(InferenceModel):
    """Records every batch; ``behave(call_number)`` may sleep, raise or block."""

    def __init__(self, name: str = "fake", behave: Callable[[int], None] | None = None,
                 **conf: Any) -> None:
        config = ModelConfig.model_validate({"name": name, "version": "9", "format": "builtin",
                                             "builtin": "dicom-qa", **conf})
        super().__init__(config, "f" * 64, "cpu")
        self.behave = behave or (lambda n: None)
        self.batches: list[list[Any]] = []

    def prepare(self, study: StudyInput) -> Prepared:
        return Prepared(study.case.study_uid, payload=study.case.case_id)

    def run_batch(self, items: list[Prepared]) -> list[ModelOutput]:
        self.batches.append([i.payload for i in items])
        self.behave(len(self.batches))
        return [ModelOutput(i.study_uid, [], {"seen": i.payload}) for i in items]


@pytest.fixture
async def worker() -> AsyncIterator[DeviceWorker]:
    w = DeviceWorker("cpu", asyncio.get_running_loop())
    w.start()
    yield w
    w.stop()
    await asyncio.to_thread(w.join, 5)


async def test_items_are_batched_up_to_batch_max(worker: DeviceWorker) -> None:
    model = FakeModel(batch_max=4, max_wait_ms=200)
    batcher = Batcher(model, worker)
    futures = [batcher.submit(Prepared("s", payload=i), 1) for i in range(10)]
    results = await asyncio.gather(*futures)
    assert batcher.sizes == [4, 4, 2]
    assert [r.batch_size for r in results] == [4] * 8 + [2] * 2
    assert [r.output.outputs["seen"] for r in results] == list(range(10))


async def test_a_partial_batch_waits_max_wait_ms_then_goes(worker: DeviceWorker) -> None:
    batcher = Batcher(FakeModel(batch_max=8, max_wait_ms=100), worker)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(batcher.submit(Prepared("s", payload=i), 1)
                                     for i in range(3)))
    waited = time.perf_counter() - t0
    assert batcher.sizes == [3] and 0.09 <= waited < 1.0
    assert min(r.queue_ms for r in results) >= 90


async def test_stat_batches_run_before_routine_ones(worker: DeviceWorker) -> None:
    release = threading.Event()
    model = FakeModel(batch_max=1, max_wait_ms=0,
                      behave=lambda n: release.wait(5) if n == 1 else None)
    batcher = Batcher(model, worker)
    first = batcher.submit(Prepared("s", payload="blocker"), 1)
    await wait_for(lambda: model.batches)  # the device is busy with the blocker
    rest = [batcher.submit(Prepared("s", payload=p), lane)
            for p, lane in (("r1", 1), ("r2", 1), ("stat", 0))]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, *rest)
    assert model.batches == [["blocker"], ["stat"], ["r1"], ["r2"]]


async def test_a_partial_batch_keeps_filling_while_the_device_is_busy(
        worker: DeviceWorker) -> None:
    release = threading.Event()
    model = FakeModel(batch_max=8, max_wait_ms=10,
                      behave=lambda n: release.wait(5) if n == 1 else None)
    batcher = Batcher(model, worker)
    first = batcher.submit(Prepared("s", payload=0), 1)
    await wait_for(lambda: model.batches)
    rest = []
    for i in range(1, 4):  # each waits past max_wait, but the device is busy
        rest.append(batcher.submit(Prepared("s", payload=i), 1))
        await asyncio.sleep(0.03)
    release.set()
    await asyncio.gather(first, *rest)
    assert model.batches == [[0], [1, 2, 3]]


async def test_stat_items_go_first_into_a_batch(worker: DeviceWorker) -> None:
    model = FakeModel(batch_max=3, max_wait_ms=50)
    batcher = Batcher(model, worker)
    await asyncio.gather(*(batcher.submit(Prepared("s", payload=p), lane)
                           for p, lane in (("r1", 1), ("r2", 1), ("s1", 0), ("r3", 1))))
    assert model.batches == [["s1", "r1", "r2"], ["r3"]]


async def test_a_failing_batch_fails_its_items_and_the_thread_goes_on(
        worker: DeviceWorker) -> None:
    model = FakeModel(batch_max=1, max_wait_ms=0,
                      behave=lambda n: (_ for _ in ()).throw(RuntimeError("CUDA OOM"))
                      if n == 1 else None)
    batcher = Batcher(model, worker)
    with pytest.raises(Exception, match="RuntimeError: CUDA OOM"):
        await batcher.submit(Prepared("s", payload=1), 1)
    assert (await batcher.submit(Prepared("s", payload=2), 1)).batch_size == 1


# -- through the service: durable jobs, timeouts, retries, notification ----------------------

CONFIG = """
[store]
url = "sqlite:///unused.db"
[[route]]
when = { modality = "CR" }
models = ["fake"]
[[model]]
name = "fake"
version = "9"
format = "builtin"
builtin = "dicom-qa"
"""


class Harness:
    def __init__(self, store: Store, tmp: Path) -> None:
        self.store, self.tmp = store, tmp
        self.results: list[CaseResult] = []
        self.services: list[InferenceService] = []

    async def service(self, model: FakeModel) -> InferenceService:
        """The service with *model* (its own config counts; the TOML only routes)."""
        svc = InferenceService(make_config(CONFIG), self.store,
                               [self.results.append], retry_backoff_secs=0.01, poll_secs=0.05,
                               loader=lambda _: ({model.name: model}, {}, []))
        await svc.start()
        self.services.append(svc)
        await asyncio.wait_for(svc.ready.wait(), 5)
        return svc

    async def case(self, uid: str, modality: str = "CR") -> CaseRow:
        path = write_instance(self.tmp / f"{uid}.dcm", np.zeros((4, 4), np.uint16),
                              StudyInstanceUID=uid, Modality=modality)
        meta = InstanceMeta(uid, uid + ".1", uid + ".1.1", "1.2.840.10008.5.1.4.1.1.1",
                            "1.2.840.10008.1.2.1", modality=modality)
        await self.store.add_instance("pacs", meta, str(path), 1, 0.1)
        await self.store.complete_study(uid)
        case = await self.store.proceed_study_only(uid)
        assert case is not None
        return case


@pytest.fixture
async def harness(tmp_path: Path, db_url: str) -> AsyncIterator[Harness]:
    store = open_store(db_url)
    await store.open()
    h = Harness(store, tmp_path)
    yield h
    for svc in h.services:
        await svc.stop()
    await store.close()


async def test_several_studies_are_batched_together(harness: Harness) -> None:
    model = FakeModel(batch_max=4, max_wait_ms=1000)
    svc = await harness.service(model)
    cases = [await harness.case(f"1.2.9.{i}") for i in range(6)]
    svc.on_cases(cases)
    await wait_for(lambda: len(harness.results) == 6)
    assert sorted(len(b) for b in model.batches) == [2, 4]
    audit = await harness.store.list_audit(limit=10)
    assert sorted(a.batch_size for a in audit) == [2, 2, 4, 4, 4, 4]
    assert all(a.status == "ok" and a.checksum == "f" * 64 for a in audit)


async def test_a_timeout_is_recorded_and_the_retry_succeeds(harness: Harness) -> None:
    model = FakeModel(max_wait_ms=0, timeout_secs=0.4, retries=1,
                      behave=lambda n: time.sleep(0.6) if n == 1 else None)
    svc = await harness.service(model)
    svc.on_cases([await harness.case("1.2.9.50")])
    await wait_for(lambda: harness.results)
    (job,) = harness.results[0].jobs
    assert (job.state, job.attempts) == (JobState.DONE, 2)
    audit = sorted(await harness.store.list_audit(), key=lambda a: a.id)
    assert [(a.attempt, a.status) for a in audit] == [(1, "timeout"), (2, "ok")]
    assert "no result within 0.4s" in (audit[0].error or "")


async def test_a_model_that_keeps_failing_ends_in_error_after_its_retries(
        harness: Harness) -> None:
    def boom(n: int) -> None:
        raise RuntimeError("bad weights")

    svc = await harness.service(FakeModel(max_wait_ms=0, retries=2, behave=boom))
    svc.on_cases([await harness.case("1.2.9.60")])
    await wait_for(lambda: harness.results)
    (job,) = harness.results[0].jobs
    assert (job.state, job.attempts) == (JobState.ERROR, 3)
    assert job.error == "RuntimeError: bad weights (after 3 attempts)"
    audit = await harness.store.list_audit()
    assert [a.status for a in audit] == ["error"] * 3


async def test_a_case_no_route_matches_closes_as_no_model(harness: Harness) -> None:
    svc = await harness.service(FakeModel())
    svc.on_cases([await harness.case("1.2.9.70", modality="MR")])
    await wait_for(lambda: harness.results)
    result = harness.results[0]
    assert result.no_model and result.findings == []
    assert result.jobs[0].error == "no model applies (modality=MR body_part=- procedure=-)"


async def test_start_up_re_drives_running_jobs_and_untold_results(harness: Harness) -> None:
    store = harness.store
    case = await harness.case("1.2.9.80")
    await store.enqueue_jobs(case.id, ["fake"], 1)
    (claimed,) = await store.claim_jobs(10, time.time())  # then the engine "crashed"
    done = await harness.case("1.2.9.81")
    (job,) = await store.enqueue_jobs(done.id, ["fake"], 1)
    await store.claim_jobs(10, time.time())
    assert await store.finish_job(job.id, JobState.DONE, [], None)  # listeners never told
    unrouted = await harness.case("1.2.9.82")  # crashed between case and jobs
    await harness.service(FakeModel())
    await wait_for(lambda: len(harness.results) == 3)
    told = {r.case.case_id: r.jobs[0] for r in harness.results}
    assert set(told) == {case.id, done.id, unrouted.id}
    assert (told[case.id].state, told[case.id].attempts) == (JobState.DONE, 2)

    async def all_marked() -> bool:  # marked told once the listeners returned, just after
        return await store.unnotified_cases() == []
    await wait_for(all_marked)
