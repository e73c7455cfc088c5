"""``ResultsStore`` written once for both stores (worklist, feedback, report context).

The SQL is portable (``?`` placeholders; PostgreSQL's are made from them); write
operations run on the writer's ``Tx`` (``engine.store.tx``) in its transaction, so a
worklist update is atomic with the results message that carried it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.results.model import ReportOrder, ReportPatient, SourceInstance
from engine.store.results import (
    AgreementRow,
    FeedbackEntry,
    FinalReportEvent,
    ReportContext,
    ResultsStore,
    WorklistRow,
    WorklistUpdate,
    priority_rank,
)
from engine.store.tx import Tx, WriterStore

RESULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS worklist (
    case_id INTEGER PRIMARY KEY, priority TEXT, reason TEXT, ai_flags TEXT NOT NULL DEFAULT '[]',
    raised_at REAL, state TEXT NOT NULL DEFAULT 'unread', updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    code TEXT NOT NULL, verdict TEXT NOT NULL, source TEXT NOT NULL, corrected_code TEXT,
    reader TEXT, comment TEXT, created_at REAL NOT NULL,
    UNIQUE (case_id, model, version, code, source));
CREATE INDEX IF NOT EXISTS feedback_model ON feedback (model, version);
"""

# The order's own priority as a worklist priority (engine.store.results.order_priority in SQL).
ORDER_PRIORITY_SQL = ("CASE upper(coalesce(o.priority, '')) WHEN 'S' THEN 'STAT' WHEN 'A' THEN"
                      " 'URGENT' WHEN 'T' THEN 'URGENT' WHEN 'C' THEN 'URGENT' ELSE 'ROUTINE' END")
_EFFECTIVE = f"coalesce(w.priority, {ORDER_PRIORITY_SQL})"
WORKLIST_SQL = (
    "SELECT c.id, c.study_uid, coalesce(o.accession, s.accession),"
    " coalesce(o.patient_id, s.patient_id), coalesce(o.modality, s.modality), s.body_part,"
    f" coalesce(o.procedure_text, o.procedure_code), {_EFFECTIVE}, {ORDER_PRIORITY_SQL},"
    " w.reason, coalesce(w.ai_flags, '[]'), c.created_at, w.raised_at,"
    " coalesce(w.state, 'unread')"
    " FROM cases c JOIN studies s ON s.uid = c.study_uid AND s.revision = c.revision"
    " LEFT JOIN orders o ON o.id = c.order_id LEFT JOIN worklist w ON w.case_id = c.id"
    " WHERE c.state IN ('ready', 'study_only') {read}"
    f" ORDER BY CASE {_EFFECTIVE} WHEN 'STAT' THEN 0 WHEN 'URGENT' THEN 1 ELSE 2 END,"
    " c.created_at, c.id LIMIT ?")
CONTEXT_SQL = (
    "SELECT c.id, c.study_uid, c.revision, coalesce(o.accession, s.accession),"
    " coalesce(o.modality, s.modality), s.body_part, s.completed_at,"
    " coalesce(o.patient_id, s.patient_id), coalesce(o.issuer, s.issuer),"
    " p.family, p.given, p.birth_date, p.sex,"
    " o.id, o.placer, o.filler, o.requested_procedure_id, o.procedure_code, o.procedure_text,"
    " o.priority"
    " FROM cases c JOIN studies s ON s.uid = c.study_uid LEFT JOIN orders o ON o.id = c.order_id"
    " LEFT JOIN patients p ON p.patient_id = coalesce(o.patient_id, s.patient_id)"
    "  AND p.issuer = coalesce(o.issuer, s.issuer, '')"
    " WHERE c.id = ?")
INSTANCES_SQL = ("SELECT series_uid, sop_uid, sop_class_uid, path FROM instances"
                 " WHERE study_uid = ? AND own_output = 0 AND revision <= ?"
                 " ORDER BY series_uid, sop_uid")
FEEDBACK_COLS = ("case_id, model, version, code, verdict, source, corrected_code, reader,"
                 " comment, created_at")
FEEDBACK_UPSERT = (
    f"INSERT INTO feedback ({FEEDBACK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (case_id, model, version, code, source) DO UPDATE SET"
    " verdict = excluded.verdict, corrected_code = excluded.corrected_code,"
    " reader = excluded.reader, comment = excluded.comment, created_at = excluded.created_at")
# A final report's verdict on a finding wins over a radiologist's click on the same finding.
AGREEMENT_SQL = (
    "SELECT model, version, verdict, count(*) FROM feedback f WHERE source = 'final_report'"
    " OR NOT EXISTS (SELECT 1 FROM feedback g WHERE g.case_id = f.case_id AND g.model = f.model"
    " AND g.version = f.version AND g.code = f.code AND g.source = 'final_report')"
    " GROUP BY model, version, verdict ORDER BY model, version")


def context_from_rows(row: Sequence[Any], instances: Sequence[Sequence[Any]]) -> ReportContext:
    (case_id, study_uid, revision, accession, modality, body_part, completed_at, patient_id,
     issuer, family, given, birth_date, sex, order_id, placer, filler, rp_id, proc_code,
     proc_text, priority) = row
    patient = (ReportPatient(patient_id, issuer or None, family, given, birth_date, sex)
               if patient_id else None)
    order = (ReportOrder(placer, filler, accession, rp_id, proc_code, proc_text, None, priority,
                         modality) if order_id is not None else None)
    return ReportContext(case_id, study_uid, revision, patient, order,
                         [SourceInstance(series, sop, sop_class, path, modality=modality)
                          for series, sop, sop_class, path in instances],
                         accession, modality, body_part, completed_at)


def worklist_row(row: Sequence[Any]) -> WorklistRow:
    r = list(row)
    r[10] = json.loads(r[10])
    return WorklistRow(*r)


def agreement_rows(rows: Sequence[Sequence[Any]]) -> list[AgreementRow]:
    out: dict[tuple[str, str], AgreementRow] = {}
    for model, version, verdict, n in rows:
        agg = out.setdefault((model, version), AgreementRow(model, version, 0, 0, 0, 0))
        if verdict == "accept":
            agg.accepted += n
        elif verdict == "reject":
            agg.rejected += n
        elif verdict == "modify":
            agg.modified += n
        elif verdict == "missed":
            agg.missed += n
    return list(out.values())


def feedback_params(e: FeedbackEntry) -> tuple[Any, ...]:
    return (e.case_id, e.model, e.version, e.code, e.verdict, e.source, e.corrected_code,
            e.reader, e.comment, e.created_at or time.time())


def final_report_feedback(ev: FinalReportEvent, case_id: int,
                          found: Sequence[tuple[str, str, str]],
                          ran: Sequence[tuple[str, str]]) -> list[FeedbackEntry]:
    """Compare a final report's codes with what the models found (``found``: model, version,
    code) and which models ran (``ran``): confirmed, refuted and missed findings."""
    codes = set(ev.codes)
    now = time.time()
    out = [FeedbackEntry(case_id, m, v, code, "accept" if code in codes else "reject",
                         "final_report", created_at=now) for m, v, code in found]
    found_keys = {(m, v, c) for m, v, c in found}
    for m, v in ran:
        for code in ev.model_codes.get(f"{m}|{v}", []):
            if code in codes and (m, v, code) not in found_keys:
                out.append(FeedbackEntry(case_id, m, v, code, "missed", "final_report",
                                         created_at=now))
    return out


# -- write operations (on the writer's ``Tx``, inside its transaction) ---------------------

async def apply_worklist_op(tx: Tx, u: WorklistUpdate) -> None:
    row = await tx.row(f"SELECT w.priority, {ORDER_PRIORITY_SQL} FROM cases c LEFT JOIN orders"
                       " o ON o.id = c.order_id LEFT JOIN worklist w ON w.case_id = c.id"
                       " WHERE c.id = ?", u.case_id)
    if row is None:
        return
    current = row[0] or row[1]
    now = time.time()
    await tx.execute("INSERT INTO worklist (case_id, ai_flags, updated_at) VALUES (?,?,?)"
                     " ON CONFLICT (case_id) DO UPDATE SET ai_flags = excluded.ai_flags,"
                     " updated_at = excluded.updated_at",
                     u.case_id, json.dumps(u.ai_flags, sort_keys=True), now)
    if priority_rank(u.priority) < priority_rank(current):
        await tx.execute("UPDATE worklist SET priority = ?, reason = ?, raised_at = ? WHERE"
                         " case_id = ?", u.priority, u.reason, now, u.case_id)


async def _report_case(tx: Tx, ev: FinalReportEvent) -> int | None:
    """The newest case a final report names (accession, placer, filler; in that order)."""
    keys = [(col, val) for col, val in (("accession", ev.accession), ("placer", ev.placer),
                                        ("filler", ev.filler)) if val]
    for col, val in keys:
        case_id = await tx.value(f"SELECT c.id FROM cases c JOIN orders o ON o.id = c.order_id"
                                 f" WHERE o.{col} = ? ORDER BY c.id DESC LIMIT 1", val)
        if case_id is None and col == "accession":
            case_id = await tx.value("SELECT c.id FROM cases c JOIN studies s ON"
                                     " s.uid = c.study_uid WHERE s.accession = ? ORDER BY"
                                     " c.id DESC LIMIT 1", val)
        if case_id is not None:
            return int(case_id)
    return None


async def apply_final_report_op(tx: Tx, ev: FinalReportEvent) -> int:
    """Feedback rows written for the newest case the report matches (0 when none matches)."""
    case_id = await _report_case(tx, ev)
    if case_id is None:
        return 0
    found = [tuple(r) for r in await tx.rows(
        "SELECT DISTINCT model, version, code FROM findings WHERE case_id = ?", case_id)]
    ran = [tuple(r) for r in await tx.rows(
        "SELECT DISTINCT model, version FROM inference_audit WHERE case_id = ? AND"
        " status = 'ok'", case_id)]
    entries = final_report_feedback(ev, case_id, found, ran)
    # A corrected report replaces everything the earlier one said about the case.
    await tx.execute("DELETE FROM feedback WHERE case_id = ? AND source = 'final_report'",
                     case_id)
    await tx.executemany(FEEDBACK_UPSERT, [feedback_params(e) for e in entries])
    return len(entries)


async def feedback_op(tx: Tx, entries: Sequence[FeedbackEntry]) -> None:
    await tx.executemany(FEEDBACK_UPSERT, [feedback_params(e) for e in entries])


async def mark_read_op(tx: Tx, case_id: int, read: bool) -> bool:
    if await tx.value("SELECT 1 FROM cases WHERE id = ?", case_id) is None:
        return False
    await tx.execute("INSERT INTO worklist (case_id, state, updated_at) VALUES (?,?,?)"
                     " ON CONFLICT (case_id) DO UPDATE SET state = excluded.state,"
                     " updated_at = excluded.updated_at",
                     case_id, "read" if read else "unread", time.time())
    return True


async def apply_results_events(tx: Tx, event: Any) -> bool:
    """``Outcome.domain`` of the results and final-report pipelines; False: not ours."""
    if isinstance(event, WorklistUpdate):
        await apply_worklist_op(tx, event)
        if event.fhir_resources:
            from engine.store.fhir_sql import save_fhir_op  # the /fhir read API's index

            await save_fhir_op(tx, event.case_id, event.fhir_resources)
        return True
    if isinstance(event, FinalReportEvent):
        await apply_final_report_op(tx, event)
        return True
    return False


class ResultsReads(ResultsStore):
    """The reads of ``ResultsStore``, written once in portable SQL; both stores run them
    through their ``_rows`` (see ``engine.store.base.Store._rows``)."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def report_context(self, case_id: int) -> ReportContext | None:
        rows = await self._rows(CONTEXT_SQL, case_id)
        if not rows:
            return None
        instances = await self._rows(INSTANCES_SQL, rows[0][1], rows[0][2])
        return context_from_rows(tuple(rows[0]), [tuple(i) for i in instances])

    async def list_worklist(self, limit: int = 100, include_read: bool = False
                            ) -> list[WorklistRow]:
        read = "" if include_read else "AND coalesce(w.state, 'unread') = 'unread'"
        return [worklist_row(r) for r in await self._rows(WORKLIST_SQL.format(read=read),
                                                          limit)]

    async def list_feedback(self, case_id: int | None = None, limit: int = 100
                            ) -> list[FeedbackEntry]:
        where, params = ("WHERE case_id = ?", (case_id,)) if case_id is not None else ("", ())
        return [FeedbackEntry(*r) for r in await self._rows(
            f"SELECT {FEEDBACK_COLS} FROM feedback {where} ORDER BY id DESC LIMIT ?",
            *params, limit)]

    async def agreement(self) -> list[AgreementRow]:
        return agreement_rows([tuple(r) for r in await self._rows(AGREEMENT_SQL)])


class ResultsWrites(ResultsReads, WriterStore):
    """The shared reads, and the writes of ``ResultsStore`` in the store's writer
    transaction (``_transact``)."""


    async def mark_read(self, case_id: int, read: bool = True) -> bool:
        return bool(await self._transact(mark_read_op, case_id, read))

    async def record_feedback(self, entries: Sequence[FeedbackEntry]) -> None:
        await self._transact(feedback_op, list(entries))
