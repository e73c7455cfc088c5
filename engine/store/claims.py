"""Claiming queued work, written once for both stores.

Three queues are claimed: a channel's RECEIVED messages (the pipeline), a destination's
QUEUED deliveries (its worker) and the due inference jobs (the dispatcher, STAT lane
first). Which rows a claim takes is a ``tx.Claim`` here; how it takes them is the
transaction's ``claim`` hook:

* **SQLite**: one engine process owns the database, so the rows are taken as they are:
  messages and deliveries are read (on a reader connection), jobs are marked ``running``
  (on the writer). At start-up every job still ``running`` was left by this process's
  previous run and goes back to the queue.
* **PostgreSQL**: several processes share the database, so a claim leases its rows to this
  process, ``FOR UPDATE SKIP LOCKED``, in a short transaction of its own; the claims of
  one channel (or destination) take an advisory lock so a key's head is worked by one
  process at a time (``engine.store.pg_claims``). At start-up only the running jobs no
  live process holds go back.

Where a claim's transaction runs is each store's ``_apart``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from engine.model import Message
from engine.store.inference import JobRow
from engine.store.inference_sql import _JOB_COLS, InferenceWrites, _job
from engine.store.records import Delivery, delivery_row, message_row
from engine.store.tx import Claim, Row, Tx, WriterStore

# A claim's rows come back in no order; each queue sorts its own.
JOBS = Claim("inference_jobs", "{t}.state = 'queued' AND {t}.not_before <= ?", "t.lane, t.id",
             _JOB_COLS, mark="state = 'running', attempts = attempts + 1, updated_at = ?",
             takeover="{t}.state = 'running'")


@functools.cache
def received(returning: str) -> Claim:
    """A channel's RECEIVED messages but those of an id range (parameters: the channel, the
    range's first and last id), *returning* those columns."""
    return Claim("messages", "{t}.channel = ? AND {t}.status = 'RECEIVED'", "t.id", returning,
                 key="msg_key", by_day=True, besides=" AND ({t}.id < ? OR {t}.id > ?)")


@functools.cache
def queued(returning: str) -> Claim:
    """A destination's QUEUED deliveries (parameter: the destination)."""
    return Claim("deliveries", "{t}.destination = ? AND {t}.status = 'QUEUED'", "t.id",
                 returning, key="msg_key", by_day=True)


async def serial_claim_op(tx: Tx, claim: Claim, kind: str, queue: str, limit: int,
                          *params: Any) -> list[Row]:
    """*claim* on one channel's (or destination's) *queue* (then *params*), under the lock of
    its claims (``kind:queue``), oldest first."""
    await tx.lock(f"{kind}:{queue}")
    return sorted(await tx.claim(claim, limit, queue, *params), key=lambda r: r[0])


async def jobs_op(tx: Tx, limit: int, due: float) -> list[Row]:
    return await tx.claim(JOBS, limit, due, time.time())


async def requeue_unheld_op(tx: Tx) -> int:
    """Running jobs that no live process holds go back to the queue."""
    unheld, params = await tx.unheld()
    return await tx.execute(f"UPDATE inference_jobs SET state = 'queued', updated_at = ?"
                            f"{tx.unclaim} WHERE state = 'running'{unheld}", time.time(),
                            *params)


class Claims(InferenceWrites, WriterStore):
    """The claims of ``Store`` (and the inference writes they sit beside), written once; each
    store says where a claim runs (``_apart``) and the columns its rows come back with."""

    # The columns ``message_row`` / ``delivery_row`` read, on alias ``t`` (each database's
    # form: PostgreSQL finds the raw bytes in the message's day); without the raw bytes.
    _CLAIMED_MESSAGE: str
    _CLAIMED_MESSAGE_BARE: str
    _CLAIMED_DELIVERY: str

    async def fetch_received(self, channel: str, limit: int, with_raw: bool = True,
                             besides: tuple[int, int] = (0, 0)) -> list[Message]:
        """Oldest RECEIVED messages of *channel*, in arrival order (``raw`` empty unless
        asked), but those with ids from ``besides[0]`` to ``besides[1]`` (a batch still being
        recorded). Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        cols = self._CLAIMED_MESSAGE if with_raw else self._CLAIMED_MESSAGE_BARE
        rows = await self._apart(serial_claim_op, received(cols), "received", channel,
                                 limit, *besides)
        return [message_row(r) for r in rows]

    async def next_deliveries(self, destination: str, limit: int) -> list[Delivery]:
        """Oldest QUEUED deliveries for *destination*, in order.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._apart(serial_claim_op, queued(self._CLAIMED_DELIVERY), "deliveries",
                                 destination, limit)
        return [delivery_row(r) for r in rows]

    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        """Queued jobs due by *now* (and, on PostgreSQL, running jobs whose process died),
        STAT lane first, oldest first; marks them running and counts the attempt.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._apart(jobs_op, limit, float(now), marks=True)
        return sorted((_job(r) for r in rows), key=lambda j: (j.lane, j.id))

    async def reset_running_jobs(self) -> int:
        """Start-up recovery: running jobs that no live process holds go back to queued.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        return int(await self._apart(requeue_unheld_op, marks=True))
