"""Studies, orders, cases (with their timeline) and unmatched items.

Viewers see only what each route's ``viewer=`` allows (``engine.admin.phi``): identifiers
(patient ID, accession, order numbers, the order key) are masked. A case
timeline lists order -> study -> case, then whatever registered timeline
sources add (inference, each output), each step with the time since the one
before.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.admin import phi
from engine.admin.auth import STAFF_ROLES
from engine.admin.http import audit, fail, float_param, int_param, ok, path_int, state, who
from engine.admin.routing import TIMELINE_SOURCES, Panel, Param, Router, register_panel
from engine.admin.views import case_dict, order_dict, study_dict
from engine.store.clinical import StudyRow
from engine.store.protocols import ClinicalDesk

router = Router("clinical")
CLINICAL_ACTORS = ("admin", "analyst", "radiologist")
_LIMIT = Param("limit", "integer", "1..1000, default 100", viewer=True)
_STUDIES = phi.view(phi.STUDY, {"studies", "study", "cases"}, phi.CASE)
_ORDERS = phi.view(phi.ORDER, {"orders"})
_CASES = phi.view(phi.CASE, {"cases"})
_CASE = phi.view({"case", "order", "study"}, phi.CASE, phi.ORDER, phi.STUDY, phi.TIMELINE)
_UNMATCHED = phi.view({"older_than_secs", "orders", "studies"}, phi.ORDER, phi.STUDY)

register_panel(Panel("cases", "Cases", "panels/cases.js", STAFF_ROLES, order=40))
register_panel(Panel("studies", "Studies & orders", "panels/studies.js", STAFF_ROLES, order=50))


def _store(request: web.Request) -> ClinicalDesk:
    """The store, as this module uses it (``engine.store.protocols.ClinicalDesk``)."""
    store: ClinicalDesk = state(request).engine.store
    return store


def _limit(request: web.Request) -> int:
    return int_param(request, "limit", 100, 1, 1000) or 100


@router.get("/api/studies", roles=STAFF_ROLES, summary="Studies, most recently active first",
            params=(Param("state", enum=("receiving", "complete"), viewer=True), _LIMIT),
            viewer=_STUDIES)
async def list_studies(request: web.Request) -> web.Response:
    state_ = request.query.get("state") or None
    rows = await _store(request).list_studies(state_, _limit(request))
    return ok({"studies": [study_dict(s) for s in rows]})


async def _study(request: web.Request) -> StudyRow:
    uid = request.match_info["uid"]
    study = await _store(request).get_study(uid)
    if study is None:
        fail(404, f"no study {uid}")
    return study


@router.get("/api/studies/{uid}", roles=STAFF_ROLES, summary="One study",
            responses={200: "OK", 404: "no such study"}, viewer=_STUDIES)
async def get_study(request: web.Request) -> web.Response:
    return ok(study_dict(await _study(request)))


@router.post("/api/studies/{uid}/complete", roles=CLINICAL_ACTORS, audited=True,
             summary="Declare a receiving study complete now (correlates it)",
             responses={200: "the study and any new cases", 404: "no such study",
                        409: "already complete"})
async def complete_study(request: web.Request) -> web.Response:
    study = await _study(request)
    if study.state != "receiving":
        fail(409, f"study {study.uid} is already {study.state}")
    await audit(request, "study.complete", study.uid)
    cases = await state(request).engine.assembler.complete(study.uid, why="operator")
    return ok({"study": study_dict(await _study(request)),
               "cases": [case_dict(c) for c in cases]})


@router.post("/api/studies/{uid}/proceed", roles=CLINICAL_ACTORS, audited=True,
             summary="Let a complete study without an order go on study-only",
             responses={200: "the new case", 404: "no such study",
                        409: "not complete, or already has a case"})
async def proceed_study(request: web.Request) -> web.Response:
    study = await _study(request)
    await audit(request, "study.proceed", study.uid)
    engine = state(request).engine
    case = await _store(request).proceed_study_only(study.uid)
    if case is None:
        fail(409, f"study {study.uid} is not complete or already has a case")
    engine.assembler.on_cases([case])
    return ok({"case": case_dict(case)})


@router.get("/api/orders", roles=STAFF_ROLES, summary="Orders, newest first", params=(_LIMIT,),
            viewer=_ORDERS)
async def list_orders(request: web.Request) -> web.Response:
    rows = await _store(request).list_orders(_limit(request))
    return ok({"orders": [order_dict(o) for o in rows]})


@router.get("/api/cases", roles=STAFF_ROLES,
            summary="Cases (order joined with study), newest first",
            params=(Param("state", enum=("ready", "cancelled", "study_only"), viewer=True),
                    _LIMIT), viewer=_CASES)
async def list_cases(request: web.Request) -> web.Response:
    state_ = request.query.get("state") or None
    rows = await _store(request).list_cases(state_, _limit(request))
    return ok({"cases": [case_dict(c) for c in rows]})


def _step(step: str, at: float | None, **detail: Any) -> dict[str, Any]:
    return {"step": step, "at": at, "detail": {k: v for k, v in detail.items() if v is not None}}


async def _order_steps(request: web.Request, order_id: int | None
                       ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if order_id is None:
        return [], None
    found = await state(request).views.get_order(order_id)
    if found is None:
        return [], None
    order, message_id = found
    row = order_dict(order)
    steps = [_step("order received", order.created_at, message_id=message_id,
                   accession=row["accession"], procedure=order.procedure_text,
                   priority=order.priority)]
    if order.updated_at > order.created_at + 0.001:
        steps.append(_step("order updated", order.updated_at, control=order.control,
                           status=order.status))
    return steps, row


def _study_steps(study: StudyRow | None) -> list[dict[str, Any]]:
    if study is None:
        return []
    steps = [_step("first instance", study.first_at, modality=study.modality),
             _step("last instance", study.last_at, series=study.series_count,
                   instances=study.instance_count)]
    if study.completed_at is not None:
        steps.append(_step("study complete", study.completed_at, revision=study.revision))
    return steps


def _timed(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted by time, each with seconds since the previous step and since the first."""
    timed = sorted((s for s in steps if s.get("at") is not None), key=lambda s: s["at"])
    start = timed[0]["at"] if timed else None
    prev = start
    for s in timed:
        s["since_previous_secs"] = round(s["at"] - prev, 3)
        s["since_start_secs"] = round(s["at"] - start, 3)
        prev = s["at"]
    return timed + [s for s in steps if s.get("at") is None]


@router.get("/api/cases/{id}", roles=STAFF_ROLES, audited=True,
            params=(Param("id", "integer", where="path", required=True),),
            summary="One case with its timeline: order -> study -> inference -> outputs",
            responses={200: "OK", 404: "no such case"}, viewer=_CASE)
async def get_case(request: web.Request) -> web.Response:
    st, masked = state(request), who(request).masked
    case_id = path_int(request, "id")
    case = await st.views.get_case(case_id)
    if case is None:
        fail(404, f"no case {case_id}")
    row = case_dict(case)
    steps, order = await _order_steps(request, case.order_id)
    study = await _store(request).get_study(case.study_uid)
    steps += _study_steps(study)
    steps.append(_step("case ready", case.created_at, state=case.state))
    for source in TIMELINE_SOURCES:
        steps += await source(request, row)
    await audit(request, "case.view", str(case_id), masked=masked)
    return ok({"case": row, "order": order,
               "study": study_dict(study) if study else None, "timeline": _timed(steps)})


@router.get("/api/unmatched", roles=STAFF_ROLES,
            summary="Orders without a study and complete studies without an order",
            params=(Param("older_than_secs", "number",
                          "default: engine.unmatched_after_secs from channels.toml",
                          viewer=True),), viewer=_UNMATCHED)
async def list_unmatched(request: web.Request) -> web.Response:
    engine = state(request).engine
    age = float_param(request, "older_than_secs",
                      float(engine.config.engine.unmatched_after_secs))
    orders, studies = await _store(request).unmatched(time.time() - age)
    return ok({"older_than_secs": age,
               "orders": [order_dict(o) for o in orders],
               "studies": [study_dict(s) for s in studies]})
