"""HL7 batches (FHS/BHS) in one MLLP frame, sent over real MLLP to a running engine (issue 14):
split, each message stored as its own row, answered once all are stored."""

from __future__ import annotations

from typing import Any

from channels.mllp.client import MLLPClient
from engine.store.base import FLAGS_LAYER, MessageQuery
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.batch import split_batch
from tests.integration.test_mllp_ingest import config

_MSG = (
    "MSH|^~\\&|RIS|HOSP|RB|AI|20261130101500||{type}|{cid}|P|2.3\r"
    "PID|1||MRN{cid}^^^HOSP^MR||DOE^JANE\rPV1|1|E"
)


def msg(cid: str, type_: str = "ADT^A01") -> str:
    return _MSG.format(cid=cid, type=type_)


def batch(*messages: str, fhs: str = "FHS|^~\\&|RIS|HOSP|RB|AI|20261130||||F77",
          bhs: str = "BHS|^~\\&|RIS|HOSP|RB|AI|20261130||||B42", trailers: bool = True) -> bytes:
    lines = [fhs, bhs, *messages] if fhs else [bhs, *messages]
    if trailers:
        lines += [f"BTS|{len(messages)}", "FTS|1" if fhs else ""]
    return "\r".join(line for line in lines if line).encode()


async def exchange(engine: Any, payload: bytes, frames: int = 1) -> list[bytes]:
    """Send one frame; the first *frames* frames answering it."""
    host, port = engine.address("ris")
    client = MLLPClient(host, port, ack_timeout=10)
    try:
        answers = [await client.send(payload)]
        answers += [await client.receive() for _ in range(frames - 1)]
        return answers
    finally:
        await client.close()


def acks_in(answer: bytes) -> list[tuple[str, str, str]]:
    """(MSA-1, MSA-2, reason) of every ACK in a batch answer, in order."""
    parsed = split_batch(answer)
    assert parsed is not None, answer
    return [read_ack(m) for m in parsed.messages]


def envelope(answer: bytes) -> list[list[str]]:
    return [line.split("|") for line in answer.decode().split("\r")
            if line[:3] in ("FHS", "BHS", "BTS", "FTS")]


async def _stored(engine: Any, control_id: str) -> Any:
    (row,) = await engine.store.query_messages(MessageQuery(control_id=control_id))
    found = await engine.store.get_message(row.id)
    assert found is not None
    return found[0]


async def test_a_batch_is_answered_with_one_batch_of_acks_after_each_message_is_stored(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    (answer,) = await exchange(engine, batch(msg("B1"), msg("B2"), msg("B3", "ORM^O01")))
    assert [a[:2] for a in acks_in(answer)] == [("AA", "B1"), ("AA", "B2"), ("AA", "B3")]
    fhs, bhs, bts, fts = envelope(answer)
    assert (fhs[0], fhs[11], bhs[0], bhs[11]) == ("FHS", "F77", "BHS", "B42")  # -12 echoes -11
    assert (bhs[2], bhs[4], bts, fts) == ("RADBRIDGE", "RIS", ["BTS", "3"], ["FTS", "1"])
    # Answered only once every message was durable: each is its own row already.
    sent = {"B1": msg("B1"), "B2": msg("B2"), "B3": msg("B3", "ORM^O01")}
    for n, (cid, raw) in enumerate(sent.items(), start=1):
        stored = await _stored(engine, cid)
        assert stored.raw == raw.encode() and stored.key == f"MRN{cid}"
        assert stored.status != "ERROR"
        assert stored.layers[FLAGS_LAYER] == (
            f"message {n} of 3 of an HL7 batch (BHS-11 'B42', FHS-11 'F77')".encode()
        )


async def test_a_batch_without_trailers_and_with_empty_headers_is_accepted(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    (answer,) = await exchange(engine, batch(msg("E1"), msg("E2"), fhs="", bhs="BHS|",
                                             trailers=False))
    assert [a[:2] for a in acks_in(answer)] == [("AA", "E1"), ("AA", "E2")]
    (bhs, bts) = envelope(answer)
    assert (bhs[0], bhs[11], bts) == ("BHS", "", ["BTS", "2"])
    assert (await _stored(engine, "E2")).layers[FLAGS_LAYER] == b"message 2 of 2 of an HL7 batch"


async def test_a_bad_message_in_a_batch_gets_its_own_nak_and_never_blocks_the_others(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    unreadable = msg("X2").replace("ADT^A01", "")
    broken = msg("X4") + "\rpv1|1|E"  # a broken segment: AE
    payload = batch(msg("G1"), unreadable, msg("X3", "ADT^A08"), broken, msg("G5"))
    answers = acks_in((await exchange(engine, payload))[0])
    assert [(a[0], a[1]) for a in answers] == [("AA", "G1"), ("AR", ""), ("AR", "X3"),
                                               ("AE", "X4"), ("AA", "G5")]
    assert "MSH-9" in answers[1][2] and "ADT^A08 is not accepted" in answers[2][2]
    for cid in ("G1", "G5"):
        assert (await _stored(engine, cid)).status != "ERROR"
    for cid in ("X3", "X4"):
        assert (await _stored(engine, cid)).status == "ERROR"
    refused = await engine.store.query_messages(MessageQuery(status="ERROR"))
    assert len(refused) == 3  # the unreadable one is stored too, with its reason


async def test_lines_before_the_first_msh_of_a_batch_are_answered_ar_as_their_own_part(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    payload = batch("stray text before any message", msg("S2"))
    answers = acks_in((await exchange(engine, payload))[0])
    assert [a[:2] for a in answers] == [("AR", ""), ("AA", "S2")]
    assert "does not start with an MSH" in answers[0][2]


async def test_per_message_acks_come_as_one_frame_each_in_order_when_the_channel_says_so(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url, channel_extra='batch_ack = "per_message"'))
    frames = await exchange(engine, batch(msg("P1"), msg("P2", "ADT^A08"), msg("P3")), frames=3)
    assert [read_ack(f)[:2] for f in frames] == [("AA", "P1"), ("AR", "P2"), ("AA", "P3")]
    assert all(f.startswith(b"MSH|") for f in frames)
    assert (await _stored(engine, "P3")).status != "ERROR"


async def test_an_empty_batch_is_answered_with_an_empty_batch_and_stores_nothing(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    (answer,) = await exchange(engine, batch())
    assert acks_in(answer) == []
    assert [line[0] for line in envelope(answer)] == ["FHS", "BHS", "BTS", "FTS"]
    assert envelope(answer)[2] == ["BTS", "0"]
    assert await engine.store.query_messages(MessageQuery()) == []
