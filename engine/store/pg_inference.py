"""PostgreSQL implementation of ``InferenceStore`` (the same rules as ``inference_sql``).

Jobs are claimed across processes (``pg_claims.claim_jobs``): ``FOR UPDATE
SKIP LOCKED`` plus a lease, so engines and ``radbridge worker`` processes share
one queue and a job whose process died is taken over when its lease runs out.
Start-up recovery (``reset_running_jobs``) only puts back jobs that no live
process holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

import asyncpg

from engine.errors import StoreUnavailable
from engine.model import Finding
from engine.store import pg_claims
from engine.store.inference import (
    AuditEntry,
    JobRow,
    JobState,
    ModelLoad,
    new_pseudonym,
)
from engine.store.inference_sql import _AUDIT_COLS, _FINDING_COLS, _JOB_COLS, InferenceReads, _job
from engine.store.pg_writer import DB_ERRORS, to_store_error

# Reads are InferenceReads (inference_sql), shared with SQLite; the columns are its too.

# -- write operations (the writer's transaction) --------------------------------------------

async def enqueue_op(conn: asyncpg.Connection, case_id: int, models: Sequence[str], lane: int,
                     reason: str | None) -> list[JobRow]:
    select = f"SELECT {_JOB_COLS} FROM inference_jobs WHERE case_id = $1 ORDER BY id"
    existing = await conn.fetch(select, case_id)
    if existing:
        return [_job(r) for r in existing]
    now = time.time()
    if not models:
        await conn.execute("INSERT INTO inference_jobs (case_id, model, state, lane, created_at,"
                           " updated_at, error) VALUES ($1, NULL, 'no_model', $2, $3, $3, $4)",
                           case_id, lane, now, reason or "no model applies")
        await _case_final(conn, case_id, now)
    else:
        await conn.executemany("INSERT INTO inference_jobs (case_id, model, state, lane,"
                               " created_at, updated_at) VALUES ($1, $2, 'queued', $3, $4, $4)",
                               [(case_id, m, lane, now) for m in models])
    return [_job(r) for r in await conn.fetch(select, case_id)]


async def _case_final(conn: asyncpg.Connection, case_id: int, now: float) -> bool:
    pending = await conn.fetchval("SELECT 1 FROM inference_jobs WHERE case_id = $1 AND state IN"
                                  " ('queued', 'running') LIMIT 1", case_id)
    if pending is not None:
        return False
    await conn.execute("INSERT INTO inference_results (case_id, finished_at, notified_at)"
                       " VALUES ($1, $2, NULL) ON CONFLICT (case_id) DO UPDATE SET"
                       " finished_at = excluded.finished_at, notified_at = NULL", case_id, now)
    return True


async def _insert_audit(conn: asyncpg.Connection, a: AuditEntry, now: float) -> None:
    values = astuple(a)[:16]
    marks = ",".join(f"${i}" for i in range(1, 18))
    await conn.execute(f"INSERT INTO inference_audit ({_AUDIT_COLS}, created_at) VALUES"
                       f" ({marks})", *values, now)


async def retry_op(conn: asyncpg.Connection, job_id: int, error: str, not_before: float,
                   audit: AuditEntry | None, refund: bool = False) -> None:
    now = time.time()
    await conn.execute("UPDATE inference_jobs SET state = 'queued', error = $1, not_before = $2,"
                       " updated_at = $3, claimed_by = NULL, lease_until = NULL,"
                       " attempts = attempts - $5 WHERE id = $4",
                       error, float(not_before), now, job_id, int(refund))
    if audit is not None:
        await _insert_audit(conn, audit, now)


async def finish_op(conn: asyncpg.Connection, job_id: int, state: str,
                    findings: Sequence[Finding], audit: AuditEntry | None,
                    error: str | None) -> bool:
    now = time.time()
    # Lock the case's jobs in one order: two processes finishing its last two jobs take turns,
    # so the second always sees the first and the case is closed exactly once.
    case_id = await conn.fetchval("SELECT case_id FROM inference_jobs WHERE id = $1", job_id)
    if case_id is None:
        return False
    await conn.execute("SELECT 1 FROM inference_jobs WHERE case_id = $1 ORDER BY id FOR UPDATE",
                       case_id)
    await conn.execute("UPDATE inference_jobs SET state = $1, error = $2, updated_at = $3,"
                       " claimed_by = NULL, lease_until = NULL WHERE id = $4",
                       state, error, now, job_id)
    study = audit.study_uid if audit is not None else ""
    if findings:
        await conn.executemany(
            f"INSERT INTO findings ({_FINDING_COLS}) VALUES (DEFAULT,$1,$2,$3,$4,$5,$6,$7,$8,$9,"
            "$10,$11,$12,$13,$14,$15,$16)",
            [(case_id, job_id, study, f.code, f.display, f.coding_system, f.probability,
              int(f.critical), f.model_name, f.model_version, f.location, int(f.demo),
              f.criticality, f.mode, f.detail, now) for f in findings])
    if audit is not None:
        await _insert_audit(conn, audit, now)
    return await _case_final(conn, case_id, now)


async def reset_running_op(conn: asyncpg.Connection, owner: str) -> int:
    now = await pg_claims.db_now(conn)
    result = await conn.execute(
        "UPDATE inference_jobs SET state = 'queued', updated_at = $1, claimed_by = NULL,"
        " lease_until = NULL WHERE state = 'running' AND (claimed_by IS NULL OR claimed_by = $2"
        " OR lease_until IS NULL OR lease_until < $3)", time.time(), owner, now)
    return int(result.split()[-1])


async def pseudonymize_op(conn: asyncpg.Connection, case_id: int, study_uid: str,
                          patient_id: str | None, accession: str | None) -> dict[str, str]:
    wanted = {"study_uid": study_uid, "patient_id": patient_id, "accession": accession,
              "salt": study_uid}
    out: dict[str, str] = {}
    for kind, real in wanted.items():
        if real is None:
            continue
        pseudo = new_pseudonym("uid" if kind == "study_uid" else kind)
        # Insert or keep the existing one; another process may have just made it.
        await conn.execute("INSERT INTO pseudonyms VALUES ($1,$2,$3,$4,$5) ON CONFLICT"
                           " (kind, real) DO NOTHING", kind, real, pseudo, case_id, time.time())
        out[kind] = await conn.fetchval("SELECT pseudo FROM pseudonyms WHERE kind = $1 AND"
                                        " real = $2", kind, real)
    return out


async def save_pseudonyms_op(conn: asyncpg.Connection, case_id: int,
                             pairs: Sequence[tuple[str, str, str]]) -> None:
    now = time.time()
    await conn.executemany("INSERT INTO pseudonyms VALUES ($1,$2,$3,$4,$5) ON CONFLICT"
                           " DO NOTHING", [(k, r, p, case_id, now) for k, r, p in pairs])


async def model_load_op(conn: asyncpg.Connection, m: ModelLoad) -> None:
    await conn.execute("INSERT INTO model_loads (name, version, format, checksum, device,"
                       " status, error, at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                       *astuple(m)[:7], time.time())


async def notified_op(conn: asyncpg.Connection, case_id: int) -> None:
    await conn.execute("UPDATE inference_results SET notified_at = $1 WHERE case_id = $2",
                       time.time(), case_id)


class PgInference(InferenceReads):
    """Mixed into ``PostgresStore``: the shared reads, writes through its writer task, and
    job claims with leases (several processes share the queue)."""

    _write: Any
    _acquire: Any
    owner: str
    lease_secs: float

    async def enqueue_jobs(self, case_id: int, models: Sequence[str], lane: int,
                           reason: str | None = None) -> list[JobRow]:
        # Under the clinical lock: two processes routing the same case make one set of jobs.
        return await self._write(enqueue_op, case_id, list(models), lane, reason,
                                 needs_lock=True)

    async def reset_running_jobs(self) -> int:
        return int(await self._write(reset_running_op, self.owner))

    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        try:
            async with self._acquire() as conn:
                rows = await pg_claims.claim_jobs(conn, self.owner, self.lease_secs, _JOB_COLS,
                                                  limit, float(now), time.time())
        except (*DB_ERRORS, StoreUnavailable) as exc:
            raise to_store_error(exc) from exc
        return sorted((_job(r) for r in rows), key=lambda j: (j.lane, j.id))

    async def retry_job(self, job_id: int, error: str, not_before: float,
                        audit: AuditEntry | None, refund: bool = False) -> None:
        await self._write(retry_op, job_id, error, not_before, audit, refund)

    async def finish_job(self, job_id: int, state: JobState, findings: Sequence[Finding],
                         audit: AuditEntry | None, error: str | None = None) -> bool:
        return bool(await self._write(finish_op, job_id, str(state), list(findings), audit,
                                      error))

    async def mark_notified(self, case_id: int) -> None:
        await self._write(notified_op, case_id)

    async def pseudonymize_study(self, case_id: int, study_uid: str, patient_id: str | None,
                                 accession: str | None) -> dict[str, str]:
        return await self._write(pseudonymize_op, case_id, study_uid, patient_id, accession)

    async def save_pseudonyms(self, case_id: int, pairs: Sequence[tuple[str, str, str]]
                              ) -> None:
        if pairs:
            await self._write(save_pseudonyms_op, case_id, list(pairs))

    async def record_model_load(self, load: ModelLoad) -> None:
        await self._write(model_load_op, load)
