"""Files and directories the engine writes are private: 0600 files, 0700 directories.

Everything under ``data_dir`` (DICOM instances, poller positions, the audit log), the
SQLite database with its ``-wal`` and ``-shm``, message archives and what the file
destination writes can hold patient data. Every writer creates through these helpers,
which set the mode explicitly (``os.open`` with 0600 then ``fchmod``; ``mkdir`` then
``chmod``), so the result does not depend on the umask. ``private_umask`` (0o077, set by
the command line at start) is only a belt for what a library creates on its own.

Directories that already exist are left as they are: an operator may have prepared
``/var/lib/radbridge`` with a group on purpose. Files we own are tightened.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_umask() -> int:
    """Make whatever this process creates private by default; return the previous umask."""
    return os.umask(0o077)


def private_dir(path: str | Path) -> Path:
    """``mkdir -p`` *path*, each directory created here mode 0700 whatever the umask."""
    target = Path(path)
    missing = []
    here = target
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another thread or process
            continue
        os.chmod(directory, PRIVATE_DIR)
    if not target.is_dir():
        raise NotADirectoryError(f"not a directory: {target}")
    return target


def open_private(path: str | Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` for writing a file that ends up mode 0600, new or not; returns the fd."""
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private_file(path: str | Path, exclusive: bool = False) -> IO[bytes]:
    """A binary file object for writing *path* (0600); *exclusive*: it must not exist."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    return os.fdopen(open_private(path, flags), "wb")


def private_database(path: str | Path) -> None:
    """Before SQLite opens *path*: its directory private, the file created 0600 (SQLite
    gives ``-wal`` and ``-shm`` the database's mode) and any existing side files tightened.
    ``:memory:`` and URI names are left to SQLite."""
    name = str(path)
    if name == ":memory:" or name.startswith("file:"):
        return
    private_dir(Path(name).parent)
    os.close(open_private(name, os.O_WRONLY | os.O_CREAT))
    for suffix in _SQLITE_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(name + suffix, PRIVATE_FILE)
