"""PostgreSQL side of ``engine.store.deliveries``: the same rules with PostgreSQL placeholders,
the claim columns handed back with each row, and the message row locked first (two
processes finishing a message's last two deliveries take turns, so the second always sees
the first and rolls the message up)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from engine.store import deliveries as q
from engine.store.pg_schema import pg

_CLAIMS = ", claimed_by = NULL, lease_until = NULL"
_LOCK_MESSAGE = "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE"
_ROLLUP, _ATTEMPT, _MESSAGE_QUEUED = pg(q.ROLLUP), pg(q.ATTEMPT), pg(q.MESSAGE_QUEUED)
_END, _REQUEUE = pg(q.END.format(claims=_CLAIMS)), pg(q.REQUEUE.format(claims=_CLAIMS))
_MESSAGE_OF = pg(q.MESSAGE_OF)


async def _rollup(conn: asyncpg.Connection, message_id: int, now: float) -> None:
    await conn.execute(_ROLLUP, now, message_id, message_id, message_id, message_id)


async def finish_op(conn: asyncpg.Connection, delivery_id: int, message_id: int, status: str,
                    response: bytes | None, error: str | None) -> None:
    now = time.time()
    await conn.execute(_LOCK_MESSAGE, message_id)
    await conn.execute(pg(q.finish_sql(status, _CLAIMS)), status, response, error, now,
                       delivery_id)
    await _rollup(conn, message_id, now)


async def attempt_op(conn: asyncpg.Connection, delivery_id: int, error: str) -> None:
    await conn.execute(_ATTEMPT, error, time.time(), delivery_id)


async def _message_of(conn: asyncpg.Connection, delivery_id: int) -> int | None:
    value = await conn.fetchval(_MESSAGE_OF, delivery_id)
    return int(value) if value is not None else None


async def end_op(conn: asyncpg.Connection, delivery_id: int, note: str) -> bool:
    message_id = await _message_of(conn, delivery_id)
    if message_id is None:
        return False
    now = time.time()
    await conn.execute(_LOCK_MESSAGE, message_id)
    if (await conn.execute(_END, note, now, delivery_id)).split()[-1] == "0":
        return False
    await _rollup(conn, message_id, now)
    return True


async def requeue_op(conn: asyncpg.Connection, delivery_id: int, note: str) -> bool:
    message_id = await _message_of(conn, delivery_id)
    if message_id is None:
        return False
    now = time.time()
    await conn.execute(_LOCK_MESSAGE, message_id)
    if (await conn.execute(_REQUEUE, note, now, delivery_id)).split()[-1] == "0":
        return False
    await conn.execute(_MESSAGE_QUEUED, now, message_id)
    return True


class PgDeliveries(q.DeliveryStore):
    """Mixed into ``PostgresStore``: the actions run through its writer task."""

    _write: Any

    async def end_delivery(self, delivery_id: int, note: str) -> bool:
        return bool(await self._write(end_op, delivery_id, note))

    async def requeue_delivery(self, delivery_id: int, note: str) -> bool:
        return bool(await self._write(requeue_op, delivery_id, note))
