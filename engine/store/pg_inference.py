"""Claiming inference jobs on PostgreSQL (the rest of ``InferenceStore`` is written once,
in ``inference_sql``).

Jobs are claimed across processes (``pg_claims.claim_jobs``): ``FOR UPDATE
SKIP LOCKED`` plus a lease, so engines and ``radbridge worker`` processes share
one queue and a job whose process died is taken over when its lease runs out.
Start-up recovery (``reset_running_jobs``) only puts back jobs that no live
process holds.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from engine.errors import StoreUnavailable
from engine.store import pg_claims
from engine.store.inference import JobRow
from engine.store.inference_sql import _JOB_COLS, InferenceWrites, _job
from engine.store.pg_writer import DB_ERRORS, to_store_error


async def requeue_unheld_op(conn: asyncpg.Connection, owner: str) -> int:
    """Running jobs that no live process holds (ours, unclaimed, or whose lease ran out) go
    back to the queue."""
    now = await pg_claims.db_now(conn)
    result = await conn.execute(
        "UPDATE inference_jobs SET state = 'queued', updated_at = $1, claimed_by = NULL,"
        " lease_until = NULL WHERE state = 'running' AND (claimed_by IS NULL OR claimed_by = $2"
        " OR lease_until IS NULL OR lease_until < $3)", time.time(), owner, now)
    return int(result.split()[-1])


class PgInference(InferenceWrites):
    """Mixed into ``PostgresStore``: the shared inference reads and writes, and job claims
    with leases (several processes share the queue)."""

    _acquire: Any
    owner: str
    lease_secs: float

    async def reset_running_jobs(self) -> int:
        return int(await self._write(requeue_unheld_op, self.owner))

    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        try:
            async with self._acquire() as conn:
                rows = await pg_claims.claim_jobs(conn, self.owner, self.lease_secs, _JOB_COLS,
                                                  limit, float(now), time.time())
        except (*DB_ERRORS, StoreUnavailable) as exc:
            raise to_store_error(exc) from exc
        return sorted((_job(r) for r in rows), key=lambda j: (j.lane, j.id))
