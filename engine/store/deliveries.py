"""Delivery outcomes and operator actions, written once for both stores.

The rules, in portable SQL, run on the writer's ``Tx`` (``engine.store.tx``; PostgreSQL
adds its claim columns and locks the message row first):

* **finish** (the worker, many results in one transaction): SENT always
  stands (the peer has it, whatever an operator decided meanwhile); ERROR only
  replaces a row still QUEUED, so an operator's skip is not overwritten by a
  late failure. A transient **attempt** is counted only on a QUEUED row.
* **end** (an operator's skip or cancel): QUEUED → ERROR with a note naming
  who and why (``SKIPPED by ann: why``); the queue moves on.
* **requeue** (an operator's retry): ERROR → QUEUED. The delivery keeps its
  id, hence its place: it is the next one its destination sends.

After each, the message is rolled up: once none of its deliveries waits it is
ERROR if one failed (with that error), SENT otherwise; a requeued delivery
puts its message back to QUEUED.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.model import DeliveryStatus
from engine.store.records import Delivery
from engine.store.tx import Tx, WriterStore

SKIPPED, CANCELLED = "SKIPPED", "CANCELLED"
# What the worker records of one delivery: (delivery, status, response, error).
Finished = tuple[Delivery, DeliveryStatus, bytes | None, str | None]

# {claims}: PostgreSQL hands a claim back with the row (", claimed_by = NULL, ...").
FINISH = ("UPDATE deliveries SET status = ?, response = ?, error = ?, attempts = attempts + 1,"
          " updated_at = ?{claims} WHERE id = ?")
ONLY_QUEUED = " AND status = 'QUEUED'"
ATTEMPT = ("UPDATE deliveries SET attempts = attempts + 1, error = ?, updated_at = ?"
           " WHERE id = ? AND status = 'QUEUED'")
END = ("UPDATE deliveries SET status = 'ERROR', error = ?, updated_at = ?{claims}"
       " WHERE id = ? AND status = 'QUEUED'")
REQUEUE = ("UPDATE deliveries SET status = 'QUEUED', error = ?, updated_at = ?{claims}"
           " WHERE id = ? AND status = 'ERROR'")
MESSAGE_QUEUED = ("UPDATE messages SET status = 'QUEUED', error = NULL, updated_at = ?"
                  " WHERE id = ?")
# Parameters: (now, message id x 4).
ROLLUP = ("UPDATE messages SET updated_at = ?, status = CASE WHEN EXISTS (SELECT 1 FROM"
          " deliveries WHERE message_id = ? AND status = 'ERROR') THEN 'ERROR' ELSE 'SENT'"
          " END, error = (SELECT error FROM deliveries WHERE message_id = ? AND"
          " status = 'ERROR' LIMIT 1) WHERE id = ? AND NOT EXISTS (SELECT 1 FROM deliveries"
          " WHERE message_id = ? AND status = 'QUEUED')")
MESSAGE_OF = "SELECT message_id FROM deliveries WHERE id = ?"
_INFO_COLS = "id, message_id, destination, status, attempts, error, updated_at"
MAX_NOTE = 500


def finish_sql(status: str, claims: str = "") -> str:
    """The finish statement for *status*: SENT always stands, ERROR only on a QUEUED row."""
    sql = FINISH.format(claims=claims)
    return sql if status == DeliveryStatus.SENT else sql + ONLY_QUEUED


def operator_note(action: str, user: str, reason: str) -> str:
    """``SKIPPED by ann: the name is too long`` (bounded; kept as the delivery's error)."""
    return f"{action} by {user}: {' '.join(reason.split())}"[:MAX_NOTE]


@dataclass(slots=True)
class DeliveryInfo:
    """A delivery without its payload: what lists and operator actions show."""

    id: int
    message_id: int
    destination: str
    status: DeliveryStatus
    attempts: int
    error: str | None
    updated_at: float | None


def _info(row: Any) -> DeliveryInfo:
    return DeliveryInfo(int(row[0]), int(row[1]), row[2], DeliveryStatus(row[3]), int(row[4]),
                        row[5], float(row[6]) if row[6] is not None else None)


class DeliveryStore(WriterStore):
    """Delivery outcomes, operator actions and reads, written once for both stores: writes
    in the store's writer transaction (``_transact``), reads through its ``_rows``."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def finish_delivery(self, delivery: Delivery, status: DeliveryStatus,
                              response: bytes | None, error: str | None) -> None:
        """Record a final delivery result and roll the message status up when all are final.
        SENT always stands; ERROR does not replace an operator's decision (module docstring).
        Raises ``StoreUnavailable`` (try again later) or ``StoreError``."""
        await self.finish_deliveries([(delivery, status, response, error)])

    async def finish_deliveries(self, results: Sequence[Finished]) -> None:
        """``finish_delivery`` for each of *results*, all in one transaction (none recorded if
        it fails). Raises ``StoreUnavailable`` (try again later) or ``StoreError``."""
        if results:
            await self._transact(finish_op, [(d.id, d.message_id, str(status), response, error)
                                             for d, status, response, error in results])

    async def record_attempt(self, delivery: Delivery, error: str) -> None:
        """Record a failed (transient) attempt on a delivery still QUEUED. Raises
        ``StoreUnavailable`` (try again later) or ``StoreError``."""
        await self._transact(attempt_op, delivery.id, error)

    async def end_delivery(self, delivery_id: int, note: str) -> bool:
        """A QUEUED delivery ends as ERROR with *note* (see ``operator_note``); False when it
        is not QUEUED (or does not exist). Raises ``StoreUnavailable`` or ``StoreError``."""
        return bool(await self._transact(end_op, delivery_id, note))

    async def requeue_delivery(self, delivery_id: int, note: str) -> bool:
        """An ERROR delivery goes back to QUEUED, sent next; False when it is not ERROR.
        Raises ``StoreUnavailable`` or ``StoreError``."""
        return bool(await self._transact(requeue_op, delivery_id, note))

    async def delivery_status(self, delivery_id: int) -> DeliveryStatus | None:
        """The status of one delivery now (None: no such delivery).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._rows("SELECT status FROM deliveries WHERE id = ?", delivery_id)
        return DeliveryStatus(rows[0][0]) if rows else None

    async def get_delivery(self, delivery_id: int) -> DeliveryInfo | None:
        """One delivery without its payload (None: no such delivery).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._rows(f"SELECT {_INFO_COLS} FROM deliveries WHERE id = ?",
                                delivery_id)
        return _info(rows[0]) if rows else None

    async def list_deliveries(self, destination: str, status: DeliveryStatus | None = None,
                              limit: int = 50) -> list[DeliveryInfo]:
        """QUEUED ones in queue order (the head first); otherwise newest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        if status is None:
            rows = await self._rows(f"SELECT {_INFO_COLS} FROM deliveries WHERE"
                                    " destination = ? ORDER BY id DESC LIMIT ?",
                                    destination, limit)
        else:
            order = "ASC" if status == DeliveryStatus.QUEUED else "DESC"
            rows = await self._rows(f"SELECT {_INFO_COLS} FROM deliveries WHERE"
                                    f" destination = ? AND status = ? ORDER BY id {order}"
                                    " LIMIT ?", destination, str(status), limit)
        return [_info(r) for r in rows]


# -- write operations (on the writer's ``Tx``, inside its transaction) ----------------------
# The message row is locked first (``Tx.lock_rows``; nothing on SQLite's single writer): two
# processes finishing a message's last two deliveries take turns, so the second always sees
# the first and rolls the message up. A finished or ended delivery hands its claim back
# (``Tx.unclaim``).

LOCK_MESSAGE = "SELECT 1 FROM messages WHERE id = ?"


async def _rollup(tx: Tx, message_id: int, now: float) -> None:
    await tx.execute(ROLLUP, now, message_id, message_id, message_id, message_id)


async def finish_op(tx: Tx, results: list[tuple[int, int, str, bytes | None, str | None]]
                    ) -> None:
    """Record (delivery id, message id, status, response, error) for each of *results*, then
    roll each message up once. Message rows are locked in id order, so two processes
    finishing overlapping messages never deadlock."""
    now = time.time()
    messages = sorted({r[1] for r in results})
    if messages:  # one statement for the batch, rows locked in id order
        ids, params = tx.ids_in(messages)
        await tx.lock_rows(f"SELECT 1 FROM messages WHERE id {ids} ORDER BY id", *params)
    for status in (DeliveryStatus.SENT, DeliveryStatus.ERROR):
        await tx.executemany(finish_sql(status, tx.unclaim),
                             [(s, response, error, now, did)
                              for did, _, s, response, error in results if s == status])
    await tx.executemany(ROLLUP, [(now, m, m, m, m) for m in messages])


async def attempt_op(tx: Tx, delivery_id: int, error: str) -> None:
    await tx.execute(ATTEMPT, error, time.time(), delivery_id)


async def _locked_message_of(tx: Tx, delivery_id: int) -> int | None:
    message_id = await tx.value(MESSAGE_OF, delivery_id)
    if message_id is None:
        return None
    await tx.lock_rows(LOCK_MESSAGE, message_id)
    return int(message_id)


async def _operate(tx: Tx, delivery_id: int, sql: str, note: str) -> tuple[int, float] | None:
    """Run an operator's *sql* on one delivery under its message's lock: (message id, when),
    or None when the delivery does not exist or is not in the status *sql* expects."""
    message_id = await _locked_message_of(tx, delivery_id)
    if message_id is None:
        return None
    now = time.time()
    if not await tx.execute(sql.format(claims=tx.unclaim), note, now, delivery_id):
        return None
    return message_id, now


async def end_op(tx: Tx, delivery_id: int, note: str) -> bool:
    done = await _operate(tx, delivery_id, END, note)
    if done is not None:
        await _rollup(tx, *done)
    return done is not None


async def requeue_op(tx: Tx, delivery_id: int, note: str) -> bool:
    done = await _operate(tx, delivery_id, REQUEUE, note)
    if done is not None:
        message_id, now = done
        await tx.execute(MESSAGE_QUEUED, now, message_id)
    return done is not None
