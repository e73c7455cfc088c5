"""``InferenceStore`` written once for both stores: write operations, reads, and the SQLite
schema (PostgreSQL's is in ``pg_schema``).

Write operations run on the writer's ``Tx`` (``engine.store.tx``) inside its transaction
(group commit); reads run through each store's ``_rows``. A job's final state, its findings
and its audit row are one transaction, so a crash never leaves findings
without their audit or a done job without its findings.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple
from typing import Any

from engine.model import Finding
from engine.store.inference import (
    AuditEntry,
    CaseContext,
    InferenceStore,
    JobRow,
    JobState,
    ModelLoad,
    StoredFinding,
    new_pseudonym,
)
from engine.store.tx import Tx, WriterStore

INFERENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS inference_jobs (
    id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL, model TEXT, state TEXT NOT NULL,
    lane INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, not_before REAL NOT NULL DEFAULT 0,
    error TEXT);
CREATE INDEX IF NOT EXISTS inference_jobs_queued ON inference_jobs (lane, id)
    WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS inference_jobs_case ON inference_jobs (case_id);
CREATE TABLE IF NOT EXISTS inference_results (
    case_id INTEGER PRIMARY KEY, finished_at REAL NOT NULL, notified_at REAL);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL, job_id INTEGER NOT NULL,
    study_uid TEXT NOT NULL, code TEXT NOT NULL, display TEXT NOT NULL, system TEXT NOT NULL,
    probability REAL, critical INTEGER NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    location TEXT, demo INTEGER NOT NULL, criticality TEXT NOT NULL, mode TEXT NOT NULL,
    detail TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS findings_case ON findings (case_id);
CREATE TABLE IF NOT EXISTS inference_audit (
    id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, case_id INTEGER NOT NULL,
    study_uid TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, checksum TEXT NOT NULL,
    device TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    batch_size INTEGER NOT NULL, queue_ms REAL, preprocess_ms REAL, forward_ms REAL,
    total_ms REAL, outputs TEXT NOT NULL, error TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS inference_audit_case ON inference_audit (case_id);
CREATE TABLE IF NOT EXISTS pseudonyms (
    kind TEXT NOT NULL, real TEXT NOT NULL, pseudo TEXT NOT NULL UNIQUE, case_id INTEGER,
    created_at REAL NOT NULL, PRIMARY KEY (kind, real)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_loads (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, format TEXT NOT NULL,
    checksum TEXT NOT NULL, device TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    at REAL NOT NULL);
"""

_JOB_COLS = "id, case_id, model, state, lane, attempts, created_at, updated_at, not_before, error"
_AUDIT_COLS = ("job_id, case_id, study_uid, model, version, checksum, device, attempt, status,"
               " batch_size, queue_ms, preprocess_ms, forward_ms, total_ms, outputs, error")
_FINDING_COLS = ("id, case_id, job_id, study_uid, code, display, system, probability, critical,"
                 " model, version, location, demo, criticality, mode, detail, created_at")
_CASE_CONTEXT = (
    "SELECT c.id, c.study_uid, c.revision, c.state, coalesce(o.accession, s.accession),"
    " coalesce(o.patient_id, s.patient_id), coalesce(o.issuer, s.issuer),"
    " coalesce(s.modality, o.modality), s.body_part, o.procedure_code, o.procedure_text,"
    " o.priority, o.patient_class, o.location FROM cases c JOIN studies s ON s.uid = c.study_uid"
    " LEFT JOIN orders o ON o.id = c.order_id WHERE c.id = ?")
_FINAL = tuple(str(s) for s in JobState if s.final)


def _job(row: Sequence[Any]) -> JobRow:
    r = list(row)
    r[3] = JobState(r[3])
    return JobRow(*r)


def _finding(row: Sequence[Any]) -> StoredFinding:
    f = Finding(code=row[4], display=row[5], coding_system=row[6], probability=row[7],
                critical=bool(row[8]), model_name=row[9], model_version=row[10],
                location=row[11], demo=bool(row[12]), criticality=row[13], mode=row[14],
                detail=row[15])
    return StoredFinding(row[0], row[1], row[2], row[3], f, row[16])


def _audit(row: Sequence[Any]) -> AuditEntry:
    entry = AuditEntry(*list(row)[1:17])  # list(): asyncpg records do not slice
    entry.id, entry.created_at = row[0], row[17]
    return entry


# -- write operations (on the writer's ``Tx``, inside its transaction) ----------------------

_SELECT_JOBS = f"SELECT {_JOB_COLS} FROM inference_jobs WHERE case_id = ? ORDER BY id"


async def enqueue_op(tx: Tx, case_id: int, models: Sequence[str], lane: int,
                     reason: str | None) -> list[JobRow]:
    existing = await tx.rows(_SELECT_JOBS, case_id)
    if existing:
        return [_job(r) for r in existing]
    now = time.time()
    if not models:
        await tx.execute("INSERT INTO inference_jobs (case_id, model, state, lane, created_at,"
                         " updated_at, error) VALUES (?, NULL, 'no_model', ?, ?, ?, ?)",
                         case_id, lane, now, now, reason or "no model applies")
        await _case_final(tx, case_id, now)
    else:
        await tx.executemany("INSERT INTO inference_jobs (case_id, model, state, lane,"
                             " created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?)",
                             [(case_id, m, lane, now, now) for m in models])
    return [_job(r) for r in await tx.rows(_SELECT_JOBS, case_id)]


async def _case_final(tx: Tx, case_id: int, now: float) -> bool:
    pending = await tx.value("SELECT 1 FROM inference_jobs WHERE case_id = ? AND state IN"
                             " ('queued', 'running') LIMIT 1", case_id)
    if pending is not None:
        return False
    await tx.execute("INSERT INTO inference_results (case_id, finished_at, notified_at)"
                     " VALUES (?, ?, NULL) ON CONFLICT (case_id) DO UPDATE SET"
                     " finished_at = excluded.finished_at, notified_at = NULL", case_id, now)
    return True


async def _insert_audit(tx: Tx, a: AuditEntry, now: float) -> None:
    await tx.execute(f"INSERT INTO inference_audit ({_AUDIT_COLS}, created_at) VALUES"
                     f" ({','.join('?' * 17)})", *astuple(a)[:16], now)


async def retry_op(tx: Tx, job_id: int, error: str, not_before: float,
                   audit: AuditEntry | None, refund: bool = False) -> None:
    now = time.time()
    await tx.execute(f"UPDATE inference_jobs SET state = 'queued', error = ?, not_before = ?,"
                     f" updated_at = ?{tx.unclaim}, attempts = attempts - ? WHERE id = ?",
                     error, float(not_before), now, int(refund), job_id)
    if audit is not None:
        await _insert_audit(tx, audit, now)


_INSERT_FINDING = (f"INSERT INTO findings ({_FINDING_COLS.removeprefix('id, ')}) VALUES"
                   f" ({','.join('?' * 16)})")


async def finish_op(tx: Tx, job_id: int, state: str, findings: Sequence[Finding],
                    audit: AuditEntry | None, error: str | None) -> bool:
    now = time.time()
    case_id = await tx.value("SELECT case_id FROM inference_jobs WHERE id = ?", job_id)
    if case_id is None:
        return False
    # Lock the case's jobs in one order: two processes finishing its last two jobs take turns,
    # so the second always sees the first and the case is closed exactly once.
    await tx.lock_rows("SELECT 1 FROM inference_jobs WHERE case_id = ? ORDER BY id", case_id)
    await tx.execute(f"UPDATE inference_jobs SET state = ?, error = ?, updated_at = ?"
                     f"{tx.unclaim} WHERE id = ?", state, error, now, job_id)
    study = audit.study_uid if audit is not None else ""
    await tx.executemany(_INSERT_FINDING, [
        (case_id, job_id, study, f.code, f.display, f.coding_system, f.probability,
         int(f.critical), f.model_name, f.model_version, f.location, int(f.demo), f.criticality,
         f.mode, f.detail, now) for f in findings])
    if audit is not None:
        await _insert_audit(tx, audit, now)
    return await _case_final(tx, case_id, now)


async def pseudonymize_op(tx: Tx, case_id: int, study_uid: str, patient_id: str | None,
                          accession: str | None) -> dict[str, str]:
    wanted = {"study_uid": study_uid, "patient_id": patient_id, "accession": accession,
              "salt": study_uid}
    out: dict[str, str] = {}
    for kind, real in wanted.items():
        if real is None:
            continue
        pseudo = new_pseudonym("uid" if kind == "study_uid" else kind)
        # Insert or keep the existing one; another process may have just made it.
        await tx.execute("INSERT INTO pseudonyms VALUES (?,?,?,?,?) ON CONFLICT (kind, real)"
                         " DO NOTHING", kind, real, pseudo, case_id, time.time())
        out[kind] = await tx.value("SELECT pseudo FROM pseudonyms WHERE kind = ? AND"
                                   " real = ?", kind, real)
    return out


async def save_pseudonyms_op(tx: Tx, case_id: int, pairs: Sequence[tuple[str, str, str]]
                             ) -> None:
    now = time.time()
    await tx.executemany("INSERT INTO pseudonyms VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                         [(k, r, p, case_id, now) for k, r, p in pairs])


async def model_load_op(tx: Tx, m: ModelLoad) -> None:
    await tx.execute("INSERT INTO model_loads (name, version, format, checksum, device,"
                     " status, error, at) VALUES (?,?,?,?,?,?,?,?)", *astuple(m)[:7],
                     time.time())


async def notified_op(tx: Tx, case_id: int) -> None:
    await tx.execute("UPDATE inference_results SET notified_at = ? WHERE case_id = ?",
                     time.time(), case_id)


class InferenceReads(InferenceStore):
    """The reads of ``InferenceStore``, written once in portable SQL; both stores run them
    through their ``_rows`` (SQLite's reader pool, PostgreSQL's connection pool)."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def inference_case(self, case_id: int) -> CaseContext | None:
        rows = await self._rows(_CASE_CONTEXT, case_id)
        return CaseContext(*rows[0]) if rows else None

    async def case_instance_paths(self, study_uid: str) -> list[str]:
        return [r[0] for r in await self._rows(
            "SELECT path FROM instances WHERE study_uid = ? AND own_output = 0 ORDER BY"
            " series_uid, sop_uid", study_uid)]

    async def cases_without_jobs(self, limit: int = 1000) -> list[int]:
        return [r[0] for r in await self._rows(
            "SELECT c.id FROM cases c WHERE c.state IN ('ready', 'study_only') AND NOT EXISTS"
            " (SELECT 1 FROM inference_jobs j WHERE j.case_id = c.id) ORDER BY c.id LIMIT ?",
            limit)]

    async def case_result(self, case_id: int) -> tuple[list[JobRow], list[StoredFinding]]:
        jobs = await self._rows(f"SELECT {_JOB_COLS} FROM inference_jobs WHERE case_id = ?"
                                " ORDER BY id", case_id)
        return [_job(r) for r in jobs], await self.list_findings(case_id, limit=10_000)

    async def unnotified_cases(self, limit: int = 1000) -> list[int]:
        return [r[0] for r in await self._rows(
            "SELECT case_id FROM inference_results WHERE notified_at IS NULL ORDER BY case_id"
            " LIMIT ?", limit)]

    async def real_for(self, kind: str, pseudo: str) -> str | None:
        rows = await self._rows("SELECT real FROM pseudonyms WHERE kind = ? AND pseudo = ?",
                                kind, pseudo)
        return rows[0][0] if rows else None

    async def list_audit(self, case_id: int | None = None, model: str | None = None,
                         limit: int = 100) -> list[AuditEntry]:
        where, params = _filters(("case_id", case_id), ("model", model))
        return [_audit(r) for r in await self._rows(
            f"SELECT id, {_AUDIT_COLS}, created_at FROM inference_audit {where} ORDER BY id DESC"
            " LIMIT ?", *params, limit)]

    async def list_findings(self, case_id: int | None = None, limit: int = 100
                            ) -> list[StoredFinding]:
        where, params = _filters(("case_id", case_id))
        return [_finding(r) for r in await self._rows(
            f"SELECT {_FINDING_COLS} FROM findings {where} ORDER BY id LIMIT ?",
            *params, limit)]

    async def list_jobs(self, case_id: int | None = None, state: str | None = None,
                        limit: int = 100) -> list[JobRow]:
        where, params = _filters(("case_id", case_id), ("state", state))
        return [_job(r) for r in await self._rows(
            f"SELECT {_JOB_COLS} FROM inference_jobs {where} ORDER BY id DESC LIMIT ?",
            *params, limit)]

    async def list_model_loads(self, limit: int = 50) -> list[ModelLoad]:
        return [ModelLoad(*r) for r in await self._rows(
            "SELECT name, version, format, checksum, device, status, error, at FROM model_loads"
            " ORDER BY id DESC LIMIT ?", limit)]


class InferenceWrites(InferenceReads, WriterStore):
    """The shared reads, and the writes of ``InferenceStore`` in the store's writer
    transaction (``_transact``). Claiming jobs and start-up recovery are claims
    (``engine.store.claims``)."""


    async def enqueue_jobs(self, case_id: int, models: Sequence[str], lane: int,
                           reason: str | None = None) -> list[JobRow]:
        # Under the clinical lock: two processes routing the same case make one set of jobs.
        return await self._transact(enqueue_op, case_id, list(models), lane, reason, lock=True)

    async def retry_job(self, job_id: int, error: str, not_before: float,
                        audit: AuditEntry | None, refund: bool = False) -> None:
        await self._transact(retry_op, job_id, error, not_before, audit, refund)

    async def finish_job(self, job_id: int, state: JobState, findings: Sequence[Finding],
                         audit: AuditEntry | None, error: str | None = None) -> bool:
        return bool(await self._transact(finish_op, job_id, str(state), list(findings), audit,
                                         error))

    async def mark_notified(self, case_id: int) -> None:
        await self._transact(notified_op, case_id)

    async def pseudonymize_study(self, case_id: int, study_uid: str, patient_id: str | None,
                                 accession: str | None) -> dict[str, str]:
        return await self._transact(pseudonymize_op, case_id, study_uid, patient_id, accession)

    async def save_pseudonyms(self, case_id: int, pairs: Sequence[tuple[str, str, str]]
                              ) -> None:
        if pairs:
            await self._transact(save_pseudonyms_op, case_id, list(pairs))

    async def record_model_load(self, load: ModelLoad) -> None:
        await self._transact(model_load_op, load)


def _filters(*pairs: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    cols = [(c, v) for c, v in pairs if v is not None]
    if not cols:
        return "", ()
    return "WHERE " + " AND ".join(f"{c}=?" for c, _ in cols), tuple(v for _, v in cols)
