"""The models panel's API and the inference steps of a case timeline, from the inference
records of the store (jobs, attempts, findings, model loads)."""

from __future__ import annotations

import time

from engine.model import Finding
from engine.store.inference import AuditEntry, JobState, ModelLoad
from tests.e2e.support import Started, admin_engine, seed_case

__all__ = ["admin_engine"]


async def _run_job(engine: object, case_id: int, study_uid: str, total_ms: float) -> None:
    store = engine.store  # type: ignore[attr-defined]
    await store.enqueue_jobs(case_id, ["cxr-demo"], 1)
    (job,) = await store.claim_jobs(10, time.time() + 1)
    audit = AuditEntry(job.id, case_id, study_uid, "cxr-demo", "1.0.0", "abc123def456", "cpu", 1,
                       "ok", batch_size=1, queue_ms=3.0, preprocess_ms=20.0,
                       forward_ms=total_ms / 2, total_ms=total_ms)
    finding = Finding("12345", "Demo opacity", "99RADBRIDGE", 0.91, False, "cxr-demo", "1.0.0",
                      demo=True)
    assert await store.finish_job(job.id, JobState.DONE, [finding], audit)


async def test_models_show_versions_loads_job_counts_and_latency(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    case_id = await seed_case(engine)
    (case,) = await engine.store.list_cases(limit=1)
    await engine.store.record_model_load(ModelLoad("cxr-demo", "1.0.0", "builtin", "abc123def456",
                                                   "cpu", "loaded", at=time.time()))
    await _run_job(engine, case_id, case.study_uid, 120.0)
    status, body = await api.call("GET", "/api/models", "viewer")
    assert status == 200
    (model,) = body["models"]
    assert (model["name"], model["version"], model["configured"]) == ("cxr-demo", "1.0.0", False)
    assert model["loaded"]["status"] == "loaded" and model["loaded"]["device"] == "cpu"
    assert model["jobs"] == {"done": 1}
    assert model["latency"]["attempts"] == 1 and model["latency"]["total_ms"]["p50"] == 120.0
    assert model["latency"]["devices"] == ["cpu"] and model["agreement"] is None


async def test_a_case_timeline_includes_inference_attempts_and_findings(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    case_id = await seed_case(engine)
    (case,) = await engine.store.list_cases(limit=1)
    await _run_job(engine, case_id, case.study_uid, 80.0)
    _, body = await api.call("GET", f"/api/cases/{case_id}", "radiologist")
    steps = [s["step"] for s in body["timeline"]]
    assert "inference queued: cxr-demo" in steps
    assert "inference ok: cxr-demo 1.0.0" in steps and "finding: Demo opacity" in steps
    assert steps.index("case ready") < steps.index("inference ok: cxr-demo 1.0.0")
