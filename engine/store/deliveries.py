"""Delivery outcomes and operator actions, written once for both stores.

The rules, in portable SQL (``?`` placeholders; PostgreSQL runs them through
``pg_schema.pg`` and adds its claim columns, ``engine.store.pg_deliveries``):

* **finish** (the worker): SENT always stands (the peer has it, whatever an
  operator decided meanwhile); ERROR only replaces a row still QUEUED, so an
  operator's skip is not overwritten by a late failure. A transient **attempt**
  is counted only on a QUEUED row.
* **end** (an operator's skip or cancel): QUEUED → ERROR with a note naming
  who and why (``SKIPPED by ann: why``); the queue moves on.
* **requeue** (an operator's retry): ERROR → QUEUED. The delivery keeps its
  id, hence its place: it is the next one its destination sends.

After each, the message is rolled up: once none of its deliveries waits it is
ERROR if one failed (with that error), SENT otherwise; a requeued delivery
puts its message back to QUEUED.
"""

from __future__ import annotations

import abc
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.model import DeliveryStatus

SKIPPED, CANCELLED = "SKIPPED", "CANCELLED"

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


class DeliveryStore(abc.ABC):
    """Reads shared by both stores (run by each store's ``_rows``) and the operator actions."""

    _rows: Callable[..., Awaitable[list[Any]]]

    @abc.abstractmethod
    async def end_delivery(self, delivery_id: int, note: str) -> bool:
        """A QUEUED delivery ends as ERROR with *note* (see ``operator_note``); False when it
        is not QUEUED (or does not exist)."""

    @abc.abstractmethod
    async def requeue_delivery(self, delivery_id: int, note: str) -> bool:
        """An ERROR delivery goes back to QUEUED, sent next; False when it is not ERROR."""

    async def delivery_status(self, delivery_id: int) -> DeliveryStatus | None:
        """The status of one delivery now (None: no such delivery)."""
        rows = await self._rows("SELECT status FROM deliveries WHERE id = ?", delivery_id)
        return DeliveryStatus(rows[0][0]) if rows else None

    async def get_delivery(self, delivery_id: int) -> DeliveryInfo | None:
        rows = await self._rows(f"SELECT {_INFO_COLS} FROM deliveries WHERE id = ?",
                                delivery_id)
        return _info(rows[0]) if rows else None

    async def list_deliveries(self, destination: str, status: DeliveryStatus | None = None,
                              limit: int = 50) -> list[DeliveryInfo]:
        """QUEUED ones in queue order (the head first); otherwise newest first."""
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


# -- SQLite: run in the writer thread's transaction -------------------------------------------

def rollup_op(conn: sqlite3.Connection, message_id: int, now: float) -> None:
    conn.execute(ROLLUP, (now, message_id, message_id, message_id, message_id))


def finish_op(conn: sqlite3.Connection, delivery_id: int, message_id: int, status: str,
              response: bytes | None, error: str | None) -> None:
    now = time.time()
    conn.execute(finish_sql(status), (status, response, error, now, delivery_id))
    rollup_op(conn, message_id, now)


def attempt_op(conn: sqlite3.Connection, delivery_id: int, error: str) -> None:
    conn.execute(ATTEMPT, (error, time.time(), delivery_id))


def end_op(conn: sqlite3.Connection, delivery_id: int, note: str) -> bool:
    now = time.time()
    if not conn.execute(END.format(claims=""), (note, now, delivery_id)).rowcount:
        return False
    (message_id,) = conn.execute(MESSAGE_OF, (delivery_id,)).fetchone()
    rollup_op(conn, message_id, now)
    return True


def requeue_op(conn: sqlite3.Connection, delivery_id: int, note: str) -> bool:
    now = time.time()
    if not conn.execute(REQUEUE.format(claims=""), (note, now, delivery_id)).rowcount:
        return False
    (message_id,) = conn.execute(MESSAGE_OF, (delivery_id,)).fetchone()
    conn.execute(MESSAGE_QUEUED, (now, message_id))
    return True


class SQLiteDeliveries(DeliveryStore):
    """Mixed into ``SQLiteStore``: the actions run through its writer thread."""

    _write: Callable[..., Any]

    async def end_delivery(self, delivery_id: int, note: str) -> bool:
        return bool(await self._write(end_op, delivery_id, note))

    async def requeue_delivery(self, delivery_id: int, note: str) -> bool:
        return bool(await self._write(requeue_op, delivery_id, note))
