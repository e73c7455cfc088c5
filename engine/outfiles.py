"""Writing one file per delivery: atomic, never overwriting, and its OS errors classified once.

Every destination that writes files (``channels.file``) goes through here:

* ``write_new`` writes a temporary file (mode 0600, fsynced when asked), then *links* it
  under its final name: ``link`` fails with EEXIST instead of replacing, so an earlier
  file is never overwritten, and a reader never sees a half-written one. A name already
  taken by the same bytes is our own earlier write (a resend after a crash): it counts as
  written. A name taken by other bytes moves on to ``<stem>.1``, ``<stem>.2``...
  The directory is fsynced after the link, so the name is durable when ``write_new``
  returns; a batch of files passes ``sync_dir=False`` to each and calls ``fsync_dir`` once
  at the end, and only then counts any of them as written.
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
from pathlib import Path

from engine.errors import DeliveryError, PeerUnavailable, PermanentDeliveryError
from engine.fsmode import open_private_file, private_dir

# What fails the same way however often it is tried: the name or the object, not the place.
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR,
                              errno.ELOOP, errno.EILSEQ, errno.EEXIST, errno.EFAULT})
_ACCESS = frozenset({errno.EACCES, errno.EPERM})
# File systems that refuse hard links answer one of these to ``link``.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})
MAX_NAME_TRIES = 100


def os_delivery_error(exc: OSError, directory: Path) -> DeliveryError:
    """The delivery error for an ``OSError`` met writing into *directory* (see the table)."""
    reason = f"cannot write to {directory}: {exc.strerror or type(exc).__name__}"
    code = exc.errno
    if code in PERMANENT_ERRNOS:
        return PermanentDeliveryError(reason)
    if code in _ACCESS and os.access(directory, os.W_OK | os.X_OK):
        return PermanentDeliveryError(reason)
    return PeerUnavailable(reason)


def write_new(directory: Path, stem: str, suffix: str, payload: bytes, fsync: bool, *,
              sync_dir: bool = True) -> Path:
    """Write *payload* as ``directory/<stem><suffix>`` atomically, never replacing a file;
    *fsync*: the file's bytes, then (unless not *sync_dir*) the directory entry, are on disk
    when it returns (with ``sync_dir=False`` the caller owes a ``fsync_dir``).

    Raises ``OSError`` (classify it with ``os_delivery_error``); a ``FileExistsError``
    when ``MAX_NAME_TRIES`` names are all taken by other bytes.
    """
    private_dir(directory)
    tmp = directory / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        _write_tmp(tmp, payload, fsync)
        for n in range(MAX_NAME_TRIES):
            final = directory / (f"{stem}{suffix}" if n == 0 else f"{stem}.{n}{suffix}")
            if _place(tmp, final, payload):
                if fsync and sync_dir:
                    fsync_dir(directory)
                return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    raise FileExistsError(errno.EEXIST, f"{MAX_NAME_TRIES} names taken", str(directory / stem))


def _write_tmp(tmp: Path, payload: bytes, fsync: bool) -> None:
    with open_private_file(tmp, exclusive=True) as fh:  # 0600: messages hold patient data
        fh.write(payload)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


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
