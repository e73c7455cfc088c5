"""SQLite implementation of ``InferenceStore``: schema, write operations, reads.

Write operations run in the store's writer thread inside its transaction
(group commit); reads use the reader pool. A job's final state, its findings
and its audit row are one transaction, so a crash never leaves findings
without their audit or a done job without its findings.
"""

from __future__ import annotations

import sqlite3
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


# -- write operations (writer thread) -------------------------------------------------------

def enqueue_op(conn: sqlite3.Connection, case_id: int, models: Sequence[str], lane: int,
               reason: str | None) -> list[JobRow]:
    existing = conn.execute(f"SELECT {_JOB_COLS} FROM inference_jobs WHERE case_id=? ORDER BY"
                            " id", (case_id,)).fetchall()
    if existing:
        return [_job(r) for r in existing]
    now = time.time()
    if not models:
        conn.execute("INSERT INTO inference_jobs (case_id, model, state, lane, created_at,"
                     " updated_at, error) VALUES (?, NULL, 'no_model', ?, ?, ?, ?)",
                     (case_id, lane, now, now, reason or "no model applies"))
        _case_final_op(conn, case_id, now)
    else:
        conn.executemany("INSERT INTO inference_jobs (case_id, model, state, lane, created_at,"
                         " updated_at) VALUES (?, ?, 'queued', ?, ?, ?)",
                         [(case_id, m, lane, now, now) for m in models])
    return [_job(r) for r in conn.execute(f"SELECT {_JOB_COLS} FROM inference_jobs WHERE"
                                          " case_id=? ORDER BY id", (case_id,))]


def _case_final_op(conn: sqlite3.Connection, case_id: int, now: float) -> bool:
    pending = conn.execute("SELECT 1 FROM inference_jobs WHERE case_id=? AND state IN"
                           " ('queued', 'running') LIMIT 1", (case_id,)).fetchone()
    if pending is not None:
        return False
    conn.execute("INSERT OR REPLACE INTO inference_results (case_id, finished_at, notified_at)"
                 " VALUES (?, ?, NULL)", (case_id, now))
    return True


def claim_op(conn: sqlite3.Connection, limit: int, now: float) -> list[JobRow]:
    rows = conn.execute(
        f"UPDATE inference_jobs SET state='running', attempts=attempts+1, updated_at=?3"
        f" WHERE id IN (SELECT id FROM inference_jobs WHERE state='queued' AND not_before<=?1"
        f" ORDER BY lane, id LIMIT ?2) RETURNING {_JOB_COLS}", (now, limit, time.time())
    ).fetchall()
    return sorted((_job(r) for r in rows), key=lambda j: (j.lane, j.id))


def _insert_audit(conn: sqlite3.Connection, a: AuditEntry, now: float) -> None:
    values = astuple(a)[:16]
    conn.execute(f"INSERT INTO inference_audit ({_AUDIT_COLS}, created_at) VALUES"
                 f" ({','.join('?' * 17)})", (*values, now))


def retry_op(conn: sqlite3.Connection, job_id: int, error: str, not_before: float,
             audit: AuditEntry | None, refund: bool = False) -> None:
    now = time.time()
    conn.execute("UPDATE inference_jobs SET state='queued', error=?, not_before=?, updated_at=?,"
                 " attempts=attempts-? WHERE id=?", (error, not_before, now, int(refund), job_id))
    if audit is not None:
        _insert_audit(conn, audit, now)


def finish_op(conn: sqlite3.Connection, job_id: int, state: str, findings: Sequence[Finding],
              audit: AuditEntry | None, error: str | None) -> bool:
    now = time.time()
    row = conn.execute("SELECT case_id FROM inference_jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        return False
    case_id = row[0]
    conn.execute("UPDATE inference_jobs SET state=?, error=?, updated_at=? WHERE id=?",
                 (state, error, now, job_id))
    study = audit.study_uid if audit is not None else ""
    conn.executemany(
        f"INSERT INTO findings ({_FINDING_COLS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(case_id, job_id, study, f.code, f.display, f.coding_system, f.probability,
          int(f.critical), f.model_name, f.model_version, f.location, int(f.demo), f.criticality,
          f.mode, f.detail, now) for f in findings])
    if audit is not None:
        _insert_audit(conn, audit, now)
    return _case_final_op(conn, case_id, now)


def reset_running_op(conn: sqlite3.Connection) -> int:
    return conn.execute("UPDATE inference_jobs SET state='queued', updated_at=? WHERE"
                        " state='running'", (time.time(),)).rowcount


def pseudonymize_op(conn: sqlite3.Connection, case_id: int, study_uid: str,
                    patient_id: str | None, accession: str | None) -> dict[str, str]:
    wanted = {"study_uid": study_uid, "patient_id": patient_id, "accession": accession,
              "salt": study_uid}
    out: dict[str, str] = {}
    for kind, real in wanted.items():
        if real is None:
            continue
        row = conn.execute("SELECT pseudo FROM pseudonyms WHERE kind=? AND real=?",
                           (kind, real)).fetchone()
        if row is None:
            pseudo = new_pseudonym("uid" if kind == "study_uid" else kind)
            conn.execute("INSERT INTO pseudonyms VALUES (?,?,?,?,?)",
                         (kind, real, pseudo, case_id, time.time()))
            row = (pseudo,)
        out[kind] = row[0]
    return out


def save_pseudonyms_op(conn: sqlite3.Connection, case_id: int,
                       pairs: Sequence[tuple[str, str, str]]) -> None:
    now = time.time()
    conn.executemany("INSERT OR IGNORE INTO pseudonyms VALUES (?,?,?,?,?)",
                     [(k, r, p, case_id, now) for k, r, p in pairs])


def model_load_op(conn: sqlite3.Connection, m: ModelLoad) -> None:
    conn.execute("INSERT INTO model_loads (name, version, format, checksum, device, status,"
                 " error, at) VALUES (?,?,?,?,?,?,?,?)", (*astuple(m)[:7], time.time()))


def notified_op(conn: sqlite3.Connection, case_id: int) -> None:
    conn.execute("UPDATE inference_results SET notified_at=? WHERE case_id=?",
                 (time.time(), case_id))


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


class SQLiteInference(InferenceReads):
    """Mixed into ``SQLiteStore``: the shared reads, and writes through its writer thread."""

    _write: Callable[..., Any]

    async def enqueue_jobs(self, case_id: int, models: Sequence[str], lane: int,
                           reason: str | None = None) -> list[JobRow]:
        return await self._write(enqueue_op, case_id, list(models), lane, reason)

    async def reset_running_jobs(self) -> int:
        return await self._write(reset_running_op)

    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        return await self._write(claim_op, limit, now)

    async def retry_job(self, job_id: int, error: str, not_before: float,
                        audit: AuditEntry | None, refund: bool = False) -> None:
        await self._write(retry_op, job_id, error, not_before, audit, refund)

    async def finish_job(self, job_id: int, state: JobState, findings: Sequence[Finding],
                         audit: AuditEntry | None, error: str | None = None) -> bool:
        return await self._write(finish_op, job_id, str(state), list(findings), audit, error)

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


def _filters(*pairs: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    cols = [(c, v) for c, v in pairs if v is not None]
    if not cols:
        return "", ()
    return "WHERE " + " AND ".join(f"{c}=?" for c, _ in cols), tuple(v for _, v in cols)
