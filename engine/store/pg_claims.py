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

Which rows a claim takes is written once (``engine.store.claims``, a ``tx.Claim``); how it
takes them here is ``claim_sql``, run by ``tx.PgTx.claim`` in the claim's own short
transaction (``PostgresStore._apart``).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from engine.store.tx import Claim

_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"


async def db_now(conn: asyncpg.Connection) -> float:
    return float(await conn.fetchval(_NOW))


def _numbered(sql: str, first: int) -> str:
    """*sql*'s ``?`` placeholders as ``$first``, ``$first+1``..."""
    counter = iter(range(first, first + 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


@functools.lru_cache(maxsize=64)
def claim_sql(c: Claim) -> str:
    """*c* (``engine.store.tx.Claim``) with leases: the rows *c* names that no live process
    holds (unclaimed, ours, or their lease ran out), none of them behind an older row of its
    key held by another process, locked ``SKIP LOCKED``, then leased to this one. The rows
    other processes hold are found in one pass (``held``), not once per candidate: a
    candidate's look back over the queue's index cost 0.2-0.5 ms each under load, 150-250
    ms a 512-row claim. Parameters:
    *c.where*'s, *c.besides*'s, the limit, the owner, the database's now, the lease,
    *c.mark*'s. *c.besides* narrows the rows taken, never the held rows that keep a key's
    order."""
    n = c.where_params
    lim, owner, now, lease = (f"${n + i}" for i in range(1, 5))
    where = _numbered(c.where, 1)
    besides = _numbered(c.besides, 1 + c.where.count("?")).format(t="t")
    if c.takeover is not None:  # the rows *where* names are never held
        takes = (f"(({where.format(t='t')}) OR ({c.takeover.format(t='t')} AND"
                 f" t.lease_until < {now})){besides}")
    else:
        takes = (f"{where.format(t='t')}{besides} AND (t.claimed_by IS NULL OR"
                 f" t.claimed_by = {owner} OR t.lease_until < {now})")
    held = ""
    if c.key is not None:  # each key's oldest row another live process holds, found once
        held = (f"held AS MATERIALIZED (SELECT e.{c.key} AS k, min(e.id) AS first FROM"
                f" {c.table} e WHERE {where.format(t='e')} AND e.{c.key} IS NOT NULL AND"
                f" e.claimed_by <> {owner} AND e.lease_until >= {now} GROUP BY e.{c.key}), ")
        takes += (f" AND (t.{c.key} IS NULL OR NOT EXISTS (SELECT 1 FROM held h WHERE"
                  f" h.k = t.{c.key} AND h.first < t.id))")
    # cand's own column names: RETURNING may name the table's columns without ``t.``
    ids = "t.id AS cand_id, t.received_at AS cand_at" if c.by_day else "t.id AS cand_id"
    same = " AND t.received_at = cand.cand_at" if c.by_day else ""
    mark = f"{_numbered(c.mark, n + 5)}, " if c.mark else ""
    return (f"WITH {held}cand AS (SELECT {ids} FROM {c.table} t WHERE {takes} ORDER BY {c.order}"
            f" LIMIT {lim} FOR UPDATE OF t SKIP LOCKED) UPDATE {c.table} t SET {mark}"
            f"claimed_by = {owner}, lease_until = {now} + {lease} FROM cand WHERE"
            f" t.id = cand.cand_id{same} RETURNING {c.returning}")


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
