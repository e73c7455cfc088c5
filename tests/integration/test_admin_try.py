"""The tester API: POST /api/channels/{name}/try, pasted or stored, audited, masked for viewers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.hl7gen import orm_o01
from engine.store.base import MessageQuery
from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, config_text, send_hl7

__all__ = ["admin_engine"]


def channels(tmp: Path) -> str:
    return f"""
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
accept = ["ORM^O01"]
process = "orders"
filter = {{ name = "no-test-traffic", not = {{ field = "MSH-11", eq = "T" }} }}
forward_to = [{{ to = "archive", when = {{ field = "OBR-24", eq = "CT" }} }}]

[[channel]]
name = "archive"
destination = {{ type = "file", directory = "{tmp / 'archive'}" }}
"""


def ct_order(control_id: str, mode: str = "P") -> str:
    raw = orm_o01(control_id, patient_id="MRN5150", accession="ACC5150")
    raw = raw.replace(f"|{control_id}|P|".encode(), f"|{control_id}|{mode}|".encode())
    return raw.replace(b"||||CR|||", b"|||||CT||").decode()


async def audit_entries(api: Any, action: str) -> list[tuple[Any, ...]]:
    status, body = await api.call("GET", f"/api/audit?action={action}", "admin")
    assert status == 200, body
    return [(e["user"], e["target"], e["detail"]) for e in body["entries"]]


async def test_an_analyst_pastes_a_message_and_sees_each_step_and_the_payload(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, api = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    status, body = await api.call("POST", "/api/channels/ris/try", "analyst",
                                  {"message": ct_order("P1")})
    assert status == 200, body
    assert body["channel"] == "ris" and body["status"] == "TRANSFORMED"
    assert body["masked"] is False and body["control_id"] == "P1"
    assert [(s["scope"], s["name"], s["result"]) for s in body["steps"]] == [
        ("channel", "filter no-test-traffic", "passed"), ("archive", "forward_to[0].when",
                                                          "passed")]
    (delivery,) = body["deliveries"]
    assert delivery["destination"] == "archive" and delivery["raw"] is True
    assert "MRN5150" in delivery["payload"]["text"]
    (mapped,) = body["layers"]
    assert mapped["name"] == "mapped" and "ACC5150" in mapped["text"]
    assert await engine.store.counts() == {}  # nothing stored
    assert not (tmp_path / "archive").exists() or not any((tmp_path / "archive").iterdir())
    assert await audit_entries(api, "channel.try") == [("analyst-token", "ris",
                                                        {"masked": False})]


async def test_a_test_message_is_shown_filtered_by_its_rule(admin_engine: Started,
                                                            tmp_path: Path) -> None:
    _, api = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    status, body = await api.call("POST", "/api/channels/ris/try", "admin",
                                  {"message": ct_order("T1", mode="T")})
    assert status == 200
    assert body["status"] == "FILTERED" and body["error"] == "filtered by no-test-traffic"
    assert body["deliveries"] == [] and body["layers"] == []


async def test_a_stored_message_is_tried_by_id_and_the_view_is_audited(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, api = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    assert await send_hl7(engine, ct_order("S1").encode()) in ("AA", "CA")
    await wait_for(lambda: engine.store.list_orders(10))
    (msg,) = await engine.store.query_messages(MessageQuery(channel="ris"))
    status, body = await api.call("POST", "/api/channels/ris/try", "analyst",
                                  {"message_id": msg.id})
    assert status == 200 and body["control_id"] == "S1" and body["status"] == "TRANSFORMED"
    assert await audit_entries(api, "message.try") == [
        ("analyst-token", str(msg.id), {"channel": "ris", "masked": False})]
    status, body = await api.call("POST", "/api/channels/ris/try", "analyst",
                                  {"message_id": msg.id + 1000})
    assert status == 404 and body["error"] == f"no message {msg.id + 1000}"


async def test_a_viewer_sees_the_trace_with_phi_masked(admin_engine: Started,
                                                       tmp_path: Path) -> None:
    _, api = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    status, body = await api.call("POST", "/api/channels/ris/try", "viewer",
                                  {"message": ct_order("V1")})
    assert status == 200, body
    assert body["masked"] is True and body["status"] == "TRANSFORMED"
    assert body["control_id"] == "***"
    assert [s["name"] for s in body["steps"]] == ["filter no-test-traffic",
                                                  "forward_to[0].when"]
    text = repr(body)
    assert "MRN5150" not in text and "ACC5150" not in text
    payload = body["deliveries"][0]["payload"]
    assert "ORM^O01" in payload["text"]  # the header stays readable
    assert body["layers"][0]["text"].startswith("[withheld:")
    assert await audit_entries(api, "channel.try") == [("viewer-token", "ris",
                                                        {"masked": True})]


async def test_bad_requests_get_a_clear_4xx(admin_engine: Started, tmp_path: Path) -> None:
    _, api = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    status, body = await api.call("POST", "/api/channels/nope/try", "analyst", {"message": "x"})
    assert status == 404 and body["error"] == "no channel named 'nope'"
    status, body = await api.call("POST", "/api/channels/ris/try", "analyst", {})
    assert status == 400 and body["error"] == "give a message (its text) or a message_id"
    status, body = await api.call("POST", "/api/channels/ris/try", "analyst", {"message": 5})
    assert status == 400 and "message" in body["error"]
    status, _ = await api.call("POST", "/api/channels/ris/try", "radiologist", {"message": "x"})
    assert status == 403
