"""Pipeline and MLLP destination against a real downstream listener (python-hl7)."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.hl7gen import adt_a01
from channels.mllp.client import MLLPClient
from engine.config.schema import ChannelConfig
from engine.flow.runtime import Engine
from engine.store.base import MessageQuery, NewMessage, open_store
from mappings.hl7v2.ack import read_ack
from tests.conftest import make_config, wait_for
from tests.fixtures.peers import HL7Sink


def forwarding(db_url: str, endpoint: str, extra: str = "") -> str:
    dest = (f'type = "mllp", endpoint = "{endpoint}", retry_initial_secs = 0.05, '
            f"retry_max_secs = 0.2, ack_timeout_secs = 1{extra}")
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["ehr"]
[[channel]]
name = "ehr"
destination = {{ {dest} }}
"""


async def send_all(engine: Engine, ids: list[str], patient: str | None = None) -> None:
    client = MLLPClient(*engine.address("ris"))
    for i, cid in enumerate(ids):
        msg = adt_a01(cid, patient_id=patient or f"P{i % 7}")
        assert read_ack(await client.send(msg))[0] == "AA"
    await client.close()


async def test_every_accepted_message_is_forwarded_in_order(engine_factory: Any, db_url: str,
                                                            sink: HL7Sink) -> None:
    engine = await engine_factory(forwarding(db_url, sink.endpoint))
    ids = [f"F{i}" for i in range(60)]
    await send_all(engine, ids)
    await wait_for(lambda: len(sink.control_ids) == 60)
    assert sink.control_ids == ids  # one destination: strictly in arrival order
    await wait_for(lambda: _all_sent(engine, 60))
    msg, (delivery,) = await engine.store.get_message(1)
    assert delivery.status == "SENT" and delivery.payload == msg.raw
    assert delivery.response is not None and read_ack(delivery.response)[0] == "AA"


async def _all_sent(engine: Engine, n: int) -> bool:
    return (await engine.store.counts()).get(("ris", "SENT"), 0) == n


async def test_a_peer_rejection_is_recorded_with_its_reason(engine_factory: Any,
                                                            db_url: str) -> None:
    sink = HL7Sink(answer="AE")
    await sink.start()
    try:
        engine = await engine_factory(forwarding(db_url, sink.endpoint))
        await send_all(engine, ["R1", "R2"])
        await wait_for(lambda: _count(engine, "ERROR", 2))
        msg, (delivery,) = await engine.store.get_message(1)
        assert msg.status == "ERROR" and "peer says AE" in (msg.error or "")
        assert delivery.status == "ERROR" and delivery.response is not None
        assert sink.control_ids == ["R1", "R2"]  # a rejection does not stop the queue
    finally:
        await sink.stop()


async def _count(engine: Engine, status: str, n: int) -> bool:
    return (await engine.store.counts()).get(("ris", status), 0) == n


async def test_a_down_peer_keeps_messages_queued_then_delivers_them_in_order(
        engine_factory: Any, db_url: str, unused_tcp_port: int) -> None:
    engine = await engine_factory(forwarding(db_url, f"127.0.0.1:{unused_tcp_port}"))
    ids = [f"Q{i}" for i in range(10)]
    await send_all(engine, ids)
    await wait_for(lambda: engine.workers["ehr"].retries >= 3)
    assert (await engine.store.counts()).get(("ris", "QUEUED")) == 10
    sink = HL7Sink()
    await sink.start(port=unused_tcp_port)  # the peer comes back
    try:
        await wait_for(lambda: _all_sent(engine, 10))
        assert sink.control_ids == ids
        _, (delivery,) = await engine.store.get_message(1)
        assert delivery.attempts >= 2 and delivery.status == "SENT"
    finally:
        await sink.stop()


async def test_a_silent_peer_times_out_and_is_retried(engine_factory: Any, db_url: str) -> None:
    sink = HL7Sink(answer="silent")
    await sink.start()
    try:
        engine = await engine_factory(forwarding(db_url, sink.endpoint))
        await send_all(engine, ["S1"])
        await wait_for(lambda: len(sink.control_ids) >= 2, timeout=15)  # resent after timeout
        assert set(sink.control_ids) == {"S1"}
        (msg,) = await engine.store.query_messages(MessageQuery(control_id="S1"))
        assert msg.status == "QUEUED"
    finally:
        await sink.stop()


async def test_unfinished_messages_are_redriven_at_start(db_url: str, sink: HL7Sink) -> None:
    # Messages left RECEIVED by a crash (stored, ACKed, never processed).
    config = make_config(forwarding(db_url, sink.endpoint))
    store = open_store(db_url)
    await store.open()
    for i in range(5):
        await store.insert_message(NewMessage("ris", float(i), adt_a01(f"U{i}"),
                                              control_id=f"U{i}", key="P"))
    await store.close()
    engine = Engine(config)
    await engine.start()
    try:
        await wait_for(lambda: len(sink.control_ids) == 5)
        assert sink.control_ids == [f"U{i}" for i in range(5)]
        await wait_for(lambda: _all_sent(engine, 5))
    finally:
        await engine.stop()


async def test_reprocessing_sends_a_message_again(engine_factory: Any, db_url: str,
                                                  sink: HL7Sink) -> None:
    engine = await engine_factory(forwarding(db_url, sink.endpoint))
    await send_all(engine, ["RP1"])
    await wait_for(lambda: _all_sent(engine, 1))
    assert await engine.store.reprocess([1]) == 1
    engine.pipelines["ris"].wake()
    await wait_for(lambda: len(sink.control_ids) == 2)
    await wait_for(lambda: _all_sent(engine, 1))
    _, deliveries = await engine.store.get_message(1)
    assert [d.status for d in deliveries] == ["SENT", "SENT"]


async def test_order_is_kept_per_patient_across_lanes(engine_factory: Any, db_url: str,
                                                      sink: HL7Sink) -> None:
    engine = await engine_factory(forwarding(db_url, sink.endpoint))
    client = MLLPClient(*engine.address("ris"))
    sent: dict[str, list[str]] = {}
    for i in range(80):
        patient = f"PAT{i % 5}"
        sent.setdefault(patient, []).append(f"K{i}")
        await client.send(adt_a01(f"K{i}", patient_id=patient))
    await client.close()
    await wait_for(lambda: len(sink.control_ids) == 80)
    for ids in sent.values():
        got = [c for c in sink.control_ids if c in set(ids)]
        assert got == ids


def test_channel_config_model_is_built_from_the_registry() -> None:
    assert "source" in ChannelConfig.model_fields and "destination" in ChannelConfig.model_fields


async def test_stop_is_clean_while_a_destination_retries(engine_factory: Any, db_url: str,
                                                         unused_tcp_port: int) -> None:
    engine = await engine_factory(forwarding(db_url, f"127.0.0.1:{unused_tcp_port}"))
    await send_all(engine, ["ST1"])
    await asyncio.sleep(0.3)
    await asyncio.wait_for(engine.stop(), 10)
    assert not engine.started
