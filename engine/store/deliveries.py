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

from engine.model import DeliveryStatus, Status
from engine.store.records import Delivery
from engine.store.tx import Many, PgTx, Row, Tx, WriterStore

SKIPPED, CANCELLED = "SKIPPED", "CANCELLED"
# What the worker records of one delivery: (delivery, status, response, error).
Finished = tuple[Delivery, DeliveryStatus, bytes | None, str | None]

# (delivery id, status, response, error) per result, then the time: SENT always stands, ERROR
# only replaces a QUEUED row; one statement for a batch on PostgreSQL, where a finished
# delivery also hands its claim back (``PgTx.unclaim``, the one place claims are cleared).
FINISH = Many(
    sqlite="UPDATE deliveries SET status = ?2, response = ?3, error = ?4,"
           " attempts = attempts + 1, updated_at = ?5 WHERE id = ?1"
           " AND (?2 = 'SENT' OR status = 'QUEUED')",
    pg="UPDATE deliveries d SET status = u.status, response = u.response, error = u.error,"
       " attempts = d.attempts + 1, updated_at = $5" + PgTx.unclaim +
       " FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[])"
       " AS u(id, status, response, error)"
       " WHERE d.id = u.id AND (u.status = 'SENT' OR d.status = 'QUEUED')")
ATTEMPT = ("UPDATE deliveries SET attempts = attempts + 1, error = ?, updated_at = ?"
           " WHERE id = ? AND status = 'QUEUED'")
END = ("UPDATE deliveries SET status = 'ERROR', error = ?, updated_at = ?{claims}"
       " WHERE id = ? AND status = 'QUEUED'")
REQUEUE = ("UPDATE deliveries SET status = 'QUEUED', error = ?, updated_at = ?{claims}"
           " WHERE id = ? AND status = 'ERROR'")
MESSAGE_QUEUED = ("UPDATE messages SET status = 'QUEUED', error = NULL, updated_at = ?"
                  " WHERE id = ?")
# The roll-up reads every delivery of the messages at once and decides in Python. A query
# that asked for a message's QUEUED deliveries tempted PostgreSQL, on a young day whose
# statistics lag, to AND the message index with the whole QUEUED index (2 ms a message,
# the drain's limit at ~400 msg/s); by message id alone it reads a few index entries.
DELIVERIES_OF = "SELECT message_id, id, status, error FROM deliveries WHERE message_id {ids}"
# (message id, status, error), then the time.
ROLL_UP = Many(
    sqlite="UPDATE messages SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
    pg="UPDATE messages m SET status = u.status, error = u.error, updated_at = $4"
       " FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, status, error)"
       " WHERE m.id = u.id")
MESSAGE_OF = "SELECT message_id FROM deliveries WHERE id = ?"
_INFO_COLS = "id, message_id, destination, status, attempts, error, updated_at"
MAX_NOTE = 500


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


def rolled_up(rows: Sequence[Row]) -> list[tuple[int, str, str | None]]:
    """(message id, status, error) for each message of *rows* (message id, delivery id,
    status, error: every delivery of those messages) none of whose deliveries waits: ERROR
    with its first failed delivery's error if one failed, SENT otherwise."""
    waiting: set[int] = set()
    failed: dict[int, tuple[int, str | None]] = {}  # message: its first failed delivery
    seen: set[int] = set()
    for message_id, delivery_id, status, text in rows:
        seen.add(message_id)
        if status == DeliveryStatus.QUEUED:
            waiting.add(message_id)
        elif status == DeliveryStatus.ERROR:
            first = failed.get(message_id)
            if first is None or delivery_id < first[0]:
                failed[message_id] = (delivery_id, text)
    return [(m, str(Status.ERROR), failed[m][1]) if m in failed else (m, str(Status.SENT), None)
            for m in sorted(seen - waiting)]


async def roll_up(tx: Tx, messages: Sequence[int], now: float) -> None:
    """Roll each of *messages* (their rows locked) up once none of its deliveries waits."""
    ids, params = tx.ids_in(messages)
    done = rolled_up(await tx.rows(DELIVERIES_OF.format(ids=ids), *params))
    await tx.many(ROLL_UP, done, now)


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
        await tx.many(FINISH, [(did, s, response, error)
                               for did, _, s, response, error in results], now)
        await roll_up(tx, messages, now)


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
        message_id, now = done
        await roll_up(tx, [message_id], now)
    return done is not None


async def requeue_op(tx: Tx, delivery_id: int, note: str) -> bool:
    done = await _operate(tx, delivery_id, REQUEUE, note)
    if done is not None:
        message_id, now = done
        await tx.execute(MESSAGE_QUEUED, now, message_id)
    return done is not None
