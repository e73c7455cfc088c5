"""``ClinicalStore`` written once for both stores: write operations, reads, and the SQLite
schema (PostgreSQL's is in ``pg_schema``).

Write operations run on a ``Tx`` (``engine.store.tx``) inside the store's writer
transaction. Correlation is SQL in that same transaction, so it sees exactly what the
transaction wrote; on PostgreSQL the writer first takes the store-wide clinical
advisory lock, so it also sees every committed order and study of every engine process
and two processes can never both (or neither) create a case.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from engine.model import Order, OrderEvent, Patient, PatientEvent
from engine.store.clinical import (
    CANCEL_CONTROLS,
    CANCEL_STATUSES,
    CaseRow,
    ClinicalStore,
    InstanceAdded,
    InstanceMeta,
    OrderRow,
    StudyRow,
)
from engine.store.signals import Topic, case_ids
from engine.store.tx import Many, Row, Tx, WriterStore, announcing

CLINICAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT NOT NULL, issuer TEXT NOT NULL DEFAULT '', family TEXT, given TEXT,
    birth_date TEXT, sex TEXT, patient_class TEXT, location TEXT, merged_into TEXT,
    updated_at REAL, PRIMARY KEY (patient_id, issuer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY, order_key TEXT NOT NULL UNIQUE, patient_id TEXT, issuer TEXT,
    placer TEXT, filler TEXT, accession TEXT, requested_procedure_id TEXT, study_uid TEXT,
    modality TEXT, procedure_code TEXT, procedure_text TEXT, priority TEXT, status TEXT,
    control TEXT NOT NULL, patient_class TEXT, location TEXT, cancelled INTEGER NOT NULL DEFAULT 0,
    message_id INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS orders_accession ON orders (accession);
CREATE INDEX IF NOT EXISTS orders_study ON orders (study_uid);
CREATE TABLE IF NOT EXISTS studies (
    uid TEXT PRIMARY KEY, accession TEXT, patient_id TEXT, issuer TEXT, modality TEXT,
    body_part TEXT, state TEXT NOT NULL, revision INTEGER NOT NULL DEFAULT 0,
    series_count INTEGER NOT NULL DEFAULT 0, instance_count INTEGER NOT NULL DEFAULT 0,
    expected_count INTEGER, quiet_secs REAL NOT NULL, channel TEXT NOT NULL,
    first_at REAL NOT NULL, last_at REAL NOT NULL, completed_at REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS studies_receiving ON studies (last_at) WHERE state = 'receiving';
CREATE INDEX IF NOT EXISTS studies_accession ON studies (accession);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, transfer_syntax TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, revision INTEGER NOT NULL, own_output INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid, series_uid);
CREATE INDEX IF NOT EXISTS instances_received ON instances (received_at);
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY, order_id INTEGER, study_uid TEXT NOT NULL, revision INTEGER NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (study_uid, revision));
CREATE INDEX IF NOT EXISTS cases_order ON cases (order_id);
"""

_STUDY_COLS = ("uid, accession, patient_id, issuer, modality, body_part, state, revision,"
               " series_count, instance_count, expected_count, quiet_secs, channel, first_at,"
               " last_at, completed_at")
_ORDER_COLS = ("id, order_key, patient_id, issuer, placer, filler, accession,"
               " requested_procedure_id, study_uid, modality, procedure_code, procedure_text,"
               " priority, status, control, patient_class, location, cancelled, created_at,"
               " updated_at")
_CASE_SELECT = (
    "SELECT c.id, c.order_id, c.study_uid, c.revision, c.state, c.created_at,"
    " coalesce(o.accession, s.accession), coalesce(o.patient_id, s.patient_id),"
    " coalesce(o.modality, s.modality), s.body_part, o.procedure_code, o.priority,"
    " o.patient_class FROM cases c JOIN studies s ON s.uid = c.study_uid"
    " LEFT JOIN orders o ON o.id = c.order_id")


def _study(row: Sequence[Any]) -> StudyRow:
    return StudyRow(*row)


def _order(row: Sequence[Any]) -> OrderRow:
    r = list(row)
    r[17] = bool(r[17])
    return OrderRow(*r)


def _case(row: Sequence[Any]) -> CaseRow:
    return CaseRow(*row)


# A study (``uid``) or an order (``study_uid``) matches by Study UID, else by accession and
# patient id (and issuer, when both have one). Parameters: uid, accession x 2, patient id,
# issuer x 2 (``match_params``).
_MATCH = ("({uid} = ? OR (CAST(? AS TEXT) IS NOT NULL AND accession = ? AND patient_id = ? AND"
          " (issuer IS NULL OR CAST(? AS TEXT) IS NULL OR issuer = ?)))")


def match_params(uid: str | None, accession: str | None, patient_id: str | None,
                 issuer: str | None) -> tuple[Any, ...]:
    return uid, accession, accession, patient_id, issuer, issuer


# -- instances and studies -----------------------------------------------------------------

async def add_instance_op(tx: Tx, channel: str, m: InstanceMeta, path: str, size: int,
                          quiet_secs: float, expected: int | None, *, recount: bool = True,
                          now: float | None = None) -> InstanceAdded:
    now = time.time() if now is None else now
    row = await tx.row(f"SELECT state, revision FROM studies WHERE uid = ?{tx.for_update}",
                       m.study_uid)
    duplicate = await tx.value("SELECT 1 FROM instances WHERE sop_uid = ?",
                               m.sop_uid) is not None
    reopened = False
    if row is None:
        state, revision = ("complete" if m.own_output else "receiving"), 0
        await tx.execute(f"INSERT INTO studies ({_STUDY_COLS}) VALUES"
                         " (?,?,?,?,?,?,?,?,0,0,?,?,?,?,?,NULL)",
                         m.study_uid, m.accession, m.patient_id, m.issuer, m.modality,
                         m.body_part, state, revision, expected, float(quiet_secs), channel,
                         now, now)
    else:
        state, revision = row[0], row[1]
        if not m.own_output:
            if state == "complete":
                revision, reopened = revision + 1, True
            state = "receiving"
            await tx.execute("UPDATE studies SET state = 'receiving', revision = ?, last_at = ?,"
                             " accession = coalesce(accession, ?), modality = coalesce(modality,"
                             " ?), body_part = coalesce(body_part, ?),"
                             " expected_count = coalesce(?, expected_count) WHERE uid = ?",
                             revision, now, m.accession, m.modality, m.body_part, expected,
                             m.study_uid)
    await tx.execute(
        "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (sop_uid)"
        " DO UPDATE SET study_uid = excluded.study_uid, series_uid = excluded.series_uid,"
        " sop_class_uid = excluded.sop_class_uid, transfer_syntax = excluded.transfer_syntax,"
        " path = excluded.path, size = excluded.size, revision = excluded.revision,"
        " own_output = excluded.own_output, received_at = excluded.received_at",
        m.sop_uid, m.study_uid, m.series_uid, m.sop_class_uid, m.transfer_syntax, path, size,
        revision, int(m.own_output), now)
    if recount:
        await _recount(tx, m.study_uid)
    return InstanceAdded(m.study_uid, revision, state, duplicate, reopened, m.own_output)


async def add_instances_op(tx: Tx, channel: str, rows: list[tuple[InstanceMeta, str, int]],
                           quiet_secs: float) -> list[InstanceAdded]:
    """``add_instance_op`` for many instances in one transaction, received at one instant;
    each study counted once."""
    now = time.time()
    added = [await add_instance_op(tx, channel, m, path, size, quiet_secs, None, recount=False,
                                   now=now) for m, path, size in rows]
    for uid in dict.fromkeys(a.study_uid for a in added):
        await _recount(tx, uid)
    return added


async def _recount(tx: Tx, uid: str) -> None:
    await tx.execute("UPDATE studies SET instance_count = (SELECT count(*) FROM instances"
                     " WHERE study_uid = ? AND own_output = 0), series_count = (SELECT"
                     " count(DISTINCT series_uid) FROM instances WHERE study_uid = ? AND"
                     " own_output = 0) WHERE uid = ?", uid, uid, uid)


async def complete_study_op(tx: Tx, uid: str) -> list[CaseRow]:
    if not await tx.execute("UPDATE studies SET state = 'complete', completed_at = ? WHERE"
                            " uid = ? AND state = 'receiving'", time.time(), uid):
        return []
    return await _correlate_study(tx, uid)


async def _correlate_study(tx: Tx, uid: str) -> list[CaseRow]:
    """Join a complete study with its order (Study UID, else accession + patient ID); the
    order named by Study UID first, then the one changed last."""
    s = await tx.row("SELECT uid, accession, patient_id, issuer, revision, state FROM studies"
                     " WHERE uid = ?", uid)
    if s is None or s[5] != "complete":
        return []
    order_id = await tx.value(
        f"SELECT id FROM orders WHERE cancelled = 0 AND {_MATCH.format(uid='study_uid')}"
        " ORDER BY CASE WHEN study_uid = ? THEN 0 ELSE 1 END, updated_at DESC LIMIT 1",
        *match_params(s[0], s[1], s[2], s[3]), s[0])
    if order_id is None:
        return []
    return await _create_case(tx, order_id, uid, s[4], "ready")


async def _create_case(tx: Tx, order_id: int | None, uid: str, revision: int, state: str
                       ) -> list[CaseRow]:
    now = time.time()
    existing = await tx.row("SELECT id, order_id, state FROM cases WHERE study_uid = ? AND"
                            " revision = ?", uid, revision)
    if existing is not None:
        if existing[1] is not None or order_id is None:
            return []
        # A study that went on study-only meets its order later: link it, no new work.
        await tx.execute("UPDATE cases SET order_id = ?, updated_at = ? WHERE id = ?",
                         order_id, now, existing[0])
        return []
    case_id = await tx.insert("INSERT INTO cases (order_id, study_uid, revision, state,"
                              " created_at, updated_at) VALUES (?,?,?,?,?,?)",
                              order_id, uid, revision, state, now, now)
    row = await tx.row(f"{_CASE_SELECT} WHERE c.id = ?", case_id)
    assert row is not None
    return [_case(row)]


# -- patients and orders -----------------------------------------------------------------

_PATIENT_SET = (" ON CONFLICT (patient_id, issuer) DO UPDATE SET family = excluded.family,"
                " given = excluded.given, birth_date = excluded.birth_date, sex = excluded.sex,"
                " patient_class = excluded.patient_class, location = excluded.location,"
                " merged_into = NULL, updated_at = excluded.updated_at")
# (patient id, issuer, family, given, birth date, sex, class, location), then the time.
UPSERT_PATIENTS = Many(
    sqlite="INSERT INTO patients VALUES (?,?,?,?,?,?,?,?,NULL,?)" + _PATIENT_SET,
    pg="INSERT INTO patients SELECT u.*, NULL, $9 FROM unnest($1::text[], $2::text[],"
       " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS u"
       + _PATIENT_SET)


def _patient_values(p: Patient) -> tuple[Any, ...] | None:
    """The row ``UPSERT_PATIENTS`` writes for *p* (None: it has no identifier)."""
    pid = p.primary_id
    if pid is None:
        return None
    return (pid.value, pid.issuer or "", p.family_name, p.given_name, p.birth_date, p.sex,
            p.patient_class, p.location)


async def apply_patient_op(tx: Tx, event: str, p: Patient) -> list[CaseRow]:
    values = _patient_values(p)
    if values is None:
        return []
    await tx.many(UPSERT_PATIENTS, [values], time.time())
    pid = p.primary_id
    assert pid is not None
    cases: list[CaseRow] = []
    for old in p.merged_from:
        cases += await _merge(tx, old.value, old.issuer, pid.value, pid.issuer)
    return cases


async def _merge(tx: Tx, old: str, old_issuer: str | None, new: str, new_issuer: str | None
                 ) -> list[CaseRow]:
    """Mark the old identifier merged and re-link its orders and studies."""
    match = "patient_id = ? AND (issuer IS NULL OR CAST(? AS TEXT) IS NULL OR issuer = ?)"
    await tx.execute("UPDATE patients SET merged_into = ?, updated_at = ? WHERE patient_id = ?"
                     " AND (CAST(? AS TEXT) IS NULL OR issuer = ?)",
                     new, time.time(), old, old_issuer, old_issuer)
    await tx.execute(f"UPDATE orders SET patient_id = ?, issuer = coalesce(?, issuer)"
                     f" WHERE {match}", new, new_issuer, old, old_issuer, old_issuer)
    uids = [r[0] for r in await tx.rows(f"SELECT uid FROM studies WHERE {match}",
                                        old, old_issuer, old_issuer)]
    await tx.execute(f"UPDATE studies SET patient_id = ?, issuer = coalesce(?, issuer)"
                     f" WHERE {match}", new, new_issuer, old, old_issuer, old_issuer)
    cases: list[CaseRow] = []
    for uid in uids:
        cases += await _correlate_study(tx, uid)
    return cases


def order_key(o: Order) -> str | None:
    return o.placer_number or o.filler_number or o.accession


def _cancels(o: Order) -> bool:
    return o.control.upper() in CANCEL_CONTROLS or (o.status or "").upper() in CANCEL_STATUSES


def _completes(o: Order) -> bool:
    """The order may complete a receiving study (status CM: the explicit trigger)."""
    return not _cancels(o) and (o.status or "").upper() == "CM"


async def apply_orders_op(tx: Tx, orders: Sequence[Order], message_id: int | None
                          ) -> list[CaseRow]:
    return await _apply_orders(tx, [(o, message_id) for o in orders])


async def _apply_orders(tx: Tx, orders: Sequence[tuple[Order, int | None]]) -> list[CaseRow]:
    """Apply orders (each with its message id) in message order, a wave at a time: a wave's
    statements stand for one per order, and it ends as if its orders were applied one by
    one (``_waves``)."""
    cases: list[CaseRow] = []
    for wave in _waves(orders):
        cases += await _apply_wave(tx, wave)
    return cases


def _waves(orders: Sequence[tuple[Order, int | None]]
           ) -> Iterator[list[tuple[Order, int | None]]]:
    """*orders* cut into waves, in order: a key seen again starts a new wave (an upsert may
    change a row once: PostgreSQL refuses more), and an order that may complete a study ends
    its wave. Completing a study joins it with the order that matches it best
    (``_correlate_study``), which must not see the orders after it; correlating any other
    order reads and writes only studies, its own order and cases (``_create_case`` reads
    them afresh), so the wave's later orders being written already changes nothing."""
    wave: list[tuple[Order, int | None]] = []
    keys: set[str | None] = set()
    for o, message_id in orders:
        key = order_key(o)
        if key in keys:
            yield wave
            wave, keys = [], set()
        wave.append((o, message_id))
        keys.add(key)
        if _completes(o):
            yield wave
            wave, keys = [], set()
    if wave:
        yield wave


# Orders upserted together, a row each: a new key inserts, a known one is changed (XO/SC keep
# what the update leaves empty); what correlation reads comes back, with the key to match it
# by (RETURNING gives rows in no set order). Row: (key, patient id, issuer, placer, filler,
# accession, requested procedure id, study uid, modality, procedure code, procedure text,
# priority, status, control, patient class, location, message id, created, updated).
_ORDER_SET = (
    " ON CONFLICT (order_key) DO UPDATE SET"
    " patient_id = coalesce(excluded.patient_id, orders.patient_id),"
    " issuer = coalesce(excluded.issuer, orders.issuer),"
    " placer = coalesce(excluded.placer, orders.placer),"
    " filler = coalesce(excluded.filler, orders.filler),"
    " accession = coalesce(excluded.accession, orders.accession),"
    " requested_procedure_id = coalesce(excluded.requested_procedure_id,"
    " orders.requested_procedure_id),"
    " study_uid = coalesce(excluded.study_uid, orders.study_uid),"
    " modality = coalesce(excluded.modality, orders.modality),"
    " procedure_code = coalesce(excluded.procedure_code, orders.procedure_code),"
    " procedure_text = coalesce(excluded.procedure_text, orders.procedure_text),"
    " priority = coalesce(excluded.priority, orders.priority),"
    " status = coalesce(excluded.status, orders.status), control = excluded.control,"
    " patient_class = coalesce(excluded.patient_class, orders.patient_class),"
    " location = coalesce(excluded.location, orders.location),"
    " message_id = excluded.message_id, updated_at = excluded.updated_at"
    " RETURNING order_key, id, study_uid, accession, patient_id, issuer")
_ORDER_INTO = (
    "INSERT INTO orders (order_key, patient_id, issuer, placer, filler, accession,"
    " requested_procedure_id, study_uid, modality, procedure_code, procedure_text, priority,"
    " status, control, patient_class, location, message_id, created_at, updated_at)")
UPSERT_ORDERS = Many(
    sqlite=_ORDER_INTO + " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)" + _ORDER_SET,
    pg=_ORDER_INTO + " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
    " $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],"
    " $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[],"
    " $18::float8[], $19::float8[])" + _ORDER_SET)


def _order_values(o: Order, message_id: int | None, now: float) -> tuple[Any, ...]:
    """The row ``UPSERT_ORDERS`` writes for *o*."""
    pid = o.patient.primary_id
    return (order_key(o), pid.value if pid else None, pid.issuer if pid else None,
            o.placer_number, o.filler_number, o.accession, o.requested_procedure_id,
            o.study_instance_uid, o.modality, o.procedure_code, o.procedure_text, o.priority,
            o.status, o.control, o.patient.patient_class, o.patient.location, message_id,
            now, now)


_KEYS_PER_READ = 1024  # uids and accessions each, per statement


async def _apply_wave(tx: Tx, wave: Sequence[tuple[Order, int | None]]) -> list[CaseRow]:
    """Apply a wave (``_waves``): one upsert, the cancels (two statements for all), one read
    of the studies its orders may match, then each order's correlation in message order."""
    # Each order changed after the one before it, as when written one by one: a completed
    # study takes the order matching it that changed last (``_correlate_study``).
    rows, now = [], time.time()
    for o, message_id in wave:
        rows.append(_order_values(o, message_id, now))
        now = math.nextafter(now, math.inf)
    written = {r[0]: r[1:] for r in await tx.many_rows(UPSERT_ORDERS, rows)}
    orders = [(o, written[order_key(o)]) for o, _ in wave]
    cancelled = [int(row[0]) for o, row in orders if _cancels(o)]
    for start in range(0, len(cancelled), _KEYS_PER_READ):
        among, params = tx.ids_in(cancelled[start:start + _KEYS_PER_READ])
        await tx.execute(f"UPDATE orders SET cancelled = 1 WHERE id {among}", *params)
        await tx.execute(f"UPDATE cases SET state = 'cancelled', updated_at = ? WHERE"
                         f" state = 'ready' AND order_id {among}", time.time(), *params)
    live = [(o, row) for o, row in orders if not _cancels(o)]
    studies = await _studies_for(tx, [row for _, row in live])
    cases: list[CaseRow] = []
    for o, row in live:
        matched = [s[:3] for s in studies if _matches(s, *row[1:])]
        cases += await _correlate_order(tx, int(row[0]), matched,
                                        (o.status or "").upper() == "CM")
    return cases


async def _studies_for(tx: Tx, orders: Sequence[Sequence[Any]]) -> list[Row]:
    """The studies the order rows (id, study_uid, accession, patient_id, issuer) may match
    (by uid or by accession): (uid, state, revision, accession, patient_id, issuer), by uid."""
    uids = sorted({r[1] for r in orders if r[1] is not None})
    accessions = sorted({r[2] for r in orders if r[2] is not None})
    found: dict[str, Row] = {}
    for start in range(0, max(len(uids), len(accessions)), _KEYS_PER_READ):
        where, params = [], []
        for column, values in (("uid", uids), ("accession", accessions)):
            part = values[start:start + _KEYS_PER_READ]
            if part:
                among, more = tx.texts_in(part)
                where.append(f"{column} {among}")
                params += more
        for s in await tx.rows("SELECT uid, state, revision, accession, patient_id, issuer"
                               f" FROM studies WHERE {' OR '.join(where)}", *params):
            found[s[0]] = s
    return [found[uid] for uid in sorted(found)]


def _matches(s: Row, uid: str | None, accession: str | None, patient_id: str | None,
             issuer: str | None) -> bool:
    """``_MATCH`` for study *s* (as ``_studies_for`` reads it) and an order's values (SQL's
    NULL equals nothing)."""
    if uid is not None and s[0] == uid:
        return True
    return (accession is not None and s[3] == accession and patient_id is not None
            and s[4] == patient_id and (s[5] is None or issuer is None or s[5] == issuer))


async def _correlate_order(tx: Tx, order_id: int, studies: Sequence[Row], completed: bool
                           ) -> list[CaseRow]:
    """Cases for the order *order_id* and the studies (uid, state, revision) it matches."""
    cases: list[CaseRow] = []
    for uid, state, revision in studies:
        if state == "receiving" and completed:  # order status CM: the explicit trigger
            cases += await complete_study_op(tx, uid)
        elif state == "complete":
            cases += await _create_case(tx, order_id, uid, revision, "ready")
    return cases


class _PatientRows:
    """Patient upserts of a batch, written together (one statement per chunk, not one per
    message): the last values per identifier win, as if written one by one. Flushed before
    anything that reads patients (a merge, a results event) and at the end; orders never do."""

    def __init__(self) -> None:
        self.rows: dict[tuple[Any, Any], tuple[Any, ...]] = {}

    def add(self, p: Patient) -> bool:
        """Keep *p*'s row; False if it must be applied on its own (it merges identifiers)."""
        if p.merged_from:
            return False
        values = _patient_values(p)
        if values is not None:
            self.rows.pop(values[:2], None)  # re-added: the rows keep the order of last writes
            self.rows[values[:2]] = values
        return True

    async def flush(self, tx: Tx) -> None:
        if self.rows:
            await tx.many(UPSERT_PATIENTS, list(self.rows.values()), time.time())
            self.rows.clear()


async def apply_domain_events(tx: Tx, outcomes: Sequence[Any]) -> list[CaseRow]:
    """Apply the mapped events of a pipeline batch (inside its transaction), in message order
    (patient upserts together, see ``_PatientRows``; orders a wave at a time, see ``_waves``,
    held until something that must follow them: a merge, a results event, the end)."""
    from engine.store.results_sql import apply_results_events

    cases: list[CaseRow] = []
    patients = _PatientRows()
    orders: list[tuple[Order, int | None]] = []
    for o in outcomes:
        mapped = o.domain
        if mapped is None:
            continue
        if isinstance(mapped, PatientEvent | OrderEvent):
            if not patients.add(mapped.patient):
                cases += await _apply_orders(tx, orders)
                orders.clear()
                await patients.flush(tx)
                cases += await apply_patient_op(tx, mapped.event, mapped.patient)
            if isinstance(mapped, OrderEvent):
                orders += [(order, o.message_id) for order in mapped.orders]
        else:
            cases += await _apply_orders(tx, orders)
            orders.clear()
            await patients.flush(tx)
            await apply_results_events(tx, mapped)
    cases += await _apply_orders(tx, orders)
    await patients.flush(tx)
    return cases


async def proceed_study_only_op(tx: Tx, uid: str) -> CaseRow | None:
    s = await tx.row("SELECT revision, state FROM studies WHERE uid = ?", uid)
    if s is None or s[1] != "complete":
        return None
    created = await _create_case(tx, None, uid, s[0], "study_only")
    return created[0] if created else None


async def prune_op(tx: Tx, before: float) -> list[str]:
    rows = await tx.rows("SELECT path, study_uid FROM instances WHERE received_at < ?",
                         float(before))
    await tx.execute("DELETE FROM instances WHERE received_at < ?", float(before))
    for uid in sorted({r[1] for r in rows}):
        await _recount(tx, uid)
    return [r[0] for r in rows]


class ClinicalReads(ClinicalStore):
    """The reads of ``ClinicalStore``, written once in portable SQL; both stores run them
    through their ``_rows`` (see ``engine.store.base.Store._rows``)."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def studies_due(self, now: float) -> list[StudyRow]:
        return [_study(r) for r in await self._rows(
            f"SELECT {_STUDY_COLS} FROM studies WHERE state = 'receiving' AND (last_at +"
            " quiet_secs <= ? OR (expected_count IS NOT NULL AND instance_count >="
            " expected_count)) ORDER BY last_at", float(now))]

    async def get_study(self, uid: str) -> StudyRow | None:
        rows = await self._rows(f"SELECT {_STUDY_COLS} FROM studies WHERE uid = ?", uid)
        return _study(rows[0]) if rows else None

    async def list_studies(self, state: str | None = None, limit: int = 100) -> list[StudyRow]:
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        return [_study(r) for r in await self._rows(
            f"SELECT {_STUDY_COLS} FROM studies {where} ORDER BY last_at DESC LIMIT ?",
            *params, limit)]

    async def list_orders(self, limit: int = 100) -> list[OrderRow]:
        return [_order(r) for r in await self._rows(
            f"SELECT {_ORDER_COLS} FROM orders ORDER BY id DESC LIMIT ?", limit)]

    async def list_cases(self, state: str | None = None, limit: int = 100) -> list[CaseRow]:
        where, params = ("WHERE c.state = ?", (state,)) if state else ("", ())
        return [_case(r) for r in await self._rows(
            f"{_CASE_SELECT} {where} ORDER BY c.id DESC LIMIT ?", *params, limit)]

    async def unmatched(self, older_than: float) -> tuple[list[OrderRow], list[StudyRow]]:
        orders = await self._rows(
            f"SELECT {_ORDER_COLS} FROM orders o WHERE cancelled = 0 AND created_at < ? AND"
            " NOT EXISTS (SELECT 1 FROM cases c WHERE c.order_id = o.id) ORDER BY id",
            float(older_than))
        studies = await self._rows(
            f"SELECT {_STUDY_COLS} FROM studies s WHERE state = 'complete' AND completed_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM cases c WHERE c.study_uid = s.uid AND"
            " c.revision = s.revision) ORDER BY completed_at", float(older_than))
        return [_order(r) for r in orders], [_study(r) for r in studies]

    async def get_case(self, case_id: int) -> CaseRow | None:
        rows = await self._rows(f"{_CASE_SELECT} WHERE c.id = ?", case_id)
        return _case(rows[0]) if rows else None

    async def get_order(self, order_id: int) -> tuple[OrderRow, int | None] | None:
        rows = await self._rows(f"SELECT {_ORDER_COLS}, message_id FROM orders WHERE id = ?",
                                order_id)
        return (_order(tuple(rows[0])[:-1]), rows[0][-1]) if rows else None

    async def study_counts(self) -> dict[str, int]:
        rows = await self._rows("SELECT state, count(*) FROM studies GROUP BY state")
        return {r[0]: r[1] for r in rows}

    async def instance_paths(self, study_uid: str) -> list[str]:
        return [r[0] for r in await self._rows(
            "SELECT path FROM instances WHERE study_uid = ? ORDER BY series_uid, sop_uid",
            study_uid)]


class ClinicalWrites(ClinicalReads, WriterStore):
    """The writes of ``ClinicalStore``, written once: each runs in the store's writer
    transaction (``_transact``) under the clinical lock, so correlation never races, within
    one process or across several sharing a PostgreSQL database."""


    async def add_instance(self, channel: str, meta: InstanceMeta, path: str, size: int,
                           quiet_secs: float, expected: int | None = None) -> InstanceAdded:
        return await self._transact(add_instance_op, channel, meta, path, size, quiet_secs,
                                    expected, lock=True)

    async def add_instances(self, channel: str, rows: Sequence[tuple[InstanceMeta, str, int]],
                            quiet_secs: float) -> list[InstanceAdded]:
        return await self._transact(add_instances_op, channel, list(rows), quiet_secs,
                                    lock=True)

    async def complete_study(self, uid: str, *, announce: bool = False) -> list[CaseRow]:
        op = announcing(complete_study_op, Topic.CASES, case_ids) if announce else \
            complete_study_op
        return await self._transact(op, uid, lock=True)

    async def apply_patient(self, event: str, patient: Patient) -> list[CaseRow]:
        return await self._transact(apply_patient_op, event, patient, lock=True)

    async def apply_orders(self, orders: Sequence[Order], message_id: int | None
                           ) -> list[CaseRow]:
        return await self._transact(apply_orders_op, list(orders), message_id, lock=True)

    async def proceed_study_only(self, uid: str, *, announce: bool = False) -> CaseRow | None:
        op = announcing(proceed_study_only_op, Topic.CASES, case_ids) if announce else \
            proceed_study_only_op
        return await self._transact(op, uid, lock=True)

    async def prune_instances(self, before: float) -> list[str]:
        return await self._transact(prune_op, before, lock=True)
