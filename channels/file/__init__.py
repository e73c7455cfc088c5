"""File destination: writes each message to a directory (an outbox or an archive)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Literal

from pydantic import Field

from engine.config.base import Strict
from engine.connectors import DestinationBase
from engine.fsmode import private_dir
from engine.model import DeliveryRef
from engine.outfiles import os_delivery_error, write_new
from engine.registry import register


class FileDestinationConfig(Strict):
    type: Literal["file"]
    directory: str = Field(description="Created if missing; one file per message, named "
                                       "<message id>-<delivery id><suffix> (our ids, never "
                                       "MSH-10); an existing file is never overwritten.")
    suffix: str = Field(".hl7", max_length=32, pattern=r"^[A-Za-z0-9._-]*$",
                        description="Appended to each file name.")
    fsync: bool = Field(True, description="fsync each file before reporting it sent.")


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
    """

    retry_initial_secs = 1.0
    retry_max_secs = 60.0

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

    async def close(self) -> None:
        return None
