"""PostgreSQL implementation of ``ResultsStore``: the portable SQL of ``results_sql`` with
PostgreSQL placeholders, write operations on asyncpg in the writer's transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.store import results_sql as q
from engine.store.pg_schema import pg
from engine.store.results import (
    FeedbackEntry,
    FinalReportEvent,
    WorklistUpdate,
    priority_rank,
)

_UPSERT = pg(q.FEEDBACK_UPSERT)


async def apply_worklist_op(conn: asyncpg.Connection, u: WorklistUpdate) -> None:
    row = await conn.fetchrow(f"SELECT w.priority, {q.ORDER_PRIORITY_SQL} FROM cases c LEFT"
                              " JOIN orders o ON o.id = c.order_id LEFT JOIN worklist w ON"
                              " w.case_id = c.id WHERE c.id = $1", u.case_id)
    if row is None:
        return
    current = row[0] or row[1]
    now = time.time()
    await conn.execute("INSERT INTO worklist (case_id, ai_flags, updated_at) VALUES ($1,$2,$3)"
                       " ON CONFLICT (case_id) DO UPDATE SET ai_flags = excluded.ai_flags,"
                       " updated_at = excluded.updated_at",
                       u.case_id, json.dumps(u.ai_flags, sort_keys=True), now)
    if priority_rank(u.priority) < priority_rank(current):
        await conn.execute("UPDATE worklist SET priority = $1, reason = $2, raised_at = $3"
                           " WHERE case_id = $4", u.priority, u.reason, now, u.case_id)


async def apply_final_report_op(conn: asyncpg.Connection, ev: FinalReportEvent) -> int:
    """Feedback rows written for the newest case the report matches (0 when none matches)."""
    keys = [(col, val) for col, val in (("accession", ev.accession), ("placer", ev.placer),
                                        ("filler", ev.filler)) if val]
    case_id = None
    for col, val in keys:
        case_id = await conn.fetchval(f"SELECT c.id FROM cases c JOIN orders o ON"
                                      f" o.id = c.order_id WHERE o.{col} = $1 ORDER BY c.id DESC"
                                      " LIMIT 1", val)
        if case_id is None and col == "accession":
            case_id = await conn.fetchval("SELECT c.id FROM cases c JOIN studies s ON"
                                          " s.uid = c.study_uid WHERE s.accession = $1 ORDER BY"
                                          " c.id DESC LIMIT 1", val)
        if case_id is not None:
            break
    if case_id is None:
        return 0
    found = [tuple(r) for r in await conn.fetch(
        "SELECT DISTINCT model, version, code FROM findings WHERE case_id = $1", case_id)]
    ran = [tuple(r) for r in await conn.fetch(
        "SELECT DISTINCT model, version FROM inference_audit WHERE case_id = $1 AND"
        " status = 'ok'", case_id)]
    entries = q.final_report_feedback(ev, case_id, found, ran)
    # A corrected report replaces everything the earlier one said about the case.
    await conn.execute("DELETE FROM feedback WHERE case_id = $1 AND source = 'final_report'",
                       case_id)
    if entries:
        await conn.executemany(_UPSERT, [q.feedback_params(e) for e in entries])
    return len(entries)


async def feedback_op(conn: asyncpg.Connection, entries: Sequence[FeedbackEntry]) -> None:
    if entries:
        await conn.executemany(_UPSERT, [q.feedback_params(e) for e in entries])


async def mark_read_op(conn: asyncpg.Connection, case_id: int, read: bool) -> bool:
    if await conn.fetchval("SELECT 1 FROM cases WHERE id = $1", case_id) is None:
        return False
    await conn.execute("INSERT INTO worklist (case_id, state, updated_at) VALUES ($1,$2,$3)"
                       " ON CONFLICT (case_id) DO UPDATE SET state = excluded.state,"
                       " updated_at = excluded.updated_at",
                       case_id, "read" if read else "unread", time.time())
    return True


async def apply_results_events(conn: asyncpg.Connection, event: Any) -> bool:
    """``Outcome.domain`` of the results and final-report pipelines; False: not ours."""
    if isinstance(event, WorklistUpdate):
        await apply_worklist_op(conn, event)
        if event.fhir_resources:
            from engine.store.pg_fhir import save_fhir_op  # the /fhir read API's index

            await save_fhir_op(conn, event.case_id, event.fhir_resources)
        return True
    if isinstance(event, FinalReportEvent):
        await apply_final_report_op(conn, event)
        return True
    return False


class PgResults(q.ResultsReads):
    """Mixed into ``PostgresStore``: the shared reads, and writes through its writer task."""

    _write: Any

    async def mark_read(self, case_id: int, read: bool = True) -> bool:
        return bool(await self._write(mark_read_op, case_id, read))

    async def record_feedback(self, entries: Sequence[FeedbackEntry]) -> None:
        await self._write(feedback_op, list(entries))
