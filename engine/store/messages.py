"""Operations on messages written once for both stores (``engine.store.tx``).

A processed batch's outcomes (``apply_outcomes``) are one operation: its bulk statements
are ``Many`` (executemany on SQLite, ``unnest`` arrays on PostgreSQL, whose content and
deliveries carry their day partition's ``received_at``) and its id lists ``Tx.ids_in``.
What stays with each store: the message insert itself (``submit_insert`` queues it; each
writer batches a group's inserts its own fastest way: multi-row VALUES, ``unnest``),
claims (leases on PostgreSQL) and retention (day partitions on PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.model import Message, Status
from engine.store.clinical_sql import apply_domain_events
from engine.store.records import Delivery, MessageQuery, delivery_row, message_row
from engine.store.signals import Topic, reprocessed_ids
from engine.store.tx import Many, Tx, WriterStore, announcing, new_message

if TYPE_CHECKING:
    from engine.store.base import InsertCallback, NewMessage, Outcome
    from engine.store.clinical import CaseRow

_IDS_PER_UPDATE = 1024

# (message id, layer, data), then the time.
PUT_LAYERS = Many(
    sqlite="INSERT OR REPLACE INTO content (message_id, layer, data, created_at)"
           " VALUES (?,?,?,?)",
    pg="INSERT INTO content (message_id, received_at, layer, data, created_at)"
       " SELECT m.id, m.received_at, u.layer, u.data, $4 FROM unnest($1::bigint[],"
       " $2::text[], $3::bytea[]) AS u(mid, layer, data) JOIN messages m ON m.id = u.mid"
       " ON CONFLICT (message_id, layer, received_at) DO UPDATE SET data = excluded.data,"
       " created_at = excluded.created_at")
# (message id, destination, payload or NULL: the raw message), then the time. Ids follow
# the rows' order (message order): the order each destination sends in.
QUEUE_DELIVERIES = Many(
    sqlite="INSERT INTO deliveries (message_id, destination, status, attempts, payload,"
           " updated_at) VALUES (?,?,'QUEUED',0,?,?)",
    pg="INSERT INTO deliveries (id, message_id, received_at, destination, status, attempts,"
       " payload, updated_at, msg_key) SELECT nextval(pg_get_serial_sequence('deliveries',"
       " 'id')), s.* FROM (SELECT m.id, m.received_at, u.dest, 'QUEUED', 0, u.payload,"
       " $4::float8, m.msg_key FROM unnest($1::bigint[], $2::text[], $3::bytea[])"
       " WITH ORDINALITY AS u(mid, dest, payload, ord) JOIN messages m ON m.id = u.mid"
       " ORDER BY u.ord OFFSET 0) s")


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[start:start + _IDS_PER_UPDATE])
            for start in range(0, len(ids), _IDS_PER_UPDATE)]


async def outcomes_op(tx: Tx, outcomes: Sequence[Outcome]) -> list[CaseRow]:
    """Record a processed batch (``Messages.apply_outcomes``), in message order: layers, the
    deliveries that replace those still queued, statuses (claims handed back), then the
    domain events."""
    now = time.time()
    ordered = sorted(outcomes, key=lambda o: o.message_id)
    await tx.many(PUT_LAYERS, [(o.message_id, layer, data) for o in ordered
                               for layer, data in o.layers.items()], now)
    forwarded = [o for o in ordered if o.deliveries]
    for chunk in _chunks([o.message_id for o in forwarded]):
        among, params = tx.ids_in(chunk)
        await tx.execute(f"DELETE FROM deliveries WHERE status = 'QUEUED' AND message_id"
                         f" {among}", *params)
    await tx.many(QUEUE_DELIVERIES, [(o.message_id, dest, payload) for o in forwarded
                                     for dest, payload in o.deliveries], now)
    await _set_statuses(tx, ordered, now)
    if not any(o.domain is not None for o in ordered):
        return []
    return await apply_domain_events(tx, ordered)


async def _set_statuses(tx: Tx, ordered: Sequence[Outcome], now: float) -> None:
    """One UPDATE per (status, error) and chunk of ids, not one statement step per message
    (on SQLite each step hands the GIL over; a batch's outcomes share few results)."""
    by_result: dict[tuple[str, str | None], list[int]] = {}
    for o in ordered:
        status = str(Status.QUEUED if o.deliveries else o.status)
        by_result.setdefault((status, o.error), []).append(o.message_id)
    for (status, error), ids in by_result.items():
        for chunk in _chunks(ids):
            among, params = tx.ids_in(chunk)
            await tx.execute(f"UPDATE messages SET status = ?, error = ?, updated_at = ?"
                             f"{tx.unclaim} WHERE id {among}", status, error, now, *params)


async def reprocess_op(tx: Tx, ids: Sequence[int]) -> int:
    """Messages back to RECEIVED (and their claims handed back); how many there were."""
    n = 0
    now = time.time()
    for start in range(0, len(ids), _IDS_PER_UPDATE):
        chunk = list(ids[start:start + _IDS_PER_UPDATE])
        n += await tx.execute(f"UPDATE messages SET status = 'RECEIVED', error = NULL,"
                              f" updated_at = ?{tx.unclaim} WHERE id IN"
                              f" ({','.join('?' * len(chunk))})", now, *chunk)
    return n


class Messages(WriterStore):
    """The message operations and reads of ``Store`` written once (a base of ``Store``):
    writes in the writer's transaction (``_transact``), reads through ``_rows``. Each
    store names its own message and delivery SELECTs (PostgreSQL joins day partitions)."""

    _rows: Callable[..., Awaitable[list[Any]]]
    # "SELECT <message columns> FROM messages m ..." / "SELECT <delivery columns> FROM
    # deliveries d ...", in the order ``message_row`` / ``delivery_row`` read them.
    _MESSAGE_SELECT: str
    _DELIVERY_SELECT: str
    _OLDEST_QUEUED: str  # when the message behind a destination's head arrived (? = it)

    def submit_insert(self, msg: NewMessage, callback: InsertCallback) -> None:
        """Queue *msg* for the next group commit; *callback(id, error)* runs on the loop after it.
        Raises nothing: a failure reaches *callback* as ``StoreUnavailable`` or ``StoreError``."""
        self._submit(new_message, (msg,), callback)

    async def apply_outcomes(self, outcomes: Sequence[Outcome]) -> list[CaseRow]:
        """Record statuses, layers, deliveries and domain events of a processed batch in one
        transaction; return the cases that the domain events created (under the clinical lock
        when there are any: see ``pg_writer``).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        if not outcomes:
            return []
        return list(await self._transact(outcomes_op, list(outcomes),
                                         lock=any(o.domain is not None for o in outcomes)))

    async def get_message(self, message_id: int) -> tuple[Message, list[Delivery]] | None:
        """A message with its layers and deliveries (None: no such message). Raises
        ``StoreError`` when the database cannot be read."""
        rows = await self._rows(f"{self._MESSAGE_SELECT} WHERE m.id = ?", message_id)
        if not rows:
            return None
        msg = message_row(rows[0])
        for layer, data in await self._rows("SELECT layer, data FROM content WHERE"
                                            " message_id = ? ORDER BY created_at", message_id):
            msg.layers[layer] = bytes(data)
        drows = await self._rows(f"{self._DELIVERY_SELECT} WHERE d.message_id = ?"
                                 " ORDER BY d.id", message_id)
        return msg, [delivery_row(r) for r in drows]

    async def query_messages(self, query: MessageQuery) -> list[Message]:
        """Messages matching *query*, newest first. Raises ``StoreError`` when the database
        cannot be read."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for col, val in (("channel", query.channel), ("status", query.status),
                         ("message_type", query.message_type)):
            if val is not None:
                where.append(f"m.{col} = ?")
                params.append(val)
        for op, bound in ((">=", query.since), ("<", query.until)):
            if bound is not None:
                where.append(f"m.received_at {op} ?")
                params.append(float(bound))
        clause = " AND ".join(where)
        if query.control_id is None:
            sql = f"{self._MESSAGE_SELECT} WHERE {clause}"
        else:
            sql, params = self._by_control_id(clause, params, query.control_id)
        rows = await self._rows(f"{sql} ORDER BY 1 DESC LIMIT ?", *params, query.limit)
        return [message_row(r) for r in rows]

    def _by_control_id(self, clause: str, params: list[Any], control_id: str
                       ) -> tuple[str, list[Any]]:
        """The query for messages matching *clause* with a control id (a dialect hook)."""
        return (f"{self._MESSAGE_SELECT} WHERE {clause} AND m.control_id = ?",
                [*params, control_id])

    async def oldest_queued(self, destinations: Sequence[str]) -> dict[str, float]:
        """When the message behind each destination's oldest waiting delivery arrived.
        Raises ``StoreError`` when the database cannot be read."""
        out = {}
        for dest in destinations:
            rows = await self._rows(self._OLDEST_QUEUED, dest)
            if rows:
                out[dest] = float(rows[0][0])
        return out

    async def reprocess(self, message_ids: Sequence[int], *, announce: bool = False) -> int:
        """Put messages back to RECEIVED (their deliveries are re-created by the pipeline);
        how many were found.

        *announce*: also signal running engines in the same transaction (a change made
        outside the engine, e.g. the CLI: see ``engine.store.signals``). Raises
        ``StoreUnavailable`` (try again later) or ``StoreError``."""
        op = announcing(reprocess_op, Topic.MESSAGES, reprocessed_ids) if announce else \
            reprocess_op
        return int(await self._transact(op, list(message_ids)))
