"""Every quirk in the hostile corpus gets its expected answer over real MLLP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.mllp.client import MLLPClient
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.header import HeaderError, parse_header
from tests.fixtures.hostile_hl7 import CORPUS


@pytest.fixture
async def engine(engine_factory: Any, db_url: str) -> Any:
    return await engine_factory(f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
""")


@pytest.mark.parametrize(("name", "payload", "code", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_hostile_message_gets_its_expected_answer(engine: Any, name: str, payload: bytes,
                                                        code: str, reason: str) -> None:
    client = MLLPClient(*engine.address("ris"))
    try:
        got, _, why = read_ack(await client.send(payload))
    finally:
        await client.close()
    assert got == code, why
    assert reason in why
    stored = await engine.store.query_messages(MessageQuery(channel="ris"))
    assert [m.raw for m in stored] == [payload]  # kept byte for byte, accepted or not
    accepted = code in ("AA", "CA")
    assert stored[0].status in (("RECEIVED", "TRANSFORMED") if accepted else ("ERROR",))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_the_header_reader_only_ever_raises_header_error(data: bytes) -> None:
    try:
        parse_header(data)
    except HeaderError:
        pass


@settings(max_examples=500, deadline=None)
@given(tail=st.binary(max_size=300), fields=st.lists(st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="|\r\n"), max_size=12),
    min_size=0, max_size=20))
def test_msh_with_arbitrary_fields_and_tail_never_crashes(tail: bytes, fields: list[str]) -> None:
    raw = ("MSH|^~\\&|" + "|".join(fields)).encode("latin-1") + b"\r" + tail
    try:
        h = parse_header(raw)
    except HeaderError as exc:
        assert exc.reason and exc.code in (100, 101, 102)
    else:
        assert h.control_id
