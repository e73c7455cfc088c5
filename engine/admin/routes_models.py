"""Models: versions, what was loaded where, job counts, latencies; inference steps in timelines.

Reads the inference side of the store (``list_model_loads``, ``list_jobs``,
``list_audit``, ``list_findings``). Counts and latencies are taken over the most
recent jobs and audit entries (``window``), not the whole history. ``agreement`` is
that of the model's current version with its readers, over every stored verdict
(radiologists' accept / reject / modify and final reports' confirmed / refuted /
missed, ``engine.store.results``): accepted over ``judged``; null while nothing was
judged. ``/api/agreement`` gives it for every version.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web

from engine.admin import phi
from engine.admin.auth import STAFF_ROLES
from engine.admin.http import int_param, ok, state
from engine.admin.routing import Panel, Param, Router, register_panel, register_timeline
from engine.store.protocols import InferenceRecords

router = Router("models")
register_panel(Panel("models", "Models", "panels/models.js", STAFF_ROLES, order=60))


def _store(request: web.Request) -> InferenceRecords:
    """The store, as this module uses it (``engine.store.protocols.InferenceRecords``)."""
    store: InferenceRecords = state(request).engine.store
    return store


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


def _latency(entries: list[Any]) -> dict[str, Any]:
    ok_entries = [a for a in entries if a.status == "ok"]
    out: dict[str, Any] = {"attempts": len(entries),
                           "by_status": dict(Counter(a.status for a in entries)),
                           "devices": sorted({a.device for a in entries})}
    for stage in ("total_ms", "forward_ms", "preprocess_ms", "queue_ms"):
        values = [float(getattr(a, stage)) for a in ok_entries if getattr(a, stage) is not None]
        out[stage] = {"p50": _percentile(values, 50), "p95": _percentile(values, 95)}
    return out


def _agreement(rows: dict[tuple[str, str], Any], name: str, version: str | None
               ) -> dict[str, Any]:
    row = rows.get((name, version or ""))
    judged = row.accepted + row.rejected + row.modified + row.missed if row else 0
    return {"agreement": row.agreement if row else None, "judged": judged}


def _model_rows(config_models: list[Any], loads: list[Any], jobs: list[Any],
                audit: list[Any], agreement: dict[tuple[str, str], Any]
                ) -> list[dict[str, Any]]:
    names = [m.name for m in config_models]
    for name in [x.name for x in loads] + [j.model for j in jobs if j.model] + \
            [a.model for a in audit]:
        if name not in names:
            names.append(name)
    configured = {m.name: m for m in config_models}
    jobs_by: dict[str, Counter[str]] = defaultdict(Counter)
    for j in jobs:
        if j.model:
            jobs_by[j.model][str(j.state)] += 1
    rows = []
    for name in names:
        conf = configured.get(name)
        load = next((x for x in loads if x.name == name), None)
        version = conf.version if conf else (load.version if load else None)
        rows.append({
            "name": name, "configured": conf is not None, "version": version,
            "mode": conf.mode if conf else None,
            "loaded": {"version": load.version, "checksum": load.checksum, "device": load.device,
                       "status": load.status, "error": load.error, "at": load.at}
            if load else None,
            "jobs": dict(jobs_by.get(name, {})),
            "latency": _latency([a for a in audit if a.model == name]),
            **_agreement(agreement, name, version),
        })
    return rows


@router.get("/api/models", roles=STAFF_ROLES,
            summary="Models: versions, loads, job counts and latencies over recent work, and "
                    "the current version's agreement with its readers",
            params=(Param("window", "integer", "recent jobs and attempts read (default 1000)",
                          viewer=True),),
            viewer=phi.view({"window", "no_model_jobs", "models", "name", "configured", "version",
                             "mode", "loaded", "checksum", "device", "status", "error", "at",
                             "latency", "attempts", "devices", "total_ms", "forward_ms",
                             "preprocess_ms", "queue_ms", "p50", "p95", "agreement", "judged"},
                            maps={"jobs", "by_status"}))
async def list_models(request: web.Request) -> web.Response:
    store = _store(request)
    window = int_param(request, "window", 1000, 1, 100_000) or 1000
    loads = await store.list_model_loads(200)
    jobs = await store.list_jobs(limit=window)
    audit = await store.list_audit(limit=window)
    no_model = sum(1 for j in jobs if j.model is None)
    verdicts = await store.agreement()
    agreement = {(r.model, r.version): r for r in verdicts}
    return ok({"window": window, "no_model_jobs": no_model,
               "models": _model_rows(list(state(request).engine.config.model), loads, jobs,
                                     audit, agreement)})


async def inference_steps(request: web.Request, case: dict[str, Any]) -> list[dict[str, Any]]:
    """Timeline steps of a case: each job queued, each attempt, each finding."""
    store = _store(request)
    steps: list[dict[str, Any]] = []
    for job in await store.list_jobs(case_id=case["id"], limit=100):
        steps.append({"step": f"inference queued: {job.model or 'no model applies'}",
                      "at": job.created_at, "detail": {"state": str(job.state)}})
    for a in await store.list_audit(case_id=case["id"], limit=100):
        steps.append({"step": f"inference {a.status}: {a.model} {a.version}",
                      "at": a.created_at, "detail": {
                          "device": a.device, "total_ms": a.total_ms,
                          "forward_ms": a.forward_ms, "batch_size": a.batch_size or None}})
    for f in await store.list_findings(case_id=case["id"], limit=100):
        detail = {"model": f.finding.model_name, "probability": f.finding.probability,
                  "critical": f.finding.critical or None,
                  "mode": "shadow (never sent)" if f.finding.mode == "shadow" else None}
        steps.append({"step": f"finding: {f.finding.display}", "at": f.created_at,
                      "detail": {k: v for k, v in detail.items() if v is not None}})
    return steps


register_timeline(inference_steps)
