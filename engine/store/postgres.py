"""PostgreSQL store (asyncpg): the same interface and semantics as SQLite, for several
engine processes on one database.

Writes go through one writer task per process with group commit
(``engine.store.pg_writer``); reads and claims use a small connection pool.
Queued work is *claimed*, not just read: the pipeline's RECEIVED messages, the
destinations' QUEUED deliveries and the inference jobs carry ``claimed_by``
(this process) and ``lease_until`` (database clock). See
``engine.store.pg_claims`` for the rules that keep per-key order across
processes. A heartbeat renews this process's leases; a process that dies
stops renewing, its leases run out and another process takes the work over.
A clean close hands its claims back at once.

URL: ``postgresql://user@host:port/db?lease_secs=30&pool_size=8``; any other
query parameter is a server setting (e.g. ``search_path=rb_test``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from engine.errors import StoreUnavailable
from engine.logs import event
from engine.model import Message
from engine.store import pg_claims, pg_schema
from engine.store.archive import Item as Archive
from engine.store.archive import write_archive
from engine.store.base import (
    FINAL_STATUSES,
    PRUNE_BATCH,
    WAITING_DELIVERY,
    Delivery,
    PruneResult,
    Store,
)
from engine.store.clinical_sql import ClinicalWrites
from engine.store.fhir_sql import FhirWrites
from engine.store.pg_inference import PgInference
from engine.store.pg_writer import DB_ERRORS, Item, Writer, to_store_error
from engine.store.records import delivery_row, message_row
from engine.store.results_sql import ResultsWrites
from engine.store.signals import NOTIFY_CHANNEL
from engine.store.tx import new_message, on_pg, pg_sql

log = logging.getLogger("radbridge.store")
LEASE_SECS = 30.0
_MSG_COLS = ("m.id, m.channel, m.received_at, m.status, r.raw, m.control_id, m.message_type,"
             " m.msg_key, m.duplicate, m.error")
_MSG_FROM = "messages m JOIN message_raw r ON r.id = m.id AND r.received_at = m.received_at"
_DLV_COLS = ("d.id, d.message_id, d.destination, d.status, d.attempts,"
             " coalesce(d.payload, (SELECT raw FROM message_raw r WHERE r.id = d.message_id"
             " AND r.received_at = d.received_at)), d.response, d.error, d.msg_key")


# A message retention may delete ($1: final statuses): nothing of it waits any more.
_PRUNABLE = ("m.status = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE"
             " d.message_id = m.id AND d.received_at = m.received_at AND"
             f" d.status = '{WAITING_DELIVERY}')")
# ...and unchanged since the run began ($n: its start): a message reprocessed after it was
# archived, perhaps final again, keeps its new data for the next run's archive.
_UNCHANGED = "(m.updated_at IS NULL OR m.updated_at <= ${})"
# What SQLite cascades, by hand (partitioned tables carry no foreign keys).
_PRUNE = (
    f"WITH gone AS (DELETE FROM messages m WHERE {_PRUNABLE} AND m.id = ANY($2::bigint[])"
    f" AND m.received_at < $3 AND {_UNCHANGED.format(4)} RETURNING m.id, m.received_at),"
    " r AS (DELETE FROM message_raw x USING gone g WHERE x.id = g.id"
    " AND x.received_at = g.received_at),"
    " c AS (DELETE FROM content x USING gone g WHERE x.message_id = g.id"
    " AND x.received_at = g.received_at),"
    " d AS (DELETE FROM deliveries x USING gone g WHERE x.message_id = g.id"
    " AND x.received_at = g.received_at)"
    " SELECT count(*) FROM gone")
# Held by the connection of a whole prune run: one process prunes at a time (per schema).
_RETENTION_LOCK = "hashtext(current_schema() || ':retention')"


async def _prune_ids_op(conn: asyncpg.Connection, ids: Sequence[int], before: float,
                        since: float) -> int:
    """Delete those of *ids* still prunable and unchanged since *since* (checked again: one
    may have been reprocessed since it was read)."""
    return int(await conn.fetchval(_PRUNE, list(FINAL_STATUSES), list(ids), before, since))


async def _prune_next_op(conn: asyncpg.Connection, span: tuple[float, float], since: float,
                         after: int, limit: int) -> tuple[int, int | None]:
    """Look at the next *limit* messages after id *after* received within *span* (one day's
    partition at most) and delete the prunable ones; the id to go on from, None when none is
    left."""
    ids = [r[0] for r in await conn.fetch("SELECT id FROM messages WHERE received_at >= $1 AND"
                                          " received_at < $2 AND id > $3 ORDER BY id LIMIT $4",
                                          span[0], span[1], after, limit)]
    if not ids:
        return 0, None
    return await _prune_ids_op(conn, ids, span[1], since), ids[-1]


@dataclass(slots=True)
class _Plan:
    """What one archiving prune run takes: whole days, then spans within a budget."""

    days: list[int]
    spans: list[tuple[float, float]]
    budget: int  # messages the spans may still give; the whole days are counted already
    more: bool = False  # the budget ran out before the spans did


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The asyncpg DSN and our own options (``lease_secs``, ``pool_size``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    ours: dict[str, str] = {k: query.pop(k) for k in ("lease_secs", "pool_size") if k in query}
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), "")), ours


class PostgresStore(ClinicalWrites, PgInference, ResultsWrites, FhirWrites,
                    Store):
    """The scale-out store: several engine processes and inference workers on one database."""

    _on_writer = staticmethod(on_pg)
    _MESSAGE_SELECT = f"SELECT {_MSG_COLS} FROM {_MSG_FROM}"
    _DELIVERY_SELECT = f"SELECT {_DLV_COLS} FROM deliveries d"
    _OLDEST_QUEUED = ("SELECT received_at FROM deliveries WHERE destination = ? AND"
                      " status = 'QUEUED' ORDER BY id LIMIT 1")

    def __init__(self, dsn: str, lease_secs: float = LEASE_SECS, pool_size: int = 8) -> None:
        self.dsn = dsn
        self.lease_secs = lease_secs
        self.pool_size = pool_size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._pool: asyncpg.Pool | None = None
        self._writer: Writer | None = None
        self._intake: Writer | None = None  # new messages only: see ``_submit``
        self._heartbeat: asyncio.Task[None] | None = None
        self._reads_only = False  # opened by open_reads: no writer, no claims

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """The store for a ``postgresql://`` URL (``lease_secs`` and ``pool_size`` are ours).
        Raises ``ValueError`` for a malformed number."""
        dsn, ours = _split_url(url)
        return cls(dsn, float(ours.get("lease_secs", LEASE_SECS)),
                   int(ours.get("pool_size", 8)))

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
            async with self._pool.acquire() as conn:
                await pg_schema.create_schema(conn)
        except DB_ERRORS as exc:
            await self.close()
            raise to_store_error(exc) from exc
        self._writer = Writer(lambda: asyncpg.connect(self.dsn))
        self._writer.start()
        self._intake = Writer(lambda: asyncpg.connect(self.dsn))
        self._intake.start()
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="radbridge-pg-leases")

    async def open_reads(self) -> None:
        try:  # every transaction on these connections is read-only: the server refuses writes
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=2,
                server_settings={"default_transaction_read_only": "on"})
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        self._reads_only = True

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        for writer in (self._intake, self._writer):
            if writer is not None:
                await writer.stop()
        self._writer = self._intake = None
        if self._pool is not None:
            if not self._reads_only:  # a reader holds no claims (and may not write)
                with contextlib.suppress(*DB_ERRORS):
                    async with self._pool.acquire() as conn:
                        await pg_claims.release(conn, self.owner)
            await self._pool.close()
            self._pool = None

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_secs / 3)
            with contextlib.suppress(*DB_ERRORS, StoreUnavailable):
                async with self._acquire() as conn:
                    await pg_claims.renew(conn, self.owner, self.lease_secs)

    async def listen_signals(self, wake: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """LISTEN on a connection of its own; *wake* on every NOTIFY from this schema's
        signal writers. Without it (the connection failed or dropped) polling still finds
        every signal, a tick later. Raises nothing."""
        try:
            conn = await asyncpg.connect(self.dsn)
            schema = await conn.fetchval("SELECT current_schema()")

            def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                if payload == schema:
                    wake()

            await conn.add_listener(NOTIFY_CHANNEL, heard)
        except DB_ERRORS as exc:
            event(log, "STORE-231", "cannot listen for signals; polling only",
                  reason=type(exc).__name__, level=logging.WARNING)
            return await super().listen_signals(wake)

        async def stop() -> None:
            with contextlib.suppress(*DB_ERRORS):
                await conn.close()

        return stop

    # -- plumbing used by the mixins ---------------------------------------------------------
    def _acquire(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        return self._pool.acquire()

    def _submit(self, op: Any, args: tuple[Any, ...], done: Any, lock: bool = False) -> None:
        """Queue a writer operation; *lock*: under the store-wide clinical advisory lock.

        New messages (the ACK path) have a writer and a connection of their own: their group
        commit never waits behind the other writer's transactions (a pipeline batch's outcomes,
        hundreds of statements, each a round trip), which held ACKs for up to a second under
        load (issue 15). Nothing orders the two: an operation about a message is only ever
        submitted once its insert has committed."""
        writer = self._intake if op is new_message else self._writer
        if writer is None:
            done(None, StoreUnavailable("store is not open"))
            return
        writer.submit(Item(op, args, done, lock))

    async def _rows(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        """A read in portable SQL (``?`` placeholders): what the shared mixins call."""
        return await self._fetch(pg_sql(sql), *params)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self._acquire() as conn:
                return list(await conn.fetch(sql, *args))
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc

    # -- writes ----------------------------------------------------------------------------
    async def drop_message_days(self, before: float) -> list[int]:
        """Drop every day of messages, raw bytes, layers and deliveries that ended at or
        before *before* and holds nothing unfinished (whole partitions: the disk is freed at
        once, no VACUUM). Days with unfinished work stay whole; see ``prune_messages``.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        result = PruneResult()
        async with self._acquire() as conn:
            whole, _ = await self._old_days(conn, float(before), result)
        await self._drop_days(whole, None, None, result)
        return result.days_dropped

    async def prune_messages(self, before: float, archive: Path | None = None) -> PruneResult:
        """Whole days first: a day before the cutoff whose messages are all final is dropped
        (and its disk freed at once). A day with anything unfinished is kept, and its final
        messages deleted row by row like those of the day the cutoff falls in; the day is
        dropped on a later run, once its last message is final. Whole days go first, oldest
        first, as many as fit in ``prune_max_per_run`` (one at least), then row deletes
        within what is left of it.

        The run holds a session advisory lock on its own connection from start to end, so
        two processes never archive the same messages; one that finds it taken does nothing
        (``skipped``). Closing that connection releases the lock whatever happened.
        Raises ``ArchiveError`` when the archive cannot be written (nothing is
        deleted), ``StoreUnavailable`` (retry later) or ``StoreError``."""
        before = float(before)
        result = PruneResult()
        try:
            conn = await asyncpg.connect(self.dsn)
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        try:
            if not await conn.fetchval(f"SELECT pg_try_advisory_lock({_RETENTION_LOCK})"):
                log.debug("message retention skipped: another process is pruning")
                result.skipped = True
                return result
            await self._prune_locked(conn, before, archive, result)
            result.days_kept = sorted(set(result.days_kept))
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        finally:
            with contextlib.suppress(*DB_ERRORS):
                await conn.close()  # ends the session: the advisory lock goes with it
        return result

    async def _prune_locked(self, conn: asyncpg.Connection, before: float,
                            archive: Path | None, result: PruneResult) -> None:
        """One run, under the retention lock: plan whole days and row deletes within the cap,
        archive them (if asked), drop the whole days, delete the rest row by row."""
        since = time.time()  # rows changed after this are left for the next run
        budget = max(1, int(self.prune_max_per_run))
        whole, spans = await self._old_days(conn, before, result)
        days: dict[int, int] = {}  # whole days this run takes: oldest first, at least one
        for day, n in whole.items():
            if days and n > budget:
                result.more = True
                break
            days[day] = n
            budget -= n
        budget = max(0, budget)
        if archive is None:
            await self._drop_days(days, None, None, result)
            after: int | None
            for span in spans:
                after = 0
                while after is not None and budget > 0:
                    n, after = await self._write(_prune_next_op, span, since, after,
                                                 min(PRUNE_BATCH, budget))
                    budget -= n
                    result.messages += n
                    result.batches += 1 if n else 0
                if after is not None:
                    result.more = True
                    break
            return
        plan = _Plan(days=list(days), spans=spans, budget=budget)
        archived = await write_archive(archive, before,
                                       self._archive_batches(conn, plan, since))
        result.archive = archived.path
        result.more |= plan.more
        counts, newest = await asyncio.to_thread(
            lambda: (archived.per_day(), archived.newest_per_day()))
        # A day is dropped only if the archive holds all of it (as many as it had).
        complete = {day: n for day, n in days.items() if counts[day] == n}
        result.days_kept += [day for day in days if day not in complete]
        dropped = await self._drop_days(complete, newest, since, result)
        # Everything else archived goes row by row: kept days (unfinished, changed or busy)
        # too, so that no message is archived by two runs.
        ids = await asyncio.to_thread(archived.ids_outside, dropped)
        for start in range(0, len(ids), PRUNE_BATCH):
            n = await self._write(_prune_ids_op, ids[start:start + PRUNE_BATCH], before, since)
            result.messages += n
            result.batches += 1 if n else 0

    async def _old_days(self, conn: asyncpg.Connection, before: float, result: PruneResult
                        ) -> tuple[dict[int, int], list[tuple[float, float]]]:
        """The days before *before*: those all final (day -> messages), and the spans whose
        final messages go row by row (days with unfinished work, the part of the cutoff's day
        before it), oldest first. Each day is read outside the writer (a day can be large)."""
        whole: dict[int, int] = {}
        spans: list[tuple[float, float]] = []
        existing = await pg_schema.existing_days(conn)
        for day in sorted(d for d in existing if (d + 1) * pg_schema.DAY <= before):
            try:
                n, unfinished = await pg_schema.day_state(conn, day, FINAL_STATUSES)
            except asyncpg.UndefinedTableError:
                continue  # dropped meanwhile (``drop_message_days``)
            if unfinished:
                result.days_kept.append(day)
                spans.append((float(day * pg_schema.DAY), float((day + 1) * pg_schema.DAY)))
            else:
                whole[day] = n
        cut = pg_schema.day_of(before)
        if cut in existing and cut * pg_schema.DAY < before:
            spans.append((float(cut * pg_schema.DAY), before))
        return whole, spans

    async def _drop_days(self, days: dict[int, int], newest: dict[int, int] | None,
                         since: float | None, result: PruneResult) -> set[int]:
        """Drop *days* (day -> messages) in one short writer transaction that checks them
        again under lock; those it leaves (changed, or the tables busy) are reported kept."""
        assert self._writer is not None
        if not days:
            return set()
        freed = await self._write(pg_schema.drop_final_days, list(days), newest, since)
        if freed is None:  # the tables were busy: every day waits for the next run
            event(log, "STORE-203", "day partitions not dropped: tables busy",
                  days=len(days), wait=pg_schema.LOCK_TIMEOUT)
            freed = {}
        for writer in (self._writer, self._intake):
            if writer is not None:
                writer.forget_days()
        result.days_dropped = sorted(freed)
        result.days_kept = sorted(set(result.days_kept) | (set(days) - set(freed)))
        result.messages += sum(days[day] for day in freed)
        result.bytes_freed += sum(freed.values())
        return set(freed)

    async def _archive_batches(self, conn: asyncpg.Connection, plan: _Plan, since: float
                               ) -> AsyncIterator[list[Archive]]:
        """What *plan* takes, with layers and deliveries, a batch at a time: every prunable
        message of its whole days, then those of its spans up to its budget."""
        for day in plan.days:
            lo, hi = float(day * pg_schema.DAY), float((day + 1) * pg_schema.DAY)
            async for batch in self._archive_span(conn, (lo, hi), since, None):
                yield batch
        for span in plan.spans:
            if plan.budget <= 0:
                plan.more = True
                return
            async for batch in self._archive_span(conn, span, since, plan):
                yield batch

    async def _archive_span(self, conn: asyncpg.Connection, span: tuple[float, float],
                            since: float, plan: _Plan | None) -> AsyncIterator[list[Archive]]:
        """Prunable messages received within *span*, by id; with *plan*, within its budget."""
        after = 0
        while plan is None or plan.budget > 0:
            limit = PRUNE_BATCH if plan is None else min(PRUNE_BATCH, plan.budget)
            rows = await conn.fetch(f"SELECT {_MSG_COLS} FROM {_MSG_FROM} WHERE {_PRUNABLE}"
                                    f" AND {_UNCHANGED.format(2)} AND m.received_at >= $3"
                                    " AND m.received_at < $4 AND m.id > $5 ORDER BY m.id"
                                    " LIMIT $6", list(FINAL_STATUSES), since, span[0], span[1],
                                    after, limit)
            if not rows:
                return
            if plan is not None:
                plan.budget -= len(rows)
            msgs = {m.id: m for m in map(message_row, rows)}
            ids = list(msgs)
            for mid, layer, data in await conn.fetch(
                    "SELECT message_id, layer, data FROM content WHERE message_id ="
                    " ANY($1::bigint[]) AND received_at >= $2 AND received_at < $3"
                    " ORDER BY message_id, created_at", ids, span[0], span[1]):
                msgs[mid].layers[layer] = bytes(data)
            deliveries: dict[int, list[Delivery]] = {mid: [] for mid in ids}
            for row in await conn.fetch(f"SELECT {_DLV_COLS} FROM deliveries d WHERE"
                                        " d.message_id = ANY($1::bigint[]) AND"
                                        " d.received_at >= $2 AND d.received_at < $3"
                                        " ORDER BY d.id", ids, span[0], span[1]):
                d = delivery_row(row)
                deliveries[d.message_id].append(d)
            yield [(m, deliveries[mid]) for mid, m in msgs.items()]
            after = ids[-1]
        assert plan is not None
        plan.more = True  # the budget ran out inside this span

    # -- claims ----------------------------------------------------------------------------
    async def fetch_received(self, channel: str, limit: int, with_raw: bool = True
                             ) -> list[Message]:
        try:
            async with self._acquire() as conn:
                rows = await pg_claims.claim_received(conn, self.owner, self.lease_secs,
                                                      channel, limit, with_raw)
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        return [message_row(r) for r in rows]

    async def next_deliveries(self, destination: str, limit: int) -> list[Delivery]:
        try:
            async with self._acquire() as conn:
                rows = await pg_claims.claim_deliveries(conn, self.owner, self.lease_secs,
                                                        destination, limit)
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        return [delivery_row(r) for r in rows]
