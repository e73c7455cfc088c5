"""The message browser, PHI masking, the audit of content views, reprocessing, case timelines."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bench.hl7gen import adt_a01, orm_o01
from engine.admin.routing import TIMELINE_SOURCES, register_timeline
from engine.model import Status
from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, seed_case, send_hl7

__all__ = ["admin_engine"]


async def _settled(engine: Any, n: int) -> None:
    async def done() -> bool:
        counts = await engine.store.counts()
        final = sum(v for (ch, st), v in counts.items() if ch == "ris" and Status(st).final)
        return bool(final == n)

    await wait_for(done)


async def _ids(api: Any, query: str, role: str = "analyst") -> list[int]:
    status, body = await api.call("GET", f"/api/messages?{query}", role)
    assert status == 200, body
    return [m["id"] for m in body["messages"]]


async def test_messages_are_searched_by_channel_status_type_control_id_and_date(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    t0 = time.time()
    await send_hl7(engine, orm_o01("S1"))
    await send_hl7(engine, adt_a01("S2"))
    await send_hl7(engine, b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|S3|P|2.5\rPID|1||M")  # not accepted
    await _settled(engine, 3)
    assert len(await _ids(api, "channel=ris")) == 3
    assert len(await _ids(api, "status=ERROR")) == 1
    assert len(await _ids(api, "type=ADT%5EA01")) == 1
    assert len(await _ids(api, "control_id=S1")) == 1
    assert len(await _ids(api, f"since={t0 - 1}")) == 3
    assert await _ids(api, "until=2000-01-01") == []
    status, body = await api.call("GET", "/api/messages?status=BOGUS", "admin")
    assert status == 400 and "status must be one of" in body["error"]


async def test_messages_are_found_by_accession(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    await send_hl7(engine, orm_o01("A1", accession="ACC777"))
    await send_hl7(engine, orm_o01("A2", accession="ACC888"))
    await _settled(engine, 2)
    ids = await _ids(api, "accession=ACC777")
    assert len(ids) == 1
    _, body = await api.call("GET", f"/api/messages/{ids[0]}", "analyst")
    assert body["control_id"] == "A1"


async def test_a_message_shows_every_layer_segment_by_segment_with_field_names(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    await send_hl7(engine, orm_o01("L1"))
    await _settled(engine, 1)
    (mid,) = await _ids(api, "control_id=L1")
    status, body = await api.call("GET", f"/api/messages/{mid}", "analyst")
    assert status == 200 and body["masked"] is False and body["key"] == "MRN0001"
    names = [layer["name"] for layer in body["layers"]]
    assert names[0] == "raw" and "sent to archive" in names and "response from archive" in names
    raw = body["layers"][0]
    assert raw["format"] == "hl7"
    pid = next(s for s in raw["segments"] if s["id"] == "PID")
    by_n = {f["n"]: f for f in pid["fields"]}
    assert by_n[5]["name"] == "Patient Name" and "^" in by_n[5]["value"]
    msh = {f["n"]: f for f in raw["segments"][0]["fields"]}
    assert msh[1]["value"] == "|" and msh[10] == {"n": 10, "name": "Message Control ID",
                                                   "value": "L1"}
    assert body["deliveries"][0]["status"] == "SENT"


async def test_a_viewer_sees_phi_masked_in_every_layer_and_list(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    await send_hl7(engine, orm_o01("V1", patient_id="MRN4242", accession="ACC4242"))
    await _settled(engine, 1)
    (mid,) = await _ids(api, "channel=ris", role="viewer")  # not by control id: see below
    status, body = await api.call("GET", f"/api/messages/{mid}", "viewer")
    assert status == 200 and body["masked"] is True and body["key"] == "***"
    for layer in body["layers"]:
        assert "MRN4242" not in layer["text"] and "ACC4242" not in layer["text"]
        for seg in layer["segments"] or []:
            assert all("MRN4242" not in f["value"] for f in seg["fields"])
    raw = body["layers"][0]
    pid = {f["n"]: f["value"] for s in raw["segments"] if s["id"] == "PID" for f in s["fields"]}
    assert pid[1] == "1" and pid[3] == pid[5] == "***"
    assert "ORM^O01" in raw["text"]  # the header stays readable
    _, listing = await api.call("GET", "/api/orders", "viewer")
    assert listing["orders"][0]["patient_id"] == "***"
    assert listing["orders"][0]["accession"] == "***"


async def test_every_view_of_message_content_is_audited_with_who_and_when(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    await send_hl7(engine, adt_a01("AU1"))
    await _settled(engine, 1)
    (mid,) = await _ids(api, "control_id=AU1")
    t0 = time.time()
    await api.call("GET", f"/api/messages/{mid}", "viewer")
    await api.call("GET", f"/api/messages/{mid}", "analyst")
    status, body = await api.call("GET", "/api/audit?action=message.view", "admin")
    assert status == 200
    views = [(e["user"], e["role"], e["target"], e["detail"]["masked"])
             for e in body["entries"]]
    assert views == [("analyst-token", "analyst", str(mid), False),
                     ("viewer-token", "viewer", str(mid), True)]
    assert all(e["at"] >= t0 and e["remote"] == "127.0.0.1" for e in body["entries"])
    assert (await api.call("GET", "/api/messages?channel=ris", "viewer"))[0] == 200
    _, again = await api.call("GET", "/api/audit?action=message.view", "admin")
    assert len(again["entries"]) == 2  # a search shows no content: not a content view


async def test_reprocessing_by_ids_and_by_filter_runs_messages_again(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    for i in range(3):
        await send_hl7(engine, orm_o01(f"RP{i}"))
    await _settled(engine, 3)
    ids = await _ids(api, "channel=ris")
    status, body = await api.call("POST", "/api/messages/reprocess", "analyst",
                                  json={"ids": ids[:1]})
    assert status == 200 and body == {"requested": 1, "reprocessed": 1}
    status, body = await api.call("POST", "/api/messages/reprocess", "admin",
                                  json={"filter": {"channel": "ris", "type": "ORM^O01"}})
    assert status == 200 and body["reprocessed"] == 3
    await wait_for(lambda: engine.pipelines["ris"].processed >= 6)  # 3 + at least 3 again
    await _settled(engine, 3)
    status, body = await api.call("POST", "/api/messages/reprocess", "admin", json={})
    assert status == 400
    assert (await api.call("POST", "/api/messages/reprocess", "admin",
                           json={"ids": ["x"]}))[0] == 400


async def test_an_unknown_message_is_404(admin_engine: Started) -> None:
    _, api = await admin_engine()
    assert (await api.call("GET", "/api/messages/999", "admin"))[0] == 404
    assert (await api.call("GET", "/api/messages/abc", "admin"))[0] == 400


async def test_a_case_timeline_runs_from_order_to_study_to_case_with_timings(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    case_id = await seed_case(engine)
    status, body = await api.call("GET", f"/api/cases/{case_id}", "radiologist")
    assert status == 200 and body["case"]["accession"] == "ACC0001"
    steps = [s["step"] for s in body["timeline"]]
    assert steps[0] == "order received" and steps[-1] == "case ready"
    assert {"first instance", "last instance", "study complete"} <= set(steps)
    assert body["timeline"][0]["detail"]["message_id"] >= 1
    assert all(s["since_previous_secs"] >= 0 for s in body["timeline"])
    assert body["timeline"][-1]["since_start_secs"] >= body["timeline"][1]["since_start_secs"]
    _, masked = await api.call("GET", f"/api/cases/{case_id}", "viewer")
    assert masked["case"]["patient_id"] == "***" and masked["order"]["placer"] == "***"


async def test_registered_timeline_sources_add_their_steps(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    case_id = await seed_case(engine)

    async def inference(request: web.Request, case: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"step": "inference done", "at": time.time(), "detail": {"model": "demo"}}]

    register_timeline(inference)
    try:
        _, body = await api.call("GET", f"/api/cases/{case_id}", "admin")
    finally:
        TIMELINE_SOURCES.remove(inference)
    assert body["timeline"][-1]["step"] == "inference done"


async def test_studies_can_be_completed_now_or_sent_on_study_only(admin_engine: Started) -> None:
    from tests.e2e.support import add_study

    engine, api = await admin_engine()
    await add_study(engine, "1.2.3.4.5", "ACC9", "MRN9")
    status, body = await api.call("POST", "/api/studies/1.2.3.4.5/complete", "radiologist")
    assert status == 200 and body["study"]["state"] == "complete" and body["cases"] == []
    assert (await api.call("POST", "/api/studies/1.2.3.4.5/complete", "admin"))[0] == 409
    _, unmatched = await api.call("GET", "/api/unmatched?older_than_secs=0", "viewer")
    assert [s["uid"] for s in unmatched["studies"]] == ["1.2.3.4.5"]
    assert unmatched["studies"][0]["accession"] == "***"
    status, body = await api.call("POST", "/api/studies/1.2.3.4.5/proceed", "radiologist")
    assert status == 200 and body["case"]["state"] == "study_only"
    assert (await api.call("POST", "/api/studies/1.2.3.4.5/proceed", "admin"))[0] == 409
    assert (await api.call("GET", "/api/studies/9.9.9", "admin"))[0] == 404
