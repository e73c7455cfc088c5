"""Files that may hold patient data are 0600 and their directories 0700, whatever the umask.

The review found the database, audit log, archives, results and instance files created
0644 (directories 0755). Here an engine runs under umask 0o022 (the usual default) and
writes every kind of file it has: the message store with its WAL, the audit log, DICOM
instances, file-destination output and a message archive; then every file and directory
it made is checked.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.hl7gen import orm_o01
from engine.fsmode import open_private_file, private_database, private_dir
from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, send_hl7
from tests.fixtures.dicom import part10, synth_instance

__all__ = ["admin_engine"]  # the fixture, imported for pytest

BOUNDARY = "file-modes-boundary"


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """umask 0o022 for the test (files 0644 and directories 0755 unless set explicitly)."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _config(tmp: Path) -> str:
    return f"""
[store]
url = "sqlite:///{tmp / 'db' / 'radbridge.db'}"
[engine]
data_dir = "{tmp / 'var'}"
[admin]
listen = "127.0.0.1:0"

[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
forward_to = ["archive"]

[[channel]]
name = "archive"
destination = {{ type = "file", directory = "{tmp / 'out' / 'hl7'}" }}

[[channel]]
name = "web"
source = {{ type = "dicomweb", listen = "127.0.0.1:0" }}
"""


async def _stow(address: tuple[str, int], instance: bytes) -> int:
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instance
            + f"\r\n--{BOUNDARY}--\r\n".encode())
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    async with aiohttp.ClientSession() as http, http.post(
            f"http://{address[0]}:{address[1]}/studies", data=body,
            headers={"Content-Type": ctype}) as resp:
        return resp.status


def _modes(roots: list[Path]) -> dict[Path, int]:
    found = {}
    for root in roots:
        found[root] = stat.S_IMODE(root.stat().st_mode)
        for path in root.rglob("*"):
            found[path] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def test_every_file_the_engine_writes_is_0600_and_every_directory_0700(
        admin_engine: Started, tmp_path: Path, usual_umask: None) -> None:
    engine, api = await admin_engine(_config(tmp_path))
    for n in (1, 2):  # two: SQLite never prunes the newest row
        assert await send_hl7(engine, orm_o01(f"MODES{n}")) in ("AA", "CA")
    await wait_for(lambda: len(list((tmp_path / "out" / "hl7").glob("*.hl7"))) == 2)
    assert await _stow(engine.address("web"), part10(synth_instance("1.2.3", "1.2.3.1", 1))) \
        == 200
    status, _ = await api.call("POST", "/api/config/reload", "admin", json={"dry_run": True})
    assert status == 200  # audited: the audit log has a row
    archived = await engine.store.prune_messages(time.time() + 60, archive=tmp_path / "msgs")
    assert archived.archive is not None

    modes = _modes([tmp_path / d for d in ("db", "var", "out", "msgs")])
    names = {p.name for p in modes}
    assert {"radbridge.db", "radbridge.db-wal", "radbridge.db-shm", "audit.db",
            "audit.db-wal", archived.archive.name} <= names
    assert any(n.endswith(".dcm") for n in names) and any(n.endswith(".hl7") for n in names)
    wrong = {str(p.relative_to(tmp_path)): oct(m) for p, m in modes.items()
             if m != (0o700 if p.is_dir() else 0o600)}
    assert wrong == {}


def test_the_helpers_ignore_a_permissive_umask_and_tighten_an_existing_database(
        tmp_path: Path) -> None:
    before = os.umask(0)
    try:
        made = private_dir(tmp_path / "a" / "b")
        with open_private_file(made / "f") as fh:
            fh.write(b"x")
        old = tmp_path / "old.db"
        old.write_bytes(b"")
        Path(f"{old}-wal").write_bytes(b"")
        private_database(old)
    finally:
        os.umask(before)
    assert _modes([tmp_path / "a"]) == {tmp_path / "a": 0o700, made: 0o700, made / "f": 0o600}
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{old}-wal").stat().st_mode) == 0o600
