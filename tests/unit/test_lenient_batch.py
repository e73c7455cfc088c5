"""HL7 batches in one frame (issue 14): split leniently, answered per HL7 v2.5 §2.10.3.2."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config.schema import lint_text
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.answerer import HL7Answerer
from mappings.hl7v2.batch import split_batch

_BOM = b"\xef\xbb\xbf"


def _msg(cid: str, extra: str = "") -> bytes:
    return f"MSH|^~\\&|RIS|H|RB|AI|2026||ADT^A01|{cid}|P|2.3{extra}\rPID|1||M{cid}".encode()


def _acks(answerer: HL7Answerer, payload: bytes) -> tuple[object, list[bytes | None]]:
    batch = answerer.unbatch(payload)
    assert batch is not None
    acks = []
    for part in batch.messages:
        header, refusal = answerer.read(part)
        acks.append(answerer.build(header, refusal or answerer.accepted))
    return batch, acks


def test_a_single_message_is_not_a_batch() -> None:
    assert split_batch(_msg("1")) is None
    assert split_batch(_msg("1") + b"\rBHS|^~\\&") is None


def test_a_batch_after_a_byte_order_mark_and_blank_lines_is_split_into_its_messages() -> None:
    payload = _BOM + b"\r\nFHS|^~\\&\r\nBHS|^~\\&\n" + _msg("1") + b"\n\n" + _msg("2") + b"\nBTS|2"
    batch = split_batch(payload)
    assert batch is not None and batch.messages == [_msg("1"), _msg("2")]


def test_messages_straight_under_fhs_without_bhs_are_split_and_answered_without_bhs() -> None:
    answerer = HL7Answerer("RB", "AI")
    batch, acks = _acks(answerer, b"FHS|^~\\&|||||||||F1\r" + _msg("1") + b"\rFTS|1")
    answer = answerer.batch_answer(batch, acks)  # type: ignore[arg-type]
    assert isinstance(answer, bytes)
    heads = [line[:3] for line in answer.split(b"\r") if line]
    assert heads == [b"FHS", b"MSH", b"MSA", b"FTS"]
    assert answer.split(b"\r")[-2] == b"FTS|0"  # no batch in the file: FTS-1 counts batches


def test_the_answer_batch_uses_the_senders_batch_delimiters_and_echoes_bhs_11() -> None:
    answerer = HL7Answerer("RB", "AI")
    batch, acks = _acks(answerer, b"BHS#^~\\&#RIS#H#######B9\r" + _msg("1"))
    answer = answerer.batch_answer(batch, acks)  # type: ignore[arg-type]
    assert isinstance(answer, bytes)
    bhs = answer.split(b"\r")[0].split(b"#")
    assert (bhs[0], bhs[1], bhs[2], bhs[4], bhs[11]) == (b"BHS", b"^~\\&", b"RB", b"RIS", b"B9")
    assert b"\rBTS#1\r" in answer


def test_a_message_that_asks_for_no_ack_is_left_out_of_the_batch_answer_and_its_count() -> None:
    answerer = HL7Answerer("RB", "AI")
    silent = _msg("2", "|||NE")  # MSH-15 = NE: never send an accept acknowledgement
    batch, acks = _acks(answerer, b"BHS|^~\\&\r" + _msg("1") + b"\r" + silent)
    assert acks[1] is None
    answer = answerer.batch_answer(batch, acks)  # type: ignore[arg-type]
    parsed = split_batch(answer if isinstance(answer, bytes) else b"")
    assert parsed is not None and [read_ack(m)[1] for m in parsed.messages] == ["1"]
    assert b"\rBTS|1\r" in answer  # type: ignore[operator]


def test_per_message_answers_are_the_acks_themselves_in_order() -> None:
    answerer = HL7Answerer("RB", "AI", batch_ack="per_message")
    batch, acks = _acks(answerer, b"BHS|\r" + _msg("1") + b"\r" + _msg("2"))
    answer = answerer.batch_answer(batch, acks)  # type: ignore[arg-type]
    assert isinstance(answer, tuple)
    assert [read_ack(a)[:2] for a in answer] == [("AA", "1"), ("AA", "2")]


_CHANNEL = '[[channel]]\nname = "ris"\nsource = { type = "mllp", listen = "127.0.0.1:2575" }\n'


def test_lint_names_a_bad_batch_ack_option_with_file_line_and_key() -> None:
    (problem,) = lint_text(_CHANNEL + 'batch_ack = "each"\n', "channels.toml",
                           check_files=False)[1]
    assert (problem.line, problem.key) == (4, "channel[0].batch_ack")
    assert "'batch' or 'per_message'" in problem.message


def test_lint_takes_batch_ack_per_message() -> None:
    config, problems = lint_text(_CHANNEL + 'batch_ack = "per_message"\n', "channels.toml",
                                 check_files=False)
    assert problems == [] and config is not None
    assert config.channel_named("ris").batch_ack == "per_message"


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"FHS", b"BHS", _BOM + b"BHS", b"\r\nFHS|"]), st.binary(max_size=400))
def test_splitting_and_answering_any_batch_frame_never_crashes(head: bytes, tail: bytes) -> None:
    answerer = HL7Answerer("RB", "AI")
    batch = answerer.unbatch(head + tail)
    assert batch is not None and len(batch.notes) == len(batch.messages)
    acks = []
    for part in batch.messages:
        header, refusal = answerer.read(part)
        acks.append(answerer.build(header, refusal or answerer.accepted))
    answer = answerer.batch_answer(batch, acks)
    parsed = split_batch(answer if isinstance(answer, bytes) else b"")
    assert parsed is not None and len(parsed.messages) == sum(a is not None for a in acks)


_CID = st.text(alphabet="ABC0123456789", min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(_CID, max_size=6), st.booleans(), st.sampled_from(["\r", "\n", "\r\n"]))
def test_a_batch_of_well_formed_messages_splits_back_into_exactly_those_messages(
    cids: list[str], trailers: bool, terminator: str
) -> None:
    messages = [_msg(c) for c in cids]
    lines = [b"FHS|^~\\&", b"BHS|^~\\&", *messages]
    lines += [f"BTS|{len(cids)}".encode(), b"FTS|1"] if trailers else []
    batch = split_batch(b"\r".join(lines).replace(b"\r", terminator.encode()))
    assert batch is not None and batch.messages == messages
