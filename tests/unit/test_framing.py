"""MLLP framing is pure bytes: split reads, several frames per read, garbage, size limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.mllp.framing import HEAD_KEEP, Frame, MLLPFramer, Oversized, frame


def payloads(events: list[Frame | Oversized]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_one_frame_in_one_read_yields_its_payload() -> None:
    assert payloads(MLLPFramer().feed(frame(b"MSH|a"))) == [b"MSH|a"]


def test_a_frame_split_byte_by_byte_is_reassembled() -> None:
    framer = MLLPFramer()
    out: list[Frame | Oversized] = []
    for b in frame(b"MSH|^~\\&|split"):
        out += framer.feed(bytes([b]))
    assert payloads(out) == [b"MSH|^~\\&|split"]


def test_end_block_split_between_fs_and_cr_waits_for_the_cr() -> None:
    framer = MLLPFramer()
    assert framer.feed(b"\x0bMSH|x\x1c") == []
    assert payloads(framer.feed(b"\r\x0bMSH|y\x1c\r")) == [b"MSH|x", b"MSH|y"]
    assert framer.buffered == 0


def test_several_frames_in_one_read_come_out_in_order() -> None:
    data = b"".join(frame(f"MSH|{i}".encode()) for i in range(5))
    assert payloads(MLLPFramer().feed(data)) == [f"MSH|{i}".encode() for i in range(5)]


def test_garbage_before_the_start_byte_is_dropped_and_counted() -> None:
    framer = MLLPFramer()
    assert payloads(framer.feed(b"junk\x00\xff" + frame(b"MSH|ok"))) == [b"MSH|ok"]
    assert framer.garbage_bytes == 6
    assert framer.garbage_runs == 1


def test_whitespace_between_frames_is_not_counted_as_garbage() -> None:
    framer = MLLPFramer()
    framer.feed(frame(b"MSH|1") + b"\r\n" + frame(b"MSH|2"))
    assert framer.garbage_bytes == 0


def test_end_block_without_carriage_return_still_ends_the_frame() -> None:
    framer = MLLPFramer()
    assert payloads(framer.feed(b"\x0bMSH|a\x1c\x0bMSH|b\x1c\r")) == [b"MSH|a", b"MSH|b"]


def test_an_oversized_frame_is_discarded_with_its_head_and_size_kept() -> None:
    framer = MLLPFramer(max_size=2048)
    body = b"MSH|^~\\&|big" + b"x" * 100_000
    events: list[Frame | Oversized] = []
    for i in range(0, len(body), 4096):  # arrives over many reads
        events += framer.feed((b"\x0b" if i == 0 else b"") + body[i:i + 4096])
        assert framer.buffered <= 2048 + 4096  # memory stays bounded while discarding
    events += framer.feed(b"\x1c\r" + frame(b"MSH|next"))
    assert isinstance(events[0], Oversized)
    assert events[0].size == len(body)
    assert events[0].head == body[:HEAD_KEEP][:len(events[0].head)]
    assert events[0].head.startswith(b"MSH|^~\\&|big")
    assert payloads(events) == [b"MSH|next"]
    assert framer.oversized == 1


def test_an_oversized_frame_in_a_single_read_is_reported_too() -> None:
    events = MLLPFramer(max_size=1024).feed(frame(b"M" * 5000))
    assert isinstance(events[0], Oversized) and events[0].size == 5000


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.binary(min_size=1, max_size=300).map(
    lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"") or b"x"), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_any_chunking_of_a_stream_yields_the_same_frames(messages: list[bytes],
                                                         cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    framer = MLLPFramer()
    out: list[Frame | Oversized] = []
    pos = 0
    for cut in cuts:
        out += framer.feed(stream[pos:pos + cut])
        pos += cut
    out += framer.feed(stream[pos:])
    assert payloads(out) == messages


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_framer_and_memory_stays_bounded(data: bytes) -> None:
    framer = MLLPFramer(max_size=1024)
    for i in range(0, len(data), 97):
        framer.feed(data[i:i + 97])
        assert framer.buffered <= 1024 + 97


def test_in_frame_is_true_only_between_a_start_block_and_its_end() -> None:
    framer = MLLPFramer(max_size=1024)
    assert not framer.in_frame
    framer.feed(b"junk\r\n")  # bytes outside a frame do not start one
    assert not framer.in_frame
    framer.feed(b"\x0bMSH|^~")
    assert framer.in_frame
    assert payloads(framer.feed(b"\\&|X\x1c\x0d\x0bMSH")) == [b"MSH|^~\\&|X"]
    assert framer.in_frame  # the next frame has started in the same read
    framer.feed(b"|" + b"y" * 2000)  # oversized: still one unfinished frame, being discarded
    assert framer.in_frame
    assert [type(e).__name__ for e in framer.feed(b"\x1c\x0d")] == ["Oversized"]
    assert not framer.in_frame
