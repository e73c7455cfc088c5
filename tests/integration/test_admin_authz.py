"""Every admin API operation × every role (and no credentials), driven by the OpenAPI document.

The expected status comes from the document itself: public operations answer
everyone; the others answer 401 without credentials, 403 to a role outside
``x-roles``, and success to a role inside it. Each operation needs an example
request below: a new endpoint without one fails ``test_every_operation_has_an_example``.
Audited operations must leave an audit entry for the caller.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from engine.admin.openapi import build_document
from engine.admin.routing import operations
from engine.model import Finding
from engine.store.inference import JobState
from tests.e2e.support import (
    PASSWORDS,
    ROLES,
    Api,
    add_study,
    admin_environment,
    base_url,
    config_text,
    make_engine,
    seed_case,
    write_users_file,
)

CALLERS = (*ROLES, None)  # None: no credentials
_uids = itertools.count(1)


@dataclass
class Env:
    engine: Any
    api: Api
    case_id: int
    study_uid: str


Example = Callable[[Env], Awaitable[tuple[str, Any]]]


def fixed(path: str, body: Any = None) -> Example:
    async def example(env: Env) -> tuple[str, Any]:
        return path.format(case=env.case_id, study=env.study_uid), body

    return example


async def receiving_study(env: Env) -> tuple[str, Any]:
    uid = f"1.2.826.0.1.3680043.10.999.{next(_uids)}"
    await add_study(env.engine, uid, None, None)
    return f"/api/studies/{uid}/complete", None


async def unmatched_study(env: Env) -> tuple[str, Any]:
    uid = f"1.2.826.0.1.3680043.10.998.{next(_uids)}"
    await add_study(env.engine, uid, None, None)
    await env.engine.assembler.complete(uid)
    return f"/api/studies/{uid}/proceed", None


async def feedback(env: Env) -> tuple[str, Any]:
    """A radiologist's verdict on a real finding of the seeded case."""
    store = env.engine.store
    if not await store.list_findings(env.case_id):
        (job,) = await store.enqueue_jobs(env.case_id, ["cxr-test"], 1)
        await store.claim_jobs(100, 1e12)
        await store.finish_job(job.id, JobState.DONE, [Finding(
            "36118008", "Pneumothorax", "SCT", 0.9, True, "cxr-test", "1.0")], None)
    body = {"model": "cxr-test", "version": "1.0", "code": "36118008", "verdict": "accept"}
    return f"/api/cases/{env.case_id}/feedback", body


async def _parked_delivery(env: Env) -> int:
    """A QUEUED delivery to a destination nothing sends to (so it stays queued)."""
    from engine.model import Status
    from engine.store.base import NewMessage, Outcome

    store = env.engine.store
    mid = await store.insert_message(NewMessage("ris", 0.0, b"MSH|^~\\&|X",
                                                status=Status.TRANSFORMED))
    await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED,
                                        deliveries=[("parked", b"payload")])])
    (delivery,) = (await store.get_message(mid))[1]
    return delivery.id


def delivery_action(action: str) -> Example:
    async def example(env: Env) -> tuple[str, Any]:
        delivery_id = await _parked_delivery(env)
        if action == "retry":
            await env.engine.store.end_delivery(delivery_id, "SKIPPED by test: setup")
        return f"/api/deliveries/{delivery_id}/{action}", {"reason": "authz matrix"}

    return example


async def fhir_resource(env: Env) -> tuple[str, Any]:
    """A stored FHIR resource to read (the read-only /fhir API)."""
    from radbridge_fhir.ids import resource_id, storable

    device = {"resourceType": "Device",
              "identifier": [{"system": "urn:radbridge:model", "value": "authz:1.0"}]}
    await env.engine.store.save_fhir_resources(env.case_id, storable([device]))
    return f"/fhir/Device/{resource_id(device)}", None


EXAMPLES: dict[str, Example] = {
    "health": fixed("/health"),
    "ready": fixed("/ready"),
    "get_metrics": fixed("/metrics"),
    "openapi": fixed("/api/openapi.json"),
    "login": fixed("/api/login", {"username": "viewer", "password": PASSWORDS["viewer"]}),
    "logout": fixed("/api/logout"),
    "session": fixed("/api/session"),
    "audit_log": fixed("/api/audit?limit=5"),
    "list_channels": fixed("/api/channels"),
    "get_channel": fixed("/api/channels/ris"),
    "stop_channel": fixed("/api/channels/spare/stop"),
    "start_channel": fixed("/api/channels/spare/start"),
    "redeploy_channel": fixed("/api/channels/spare/redeploy"),
    "try_channel": fixed("/api/channels/ris/try", {"message_id": 1}),
    "get_stats": fixed("/api/stats"),
    "list_queues": fixed("/api/queues"),
    "pause_queue": fixed("/api/queues/archive/pause"),
    "resume_queue": fixed("/api/queues/archive/resume"),
    "skip_delivery": delivery_action("skip"),
    "cancel_delivery": delivery_action("cancel"),
    "retry_delivery": delivery_action("retry"),
    "get_config": fixed("/api/config"),
    "reload_config": fixed("/api/config/reload", {"dry_run": True}),
    "list_messages": fixed("/api/messages?channel=ris&limit=5"),
    "get_message": fixed("/api/messages/1"),
    "reprocess_messages": fixed("/api/messages/reprocess", {"ids": [1]}),
    "list_studies": fixed("/api/studies"),
    "get_study": fixed("/api/studies/{study}"),
    "complete_study": receiving_study,
    "proceed_study": unmatched_study,
    "list_orders": fixed("/api/orders"),
    "list_cases": fixed("/api/cases"),
    "get_case": fixed("/api/cases/{case}"),
    "list_unmatched": fixed("/api/unmatched"),
    "list_models": fixed("/api/models"),
    "list_worklist": fixed("/api/worklist"),
    "mark_read": fixed("/api/worklist/{case}/read", {"read": False}),
    "post_feedback": feedback,
    "get_feedback": fixed("/api/cases/{case}/feedback"),
    "get_agreement": fixed("/api/agreement"),
    "fhir_metadata": fixed("/fhir/metadata"),
    "fhir_read": fhir_resource,
    "fhir_search": fixed("/fhir/Observation?patient=PAT1"),
}


def _document() -> dict[str, Any]:
    return build_document(operations())


def _matrix() -> list[tuple[str, str, str, list[str], bool]]:
    rows = []
    for path, methods in _document()["paths"].items():
        for method, op in methods.items():
            rows.append((op["operationId"], method.upper(), path, op["x-roles"],
                         op["x-audited"]))
    return sorted(rows)


def expected_status(roles: list[str], caller: str | None) -> int:
    if not roles:
        return 200
    if caller is None:
        return 401
    return 200 if caller in roles else 403


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("authz")
    users = write_users_file(tmp / "users.toml")
    with admin_environment(users):
        engine = make_engine(tmp, config_text(tmp))
        await engine.start()
        api = Api(base_url(engine))
        try:
            case_id = await seed_case(engine)
            (case,) = await engine.store.list_cases(limit=1)
            yield Env(engine, api, case_id, case.study_uid)
        finally:
            await api.close()
            await engine.stop()


def test_every_operation_has_an_example() -> None:
    ids = {row[0] for row in _matrix()}
    assert ids == set(EXAMPLES), f"missing: {ids - set(EXAMPLES)}, stale: {set(EXAMPLES) - ids}"


def test_every_operation_names_its_roles_from_the_known_five() -> None:
    for op_id, _, _, roles, _ in _matrix():
        assert set(roles) <= set(ROLES), op_id


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c or "anonymous")
@pytest.mark.parametrize("op_id,method,path,roles,audited", _matrix(),
                         ids=[row[0] for row in _matrix()])
async def test_each_role_gets_the_documented_answer(env: Env, op_id: str, method: str,
                                                    path: str, roles: list[str],
                                                    audited: bool, caller: str | None) -> None:
    url, body = await EXAMPLES[op_id](env)
    before = await env.engine.admin.state.audit.query(limit=1)
    status, answer = await env.api.call(method, url, caller, json=body)
    want = expected_status(roles, caller)
    assert status == want, f"{method} {url} as {caller}: {status} {answer}"
    if want == 200 and audited:
        (latest,) = await env.engine.admin.state.audit.query(limit=1)
        assert not before or latest.id > before[0].id
        assert latest.user == f"{caller}-token" and latest.role == caller


def test_the_documented_roles_match_the_intended_policy() -> None:
    """A change of who may do what shows up here, not only in the code."""
    roles = {row[0]: set(row[3]) for row in _matrix()}
    staff = set(ROLES) - {"ehr"}  # the EHR's system account reads /fhir and nothing else
    assert {k for k, v in roles.items() if not v} == {"health", "ready", "openapi", "login"}
    assert roles["audit_log"] == {"admin"}
    for op in ("get_message", "list_messages"):
        assert roles[op] == {"admin", "analyst", "viewer"}
    for op in ("stop_channel", "start_channel", "redeploy_channel", "pause_queue",
               "resume_queue", "reload_config", "reprocess_messages", "get_config",
               "skip_delivery", "cancel_delivery", "retry_delivery"):
        assert roles[op] == {"admin", "analyst"}
    for op in ("complete_study", "proceed_study"):
        assert roles[op] == {"admin", "analyst", "radiologist"}
    for op in ("list_channels", "get_stats", "list_queues", "list_cases", "get_case",
               "list_studies", "list_orders", "list_unmatched", "get_metrics", "session",
               "list_models", "list_worklist", "get_feedback", "get_agreement"):
        assert roles[op] == staff
    for op in ("mark_read", "post_feedback"):
        assert roles[op] == {"admin", "radiologist"}
    for op in ("fhir_metadata", "fhir_read", "fhir_search"):  # FHIR carries PHI: no viewers
        assert roles[op] == {"admin", "analyst", "radiologist", "ehr"}
    assert {op for op, v in roles.items() if "ehr" in v} == {"fhir_metadata", "fhir_read",
                                                             "fhir_search"}


def test_the_openapi_document_lists_every_registered_operation() -> None:
    doc = _document()
    count = sum(len(m) for m in doc["paths"].values())
    assert count == len(operations()) == len(EXAMPLES)
    assert doc["openapi"].startswith("3.")
