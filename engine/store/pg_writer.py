"""Group commit on PostgreSQL: one writer task, one connection, one transaction per group.

Whatever writes arrived while the previous group committed run together:
new messages as one statement, every other operation in order, then one
COMMIT (one WAL flush for the group). Callbacks run only after the commit, so
an ACK written from one is never for an uncommitted message. If the group's
transaction fails, each operation is retried alone, so one bad write does not
fail its neighbours. Operations that correlate orders and studies take the
store-wide clinical lock first (``needs_lock``): across engine processes, as
inside one, correlation never races.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.errors import StoreError, StoreUnavailable
from engine.store import pg_schema
from engine.store.base import FLAGS_LAYER, flag_rows
from engine.store.tx import new_message

_MAX_GROUP = 4096
Done = Callable[[Any, BaseException | None], None]
Op = Callable[..., Awaitable[Any]]

# Errors that mean "the database cannot take writes now": refuse input, try again later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError, asyncpg.OperatorInterventionError,
    asyncpg.ReadOnlySQLTransactionError, asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError, asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError, asyncpg.LockNotAvailableError)
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def to_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")
    return StoreError(f"{type(exc).__name__}: {exc}")


@dataclass(slots=True)
class Item:
    op: Op  # ``tx.new_message``: insert a message (args[0] is the NewMessage)
    args: tuple[Any, ...]
    done: Done
    needs_lock: bool = False


_INSERT = (
    "WITH rows AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id,"
    " u.* FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::int[], $8::text[], $9::bytea[]) WITH ORDINALITY AS u(channel, received_at, status,"
    " control_id, message_type, msg_key, duplicate, error, raw, ord)),"
    " m AS (INSERT INTO messages (id, channel, received_at, status, control_id, message_type,"
    " msg_key, duplicate, error, updated_at) SELECT id, channel, received_at, status, control_id,"
    " message_type, msg_key, duplicate, error, received_at FROM rows),"
    " r AS (INSERT INTO message_raw (id, received_at, raw) SELECT id, received_at, raw FROM rows)"
    " SELECT id FROM rows ORDER BY ord")


async def insert_messages(conn: asyncpg.Connection, msgs: Sequence[Any]) -> list[int]:
    """Insert messages (and their raw bytes) with one statement; their ids, in order."""
    cols: list[list[Any]] = [[] for _ in range(9)]
    for m in msgs:
        for col, value in zip(cols, (m.channel, float(m.received_at), str(m.status),
                                     m.control_id, m.message_type, m.key, int(m.duplicate),
                                     m.error, m.raw), strict=True):
            col.append(value)
    ids = [r[0] for r in await conn.fetch(_INSERT, *cols)]
    flagged = flag_rows(msgs, ids)
    if flagged:  # in the caller's transaction, with the messages
        await conn.execute(
            "INSERT INTO content (message_id, received_at, layer, data, created_at)"
            f" SELECT u.mid, u.at, '{FLAGS_LAYER}', u.data, u.at FROM unnest($1::bigint[],"
            " $2::float8[], $3::bytea[]) AS u(mid, at, data)",
            *map(list, zip(*flagged, strict=True)))
    return ids


class Writer:
    """The writer task. ``submit`` from the event loop; ``stop`` drains and closes."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._q: asyncio.Queue[Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._days: set[int] = set()
        self.groups = 0
        self.ops = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="radbridge-pg-writer")

    def submit(self, item: Item) -> None:
        self._q.put_nowait(item)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._q.put_nowait(None)
        await self._task
        self._task = None
        if self._conn is not None:
            with contextlib.suppress(*DB_ERRORS):
                await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            item = await self._q.get()
            if item is None:
                return
            batch = [item]
            stopping = False
            while len(batch) < _MAX_GROUP and not self._q.empty():
                nxt = self._q.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            results = await self._run_group(batch)
            self.groups += 1
            self.ops += len(batch)
            for done, value, err in results:
                with contextlib.suppress(Exception):  # a callback's bug must not stop us
                    done(value, err)
            if stopping:
                return

    async def _run_group(self, batch: list[Item]
                         ) -> list[tuple[Done, Any, BaseException | None]]:
        try:
            conn = await self._connection()
            await self._ensure_days(conn, batch)
            return await self._group_transaction(conn, batch)
        except asyncio.CancelledError:
            raise
        except DB_ERRORS as exc:
            if self._conn is not None and self._conn.is_closed():
                self._conn = None
            if isinstance(exc, (OSError, asyncpg.InterfaceError,
                                asyncpg.PostgresConnectionError)):
                self._conn = None
                err = to_store_error(exc)
                return [(i.done, None, err) for i in batch]
        # The group failed as a whole: run each write alone so one bad write fails only itself.
        return [await self._alone(item) for item in batch]

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

    async def _ensure_days(self, conn: asyncpg.Connection, batch: list[Item]) -> None:
        days = {pg_schema.day_of(i.args[0].received_at) for i in batch if i.op is new_message}
        missing = days - self._days
        if not missing:
            return
        self._days |= await pg_schema.existing_days(conn)
        for day in sorted(missing - self._days):
            async with conn.transaction():
                await pg_schema.create_day(conn, day)
            self._days.add(day)

    def forget_days(self) -> None:
        """Partitions were dropped (retention): read them from the catalog again."""
        self._days.clear()

    async def _group_transaction(self, conn: asyncpg.Connection, batch: list[Item]
                                 ) -> list[tuple[Done, Any, BaseException | None]]:
        inserts = [i for i in batch if i.op is new_message]
        out: list[tuple[Done, Any, BaseException | None]] = []
        async with conn.transaction():
            if any(i.needs_lock for i in batch):
                await pg_schema.lock(conn, "clinical")
            if inserts:
                ids = await insert_messages(conn, [i.args[0] for i in inserts])
                out += [(i.done, mid, None) for i, mid in zip(inserts, ids, strict=True)]
            for item in batch:
                if item.op is not new_message:
                    out.append((item.done, await item.op(conn, *item.args), None))
        return out

    async def _alone(self, item: Item) -> tuple[Done, Any, BaseException | None]:
        try:
            conn = await self._connection()
            async with conn.transaction():
                if item.needs_lock:
                    await pg_schema.lock(conn, "clinical")
                if item.op is new_message:
                    value: Any = (await insert_messages(conn, [item.args[0]]))[0]
                else:
                    value = await item.op(conn, *item.args)
            return item.done, value, None
        except asyncio.CancelledError:
            raise
        except DB_ERRORS as exc:
            if self._conn is not None and self._conn.is_closed():
                self._conn = None
            return item.done, None, to_store_error(exc)
