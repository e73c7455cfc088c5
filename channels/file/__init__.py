"""File destination: writes each message to a directory (an outbox or an archive)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from engine.configbase import Strict
from engine.errors import PeerUnavailable
from engine.fsmode import open_private_file, private_dir
from engine.registry import register
from mappings.hl7v2.header import HeaderError, parse_header


class FileDestinationConfig(Strict):
    type: Literal["file"]
    directory: str = Field(description="Created if missing; one file per message.")
    suffix: str = ".hl7"
    fsync: bool = Field(True, description="fsync each file before reporting it sent.")


@register("destination", "file", FileDestinationConfig, "one file per message in a directory")
class FileDestination:
    """Writes ``<control id or sequence><suffix>`` atomically (temp file + rename).

    Raises ``PeerUnavailable`` on any OS error (disk full, permissions): the
    message stays queued and is retried.
    """

    retry_initial_secs = 1.0
    retry_max_secs = 60.0

    def __init__(self, name: str, config: FileDestinationConfig) -> None:
        self.name = name
        self.config = config
        self.dir = Path(config.directory)
        self._seq = 0

    async def connect(self) -> None:
        await asyncio.to_thread(private_dir, self.dir)

    async def send(self, payload: bytes) -> bytes:
        self._seq += 1
        try:
            stem = parse_header(payload).control_id
        except HeaderError:
            stem = f"message-{self._seq}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        try:
            path = await asyncio.to_thread(self._write, safe, payload)
        except OSError as exc:
            raise PeerUnavailable(f"cannot write to {self.dir}: {exc.strerror}") from exc
        return f"written {path.name}".encode()

    def _write(self, stem: str, payload: bytes) -> Path:
        private_dir(self.dir)
        final = self.dir / f"{stem}{self.config.suffix}"
        tmp = final.with_suffix(final.suffix + ".tmp")
        with open_private_file(tmp) as fh:  # 0600: messages hold patient data
            fh.write(payload)
            if self.config.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        return final

    async def close(self) -> None:
        return None
