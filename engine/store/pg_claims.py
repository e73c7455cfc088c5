"""Claiming shared work on PostgreSQL, so several engine processes share one database.

A claim marks rows ``claimed_by`` this process until ``lease_until`` (the
database's clock), in a short transaction of its own, with ``FOR UPDATE SKIP
LOCKED``. Rows claimed by another process with a live lease are not taken;
rows whose lease ran out (their process died) are. The heartbeat renews live
claims (``renew``); a clean close hands them back (``release``).

Order per key across processes: a RECEIVED message or a QUEUED delivery of
key K is not claimed while an earlier one of K is held by another process, so
a key's head is always worked by one process at a time, oldest first. The
check reads committed claims, so the claims of one channel (or destination)
are serialised with an advisory lock: two processes claiming at the same
instant cannot both miss each other's claim. Rows without a key have no order
to keep.
"""

from __future__ import annotations

import asyncpg

from engine.store import pg_schema

_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"

_CLAIM_RECEIVED = """
WITH cand AS (
    SELECT m.id, m.received_at FROM messages m
    WHERE m.channel = $1 AND m.status = 'RECEIVED'
      AND (m.claimed_by IS NULL OR m.claimed_by = $3 OR m.lease_until < $4)
      AND (m.msg_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM messages e WHERE e.channel = $1 AND e.status = 'RECEIVED'
            AND e.msg_key = m.msg_key AND e.id < m.id AND e.claimed_by <> $3
            AND e.lease_until >= $4))
    ORDER BY m.id LIMIT $2 FOR UPDATE OF m SKIP LOCKED)
UPDATE messages x SET claimed_by = $3, lease_until = $4 + $5 FROM cand
WHERE x.id = cand.id AND x.received_at = cand.received_at
RETURNING x.id, x.channel, x.received_at, x.status, {raw}, x.control_id, x.message_type,
          x.msg_key, x.duplicate, x.error
"""
_RAW = ("(SELECT raw FROM message_raw r WHERE r.id = x.id AND r.received_at = x.received_at)")

_CLAIM_DELIVERIES = """
WITH cand AS (
    SELECT d.id, d.received_at FROM deliveries d
    WHERE d.destination = $1 AND d.status = 'QUEUED'
      AND (d.claimed_by IS NULL OR d.claimed_by = $3 OR d.lease_until < $4)
      AND (d.msg_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM deliveries e WHERE e.destination = $1 AND e.status = 'QUEUED'
            AND e.msg_key = d.msg_key AND e.id < d.id AND e.claimed_by <> $3
            AND e.lease_until >= $4))
    ORDER BY d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED)
UPDATE deliveries x SET claimed_by = $3, lease_until = $4 + $5 FROM cand
WHERE x.id = cand.id AND x.received_at = cand.received_at
RETURNING x.id, x.message_id, x.destination, x.status, x.attempts,
          coalesce(x.payload, (SELECT raw FROM message_raw r WHERE r.id = x.message_id
                               AND r.received_at = x.received_at)),
          x.response, x.error, x.msg_key
"""

_CLAIM_JOBS = """
UPDATE inference_jobs SET state = 'running', attempts = attempts + 1, updated_at = $3,
    claimed_by = $4, lease_until = $5 + $6
WHERE id IN (SELECT id FROM inference_jobs
             WHERE (state = 'queued' AND not_before <= $1)
                OR (state = 'running' AND lease_until < $5)
             ORDER BY lane, id LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING {cols}
"""


async def db_now(conn: asyncpg.Connection) -> float:
    return float(await conn.fetchval(_NOW))


async def claim_received(conn: asyncpg.Connection, owner: str, lease: float, channel: str,
                         limit: int, with_raw: bool) -> list[asyncpg.Record]:
    async with conn.transaction():
        await pg_schema.lock(conn, f"received:{channel}")
        now = await db_now(conn)
        sql = _CLAIM_RECEIVED.format(raw=_RAW if with_raw else "''::bytea")
        rows = await conn.fetch(sql, channel, limit, owner, now, lease)
    return sorted(rows, key=lambda r: r[0])


async def claim_deliveries(conn: asyncpg.Connection, owner: str, lease: float,
                           destination: str, limit: int) -> list[asyncpg.Record]:
    async with conn.transaction():
        await pg_schema.lock(conn, f"deliveries:{destination}")
        now = await db_now(conn)
        rows = await conn.fetch(_CLAIM_DELIVERIES, destination, limit, owner, now, lease)
    return sorted(rows, key=lambda r: r[0])


async def claim_jobs(conn: asyncpg.Connection, owner: str, lease: float, cols: str, limit: int,
                     due: float, wall: float) -> list[asyncpg.Record]:
    """Queued jobs due by *due*, and running jobs whose process died; STAT lane first."""
    async with conn.transaction():
        now = await db_now(conn)
        return list(await conn.fetch(_CLAIM_JOBS.format(cols=cols), due, limit, wall, owner,
                                     now, lease))


async def renew(conn: asyncpg.Connection, owner: str, lease: float) -> None:
    """Extend every live claim of *owner* (the heartbeat)."""
    async with conn.transaction():
        until = await db_now(conn) + lease
        await conn.execute("UPDATE messages SET lease_until = $2 WHERE claimed_by = $1 AND"
                           " status = 'RECEIVED'", owner, until)
        await conn.execute("UPDATE deliveries SET lease_until = $2 WHERE claimed_by = $1 AND"
                           " status = 'QUEUED'", owner, until)
        await conn.execute("UPDATE inference_jobs SET lease_until = $2 WHERE claimed_by = $1"
                           " AND state = 'running'", owner, until)


async def release(conn: asyncpg.Connection, owner: str) -> None:
    """Hand back every claim of *owner* (a clean close); its running jobs go back to queued."""
    async with conn.transaction():
        await conn.execute("UPDATE messages SET claimed_by = NULL, lease_until = NULL WHERE"
                           " claimed_by = $1 AND status = 'RECEIVED'", owner)
        await conn.execute("UPDATE deliveries SET claimed_by = NULL, lease_until = NULL WHERE"
                           " claimed_by = $1 AND status = 'QUEUED'", owner)
        await conn.execute("UPDATE inference_jobs SET state = 'queued', claimed_by = NULL,"
                           " lease_until = NULL WHERE claimed_by = $1 AND state = 'running'",
                           owner)
