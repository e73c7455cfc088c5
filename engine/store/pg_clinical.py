"""PostgreSQL implementation of ``ClinicalStore`` (the same rules as ``clinical_sql``).

Write operations run in the writer's transaction after it took the clinical
advisory lock, so correlation sees every committed order and study of every
engine process and two processes can never both (or neither) create a case.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.model import Order, Patient
from engine.store.clinical import (
    CANCEL_CONTROLS,
    CANCEL_STATUSES,
    CaseRow,
    InstanceAdded,
    InstanceMeta,
)

# The same columns, joins and row shapes as the SQLite side.
from engine.store.clinical_sql import (
    _CASE_SELECT,
    _STUDY_COLS,
    ClinicalReads,
    _case,
    order_key,
)
from engine.store.signals import Topic, announcing_pg, case_ids

# A study or an order matches by Study UID, else by accession + patient id (+ issuer if both).
_MATCH = ("(study_uid = $1 OR ($2::text IS NOT NULL AND accession = $2 AND patient_id = $3 AND"
          " (issuer IS NULL OR $4::text IS NULL OR issuer = $4)))")

# -- instances and studies -----------------------------------------------------------------

async def add_instance_op(conn: asyncpg.Connection, channel: str, m: InstanceMeta, path: str,
                          size: int, quiet_secs: float, expected: int | None) -> InstanceAdded:
    now = time.time()
    row = await conn.fetchrow("SELECT state, revision FROM studies WHERE uid = $1 FOR UPDATE",
                              m.study_uid)
    duplicate = await conn.fetchval("SELECT 1 FROM instances WHERE sop_uid = $1",
                                    m.sop_uid) is not None
    reopened = False
    if row is None:
        state, revision = ("complete" if m.own_output else "receiving"), 0
        await conn.execute(
            f"INSERT INTO studies ({_STUDY_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,0,0,$9,$10,$11,"
            "$12,$12,NULL)", m.study_uid, m.accession, m.patient_id, m.issuer, m.modality,
            m.body_part, state, revision, expected, float(quiet_secs), channel, now)
    else:
        state, revision = row[0], row[1]
        if not m.own_output:
            if state == "complete":
                revision, reopened = revision + 1, True
            state = "receiving"
            await conn.execute(
                "UPDATE studies SET state = 'receiving', revision = $1, last_at = $2,"
                " accession = coalesce(accession, $3), modality = coalesce(modality, $4),"
                " body_part = coalesce(body_part, $5),"
                " expected_count = coalesce($6, expected_count) WHERE uid = $7",
                revision, now, m.accession, m.modality, m.body_part, expected, m.study_uid)
    await conn.execute(
        "INSERT INTO instances VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (sop_uid)"
        " DO UPDATE SET study_uid = excluded.study_uid, series_uid = excluded.series_uid,"
        " sop_class_uid = excluded.sop_class_uid, transfer_syntax = excluded.transfer_syntax,"
        " path = excluded.path, size = excluded.size, revision = excluded.revision,"
        " own_output = excluded.own_output, received_at = excluded.received_at",
        m.sop_uid, m.study_uid, m.series_uid, m.sop_class_uid, m.transfer_syntax, path, size,
        revision, int(m.own_output), now)
    await _recount(conn, m.study_uid)
    return InstanceAdded(m.study_uid, revision, state, duplicate, reopened, m.own_output)


async def _recount(conn: asyncpg.Connection, uid: str) -> None:
    await conn.execute("UPDATE studies SET instance_count = (SELECT count(*) FROM instances"
                       " WHERE study_uid = $1 AND own_output = 0), series_count = (SELECT"
                       " count(DISTINCT series_uid) FROM instances WHERE study_uid = $1 AND"
                       " own_output = 0) WHERE uid = $1", uid)


async def complete_study_op(conn: asyncpg.Connection, uid: str) -> list[CaseRow]:
    done = await conn.execute("UPDATE studies SET state = 'complete', completed_at = $1 WHERE"
                              " uid = $2 AND state = 'receiving'", time.time(), uid)
    if done.endswith(" 0"):
        return []
    return await _correlate_study(conn, uid)


async def _correlate_study(conn: asyncpg.Connection, uid: str) -> list[CaseRow]:
    s = await conn.fetchrow("SELECT uid, accession, patient_id, issuer, revision, state FROM"
                            " studies WHERE uid = $1", uid)
    if s is None or s[5] != "complete":
        return []
    order_id = await conn.fetchval(
        f"SELECT id FROM orders WHERE cancelled = 0 AND {_MATCH} ORDER BY (study_uid = $1)"
        " IS TRUE DESC, updated_at DESC LIMIT 1", s[0], s[1], s[2], s[3])
    if order_id is None:
        return []
    return await _create_case(conn, order_id, uid, s[4], "ready")


async def _create_case(conn: asyncpg.Connection, order_id: int | None, uid: str, revision: int,
                       state: str) -> list[CaseRow]:
    now = time.time()
    existing = await conn.fetchrow("SELECT id, order_id, state FROM cases WHERE study_uid = $1"
                                   " AND revision = $2", uid, revision)
    if existing is not None:
        if existing[1] is not None or order_id is None:
            return []
        # A study that went on study-only meets its order later: link it, no new work.
        await conn.execute("UPDATE cases SET order_id = $1, updated_at = $2 WHERE id = $3",
                           order_id, now, existing[0])
        return []
    case_id = await conn.fetchval("INSERT INTO cases (order_id, study_uid, revision, state,"
                                  " created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$5)"
                                  " RETURNING id", order_id, uid, revision, state, now)
    return [_case(await conn.fetchrow(f"{_CASE_SELECT} WHERE c.id = $1", case_id))]


# -- patients and orders -----------------------------------------------------------------

async def apply_patient_op(conn: asyncpg.Connection, event: str, p: Patient) -> list[CaseRow]:
    pid = p.primary_id
    if pid is None:
        return []
    await conn.execute(
        "INSERT INTO patients VALUES ($1,$2,$3,$4,$5,$6,$7,$8,NULL,$9) ON CONFLICT (patient_id,"
        " issuer) DO UPDATE SET family = excluded.family, given = excluded.given,"
        " birth_date = excluded.birth_date, sex = excluded.sex,"
        " patient_class = excluded.patient_class, location = excluded.location,"
        " merged_into = NULL, updated_at = excluded.updated_at",
        pid.value, pid.issuer or "", p.family_name, p.given_name, p.birth_date, p.sex,
        p.patient_class, p.location, time.time())
    cases: list[CaseRow] = []
    for old in p.merged_from:
        cases += await _merge(conn, old.value, old.issuer, pid.value, pid.issuer)
    return cases


async def _merge(conn: asyncpg.Connection, old: str, old_issuer: str | None, new: str,
                 new_issuer: str | None) -> list[CaseRow]:
    """Mark the old identifier merged and re-link its orders and studies."""
    match = "patient_id = $1 AND (issuer IS NULL OR $2::text IS NULL OR issuer = $2)"
    await conn.execute("UPDATE patients SET merged_into = $3, updated_at = $4 WHERE"
                       " patient_id = $1 AND ($2::text IS NULL OR issuer = $2)",
                       old, old_issuer, new, time.time())
    await conn.execute(f"UPDATE orders SET patient_id = $3, issuer = coalesce($4, issuer)"
                       f" WHERE {match}", old, old_issuer, new, new_issuer)
    uids = [r[0] for r in await conn.fetch(f"SELECT uid FROM studies WHERE {match}",
                                           old, old_issuer)]
    await conn.execute(f"UPDATE studies SET patient_id = $3, issuer = coalesce($4, issuer)"
                       f" WHERE {match}", old, old_issuer, new, new_issuer)
    cases: list[CaseRow] = []
    for uid in uids:
        cases += await _correlate_study(conn, uid)
    return cases


async def apply_orders_op(conn: asyncpg.Connection, orders: Sequence[Order],
                          message_id: int | None) -> list[CaseRow]:
    cases: list[CaseRow] = []
    for o in orders:
        order_id = await _upsert_order(conn, o, message_id)
        if o.control.upper() in CANCEL_CONTROLS or (o.status or "").upper() in CANCEL_STATUSES:
            await conn.execute("UPDATE orders SET cancelled = 1 WHERE id = $1", order_id)
            await conn.execute("UPDATE cases SET state = 'cancelled', updated_at = $1 WHERE"
                               " order_id = $2 AND state = 'ready'", time.time(), order_id)
            continue
        cases += await _correlate_order(conn, order_id, (o.status or "").upper() == "CM")
    return cases


async def _upsert_order(conn: asyncpg.Connection, o: Order, message_id: int | None) -> int:
    key = order_key(o)
    pid = o.patient.primary_id
    now = time.time()
    values = (pid.value if pid else None, pid.issuer if pid else None, o.placer_number,
              o.filler_number, o.accession, o.requested_procedure_id, o.study_instance_uid,
              o.modality, o.procedure_code, o.procedure_text, o.priority, o.status, o.control,
              o.patient.patient_class, o.patient.location, message_id, now)
    row_id = await conn.fetchval("SELECT id FROM orders WHERE order_key = $1", key)
    if row_id is None:
        return int(await conn.fetchval(
            "INSERT INTO orders (patient_id, issuer, placer, filler, accession,"
            " requested_procedure_id, study_uid, modality, procedure_code, procedure_text,"
            " priority, status, control, patient_class, location, message_id, updated_at,"
            " order_key, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,"
            "$15,$16,$17,$18,$19) RETURNING id", *values, key, now))
    # Changes (XO/SC) keep what the update leaves empty.
    await conn.execute(
        "UPDATE orders SET patient_id = coalesce($1, patient_id), issuer = coalesce($2, issuer),"
        " placer = coalesce($3, placer), filler = coalesce($4, filler),"
        " accession = coalesce($5, accession),"
        " requested_procedure_id = coalesce($6, requested_procedure_id),"
        " study_uid = coalesce($7, study_uid), modality = coalesce($8, modality),"
        " procedure_code = coalesce($9, procedure_code),"
        " procedure_text = coalesce($10, procedure_text), priority = coalesce($11, priority),"
        " status = coalesce($12, status), control = $13,"
        " patient_class = coalesce($14, patient_class), location = coalesce($15, location),"
        " message_id = $16, updated_at = $17 WHERE id = $18", *values, row_id)
    return int(row_id)


async def _correlate_order(conn: asyncpg.Connection, order_id: int, completed: bool
                           ) -> list[CaseRow]:
    o = await conn.fetchrow("SELECT study_uid, accession, patient_id, issuer FROM orders WHERE"
                            " id = $1", order_id)
    rows = await conn.fetch(f"SELECT uid, state, revision FROM studies WHERE"
                            f" {_MATCH.replace('study_uid = $1', 'uid = $1')}", *o)
    cases: list[CaseRow] = []
    for uid, state, revision in rows:
        if state == "receiving" and completed:  # order status CM: the explicit trigger
            cases += await complete_study_op(conn, uid)
        elif state == "complete":
            cases += await _create_case(conn, order_id, uid, revision, "ready")
    return cases


async def apply_domain_events(conn: asyncpg.Connection, outcomes: Sequence[Any]
                              ) -> list[CaseRow]:
    """Apply the mapped events of a pipeline batch (inside its transaction), in message order."""
    from engine.store.pg_results import apply_results_events
    from mappings.hl7v2.orders import OrderEvent, PatientEvent

    cases: list[CaseRow] = []
    for o in outcomes:
        mapped = o.domain
        if mapped is None:
            continue
        if isinstance(mapped, PatientEvent):
            cases += await apply_patient_op(conn, mapped.event, mapped.patient)
        elif isinstance(mapped, OrderEvent):
            cases += await apply_patient_op(conn, mapped.event, mapped.patient)
            cases += await apply_orders_op(conn, mapped.orders, o.message_id)
        else:
            await apply_results_events(conn, mapped)
    return cases


async def proceed_study_only_op(conn: asyncpg.Connection, uid: str) -> CaseRow | None:
    s = await conn.fetchrow("SELECT revision, state FROM studies WHERE uid = $1", uid)
    if s is None or s[1] != "complete":
        return None
    created = await _create_case(conn, None, uid, s[0], "study_only")
    return created[0] if created else None


async def prune_op(conn: asyncpg.Connection, before: float) -> list[str]:
    rows = await conn.fetch("DELETE FROM instances WHERE received_at < $1 RETURNING path,"
                            " study_uid", float(before))
    for uid in sorted({r[1] for r in rows}):
        await _recount(conn, uid)
    return [r[0] for r in rows]


class PgClinical(ClinicalReads):
    """Mixed into ``PostgresStore``: the shared reads, and writes through its writer task
    under the store-wide clinical lock (correlation is decided by one process at a time)."""

    _write: Any

    async def add_instance(self, channel: str, meta: InstanceMeta, path: str, size: int,
                           quiet_secs: float, expected: int | None = None) -> InstanceAdded:
        return await self._write(add_instance_op, channel, meta, path, size, quiet_secs,
                                 expected, needs_lock=True)

    async def complete_study(self, uid: str, *, announce: bool = False) -> list[CaseRow]:
        op = announcing_pg(complete_study_op, Topic.CASES, case_ids) if announce else \
            complete_study_op
        return await self._write(op, uid, needs_lock=True)

    async def apply_patient(self, event: str, patient: Patient) -> list[CaseRow]:
        return await self._write(apply_patient_op, event, patient, needs_lock=True)

    async def apply_orders(self, orders: Sequence[Order], message_id: int | None
                           ) -> list[CaseRow]:
        return await self._write(apply_orders_op, list(orders), message_id, needs_lock=True)

    async def proceed_study_only(self, uid: str, *, announce: bool = False) -> CaseRow | None:
        op = announcing_pg(proceed_study_only_op, Topic.CASES, case_ids) if announce else \
            proceed_study_only_op
        return await self._write(op, uid, needs_lock=True)

    async def prune_instances(self, before: float) -> list[str]:
        return await self._write(prune_op, before, needs_lock=True)
