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

Many instances at once (a STOW-RS request): ``write`` each file as its part arrives (a
``Staged`` instance: its bytes may be dropped), ``place`` it (fsynced in a pool, many at
once, then renamed), then ``commit`` them together: every folder they were renamed into
is fsynced once, and their rows are indexed in one store transaction. Nothing is answered
before ``commit`` returns. Folder fsyncs are shared between threads that need the same
folder at the same moment (``engine.flow.durable.DirSync``), so parallel C-STORE
associations writing one series share them too; a series folder's parents are fsynced
only until its own name is known durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import registry
from engine.errors import RadbridgeError, StoreUnavailable
from engine.flow.durable import DirSync, RecentSet, fsync_pool, place, write_file, write_temp
from engine.logs import event
from engine.store.clinical import InstanceAdded, InstanceMeta

log = logging.getLogger("radbridge.instances")

# Series folders remembered as settled (their own name durable); one forgotten costs two
# extra folder fsyncs the next time it is written to.
SETTLED_FOLDERS = 4096

# Rows indexed per store transaction when a request carries more instances than this: the
# store's writer is shared with every other channel, whose answers wait behind it.
INDEX_CHUNK = 256


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
    quiet_secs: float = 0.0  # the channel's quiet period: the study completes this long after


@dataclass(slots=True)
class Staged:
    """An instance written to ``tmp`` beside its ``path``; ``InstanceIngest.place`` fsyncs it
    and renames it into place (``tmp`` None), ``InstanceIngest.commit`` makes it durable."""

    meta: InstanceMeta
    path: Path
    size: int
    tmp: Path | None = None


def instances_root(data_dir: Path | str) -> Path:
    """The folder under the data directory that holds every instance file."""
    return Path(data_dir) / "instances"


def is_under(path: Path, root: Path) -> bool:
    """True when *path* resolves (symlinks and ``..`` followed) strictly inside *root*."""
    resolved, base = path.resolve(), root.resolve()
    return resolved != base and resolved.is_relative_to(base)


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
        self.dirsync = DirSync()
        self._settled = RecentSet(SETTLED_FOLDERS)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stored = 0

    def path_for(self, meta: InstanceMeta) -> Path:
        """Where *meta*'s file lives; ``OutsideStore`` if that would leave ``root``."""
        path = self.root / meta.study_uid / meta.series_uid / f"{meta.sop_uid}.dcm"
        if not is_under(path, self.root):
            raise OutsideStore("instance path would leave the instance store")
        return path

    def sync_folders(self, paths: Iterable[Path]) -> None:
        """Make the names of the files at *paths* durable (blocking: call it from a thread):
        each file's series folder fsynced and, unless that folder is known settled (made
        before, and its own name made durable by an earlier call), its study folder and the
        root too. An fsync of a folder that has not changed still flushes the disk's cache,
        so settled folders spare two flushes per file. Raises ``StoreUnavailable``."""
        series = {p.parent for p in paths}
        unsettled = [f for f in series if not self._settled.has(f)]
        folders = series | {f.parent for f in unsettled} | ({self.root} if unsettled else set())
        self.dirsync.sync(sorted(folders, key=lambda f: len(f.parts), reverse=True))
        self._settled.add(unsettled)

    def _note_folder(self, path: Path) -> None:
        """Before writing *path*: a series folder about to be made (again) is not settled."""
        if not path.parent.is_dir():
            self._settled.discard(path.parent)

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
        """One instance's file made durable: written, fsynced, renamed, its folders synced."""
        path = self.path_for(meta)
        self._note_folder(path)
        write_file(path, part10)
        self.sync_folders([path])
        return path

    def write(self, meta: InstanceMeta, part10: bytes) -> Staged:
        """Write *meta*'s bytes beside its file, not yet fsynced (blocking: call it from a
        thread), so that the caller may drop them; then ``place`` it, then ``commit``.
        Raises ``OutsideStore`` or ``StoreUnavailable``."""
        path = self.path_for(meta)
        self._note_folder(path)
        return Staged(meta, path, len(part10), write_temp(path, part10, fsync=False))

    async def place(self, staged: Staged) -> None:
        """fsync *staged*'s file and rename it into place, in the pool kept for fsyncs (many
        at once: the disk flushes them together). Raises ``StoreUnavailable``."""
        if staged.tmp is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(fsync_pool(), functools.partial(
                place, staged.tmp, staged.path, fsync=True))
            staged.tmp = None

    async def commit(self, staged: Sequence[Staged]) -> list[IngestResult | Exception]:
        """Make *staged* (each ``place``d) durable and indexed: their folders fsynced once,
        their rows in one transaction (``INDEX_CHUNK`` at most). Per instance, in order: its
        ``IngestResult``, or the exception that failed it (``StoreUnavailable``,
        ``StoreError``...). Never raises for one instance: a row the store refuses is retried
        alone, failing only itself."""
        if not staged:
            return []
        assert all(s.tmp is None for s in staged), "place() each staged instance first"
        try:
            await asyncio.to_thread(self.sync_folders, [s.path for s in staged])
        except StoreUnavailable as exc:
            return [exc] * len(staged)
        out: list[IngestResult | Exception] = []
        for at in range(0, len(staged), INDEX_CHUNK):
            out += await self._index_many(staged[at:at + INDEX_CHUNK])
        return out

    async def _index_many(self, staged: Sequence[Staged]) -> list[IngestResult | Exception]:
        rows = [(s.meta, str(s.path), s.size) for s in staged]
        try:
            added = await self.store.add_instances(self.channel, rows, self.quiet_secs)
        except StoreUnavailable as exc:
            return [exc] * len(staged)
        except Exception:  # one row the store refuses must not fail the others
            return [await self._index_alone(s) for s in staged]
        return [self._indexed(s.meta, a, str(s.path)) for s, a in zip(staged, added, strict=True)]

    async def _index_alone(self, s: Staged) -> IngestResult | Exception:
        try:
            return await self._index(s.meta, s.path, s.size)
        except Exception as exc:
            return exc

    async def _index(self, meta: InstanceMeta, path: Path, size: int,
                     expected: int | None = None) -> IngestResult:
        added = await self.store.add_instance(self.channel, meta, str(path), size,
                                              self.quiet_secs, expected)
        return self._indexed(meta, added, str(path), expected)

    def _indexed(self, meta: InstanceMeta, added: InstanceAdded, path: str,
                 expected: int | None = None) -> IngestResult:
        self.stored += 1
        result = IngestResult(meta, added, path, expected, self.quiet_secs)
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
