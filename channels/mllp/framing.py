"""MLLP framing: pure bytes, no sockets, bounded memory.

A frame is ``<VT> payload <FS><CR>``. The framer is fed whatever a socket
read returned and yields complete frames. It copes with frames split across
reads, several frames in one read, bytes outside a frame (dropped and
counted) and frames larger than ``max_size`` (the payload is discarded as it
arrives, only its head is kept so the sender can still be NAK'd by MSH-10). The listener
may also ``shed`` an unfinished frame to keep its total buffer budget: it is then discarded
the same way and reported with ``shed=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
_FS = 0x1C
_FS_BYTE = b"\x1c"
_VT = 0x0B
_CR = 0x0D
HEAD_KEEP = 4096


def frame(payload: bytes) -> bytes:
    """Wrap one message in MLLP start and end blocks."""
    return START + payload + END


@dataclass(slots=True, frozen=True)
class Frame:
    payload: bytes


@dataclass(slots=True, frozen=True)
class Oversized:
    """A discarded frame: its first ``HEAD_KEEP`` bytes and its full size.

    Over the size limit, or ``shed`` (dropped by the listener to keep its buffer budget).
    """

    head: bytes
    size: int
    shed: bool = False


class MLLPFramer:
    """Incremental MLLP decoder.

    ``feed()`` returns the events completed by the new bytes. Memory held is
    at most ``max_size`` plus one read.
    """

    __slots__ = ("max_size", "_buf", "_in_frame", "_discarding", "_head", "_dropped_size",
                 "_scan_from", "_shed", "garbage_bytes", "garbage_runs", "oversized")

    def __init__(self, max_size: int = 16 * 1024 * 1024) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._in_frame = False
        self._discarding = False
        self._head = b""
        self._dropped_size = 0
        self._scan_from = 0
        self._shed = False
        self.garbage_bytes = 0
        self.garbage_runs = 0
        self.oversized = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def held(self) -> int:
        """Bytes held for the unfinished frame: its buffer, or its head while discarding."""
        return len(self._buf) + len(self._head)

    def shed(self) -> bool:
        """Give up the unfinished frame to save memory; False if there is none to give up.

        Its head (``HEAD_KEEP`` bytes) is kept and the rest is discarded as it arrives; its
        end then yields ``Oversized(head, size, shed=True)`` so the sender can be answered.
        Does nothing outside a frame or for a frame already being discarded.
        """
        if not self._in_frame or self._discarding:
            return False
        self._shed = True
        self._start_discarding()
        return True

    @property
    def in_frame(self) -> bool:
        """A start block has arrived and its frame has not ended yet (the listener times it)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        if not self._buf and not self._in_frame:
            frames = self._whole_frames(data)
            if frames is not None:
                return frames
        self._buf += data
        events: list[Frame | Oversized] = []
        while self._buf:
            if not self._in_frame and not self._seek_start():
                break
            event = self._take_frame()
            if event is None:
                break
            events.append(event)
        return events

    def _whole_frames(self, data: bytes) -> list[Frame | Oversized] | None:
        """The frames of a read that holds whole frames and nothing else (the usual read).

        Returns None for anything else (a partial frame, bytes between frames, an oversized
        frame, a lone FS at the end); ``feed`` then takes the general path with the same read.
        """
        frames: list[Frame | Oversized] = []
        pos, size = 0, len(data)
        while pos < size:
            if data[pos] != _VT:
                return None
            end = data.find(_FS_BYTE, pos + 1)
            if end < 0 or end + 1 >= size or end - pos - 1 > self.max_size:
                return None
            frames.append(Frame(data[pos + 1:end]))
            pos = end + 2 if data[end + 1] == _CR else end + 1
        return frames

    def _seek_start(self) -> bool:
        start = self._buf.find(START)
        if start < 0:
            self._drop_garbage(len(self._buf))
            return False
        if start:
            self._drop_garbage(start)
        del self._buf[:1]
        self._in_frame = True
        self._scan_from = 0
        return True

    def _drop_garbage(self, n: int) -> None:
        junk = bytes(self._buf[:n])
        del self._buf[:n]
        # Whitespace between frames is common and harmless; anything else is counted.
        if junk.strip(b"\r\n\t "):
            self.garbage_bytes += n
            self.garbage_runs += 1

    def _take_frame(self) -> Frame | Oversized | None:
        end = self._find_end()
        if end < 0:
            self._bound_memory()
            return None
        payload = bytes(self._buf[:end])
        consumed = end + (2 if end + 1 < len(self._buf) and self._buf[end + 1] == _CR else 1)
        del self._buf[:consumed]
        self._in_frame = False
        if self._discarding:
            size = self._dropped_size + len(payload)
            head, shed = self._head, self._shed
            self._discarding, self._head, self._dropped_size, self._shed = False, b"", 0, False
            if not shed:
                self.oversized += 1
            return Oversized(head, size, shed)
        if len(payload) > self.max_size:
            self.oversized += 1
            return Oversized(payload[:HEAD_KEEP], len(payload))
        return Frame(payload)

    def _find_end(self) -> int:
        """Index of the FS that ends the frame, or -1 if it has not arrived yet.

        FS followed by CR is the standard end; FS followed by anything else
        (a sender that omits the CR) also ends the frame. A lone FS at the end
        of the buffer waits for the next byte.
        """
        while True:
            idx = self._buf.find(_FS, self._scan_from)
            if idx < 0:
                self._scan_from = len(self._buf)
                return -1
            if idx + 1 < len(self._buf):
                return idx
            self._scan_from = idx
            return -1

    def _bound_memory(self) -> None:
        if self._discarding:
            keep = self._scan_from
            self._dropped_size += keep
            del self._buf[:keep]
            self._scan_from = 0
        elif len(self._buf) > self.max_size:
            self._start_discarding()

    def _start_discarding(self) -> None:
        """Keep the unfinished frame's head, drop what has been scanned (not a lone FS)."""
        keep = self._scan_from  # scanned: payload for sure (a lone FS after it may end it)
        self._discarding = True
        self._head = bytes(self._buf[:min(HEAD_KEEP, keep)])
        self._dropped_size = keep
        del self._buf[:keep]
        self._scan_from = 0
