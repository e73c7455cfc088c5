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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from engine.errors import StoreUnavailable
from engine.logs import event
from engine.store import pg_claims, pg_schema
from engine.store.base import (
    FINAL_STATUSES,
    PruneResult,
    Store,
)
from engine.store.claims import Claims
from engine.store.clinical_sql import ClinicalWrites
from engine.store.fhir_sql import FhirWrites
from engine.store.pg_writer import DB_ERRORS, Item, Writer, to_store_error
from engine.store.pruning import PruneSQL, Pruning
from engine.store.results_sql import ResultsWrites
from engine.store.signals import NOTIFY_CHANNEL
from engine.store.tx import Op, PgTx, new_message, on_pg, pg_sql

log = logging.getLogger("radbridge.store")
LEASE_SECS = 30.0
STATISTICS_SECS = 2.0  # how often grown day partitions are looked for (a catalog read)
_MSG_COLS = ("m.id, m.channel, m.received_at, m.status, r.raw, m.control_id, m.message_type,"
             " m.msg_key, m.duplicate, m.error")
_MSG_FROM = "messages m JOIN message_raw r ON r.id = m.id AND r.received_at = m.received_at"
_CLAIMED_COLS = ("t.id, t.channel, t.received_at, t.status, {raw}, t.control_id, t.message_type,"
                 " t.msg_key, t.duplicate, t.error")
_DLV_COLS = ("d.id, d.message_id, d.destination, d.status, d.attempts,"
             " coalesce(d.payload, (SELECT raw FROM message_raw r WHERE r.id = d.message_id"
             " AND r.received_at = d.received_at)), d.response, d.error, d.msg_key")


# Held by the connection of a whole prune run: one process prunes at a time (per schema).
_RETENTION_LOCK = "hashtext(current_schema() || ':retention')"


async def _days_before(conn: asyncpg.Connection, before: float, result: PruneResult
                       ) -> tuple[dict[int, int], list[tuple[float, float]]]:
    """``PostgresStore._old_days`` on *conn*."""
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


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The asyncpg DSN and our own options (``lease_secs``, ``pool_size``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    ours: dict[str, str] = {k: query.pop(k) for k in ("lease_secs", "pool_size") if k in query}
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), "")), ours


class PostgresStore(ClinicalWrites, Claims, Pruning, ResultsWrites, FhirWrites, Store):
    """The scale-out store: several engine processes and inference workers on one database."""

    _on_writer = staticmethod(on_pg)
    _CLAIMED_MESSAGE = _CLAIMED_COLS.format(raw="(SELECT raw FROM message_raw r WHERE"
                                            " r.id = t.id AND r.received_at = t.received_at)")
    _CLAIMED_MESSAGE_BARE = _CLAIMED_COLS.format(raw="''::bytea")
    _CLAIMED_DELIVERY = ("t.id, t.message_id, t.destination, t.status, t.attempts,"
                         " coalesce(t.payload, (SELECT raw FROM message_raw r WHERE"
                         " r.id = t.message_id AND r.received_at = t.received_at)), t.response,"
                         " t.error, t.msg_key")
    _MESSAGE_SELECT = f"SELECT {_MSG_COLS} FROM {_MSG_FROM}"
    _DELIVERY_SELECT = f"SELECT {_DLV_COLS} FROM deliveries d"
    _OLDEST_QUEUED = ("SELECT received_at FROM deliveries WHERE destination = ? AND"
                      " status = 'QUEUED' ORDER BY id LIMIT 1")
    # A span is (at most) one day's partition, paged by id (its primary key).
    _PRUNE = PruneSQL(prunable="", page="m.received_at < ? AND m.received_at >= ? AND m.id > ?",
                      order="m.id", by_time=False)

    def __init__(self, dsn: str, lease_secs: float = LEASE_SECS, pool_size: int = 8) -> None:
        self.dsn = dsn
        self.lease_secs = lease_secs
        self.pool_size = pool_size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._pool: asyncpg.Pool | None = None
        self._writer: Writer | None = None
        self._intake: Writer | None = None  # new messages only: see ``_submit``
        self._heartbeat: asyncio.Task[None] | None = None
        self._statistics: asyncio.Task[None] | None = None
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
        self._statistics = asyncio.create_task(self._keep_statistics(),
                                               name="radbridge-pg-statistics")

    async def open_reads(self) -> None:
        try:  # every transaction on these connections is read-only: the server refuses writes
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=2,
                server_settings={"default_transaction_read_only": "on"})
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        self._reads_only = True

    async def close(self) -> None:
        for task in (self._heartbeat, self._statistics):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeat = self._statistics = None
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

    async def _keep_statistics(self) -> None:
        """Analyze the day partitions that have grown (``pg_schema.analyze_grown_days``);
        a failure is logged once until a run succeeds again (not every 2 s of an outage)."""
        failing = False
        while True:
            await asyncio.sleep(STATISTICS_SECS)
            try:
                async with self._acquire() as conn:
                    await pg_schema.analyze_grown_days(conn)
                failing = False
            except (*DB_ERRORS, StoreUnavailable) as exc:  # autovacuum still runs; next time
                if not failing:
                    event(log, "STORE-204", "day partitions not analyzed",
                          reason=type(exc).__name__, level=logging.WARNING)
                failing = True

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

    async def _apart(self, op: Op, *args: Any, marks: bool = False) -> Any:
        """Run a claim (``engine.store.claims``) in a short transaction of its own on a pooled
        connection, leasing to this process (``pg_claims``); *marks* changes nothing here.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        try:
            async with self._acquire() as conn, conn.transaction():
                return await op(PgTx(conn, self.owner, self.lease_secs), *args)
        except (*DB_ERRORS, StoreUnavailable) as exc:
            raise to_store_error(exc) from exc

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
        whole, _ = await self._old_days(float(before), result)
        await self._drop_days(whole, None, None, result)
        return result.days_dropped

    @contextlib.asynccontextmanager
    async def _retention_lock(self) -> AsyncIterator[bool]:
        """A session advisory lock on a connection of its own, held for a whole prune run, so
        two processes never archive the same messages; False when another process holds it
        (that run does nothing: ``skipped``). Closing the connection releases the lock
        whatever happened. Raises ``StoreUnavailable`` or ``StoreError``."""
        try:
            conn = await asyncpg.connect(self.dsn)
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc
        try:
            try:
                mine = bool(await conn.fetchval(f"SELECT pg_try_advisory_lock({_RETENTION_LOCK})"))
            except DB_ERRORS as exc:
                raise to_store_error(exc) from exc
            if not mine:
                log.debug("message retention skipped: another process is pruning")
            yield mine
        finally:
            with contextlib.suppress(*DB_ERRORS):
                await conn.close()  # ends the session: the advisory lock goes with it

    async def _old_days(self, before: float, result: PruneResult
                        ) -> tuple[dict[int, int], list[tuple[float, float]]]:
        """The days before *before*: those all final (day -> messages), and the spans whose
        final messages go row by row (days with unfinished work, the part of the cutoff's day
        before it), oldest first. Each day is read outside the writer (a day can be large).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        try:
            async with self._acquire() as conn:
                return await _days_before(conn, before, result)
        except DB_ERRORS as exc:
            raise to_store_error(exc) from exc

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
