"""The archive retention writes before it deletes messages: one gzip JSON-lines file per run.

Each line is one message: its row, raw bytes, content layers and deliveries (bytes as
base64). The file is named after the cutoff (``messages-before-20260101T000000Z.jsonl.gz``),
created with mode 0600 (it holds the raw HL7, i.e. patient data), fsynced with its directory,
and only then may the store delete what it holds. ``read_archive`` reads one back.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from engine.errors import RadbridgeError
from engine.fsmode import open_private, private_dir
from engine.model import DeliveryStatus, Message, Status
from engine.store.base import Delivery

FORMAT = 1
DAY = 86400
Item = tuple[Message, list[Delivery]]


class ArchiveError(RadbridgeError):
    """The archive could not be written: the store deleted nothing."""


@dataclass(slots=True)
class Archived:
    """What went into an archive: the store deletes these ids and no others."""

    path: Path | None = None  # None: there was nothing to archive (no file is left)
    ids: array[int] = field(default_factory=lambda: array("q"))
    received_at: array[float] = field(default_factory=lambda: array("d"))  # beside ids

    def add(self, items: Sequence[Item]) -> None:
        for msg, _ in items:
            self.ids.append(msg.id)
            self.received_at.append(msg.received_at)

    def per_day(self) -> Counter[int]:
        """UTC day -> messages archived (PostgreSQL drops a day only if all of it is here).
        O(messages): call it off the event loop."""
        return Counter(int(t // DAY) for t in self.received_at)

    def newest_per_day(self) -> dict[int, int]:
        """UTC day -> the newest message id archived of it (O(messages): off the loop)."""
        newest: dict[int, int] = {}
        for i, t in zip(self.ids, self.received_at, strict=True):
            day = int(t // DAY)
            if i > newest.get(day, -1):
                newest[day] = i
        return newest

    def ids_outside(self, days: set[int]) -> list[int]:
        """The ids archived from other days than *days* (O(messages): off the loop)."""
        return [i for i, t in zip(self.ids, self.received_at, strict=True)
                if int(t // DAY) not in days]


def archive_name(before: float) -> str:
    stamp = datetime.fromtimestamp(before, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"messages-before-{stamp}.jsonl.gz"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def encode(msg: Message, deliveries: Sequence[Delivery]) -> bytes:
    """One JSON line. A delivery that sends the raw message unchanged stores no copy of it."""
    record = {
        "format": FORMAT, "id": msg.id, "channel": msg.channel, "received_at": msg.received_at,
        "status": str(msg.status), "control_id": msg.control_id,
        "message_type": msg.message_type, "key": msg.key, "duplicate": msg.duplicate,
        "error": msg.error, "raw": _b64(msg.raw),
        "layers": {name: _b64(data) for name, data in msg.layers.items()},
        "deliveries": [{"id": d.id, "destination": d.destination, "status": str(d.status),
                        "attempts": d.attempts,
                        "payload": None if d.payload == msg.raw else _b64(d.payload),
                        "response": _b64(d.response), "error": d.error} for d in deliveries],
    }
    return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


def decode(line: bytes) -> Item:
    r = json.loads(line)
    raw = _unb64(r["raw"]) or b""
    msg = Message(id=r["id"], channel=r["channel"], received_at=r["received_at"],
                  status=Status(r["status"]), raw=raw, control_id=r["control_id"],
                  message_type=r["message_type"], key=r["key"], duplicate=r["duplicate"],
                  error=r["error"],
                  layers={name: _unb64(data) or b"" for name, data in r["layers"].items()})
    deliveries = [Delivery(id=d["id"], message_id=msg.id, destination=d["destination"],
                           status=DeliveryStatus(d["status"]), attempts=d["attempts"],
                           payload=raw if d["payload"] is None else base64.b64decode(d["payload"]),
                           response=_unb64(d["response"]), error=d["error"], key=msg.key)
                  for d in r["deliveries"]]
    return msg, deliveries


def read_archive(path: str | Path) -> Iterator[Item]:
    """The messages of an archive, in the order they were written (with their deliveries)."""
    with gzip.open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield decode(line)


class _Writer:
    """The file of one run: exclusive create, mode 0600, synced before it is reported."""

    def __init__(self, directory: Path, before: float) -> None:
        private_dir(directory)
        self.directory = directory
        name = archive_name(before)
        for n in range(1, 1000):
            self.path = directory / name
            try:
                fd = open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                break
            except FileExistsError:  # a second run with the same cutoff
                name = archive_name(before).replace(".jsonl.gz", f"-{n}.jsonl.gz")
        else:
            raise FileExistsError(f"no free archive name in {directory}")
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0)

    def write(self, items: Sequence[Item], out: Archived) -> None:
        """Write a batch and note its ids (in the caller's thread: not on the event loop)."""
        self._gz.write(b"".join(encode(m, d) for m, d in items))
        out.add(items)

    def finish(self) -> None:
        self._gz.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        _fsync_dir(self.directory)

    def abort(self) -> None:
        for close in (self._gz.close, self._file.close):
            with contextlib.suppress(OSError):
                close()
        self.path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """The new file's name must survive a crash too, not just its bytes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def write_archive(directory: Path, before: float,
                        batches: AsyncIterator[Sequence[Item]]) -> Archived:
    """Write every batch to one new archive file under *directory*, sync it, and say what it
    holds. Any failure removes the partial file and raises ``ArchiveError``: the caller then
    deletes nothing. No file is left when there was nothing to archive."""
    import asyncio

    out = Archived()
    writer: _Writer | None = None
    try:
        writer = await asyncio.to_thread(_Writer, Path(directory), before)
        async for items in batches:
            await asyncio.to_thread(writer.write, items, out)
        await asyncio.to_thread(writer.finish)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, OSError):
            raise ArchiveError(f"message archive not written under {directory}: "
                               f"{exc.strerror or type(exc).__name__}") from exc
        raise
    if not out.ids:
        writer.path.unlink(missing_ok=True)
        return out
    out.path = writer.path
    return out

