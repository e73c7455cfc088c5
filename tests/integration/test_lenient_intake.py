"""Lenient intake over real MLLP on loopback (issue 14): repaired, accepted, stored, flagged."""

from __future__ import annotations

from typing import Any

from engine.store.base import FLAGS_LAYER, MessageQuery
from tests.integration.test_mllp_ingest import config, send

_BOM = b"\xef\xbb\xbf"
_ADT = (
    b"MSH|^~\\&|RIS|HOSP|RB|AI|20261130101500||ADT^A01|{cid}|P|2.3\r"
    b"EVN|A01|20261130101500\rPID|1||MRN9^^^HOSP^MR||DOE^JANE\r"
    b"PV1|1|E|ED^B1^01"
)


def adt(cid: str) -> bytes:
    return _ADT.replace(b"{cid}", cid.encode())


async def _stored(engine: Any, control_id: str) -> Any:
    (row,) = await engine.store.query_messages(MessageQuery(control_id=control_id))
    found = await engine.store.get_message(row.id)
    assert found is not None
    return found[0]


async def test_a_byte_order_mark_before_msh_is_answered_aa_and_stored_as_received(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    payload = _BOM + adt("BOM1")
    assert (await send(engine, payload))[:2] == ("AA", "BOM1")
    stored = await _stored(engine, "BOM1")
    assert stored.raw == payload and stored.key == "MRN9"
    assert FLAGS_LAYER not in stored.layers


async def test_a_stray_line_break_inside_a_field_is_answered_aa_and_flagged_in_the_store(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    payload = adt("CR1").replace(b"DOE^JANE", b"DOE^JANE\rMARIE")
    assert (await send(engine, payload))[:2] == ("AA", "CR1")
    stored = await _stored(engine, "CR1")
    assert stored.raw == payload and stored.status in ("RECEIVED", "PROCESSED")
    assert stored.layers[FLAGS_LAYER] == (
        b"line 4 is not a segment: joined onto PID as a line break inside a field"
    )


async def test_a_message_read_without_repair_carries_no_flags(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    assert (await send(engine, adt("OK1")))[0] == "AA"
    assert FLAGS_LAYER not in (await _stored(engine, "OK1")).layers
