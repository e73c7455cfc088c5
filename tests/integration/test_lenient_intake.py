"""Lenient intake over real MLLP on loopback (issue 14): repaired, accepted, stored, flagged."""

from __future__ import annotations

from typing import Any

from engine.store.base import FLAGS_LAYER, MessageQuery
from mappings.hl7v2.header import generated_id
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
    # Accepted, not refused; how far the pipeline has taken it by now does not matter.
    assert stored.raw == payload and stored.status != "ERROR"
    assert stored.layers[FLAGS_LAYER] == (
        b"line 4 is not a segment: joined onto PID as a line break inside a field"
    )


async def test_a_message_read_without_repair_carries_no_flags(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    assert (await send(engine, adt("OK1")))[0] == "AA"
    assert FLAGS_LAYER not in (await _stored(engine, "OK1")).layers


_NO_ID = adt("")


async def test_an_empty_control_id_is_refused_ar_by_default(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    code, their_id, reason = await send(engine, _NO_ID)
    assert (code, their_id) == ("AR", "") and "MSH-10" in reason


async def test_an_empty_control_id_is_accepted_with_a_generated_one_stored_and_flagged(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url, channel_extra='empty_control_id = "generate"'))
    assert (await send(engine, _NO_ID))[:2] == ("AA", "")  # MSA-2 echoes the empty MSH-10
    generated = generated_id(_NO_ID)
    stored = await _stored(engine, generated)
    assert stored.raw == _NO_ID and stored.key == "MRN9"
    assert (
        stored.layers[FLAGS_LAYER] == f"MSH-10 was empty: control id {generated} generated".encode()
    )


async def test_a_resend_without_control_id_is_caught_by_the_duplicate_window(
    engine_factory: Any, db_url: str
) -> None:
    extra = 'empty_control_id = "generate"\nduplicates = { window_secs = 60, action = "reject" }'
    engine = await engine_factory(config(db_url, channel_extra=extra))
    assert (await send(engine, _NO_ID))[0] == "AA"
    code, their_id, reason = await send(engine, _NO_ID)
    assert (code, their_id) == ("AR", "") and "duplicate" in reason
