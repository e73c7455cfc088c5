"""Durable files for the instance store: written, fsynced, renamed, their folders fsynced.

One file on its own: ``write_file`` (temporary file, fsync, rename) then ``fsync_dir`` its
folder, or ``write_durably`` for both. Many files at once (``engine.flow.instances``):
``write_temp`` without fsync so the caller can drop the bytes, then ``place`` each in
``fsync_pool`` (the disk flushes concurrent fsyncs together), then ``DirSync`` the folders
once. ``DirSync`` is a group commit for folder fsyncs across threads; ``RecentSet`` a small
bounded set (the folders known settled). Every OS error becomes ``StoreUnavailable``.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StoreUnavailable
from engine.fsmode import open_private_file, private_dir
from engine.outfiles import fsync_dir  # one definition: the file destination's

# Files fsynced at once by ``place`` (``fsync_pool``): the disk serves concurrent flushes
# together, so a request's files are flushed in parallel rather than one by one.
FSYNC_THREADS = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

def fsync_pool() -> ThreadPoolExecutor:
    """The process's pool for ``place`` (made on first use; its threads only wait on disks)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="radbridge-fsync")
        return _pool


def write_temp(path: Path, data: bytes, *, fsync: bool) -> Path:
    """Write *data* to a new temporary file beside *path*, fsynced when asked; return it.
    The file is 0600 and the directories made for it 0700 (it holds patient data).
    Raises ``StoreUnavailable``."""
    # Unique per write: two threads may write the same SOP Instance at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        private_dir(path.parent)
        with open_private_file(tmp) as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreUnavailable(f"cannot write instance file: {exc.strerror}") from exc
    return tmp


def place(tmp: Path, path: Path, *, fsync: bool) -> None:
    """Rename *tmp* to *path* (atomically replacing an earlier copy), first fsyncing it when
    asked (a file written with ``fsync=False``). The new name is durable only once its
    directory is fsynced (``DirSync``). Raises ``StoreUnavailable``."""
    try:
        if fsync:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreUnavailable(f"cannot write instance file: {exc.strerror}") from exc


def write_file(path: Path, data: bytes) -> None:
    """Write *data* to *path* atomically: a temporary file, fsynced, renamed into place
    (``write_temp``, ``place``). Raises ``StoreUnavailable``."""
    place(write_temp(path, data, fsync=True), path, fsync=False)


def write_durably(path: Path, data: bytes) -> None:
    """``write_file``, then fsync its directory: one file made durable on its own."""
    write_file(path, data)
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise StoreUnavailable(f"cannot write instance file: {exc.strerror}") from exc


@dataclass(slots=True)
class _DirState:
    wanted: int = 0  # tickets handed out: renames done and waiting to be made durable
    done: int = 0  # every ticket up to this one is covered by a finished fsync
    busy: bool = False


class DirSync:
    """Group commit for directory entries: threads that need one directory fsynced at the same
    moment share one fsync.

    A thread calls ``sync`` after its rename and takes a ticket. The thread that finds no
    fsync of that directory in progress starts one covering every ticket handed out so far;
    the others wait for it, and a ticket taken after it started waits for the next one (its
    rename may have missed the first). An fsync that fails wakes its waiters, which try
    again themselves. Blocking: call it from a thread. Raises ``StoreUnavailable``.
    """

    def __init__(self, fsync: Callable[[Path], None] = fsync_dir) -> None:
        self._fsync = fsync
        self._cond = threading.Condition()
        self._dirs: dict[Path, _DirState] = {}

    def sync(self, directories: Iterable[Path]) -> None:
        """Make the entries renamed into each of *directories* until now durable."""
        for directory in directories:
            self._sync_one(directory)

    def pending(self, directory: Path) -> int:
        """Callers of *directory* whose rename no finished fsync covers yet."""
        with self._cond:
            state = self._dirs.get(directory)
            return 0 if state is None else state.wanted - state.done

    def _sync_one(self, directory: Path) -> None:
        with self._cond:
            state = self._dirs.setdefault(directory, _DirState())
            state.wanted += 1
            ticket = state.wanted
            while state.busy and state.done < ticket:
                self._cond.wait()
            if state.done >= ticket:
                return
            state.busy, upto = True, state.wanted
        try:
            self._fsync(directory)
        except OSError as exc:
            raise StoreUnavailable(f"cannot sync instance folder: {exc.strerror}") from exc
        else:
            with self._cond:
                state.done = upto
        finally:
            with self._cond:
                state.busy = False
                if state.done == state.wanted and self._dirs.get(directory) is state:
                    del self._dirs[directory]
                self._cond.notify_all()


class RecentSet:
    """A thread-safe set of at most *size* paths; the least recently added go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()

    def has(self, item: Path) -> bool:
        with self._lock:
            return item in self._items

    def add(self, items: Iterable[Path]) -> None:
        with self._lock:
            for item in items:
                self._items[item] = None
                self._items.move_to_end(item)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def discard(self, item: Path) -> None:
        with self._lock:
            self._items.pop(item, None)
