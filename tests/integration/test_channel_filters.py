"""Channel filters and content routes over real MLLP, on both stores, to real listeners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from engine.flow.runtime import Engine
from mappings.hl7v2.ack import read_ack
from tests.conftest import wait_for
from tests.fixtures.peers import HL7Sink


@pytest.fixture
async def other_sink() -> AsyncIterator[HL7Sink]:
    s = HL7Sink()
    await s.start()
    yield s
    await s.stop()


def config(db_url: str, ct_mr: str, rest: str) -> str:
    dest = 'retry_initial_secs = 0.05, retry_max_secs = 0.2, ack_timeout_secs = 2, type = "mllp"'
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
process = "orders"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
filter = {{ name = "no-test-traffic", not = {{ field = "MSH-11", eq = "T" }} }}
forward_to = [
  {{ to = "ct-mr", when = {{ field = "OBR-24", in = ["CT", "MR"] }} }},
  {{ to = "others", when = 'msg["OBR-24"] != "CT" && msg["OBR-24"] != "MR"' }},
]
[[channel]]
name = "ct-mr"
destination = {{ {dest}, endpoint = "{ct_mr}" }}
[[channel]]
name = "others"
destination = {{ {dest}, endpoint = "{rest}" }}
"""


def order(control_id: str, accession: str, modality: str, mode: str = "P") -> bytes:
    raw = orm_o01(control_id, accession=accession, patient_id=f"MRN{control_id}")
    raw = raw.replace(f"|{control_id}|P|".encode(), f"|{control_id}|{mode}|".encode())
    # bench's ORM sends its modality in OBR-23; this one sends it in OBR-24, where HL7 has it
    return raw.replace(b"||||CR|||", f"|||||{modality}||".encode())


async def send(engine: Engine, *messages: bytes) -> None:
    client = MLLPClient(*engine.address("ris"))
    for raw in messages:
        assert read_ack(await client.send(raw))[0] in ("AA", "CA")  # MSH-15 AL: commit ack
    await client.close()


async def statuses(engine: Engine, n: int) -> dict[int, Any] | None:
    out = {}
    for i in range(1, n + 1):
        found = await engine.store.get_message(i)
        if found is None or not found[0].status.final:
            return None
        out[i] = found
    return out


async def test_test_traffic_ends_filtered_naming_the_rule_and_production_is_forwarded(
    engine_factory: Any, db_url: str, sink: HL7Sink, other_sink: HL7Sink
) -> None:
    engine = await engine_factory(config(db_url, sink.endpoint, other_sink.endpoint))
    await send(engine, order("T1", "ACCT1", "CT", mode="T"), order("P1", "ACCP1", "CT"))
    await wait_for(lambda: sink.control_ids == ["P1"])
    done: dict[int, Any] = {}

    async def final() -> bool:
        done.update(await statuses(engine, 2) or {})
        return len(done) == 2

    await wait_for(final)
    (test_msg, test_deliveries), (prod_msg, prod_deliveries) = done[1], done[2]
    assert test_msg.status == "FILTERED" and test_msg.error == "filtered by no-test-traffic"
    assert test_deliveries == [] and prod_msg.status in ("QUEUED", "SENT")
    assert [d.destination for d in prod_deliveries] == ["ct-mr"]
    accessions = [o.accession for o in await engine.store.list_orders()]
    assert accessions == ["ACCP1"]  # the filtered order was never stored as an order
    assert other_sink.control_ids == [] and sink.control_ids == ["P1"]


async def test_ct_and_mr_orders_go_to_one_destination_and_the_rest_to_another(
    engine_factory: Any, db_url: str, sink: HL7Sink, other_sink: HL7Sink
) -> None:
    engine = await engine_factory(config(db_url, sink.endpoint, other_sink.endpoint))
    await send(
        engine,
        order("C1", "A1", "CT"),
        order("U1", "A2", "US"),
        order("M1", "A3", "MR"),
        order("X1", "A4", "CR"),
    )
    await wait_for(lambda: len(sink.control_ids) == 2 and len(other_sink.control_ids) == 2)
    assert sink.control_ids == ["C1", "M1"] and other_sink.control_ids == ["U1", "X1"]
