"""Operations on messages written once for both stores (``engine.store.tx``).

The hot path stays with each store: a message's insert (group commit, one
statement per group) and a processed batch's statuses are written the fastest
way each database has (``sqlite``: multi-row VALUES; ``postgres``: ``unnest``
arrays), as are claims and retention (leases and day partitions on PostgreSQL).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.store.signals import Topic, reprocessed_ids
from engine.store.tx import Tx, announcing

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


class MessageWrites(abc.ABC):
    """The message operations of ``Store`` written once (mixed into both stores)."""

    _transact: Callable[..., Awaitable[Any]]

    async def reprocess(self, message_ids: Sequence[int], *, announce: bool = False) -> int:
        """Put messages back to RECEIVED (their deliveries are re-created by the pipeline);
        how many were found.

        *announce*: also signal running engines in the same transaction (a change made
        outside the engine, e.g. the CLI: see ``engine.store.signals``). Raises
        ``StoreUnavailable`` (try again later) or ``StoreError``."""
        op = announcing(reprocess_op, Topic.MESSAGES, reprocessed_ids) if announce else \
            reprocess_op
        return int(await self._transact(op, list(message_ids)))
