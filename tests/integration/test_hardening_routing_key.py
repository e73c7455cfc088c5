"""The routing key falls back to PID-2 as the orders mapping does (issue 12, left undone).

The key that keeps one patient's messages in order was read from PID-3 alone on the ACK
path, while the orders mapping takes the patient from PID-2 when a sender leaves PID-3
empty: such a patient's messages had no key. One process sends its queue in id order
anyway, but engine processes sharing a PostgreSQL database keep order only per key
(``engine.store.pg_claims``: rows without a key have no order to keep), so a second
process could send a PID-2-only patient's next message while the first was still sending
the one before. The key is now PID-3's first repetition's id, else PID-2's.
"""

from __future__ import annotations

from typing import Any

import pytest

from channels.mllp.client import MLLPClient
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.header import parse_header
from tests.conftest import wait_for
from tests.fixtures.peers import HL7Sink


def adt(control_id: str, pid2: str = "", pid3: str = "") -> str:
    """An ADT^A08 whose PID-2 and PID-3 are as given (fictional patient)."""
    return (
        f"MSH|^~\\&|ADT|HOSP|RB|AI|20261130090000||ADT^A08|{control_id}|P|2.3\r"
        f"PID|1|{pid2}|{pid3}||TESTPATIENT^ALEX||19800202|M\rPV1|1|I"
    )


@pytest.mark.parametrize(
    ("pid2", "pid3", "key"),
    [
        ("", "MRN7^^^HOSP^MR~998877^^^SSA^SS", "MRN7"),  # PID-3 first
        ("EXT9^^^HOSP", "MRN7^^^HOSP^MR", "MRN7"),  # PID-3 wins over PID-2
        ("EXT9^^^HOSP", "", "EXT9"),  # PID-3 empty: PID-2
        ("EXT9^^^HOSP~EXT10", "^^^HOSP^MR", "EXT9"),  # PID-3's first id empty: PID-2's first
        ("", "", ""),  # neither: no key
    ],
)
def test_the_routing_key_is_pid3s_first_id_else_pid2s(pid2: str, pid3: str, key: str) -> None:
    assert parse_header(adt("K1", pid2, pid3).encode()).patient_id == key


def config(db_url: str, endpoint: str) -> str:
    """ris (MLLP in) forwards to ehr (MLLP out); the peer never answers, so a message being
    sent stays claimed by its process for the whole test."""
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["ehr"]
[[channel]]
name = "ehr"
destination = {{ type = "mllp", endpoint = "{endpoint}", ack_timeout_secs = 600 }}
"""


async def send(engine: Any, *messages: str) -> None:
    client = MLLPClient(*engine.address("ris"), ack_timeout=10)
    try:
        for message in messages:
            assert read_ack(await client.send(message.encode()))[0] == "AA"
    finally:
        await client.close()


async def test_a_second_process_holds_back_a_pid2_only_patients_next_message(
    engine_factory: Any, pg_url: str
) -> None:
    sink = HL7Sink(answer="silent")
    await sink.start()
    try:
        first = await engine_factory(config(pg_url, sink.endpoint))
        await send(first, adt("X1", pid2="EXT9^^^HOSP"))
        await wait_for(lambda: sink.control_ids == ["X1"], timeout=30)  # first is sending X1
        second = await engine_factory(config(pg_url, sink.endpoint))
        await send(second, adt("X2", pid2="EXT9^^^HOSP"), adt("O3", pid3="MRN3^^^HOSP^MR"))
        # The second process sends the other patient's message, and not X2 before X1 is done.
        await wait_for(lambda: len(sink.control_ids) > 1, timeout=30)
        assert sink.control_ids == ["X1", "O3"]
        stored = await second.store.query_messages(MessageQuery(channel="ris"))
        assert {m.control_id: m.key for m in stored} == {"X1": "EXT9", "X2": "EXT9",
                                                          "O3": "MRN3"}
    finally:
        await sink.stop()
