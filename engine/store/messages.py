"""Operations on messages written once for both stores (``engine.store.tx``).

The hot path stays with each store: a message's insert (group commit, one
statement per group) and a processed batch's statuses are written the fastest
way each database has (``sqlite``: multi-row VALUES; ``postgres``: ``unnest``
arrays), as are claims and retention (leases and day partitions on PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.model import Message
from engine.store.records import Delivery, MessageQuery, delivery_row, message_row
from engine.store.signals import Topic, reprocessed_ids
from engine.store.tx import Tx, WriterStore, announcing

_IDS_PER_UPDATE = 1024


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
