"""Claiming work on SQLite: one engine process owns the database, so a claim is a plain
update in the writer thread (``engine.store.pg_claims`` is the several-process side).

Jobs are claimed by marking them ``running`` (STAT lane first); at start-up every job
still ``running`` was left by this process's previous run, and goes back to the queue.
"""

from __future__ import annotations

import sqlite3
import time

from engine.store.inference import JobRow
from engine.store.inference_sql import _JOB_COLS, InferenceWrites, _job


def claim_op(conn: sqlite3.Connection, limit: int, now: float) -> list[JobRow]:
    rows = conn.execute(
        f"UPDATE inference_jobs SET state='running', attempts=attempts+1, updated_at=?3"
        f" WHERE id IN (SELECT id FROM inference_jobs WHERE state='queued' AND not_before<=?1"
        f" ORDER BY lane, id LIMIT ?2) RETURNING {_JOB_COLS}", (now, limit, time.time())
    ).fetchall()
    return sorted((_job(r) for r in rows), key=lambda j: (j.lane, j.id))


def requeue_running_op(conn: sqlite3.Connection) -> int:
    """Every running job goes back to the queue (one process: none is running now)."""
    return conn.execute("UPDATE inference_jobs SET state='queued', updated_at=? WHERE"
                        " state='running'", (time.time(),)).rowcount


class SQLiteInference(InferenceWrites):
    """Mixed into ``SQLiteStore``: the shared inference reads and writes, and job claims
    through its writer thread."""


    async def reset_running_jobs(self) -> int:
        return await self._write(requeue_running_op)

    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        return await self._write(claim_op, limit, now)
