"""The audit trail: who viewed which message content, who changed what, and when.

An append-only SQLite file beside the store (``[admin] audit_path``, default
``<data_dir>/audit.db``), written with ``synchronous=FULL`` before the audited
answer leaves: if the entry cannot be written, the content is not shown. Entries
hold user names, roles, actions and ids, never message content.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.admin.auth import Principal
from engine.fsmode import private_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    user    TEXT NOT NULL,
    role    TEXT NOT NULL,
    via     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    detail  TEXT,
    remote  TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, at);
"""


@dataclass(slots=True)
class AuditEntry:
    id: int
    at: float
    user: str
    role: str
    via: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    remote: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """One writer thread; reads share it (the audit log is small and rarely read)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radbridge-audit")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        private_database(self.path)  # 0600, like the message store
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def record(self, who: Principal, action: str, target: str | None = None,
                     detail: dict[str, Any] | None = None, remote: str | None = None) -> None:
        """Append one entry; returns once it is committed (raises if it cannot be)."""
        row = (time.time(), who.name, who.role, who.via, action, target,
               json.dumps(detail, sort_keys=True) if detail else None, remote)
        await self._run(self._insert, row)

    def _insert(self, row: tuple[Any, ...]) -> None:
        assert self._conn is not None, "audit log is not open"
        self._conn.execute("INSERT INTO audit (at, user, role, via, action, target, detail,"
                           " remote) VALUES (?,?,?,?,?,?,?,?)", row)

    async def query(self, user: str | None = None, action: str | None = None,
                    target: str | None = None, since: float | None = None,
                    until: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        where: list[str] = []
        params: list[Any] = []
        for col, val in (("user", user), ("action", action), ("target", target)):
            if val is not None:
                where.append(f"{col}=?")
                params.append(val)
        if since is not None:
            where.append("at>=?")
            params.append(since)
        if until is not None:
            where.append("at<?")
            params.append(until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT * FROM audit {clause} ORDER BY id DESC LIMIT ?"
        rows = await self._run(self._select, sql, (*params, limit))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6],
                           json.loads(r[7]) if r[7] else None, r[8]) for r in rows]

    def _select(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._conn is not None, "audit log is not open"
        return self._conn.execute(sql, params).fetchall()
