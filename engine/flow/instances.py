"""DICOM instance ingest shared by C-STORE and STOW-RS: durable file, then index.

``ingest`` answers only once the file is fsynced under the data directory
and its row is committed, so a success status always means "durable and
indexed". Parsing and file I/O run in threads; the event loop never touches
pixel data. The instance is identified by the reader registered for ``dicom``
(``channels.dicom.part10.read_meta``: framing, UIDs, pixel rules) unless the edge already
did. Errors are typed so each edge maps them to its own protocol:

* ``InvalidInstance``  the bytes are not a usable DICOM instance
  (C-STORE 0xC000 "cannot understand", STOW 409/400 per instance)
* ``InvalidUID``       a UID breaks the DICOM UID grammar (C-STORE 0xA900, STOW
  FailureReason 0xA900): UIDs name folders of the instance store, so nothing
  else may reach a path. ``InstanceIngest.path_for`` also checks that every
  path it builds stays under its root (defence in depth).
* ``StoreUnavailable`` disk full or store down (C-STORE 0xA700, STOW 503)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import registry
from engine.errors import RadbridgeError, StoreUnavailable
from engine.fsmode import open_private_file, private_dir
from engine.logs import event
from engine.store.clinical import InstanceAdded, InstanceMeta

log = logging.getLogger("radbridge.instances")


class InvalidInstance(RadbridgeError):
    """Not a usable DICOM instance; ``reason`` says why (never quotes patient data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidUID(InvalidInstance):
    """A UID of the instance breaks the DICOM UID grammar (``channels.dicom.rules``)."""


class OutsideStore(InvalidInstance):
    """A path built from an instance would leave the instance store."""


@dataclass(slots=True)
class IngestResult:
    meta: InstanceMeta
    added: InstanceAdded
    path: str
    expected: int | None = None  # the study's instance count, when the source said it


def instances_root(data_dir: Path | str) -> Path:
    """The folder under the data directory that holds every instance file."""
    return Path(data_dir) / "instances"


def is_under(path: Path, root: Path) -> bool:
    """True when *path* resolves (symlinks and ``..`` followed) strictly inside *root*."""
    resolved, base = path.resolve(), root.resolve()
    return resolved != base and resolved.is_relative_to(base)


def write_durably(path: Path, data: bytes) -> None:
    """Write *data* to *path* atomically and durably (temp file, fsync, rename, fsync dir);
    the file is 0600 and the directories made for it 0700 (it holds patient data)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        private_dir(path.parent)
        with open_private_file(tmp) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreUnavailable(f"cannot write instance file: {exc.strerror}") from exc


class InstanceIngest:
    """The edge-independent half of DICOM ingest for one channel."""

    def __init__(self, channel: str, store: Any, data_dir: Path, quiet_secs: float,
                 on_added: Callable[[IngestResult], None] | None = None,
                 own_manufacturer: str = "RADBRIDGE") -> None:
        self.channel = channel
        self.store = store
        self.root = instances_root(data_dir)
        self.quiet_secs = quiet_secs
        self.on_added = on_added
        self.own_manufacturer = own_manufacturer
        self.read_meta: Callable[[bytes, str], InstanceMeta] = registry.reader("dicom")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stored = 0

    def path_for(self, meta: InstanceMeta) -> Path:
        """Where *meta*'s file lives; ``OutsideStore`` if that would leave ``root``."""
        path = self.root / meta.study_uid / meta.series_uid / f"{meta.sop_uid}.dcm"
        if not is_under(path, self.root):
            raise OutsideStore("instance path would leave the instance store")
        return path

    async def ingest(self, part10: bytes, meta: InstanceMeta | None = None,
                     expected: int | None = None) -> IngestResult:
        """Make one instance durable and indexed; raise InvalidInstance / StoreUnavailable.

        *expected*: the number of instances the source says the study has (a poller's QIDO
        NumberOfStudyRelatedInstances); the study completes once that many have arrived."""
        if meta is None:
            meta = await asyncio.to_thread(self.read_meta, part10, self.own_manufacturer)
        path = await asyncio.to_thread(self._write, meta, part10)
        return await self._index(meta, path, len(part10), expected)

    def _write(self, meta: InstanceMeta, part10: bytes) -> Path:
        path = self.path_for(meta)
        write_durably(path, part10)
        return path

    async def _index(self, meta: InstanceMeta, path: Path, size: int,
                     expected: int | None = None) -> IngestResult:
        added = await self.store.add_instance(self.channel, meta, str(path), size,
                                              self.quiet_secs, expected)
        self.stored += 1
        result = IngestResult(meta, added, str(path), expected)
        event(log, "DCM-206", "instance stored", channel=self.channel, study=meta.study_uid,
              sop=meta.sop_uid, reopened=added.reopened or None, own=added.ignored or None,
              level=logging.DEBUG)
        if self.on_added is not None:
            self.on_added(result)
        return result

    def ingest_from_thread(self, part10: bytes, meta: InstanceMeta | None = None,
                           timeout: float = 60.0) -> IngestResult:
        """For threaded servers (pynetdicom): parse and write in the calling thread, index on
        the loop, wait here. The event loop never blocks; the caller's thread does."""
        assert self.loop is not None, "bind() the ingest to the running loop first"
        if meta is None:
            meta = self.read_meta(part10, self.own_manufacturer)
        path = self._write(meta, part10)
        fut = asyncio.run_coroutine_threadsafe(self._index(meta, path, len(part10)), self.loop)
        return fut.result(timeout)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
