"""Every stored frame is answered over real MLLP, even when building its ACK fails.

Issue 12, finding 10: a fuzzed frame (MSH-12 ``2.\\xb9``, one bad segment) was stored, then
the ACK builder raised inside the store's commit callback and the sender never got an ACK.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import mappings.hl7v2.answerer
from bench.hl7gen import adt_a01
from channels.mllp.client import MLLPClient
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import FALLBACK_REASON, build_ack, read_ack
from tests.fixtures.hostile_hl7 import FUZZED_VERSION_DIGIT as FUZZED


def config(db_url: str) -> str:
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
"""


async def send_all(engine: Any, payloads: list[bytes]) -> list[tuple[str, str, str]]:
    """Send each payload on its own connection, all at once; the ACK of each, in order."""

    async def one(payload: bytes) -> tuple[str, str, str]:
        client = MLLPClient(*engine.address("ris"), ack_timeout=10)
        try:
            return read_ack(await client.send(payload))
        finally:
            await client.close()

    return list(await asyncio.gather(*(one(p) for p in payloads)))


async def test_the_fuzzed_frame_is_stored_and_its_sender_gets_a_nak(
    engine_factory: Any, db_url: str
) -> None:
    engine = await engine_factory(config(db_url))
    ((code, control_id, reason),) = await send_all(engine, [FUZZED])
    assert (code, control_id) == ("AE", "F1") and "is not a valid HL7 segment" in reason
    (stored,) = await engine.store.query_messages(MessageQuery(control_id="F1"))
    assert stored.status == "ERROR" and stored.raw == FUZZED


async def test_a_failing_ack_builder_still_answers_every_frame_of_the_commit(
    engine_factory: Any,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(header: Any, spec: Any, **kw: Any) -> bytes | None:
        if header is not None and header.control_id.startswith("BOOM"):
            raise RuntimeError("ACK builder bug")
        return build_ack(header, spec, **kw)

    monkeypatch.setattr(mappings.hl7v2.answerer, "build_ack", broken)
    caplog.set_level(logging.INFO, logger="radbridge")
    eng = await engine_factory(config(db_url))
    payloads = [
        adt_a01("OK1"),
        adt_a01("BOOM-AA"),
        adt_a01("BOOM-AE") + b"\r\x00bad",
        adt_a01("OK2"),
    ]
    answers = await send_all(eng, payloads)
    assert [a[:2] for a in answers] == [
        ("AA", "OK1"),
        ("AA", "BOOM-AA"),
        ("AE", "BOOM-AE"),
        ("AA", "OK2"),
    ]
    assert FALLBACK_REASON in answers[2][2]  # stored, so AA stays AA; the NAK stays a NAK
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLLP-198")]
    assert len(failures) == 2 and all("BOOM" not in line for line in failures)
    stored = await eng.store.query_messages(MessageQuery(channel="ris"))
    assert sorted(m.control_id for m in stored) == ["BOOM-AA", "BOOM-AE", "OK1", "OK2"]
