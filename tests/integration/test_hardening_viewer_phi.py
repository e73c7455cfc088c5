"""Viewer masking: every endpoint a viewer can call, fed a PHI-laden store, leaks nothing.

The operations come from the router (``engine.admin.routing.operations``), so a new
endpoint a viewer may call is exercised here the day it is added: its path parameters
are filled from ``PATH_VALUES`` (a parameter not listed there fails the test until it
is). The store holds a distinctive patient (name, MRN, date of birth, address), an order
(accession, placer, filler, control id, OBR-12 and OBR-13 free text, an NTE), a message
refused for a bad segment that quotes them, a feedback comment naming them, and an order
left unmatched. No viewer answer may contain any of those strings; the same calls made
by an admin must contain each of them (so the fixture really reaches every endpoint).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from engine.admin import phi
from engine.admin.routing import Operation, operations
from engine.model import Finding, Status
from engine.store.inference import JobState
from mappings.hl7v2.view import render_layer
from tests.conftest import wait_for
from tests.e2e.support import (
    PASSWORDS,
    Api,
    add_study,
    admin_environment,
    base_url,
    config_text,
    make_engine,
    send_hl7,
    write_users_file,
)

NAME_FAMILY, NAME_GIVEN, MRN, DOB = "ZYXWVUT", "QUORRA", "MRNQX7734219", "19230417"
ACCESSION, PLACER, FILLER, CONTROL = "ACCQX99887766", "PLCQX5544", "FILQX1122", "CTLQX4417"
STREET = "QUINCELANE"
PHI = (NAME_FAMILY, NAME_GIVEN, MRN, DOB, ACCESSION, PLACER, FILLER, CONTROL, STREET)
OTHER_ACCESSION, OTHER_PLACER = "ACCQX55500011", "PLCQX0000777"  # the unmatched order
STUDY_UID = "1.2.826.0.1.3680043.10.777.1"
MODEL, VERSION, CODE = "cxr-phi", "1.0", "36118008"


def _segment(seg_id: str, fields: dict[int, str]) -> str:
    values = [""] * (max(fields) + 1)
    values[0] = seg_id
    for n, value in fields.items():
        values[n] = value
    return "|".join(values)


def phi_order(control: str, accession: str, placer: str) -> bytes:
    """An ORM^O01 whose identifiers and free text all name the distinctive patient."""
    who = f"{NAME_FAMILY} {NAME_GIVEN} {MRN} {DOB}"
    return "\r".join(
        [
            f"MSH|^~\\&|RIS|GENHOSP|RADBRIDGE|AI|20261130101500||ORM^O01^ORM_O01|{control}|P|2.5.1",
            _segment(
                "PID",
                {
                    1: "1",
                    3: f"{MRN}^^^GENHOSP^MR",
                    5: f"{NAME_FAMILY}^{NAME_GIVEN}",
                    7: DOB,
                    8: "F",
                    11: f"12 {STREET}^^SPRINGFIELD",
                },
            ),
            _segment("PV1", {1: "1", 2: "E", 3: "ED^BAY3", 19: f"{MRN}V1"}),
            _segment("ORC", {1: "NW", 2: f"{placer}^RIS", 3: f"{FILLER}^PACS", 5: "SC"}),
            _segment(
                "OBR",
                {
                    1: "1",
                    2: f"{placer}^RIS",
                    3: f"{FILLER}^PACS",
                    4: "71046^XR CHEST 2 VIEWS^CPT4",
                    12: f"DANGER {who}",
                    13: f"History of {who}",
                    18: accession,
                    24: "CR",
                },
            ),
            f"NTE|1||Patient {who} lives at {STREET}",
            f"ZPI|{NAME_FAMILY}^{NAME_GIVEN}|{MRN}",
        ]
    ).encode("latin-1")


def bad_segment_message() -> bytes:
    """Refused (AE): its third line is not a segment, and the reason quotes its first bytes.
    (The control byte at its end keeps intake from reading it as the rest of a field that a
    stray line break cut off, which it would join back and accept.)"""
    return (
        f"MSH|^~\\&|RIS|GENHOSP|RADBRIDGE|AI|20261130101600||ORM^O01^ORM_O01|{CONTROL}B|P|"
        f"2.5.1\rPID|1||{MRN}\r{NAME_FAMILY} {NAME_GIVEN} {MRN} {DOB}\x01"
    ).encode("latin-1")


@dataclass
class Env:
    engine: Any
    api: Api
    message_ids: list[int]
    case_ids: list[int]


async def _seed(engine: Any, api: Api) -> Env:
    assert await send_hl7(engine, phi_order(CONTROL, ACCESSION, PLACER)) == "AA"
    assert await send_hl7(engine, phi_order(CONTROL + "U", OTHER_ACCESSION, OTHER_PLACER)) == "AA"
    assert await send_hl7(engine, bad_segment_message()) in ("AE", "AR")

    async def settled() -> bool:
        counts = await engine.store.counts()
        return sum(n for (_, s), n in counts.items() if Status(s).final) == 3

    await wait_for(settled)
    await add_study(engine, STUDY_UID, ACCESSION, MRN)
    (case,) = await engine.assembler.complete(STUDY_UID)
    await _finding_with_feedback(engine, api, case.id)
    messages = await engine.store.query_messages(_all_messages())
    return Env(engine, api, sorted(m.id for m in messages), [case.id])


def _all_messages() -> Any:
    from engine.store.base import MessageQuery

    return MessageQuery(limit=100)


async def _finding_with_feedback(engine: Any, api: Api, case_id: int) -> None:
    store = engine.store
    (job,) = await store.enqueue_jobs(case_id, [MODEL], 1)
    await store.claim_jobs(100, 1e12)
    await store.finish_job(
        job.id,
        JobState.DONE,
        [Finding(CODE, "Pneumothorax", "SCT", 0.9, True, MODEL, VERSION)],
        None,
    )
    comment = f"Seen {NAME_GIVEN} {NAME_FAMILY} ({MRN}, born {DOB}), accession {ACCESSION}"
    status, body = await api.call(
        "POST",
        f"/api/cases/{case_id}/feedback",
        "radiologist",
        json={
            "model": MODEL,
            "version": VERSION,
            "code": CODE,
            "verdict": "reject",
            "comment": comment,
        },
    )
    assert status == 200, body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("viewer-phi")
    with admin_environment(write_users_file(tmp / "users.toml")):
        engine = make_engine(tmp, config_text(tmp))
        await engine.start()
        api = Api(base_url(engine))
        try:
            yield await _seed(engine, api)
        finally:
            await api.close()
            await engine.stop()


# -- every operation a viewer can call ------------------------------------------------------

VIEWER_OPS = sorted(
    (op for op in operations() if op.public or "viewer" in op.roles), key=lambda op: op.operation_id
)
EXTRA_QUERY = {"list_unmatched": "older_than_secs=0", "list_worklist": "include_read=true"}
BODIES = {"login": {"username": "viewer", "password": PASSWORDS["viewer"]}}


def path_values(env: Env, study_uids: list[str]) -> dict[str, list[str]]:
    """Values for each path parameter name: every row the fixture made of that kind."""
    ids = [str(i) for i in env.message_ids + env.case_ids]
    return {
        "id": ids,
        "case_id": [str(i) for i in env.case_ids],
        "uid": study_uids,
        "name": ["ris", "archive", "spare"],
    }


async def calls(env: Env, op: Operation) -> list[str]:
    """Every URL the operation is called with: its path filled with every fixture row."""
    studies = [s.uid for s in await env.engine.store.list_studies(limit=100)]
    values = path_values(env, studies)
    names = [p.name for p in op.params if p.where == "path"]
    missing = [n for n in names if n not in values]
    assert not missing, f"{op.operation_id}: add fixture values for path parameter(s) {missing}"
    query = f"?{EXTRA_QUERY[op.operation_id]}" if op.operation_id in EXTRA_QUERY else ""
    urls = []
    for combo in itertools.product(*(values[n] for n in names)):
        path = op.path
        for name, value in zip(names, combo, strict=True):
            path = path.replace("{" + name + "}", value)
        urls.append(path + query)
    return urls


async def answers(env: Env, op: Operation, role: str) -> list[tuple[str, int, str]]:
    out = []
    for url in await calls(env, op):
        async with env.api.http.request(
            op.method,
            env.api.base + url,
            json=BODIES.get(op.operation_id),
            headers={"Authorization": f"Bearer {_token(role)}"},
        ) as r:
            out.append((url, r.status, await r.text()))
    return out


def _token(role: str) -> str:
    from tests.e2e.support import TOKENS

    return TOKENS[role]


def leaks(text: str) -> list[str]:
    low = text.lower()
    return [s for s in PHI if s.lower() in low]


def test_a_viewer_can_call_the_data_endpoints_this_file_exercises() -> None:
    ids = {op.operation_id for op in VIEWER_OPS}
    assert {
        "list_orders",
        "list_unmatched",
        "get_case",
        "get_feedback",
        "get_message",
        "list_messages",
        "list_worklist",
        "list_models",
    } <= ids


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("op", VIEWER_OPS, ids=[op.operation_id for op in VIEWER_OPS])
async def test_no_viewer_answer_carries_any_phi_of_the_fixture(env: Env, op: Operation) -> None:
    for url, status, text in await answers(env, op, "viewer"):
        assert status < 500, f"{op.method} {url}: {status} {text[:200]}"
        assert not leaks(text), f"{op.method} {url} shows a viewer {leaks(text)}: {text[:400]}"


@pytest.mark.asyncio(loop_scope="module")
async def test_the_same_calls_by_an_admin_show_every_phi_string_so_the_fixture_reaches_them(
    env: Env,
) -> None:
    seen: set[str] = set()
    for op in VIEWER_OPS:
        for _, _, text in await answers(env, op, "admin"):
            seen.update(leaks(text))
    assert seen == set(PHI)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_order_key_feedback_comment_and_segment_error_are_masked_for_a_viewer(
    env: Env,
) -> None:
    _, orders = await env.api.call("GET", "/api/orders", "viewer")
    assert {o["order_key"] for o in orders["orders"]} == {phi.MASK}
    _, feedback = await env.api.call("GET", f"/api/cases/{env.case_ids[0]}/feedback", "viewer")
    (entry,) = feedback["feedback"]
    assert entry["comment"] == phi.MASK and entry["verdict"] == "reject"
    _, listing = await env.api.call("GET", "/api/messages?status=ERROR", "viewer")
    (refused,) = listing["messages"]
    assert refused["error"] == phi.MASK and refused["control_id"] == phi.MASK
    _, analyst = await env.api.call("GET", "/api/messages?status=ERROR", "analyst")
    assert NAME_FAMILY in analyst["messages"][0]["error"]  # the reason quotes the segment


@pytest.mark.asyncio(loop_scope="module")
async def test_roles_that_see_phi_still_see_it_and_their_views_are_audited(env: Env) -> None:
    case_id = env.case_ids[0]
    for role in ("admin", "analyst", "radiologist"):
        status, body = await env.api.call("GET", f"/api/cases/{case_id}", role)
        assert status == 200 and body["order"]["order_key"] == PLACER
        assert body["case"]["accession"] == ACCESSION
        (entry,) = await env.engine.admin.state.audit.query(action="case.view", limit=1)
        assert (entry.user, entry.detail["masked"]) == (f"{role}-token", False)
    await env.api.call("GET", f"/api/cases/{case_id}", "viewer")
    (entry,) = await env.engine.admin.state.audit.query(action="case.view", limit=1)
    assert (entry.user, entry.detail["masked"]) == ("viewer-token", True)


# -- the search oracle ----------------------------------------------------------------------

PHI_PARAMS = [
    (op, p.name)
    for op in VIEWER_OPS
    if not op.public
    for p in op.params
    if p.where == "query" and not p.viewer
]
OPEN_PARAMS = [
    (op, p)
    for op in VIEWER_OPS
    if not op.public
    for p in op.params
    if p.where == "query" and p.viewer
]
SAMPLES = {"since": "2026-01-01", "until": "2030-01-01", "channel": "ris", "type": "ORM^O01"}


def test_control_id_and_accession_are_among_the_parameters_refused_to_viewers() -> None:
    refused = {(op.operation_id, name) for op, name in PHI_PARAMS}
    assert {("list_messages", "control_id"), ("list_messages", "accession")} <= refused


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "op,name", PHI_PARAMS, ids=[f"{op.operation_id}-{name}" for op, name in PHI_PARAMS]
)
async def test_a_viewer_searching_by_an_identifier_is_refused_with_the_reason(
    env: Env, op: Operation, name: str
) -> None:
    for value in (ACCESSION, "no-such-value"):  # the same answer whether it exists or not
        status, body = await env.api.call(op.method, f"{op.path}?{name}={value}", "viewer")
        assert status == 403 and name in body["error"] and "identify" in body["error"]


@pytest.mark.asyncio(loop_scope="module")
async def test_an_undeclared_query_parameter_is_refused_to_a_viewer(env: Env) -> None:
    status, body = await env.api.call("GET", f"/api/orders?patient_id={MRN}", "viewer")
    assert status == 403 and "patient_id" in body["error"]
    assert (await env.api.call("GET", f"/api/orders?patient_id={MRN}", "analyst"))[0] == 200


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "op,param", OPEN_PARAMS, ids=[f"{op.operation_id}-{p.name}" for op, p in OPEN_PARAMS]
)
async def test_the_parameters_marked_for_viewers_still_work_for_them(
    env: Env, op: Operation, param: Any
) -> None:
    value = (
        param.enum[0]
        if param.enum
        else {"integer": "1", "number": "0", "boolean": "true"}.get(param.type)
    )
    value = value or SAMPLES[param.name]
    url = (await calls(env, op))[0].split("?")[0]
    status, body = await env.api.call(op.method, f"{url}?{param.name}={value}", "viewer")
    assert status == 200, body


# -- the allow-lists themselves -------------------------------------------------------------


def test_a_key_no_one_allowed_is_masked_and_the_allowed_ones_are_not() -> None:
    view = phi.view({"rows", "id", "state"}, maps={"counts"})
    data = {
        "rows": [{"id": 7, "state": "ready", "new_field": "MRN1", "nested": {"id": 1}}],
        "counts": {"ERROR": 2, "QUEUED": {"id": 3, "who": "x"}},
        "total": 0,
        "gone": None,
    }
    assert view.apply(data) == {
        "rows": [{"id": 7, "state": "ready", "new_field": phi.MASK, "nested": phi.MASK}],
        "counts": {"ERROR": 2, "QUEUED": {"id": 3, "who": phi.MASK}},
        "total": phi.MASK,
        "gone": None,
    }
    assert phi.MASKED_WHOLE.apply({"anything": "x", "empty": ""}) == {
        "anything": phi.MASK,
        "empty": "",
    }


def test_free_text_control_ids_and_lines_that_are_not_segments_are_masked_in_the_hl7_view() -> None:
    shown = render_layer(
        "raw",
        phi_order(CONTROL, ACCESSION, PLACER) + b"\r" + bad_segment_message().split(b"\r")[-1],
        masked=True,
    )
    assert not leaks(shown["text"]), shown["text"]
    assert not leaks(str(shown["segments"]))
    obr = {f["n"]: f["value"] for s in shown["segments"] if s["id"] == "OBR" for f in s["fields"]}
    assert obr[4] == "71046^XR CHEST 2 VIEWS^CPT4" and obr[12] == obr[13] == phi.MASK
    assert shown["segments"][-1]["id"] == phi.MASK  # the line that is not a segment
    assert "ORM^O01^ORM_O01" in shown["text"]
