"""The first ten minutes: a generated admin password when none is configured, on loopback.

``radbridge run`` on loopback with no admin user or token creates one strong password in
``<data_dir>/admin-password`` (mode 0600 whatever the umask; its directory 0700 when
created), reuses it on every later start, and prints where it is beside the dashboard's
address. The password itself never reaches a log. Off loopback nothing is generated: the
credential policy refuses to start instead.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from engine.admin.auth import AdminCredentialsError
from engine.admin.policy import password_problem

PASSWORD_FILE = "admin-password"


def first_run_password(data_dir: Path, user: str) -> tuple[Path, str, bool]:
    """(path, password, created): the password in ``data_dir/admin-password``, made now
    if the file does not exist yet. Raises ``AdminCredentialsError`` when it cannot be
    read or written (a symbolic link, not a regular file, no permission)."""
    path = data_dir / PASSWORD_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            return path, _create(path, user), True
        except FileExistsError:
            return path, _reuse(path), False
    except OSError as exc:
        raise AdminCredentialsError(
            f"cannot use the admin password file {path}: {exc.strerror or exc}"
        ) from exc


def _new_password(user: str) -> str:
    while True:
        password = secrets.token_urlsafe(18)  # 24 characters, 144 random bits
        if password_problem(user, password) is None:
            return password


def _create(path: Path, user: str) -> str:
    """Write a new password with O_EXCL (two starts at once never both create one)."""
    password = _new_password(user)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added: be exact
        os.write(fd, (password + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return password


def _reuse(path: Path) -> str:
    """Read an existing password file (never through a link), keeping it 0600."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AdminCredentialsError(f"{path} is not a regular file")
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        with os.fdopen(os.dup(fd), encoding="utf-8") as handle:
            return handle.read(4096).strip("\r\n")
    finally:
        os.close(fd)
