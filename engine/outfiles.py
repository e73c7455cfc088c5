"""Writing one file per delivery: atomic, never overwriting, and its OS errors classified once.

Every destination that writes files (``channels.file``) goes through here:

* ``write_new`` writes a temporary file (mode 0600, fsynced when asked), then *links* it
  under its final name: ``link`` fails with EEXIST instead of replacing, so an earlier
  file is never overwritten, and a reader never sees a half-written one. A name already
  taken by the same bytes is our own earlier write (a resend after a crash): it counts as
  written. A name taken by other bytes moves on to ``<stem>.1``, ``<stem>.2``...
  The directory is fsynced after the link, so the name is durable when ``write_new``
  returns. ``write_batch`` does the same for many files with one directory fsync, their
  own fsyncs in flight together, and counts none written before both are done.
* ``os_delivery_error`` turns the ``OSError`` of a write into the engine's error tree
  (``engine.errors``), by errno:

  ===========================================  ==========================================
  errno                                        means
  ===========================================  ==========================================
  ENAMETOOLONG EINVAL EISDIR ENOTDIR ELOOP     ``PermanentDeliveryError``: this file can
  EILSEQ EEXIST EFAULT                         never be written; ERROR, the queue moves on
  EACCES EPERM, the directory writable         ``PermanentDeliveryError`` (the file itself)
  EACCES EPERM, the directory not writable     ``PeerUnavailable``: the place, not the
                                               message (fix the permissions; it resumes)
  anything else (ENOSPC EDQUOT EIO EROFS       ``PeerUnavailable``: retried in order with
  EFBIG EAGAIN EMFILE ESTALE ENOENT...)        backoff; a queue that stays stuck shows as
                                               stalled and an operator may skip its head
  ===========================================  ==========================================
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from engine.errors import DeliveryError, PeerUnavailable, PermanentDeliveryError
from engine.fsmode import open_private_file, private_dir

# What fails the same way however often it is tried: the name or the object, not the place.
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR,
                              errno.ELOOP, errno.EILSEQ, errno.EEXIST, errno.EFAULT})
_ACCESS = frozenset({errno.EACCES, errno.EPERM})
# File systems that refuse hard links answer one of these to ``link``.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})
MAX_NAME_TRIES = 100
SYNC_THREADS = 8  # fsyncs of one batch in flight at once


def os_delivery_error(exc: OSError, directory: Path) -> DeliveryError:
    """The delivery error for an ``OSError`` met writing into *directory* (see the table)."""
    reason = f"cannot write to {directory}: {exc.strerror or type(exc).__name__}"
    code = exc.errno
    if code in PERMANENT_ERRNOS:
        return PermanentDeliveryError(reason)
    if code in _ACCESS and os.access(directory, os.W_OK | os.X_OK):
        return PermanentDeliveryError(reason)
    return PeerUnavailable(reason)


def write_new(directory: Path, stem: str, suffix: str, payload: bytes, fsync: bool) -> Path:
    """Write *payload* as ``directory/<stem><suffix>`` atomically, never replacing a file;
    *fsync*: its bytes, then its name, are on disk when it returns.

    Raises ``OSError`` (classify it with ``os_delivery_error``); a ``FileExistsError``
    when ``MAX_NAME_TRIES`` names are all taken by other bytes.
    """
    paths, error = write_batch(directory, [(stem, payload)], suffix, fsync)
    if error is not None:
        raise error
    return paths[0]


def write_batch(directory: Path, files: Sequence[tuple[str, bytes]], suffix: str, fsync: bool
                ) -> tuple[list[Path], OSError | None]:
    """Write each (stem, payload) of *files* as ``write_new`` does, in order, stopping at the
    first that fails. *fsync*: every file's bytes are on disk before it gets its name (the
    files are fsynced concurrently: the file system commits them together), and the names
    with one directory fsync at the end.

    Returns the paths written, for a prefix of *files*, and the ``OSError`` that stopped
    the batch there (None: all written). When the directory cannot be made or fsynced, none
    counts as written: ``([], that error)``. Never raises ``OSError``.
    """
    handles: list[tuple[Path, IO[bytes]]] = []
    try:
        private_dir(directory)
        ready, error = _write_tmps(directory, files, handles, fsync)
        paths: list[Path] = []
        for (stem, payload), (tmp, _) in zip(files[:ready], handles, strict=False):
            try:
                paths.append(_link_new(directory, stem, suffix, tmp, payload))
            except OSError as exc:
                error = exc
                break
        if paths and fsync:
            fsync_dir(directory)
        return paths, error
    except OSError as exc:  # the directory itself
        return [], exc
    finally:
        for tmp, fh in handles:
            fh.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _write_tmps(directory: Path, files: Sequence[tuple[str, bytes]],
                handles: list[tuple[Path, IO[bytes]]], fsync: bool) -> tuple[int, OSError | None]:
    """Write each payload to a new temporary file (kept open in *handles*), then fsync them
    when asked: how many, in order, are ready to be named, and the error that stopped there."""
    error: OSError | None = None
    for stem, payload in files:
        tmp = directory / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            handles.append((tmp, _write_tmp(tmp, payload)))
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            error = exc
            break
    if not fsync:
        return len(handles), error
    synced, sync_error = _fsync_all([fh for _, fh in handles])
    return (synced, sync_error) if sync_error is not None else (synced, error)


def _write_tmp(tmp: Path, payload: bytes) -> IO[bytes]:
    """*payload* in the new file *tmp* (0600: messages hold patient data), flushed to the OS
    and left open. Raises ``OSError``."""
    fh = open_private_file(tmp, exclusive=True)
    try:
        fh.write(payload)
        fh.flush()
    except BaseException:
        fh.close()
        raise
    return fh


def _fsync_all(handles: list[IO[bytes]]) -> tuple[int, OSError | None]:
    """fsync every file, several at once (ext4 commits concurrent fsyncs in one journal
    commit: about 4x fewer per file than one after the other): how many, in order, are
    durable before the first that failed, and its error."""
    if len(handles) > 1:
        errors = list(_sync_pool().map(_fsync, handles))
    else:
        errors = [_fsync(fh) for fh in handles]
    for i, err in enumerate(errors):
        if err is not None:
            return i, err
    return len(handles), None


def _fsync(fh: IO[bytes]) -> OSError | None:
    try:
        os.fsync(fh.fileno())
    except OSError as exc:
        return exc
    return None


_POOL_LOCK = threading.Lock()
_POOL: list[ThreadPoolExecutor] = []


def _sync_pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="radbridge-fsync"))
        return _POOL[0]


def _link_new(directory: Path, stem: str, suffix: str, tmp: Path, payload: bytes) -> Path:
    """Give *tmp* the first name ``<stem><suffix>``, ``<stem>.1<suffix>``... not taken by
    other bytes. Raises ``OSError``; ``FileExistsError`` when all are taken."""
    for n in range(MAX_NAME_TRIES):
        final = directory / (f"{stem}{suffix}" if n == 0 else f"{stem}.{n}{suffix}")
        if _place(tmp, final, payload):
            return final
    raise FileExistsError(errno.EEXIST, f"{MAX_NAME_TRIES} names taken", str(directory / stem))


def _place(tmp: Path, final: Path, payload: bytes) -> bool:
    """Give *tmp* the name *final* unless taken; True when *final* now holds *payload*."""
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return _same(final, payload)
    except OSError as exc:
        if exc.errno not in _NO_LINKS or final.exists():
            raise
    # No hard links here (some network file systems): the name was free an instant ago and
    # only the one worker sending this delivery ever uses it.
    os.rename(tmp, final)
    return True


def _same(path: Path, payload: bytes) -> bool:
    try:
        return path.stat().st_size == len(payload) and path.read_bytes() == payload
    except OSError:
        return False


def fsync_dir(directory: Path) -> None:
    """Make the names created in *directory* durable. Raises ``OSError``."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
