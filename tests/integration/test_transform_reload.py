"""Transformers over real MLLP on both stores: the browser's layers, a failing step that stops
one message only, and a hot reload that swaps steps without losing or reordering messages."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from engine.flow.runtime import Engine
from mappings.hl7v2.ack import read_ack
from tests.conftest import make_config, wait_for
from tests.fixtures.peers import HL7Sink


def config(db_url: str, endpoint: str, version: str) -> str:
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["ehr"]
transform = [
  {{ name = "to-ehr", set = "MSH-5", value = "EHR" }},
  {{ name = "birth-date", format_date = "PID-7", to = "%Y-%m-%d" }},
]
[[channel]]
name = "ehr"
destination = {{ type = "mllp", endpoint = "{endpoint}", retry_initial_secs = 0.05, \
retry_max_secs = 0.2, ack_timeout_secs = 5 }}
transform = [ {{ name = "version", set = "MSH-6", value = "{version}" }} ]
"""


async def send(engine: Engine, *messages: bytes) -> None:
    client = MLLPClient(*engine.address("ris"))
    for raw in messages:
        assert read_ack(await client.send(raw))[0] in ("AA", "CA")
    await client.close()


async def all_final(engine: Engine, first: int, last: int) -> bool:
    for i in range(first, last + 1):
        found = await engine.store.get_message(i)
        if found is None or found[0].status not in ("QUEUED", "SENT", "ERROR"):
            return False
    return True


def field(raw: bytes, n: int) -> str:
    return raw.split(b"\r", 1)[0].decode().split("|")[n - 1]


async def test_a_failing_step_stops_its_message_alone_and_the_layers_show_each_stage(
    engine_factory: Any, db_url: str, sink: HL7Sink
) -> None:
    engine = await engine_factory(config(db_url, sink.endpoint, "V1"))
    bad = orm_o01("B1", patient_id="MRN1").replace(b"|19700101|", b"|19701301|")
    await send(engine, orm_o01("A1", patient_id="MRN1"), bad, orm_o01("C1", patient_id="MRN1"))
    await wait_for(lambda: sink.control_ids == ["A1", "C1"])
    await wait_for(lambda: all_final(engine, 1, 3))
    msg, deliveries = await engine.store.get_message(1)
    assert field(msg.layers["transformed"], 5) == "EHR" and b"|1970-01-01|" in msg.layers[
        "transformed"]
    [delivery] = deliveries
    assert field(delivery.payload, 6) == "V1" and field(delivery.payload, 5) == "EHR"
    failed, none = await engine.store.get_message(2)
    assert failed.status == "ERROR" and none == []
    assert failed.error == ("step birth-date failed: PID-7: the value is not a real date or "
                            "time")


async def test_hot_reload_swaps_steps_without_losing_or_reordering_queued_messages(
    engine_factory: Any, db_url: str, sink: HL7Sink
) -> None:
    engine = await engine_factory(config(db_url, sink.endpoint, "V1"))
    await engine.controls.pause_queue("ehr")
    before = [f"P{i}" for i in range(1, 6)]
    await send(engine, *(orm_o01(c, patient_id="MRN9") for c in before))
    await wait_for(lambda: all_final(engine, 1, 5))
    plan = await engine.controls.reload(make_config(config(db_url, sink.endpoint, "V2")))
    assert sorted(plan.changed) == ["ehr", "ris"] and not plan.failed
    assert sorted(plan.swapped) == ["ehr", "ris"]  # steps only: nothing restarted
    after = [f"Q{i}" for i in range(1, 6)]
    await send(engine, *(orm_o01(c, patient_id="MRN9") for c in after))
    await wait_for(lambda: all_final(engine, 6, 10))
    assert sink.control_ids == []  # still paused across the reload
    await engine.controls.resume_queue("ehr")
    await wait_for(lambda: len(sink.control_ids) == 10, timeout=30)
    assert sink.control_ids == before + after  # nothing lost, nothing reordered
    versions = [field(raw, 6) for raw in sink.received]
    assert versions == ["V1"] * 5 + ["V2"] * 5  # queued payloads keep the steps they met


async def test_a_connection_open_across_a_steps_only_reload_keeps_working_in_order(
    engine_factory: Any, db_url: str, sink: HL7Sink
) -> None:
    """One MLLP connection sends before, during and after a reload that changes only steps:
    every message is answered on it, none is lost, the EHR gets them in the order sent, and
    the steps change once, between two messages (never back)."""
    engine = await engine_factory(config(db_url, sink.endpoint, "V1"))
    address, listener = engine.address("ris"), engine.sources["ris"]
    client = MLLPClient(*address)
    sent: list[str] = []

    async def send_on_it(prefix: str, count: int) -> None:
        for i in range(1, count + 1):
            sent.append(f"{prefix}{i}")
            ack = read_ack(await client.send(orm_o01(sent[-1], patient_id="MRN7")))
            assert ack[0] in ("AA", "CA")

    try:
        await send_on_it("A", 5)
        await wait_for(lambda: all_final(engine, 1, 5), timeout=30)  # built with V1
        plan, _ = await asyncio.gather(
            engine.controls.reload(make_config(config(db_url, sink.endpoint, "V2"))),
            send_on_it("B", 20))
        assert sorted(plan.swapped) == ["ehr", "ris"] and not plan.failed
        await send_on_it("C", 5)  # the same connection, after the reload
    finally:
        await client.close()
    assert engine.address("ris") == address and engine.sources["ris"] is listener
    await wait_for(lambda: len(sink.control_ids) == len(sent), timeout=60)
    assert sink.control_ids == sent  # nothing lost, nothing reordered
    versions = [field(raw, 6) for raw in sink.received]
    assert versions == sorted(versions)  # V1 ... V1 V2 ... V2: never back to the old steps
    assert versions[:5] == ["V1"] * 5 and versions[-5:] == ["V2"] * 5


async def test_a_change_beside_the_steps_still_restarts_the_channel(
    engine_factory: Any, db_url: str, sink: HL7Sink
) -> None:
    engine = await engine_factory(config(db_url, sink.endpoint, "V1"))
    listener = engine.sources["ris"]
    changed = config(db_url, sink.endpoint, "V2").replace(
        'forward_to = ["ehr"]', 'forward_to = ["ehr"]\naccept = ["ORM^O01"]')
    plan = await engine.controls.reload(make_config(changed))
    assert plan.changed == ["ris", "ehr"] and plan.swapped == ["ehr"] and not plan.failed
    assert engine.sources["ris"] is not listener  # a new listener: accept is intake's
    await send(engine, orm_o01("R1", patient_id="MRN8"))
    await wait_for(lambda: sink.control_ids == ["R1"], timeout=30)
    assert field(sink.received[0], 6) == "V2"
