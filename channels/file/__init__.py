"""File destination: writes each message to a directory (an outbox or an archive)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from engine.config.base import Strict
from engine.connectors import BatchSent, DestinationBase
from engine.fsmode import private_dir
from engine.model import DeliveryRef
from engine.outfiles import os_delivery_error, write_batch, write_new
from engine.registry import register


class FileDestinationConfig(Strict):
    type: Literal["file"]
    directory: str = Field(description="Created if missing; one file per message, named "
                                       "<message id>-<delivery id><suffix> (our ids, never "
                                       "MSH-10); an existing file is never overwritten.")
    suffix: str = Field(".hl7", max_length=32, pattern=r"^[A-Za-z0-9._-]*$",
                        description="Appended to each file name.")
    fsync: bool = Field(True, description="fsync each file, and the directory once per "
                                          "batch, before reporting them sent.")


def file_stem(ref: DeliveryRef | None) -> str:
    """``<message id>-<delivery id>``, zero-padded so names sort in arrival order; a random
    name when sent outside the queue (no ids)."""
    if ref is None:
        return f"direct-{uuid.uuid4().hex}"
    return f"{ref.message_id:012d}-{ref.delivery_id:012d}"


@register("destination", "file", FileDestinationConfig, "one file per message in a directory")
class FileDestination(DestinationBase):
    """Writes ``<message id>-<delivery id><suffix>`` atomically (``engine.outfiles``).

    What ``send`` raises is decided by ``engine.outfiles.os_delivery_error``: a disk
    full or an unwritable directory (``PeerUnavailable``) is retried in order; a file
    that can never be written (``PermanentDeliveryError``) ends that delivery as ERROR
    and the queue moves on.

    ``send_batch`` writes up to ``max_batch`` files in one worker thread
    (``engine.outfiles.write_batch``: each fsynced before it is linked under its name, the
    fsyncs in flight together, stopping at the first that fails, then one directory fsync):
    none is reported written before its bytes and its name are durable.
    A crash before the directory fsync leaves files whose deliveries are still QUEUED; the
    resend finds its own bytes under the name and counts them written, never a copy.
    """

    retry_initial_secs = 1.0
    retry_max_secs = 60.0
    max_batch = 64

    def __init__(self, name: str, config: FileDestinationConfig) -> None:
        self.name = name
        self.config = config
        self.dir = Path(config.directory)

    async def connect(self) -> None:
        await asyncio.to_thread(private_dir, self.dir)

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        try:
            path = await asyncio.to_thread(write_new, self.dir, file_stem(ref),
                                           self.config.suffix, payload, self.config.fsync)
        except OSError as exc:
            raise os_delivery_error(exc, self.dir) from exc
        return f"written {path.name}".encode()

    async def send_batch(self, items: Sequence[tuple[bytes, DeliveryRef]]) -> BatchSent:
        return await asyncio.to_thread(self._write_batch, items)

    def _write_batch(self, items: Sequence[tuple[bytes, DeliveryRef]]) -> BatchSent:
        """In a worker thread: the files of *items* in order (``write_batch``)."""
        paths, error = write_batch(self.dir, [(file_stem(ref), payload) for payload, ref in items],
                                   self.config.suffix, self.config.fsync)
        return BatchSent([f"written {p.name}".encode() for p in paths],
                         os_delivery_error(error, self.dir) if error is not None else None)

    async def close(self) -> None:
        return None
