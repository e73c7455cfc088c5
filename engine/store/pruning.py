"""Message retention (``Store.prune_messages``), written once for both stores.

A run forgets final messages received before a cutoff, at most ``prune_max_per_run`` of
them (then it says ``more``), archiving them first when asked:

1. **Whole days** (``_old_days``, ``_drop_days``): PostgreSQL keeps messages in day
   partitions and drops a day before the cutoff whose messages are all final (the disk is
   freed at once), oldest first, one at least, as many as fit in the cap. SQLite has no
   partitions: its one span is everything before the cutoff.
2. **Spans, row by row**: the days kept (something of them is unfinished) and the part of
   the cutoff's day before it are paged through (``prune_page_op``, one writer transaction
   a page) and their prunable messages deleted (``prune_ids_op``), within what is left of the
   cap. Each database pages by its own index (``PruneSQL``).
3. **With an archive**: every message about to go is read first (``_archive_batches``) and
   written (``engine.store.archive``); then the whole days the archive holds completely are
   dropped and every other archived message is deleted by id.

A message changed after the run began (reprocessed, perhaps final again) is left for the
next run, so what is deleted is always what the archive holds. Where the databases differ
is a hook: the transaction's ``same_day`` and ``within`` (day partitions), ``shrink`` (SQLite gives
freed pages back to the file system) and ``many`` (deletes); the store's
``_retention_lock`` (PostgreSQL: one process prunes at a time), ``_old_days``,
``_drop_days`` and ``_after_prune`` (SQLite: a checkpoint cuts the file), whose defaults
here are those of a database with no partitions and one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.store.archive import DAY, Item, write_archive
from engine.store.base import FINAL_STATUSES, PRUNE_BATCH, WAITING_DELIVERY, PruneResult
from engine.store.records import Delivery, delivery_row, message_row
from engine.store.tx import Many, Tx, WriterStore

Span = tuple[float, float]  # received_at from, to (excluded)
Key = tuple[float, int]  # where paging a span goes on from: (received_at, id)

# A message retention may delete: final, none of its deliveries waiting (``{day}``: the
# delivery is in the message's day, ``Tx.same_day``), plus each database's rule.
PRUNABLE = (f"m.status IN ({','.join(repr(s) for s in FINAL_STATUSES)}) AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.message_id = m.id{day} AND"
            f" d.status = '{WAITING_DELIVERY}')")
# ...and not changed since the run began (?: its start): a message reprocessed after it was
# archived, perhaps final again, keeps its new data for the next run's archive.
UNCHANGED = "(m.updated_at IS NULL OR m.updated_at <= ?)"

# Forget messages (id, received_at) with their raw bytes, layers and deliveries.
FORGET = Many(
    # SQLite cascades to the rest (foreign keys).
    sqlite="DELETE FROM messages WHERE id = ? AND received_at = ?",
    # Partitioned tables carry no foreign keys: what SQLite cascades, by hand.
    pg="WITH g AS (SELECT * FROM unnest($1::bigint[], $2::float8[]) AS g(id, at)),"
       " r AS (DELETE FROM message_raw x USING g WHERE x.id = g.id AND x.received_at = g.at),"
       " c AS (DELETE FROM content x USING g WHERE x.message_id = g.id"
       " AND x.received_at = g.at),"
       " d AS (DELETE FROM deliveries x USING g WHERE x.message_id = g.id"
       " AND x.received_at = g.at)"
       " DELETE FROM messages x USING g WHERE x.id = g.id AND x.received_at = g.at")


@dataclass(frozen=True, slots=True)
class PruneSQL:
    """What retention's SQL is on one database (portable SQL on alias ``m``).

    ``prunable``: the database's own rule beside ``PRUNABLE`` (`` AND ...``, or empty);
    ``page``: the old messages of a span after a key (parameters: the span's end, the key's
    received_at, its id), in ``order``, by an index; ``by_time``: the key moves on by
    received_at too (else it stays the span's start, and ids alone order the page)."""

    prunable: str
    page: str
    order: str
    by_time: bool


def _prunable(tx: Tx, sql: PruneSQL) -> str:
    return PRUNABLE.format(day=tx.same_day("d", "m")) + sql.prunable


async def prune_ids_op(tx: Tx, sql: PruneSQL, ids: Sequence[int], before: float,
                       since: float) -> tuple[int, int]:
    """Delete those of *ids* still prunable and unchanged since *since* (checked again, the
    rows locked: one may have been reprocessed since it was read); (messages, bytes given
    back to the file system)."""
    among, params = tx.ids_in(ids)
    gone = await tx.rows(f"SELECT m.id, m.received_at FROM messages m WHERE m.id {among} AND"
                         f" m.received_at < ? AND {UNCHANGED} AND {_prunable(tx, sql)}"
                         f"{tx.for_update}", *params, before, since)
    if not gone:
        return 0, 0
    await tx.many(FORGET, [(int(r[0]), float(r[1])) for r in gone])
    return len(gone), await tx.shrink() or 0


async def prune_page_op(tx: Tx, sql: PruneSQL, span: Span, since: float, after: Key,
                        limit: int) -> tuple[int, int, Key | None]:
    """Look at the next *limit* messages of *span* after *after* and delete the prunable
    ones; (messages, bytes given back, the key to go on from: None when none is left)."""
    rows = await tx.rows(f"SELECT m.id, m.received_at FROM messages m WHERE {sql.page} ORDER BY"
                         f" {sql.order} LIMIT ?", span[1], *after, limit)
    if not rows:
        return 0, 0, None
    n, freed = await prune_ids_op(tx, sql, [int(r[0]) for r in rows], span[1], since)
    last = rows[-1]
    return n, freed, (float(last[1]) if sql.by_time else after[0], int(last[0]))


async def shrink_op(tx: Tx) -> int | None:
    return await tx.shrink()


async def archive_page_op(tx: Tx, sql: PruneSQL, select: tuple[str, str], span: Span,
                          since: float, after: Key, limit: int) -> list[Item]:
    """The next *limit* prunable messages of *span* after *after* unchanged since *since*,
    with their layers and deliveries (*select*: the store's message and delivery SELECTs)."""
    rows = await tx.rows(f"{select[0]} WHERE {sql.page} AND {UNCHANGED} AND"
                         f" {_prunable(tx, sql)} ORDER BY {sql.order} LIMIT ?",
                         span[1], *after, since, limit)
    msgs = {m.id: m for m in map(message_row, rows)}
    if not msgs:
        return []
    among, params = tx.ids_in(list(msgs))
    day, bounds = tx.within("c", span)
    for mid, layer, data in await tx.rows(f"SELECT message_id, layer, data FROM content c"
                                          f" WHERE message_id {among}{day} ORDER BY"
                                          " message_id, created_at", *params, *bounds):
        msgs[mid].layers[layer] = bytes(data)
    deliveries: dict[int, list[Delivery]] = {mid: [] for mid in msgs}
    day, bounds = tx.within("d", span)
    for row in await tx.rows(f"{select[1]} WHERE d.message_id {among}{day} ORDER BY d.id",
                             *params, *bounds):
        d = delivery_row(row)
        deliveries[d.message_id].append(d)
    return [(m, deliveries[mid]) for mid, m in msgs.items()]


@dataclass(slots=True)
class _Plan:
    """What one archiving run takes: whole days, then spans within a budget."""

    days: list[int]
    spans: list[Span]
    budget: int  # messages the spans may still give; the whole days are counted already
    more: bool = False  # the budget ran out before the spans did


class Pruning(WriterStore):
    """``prune_messages`` of ``Store``, written once (module docstring)."""

    prune_max_per_run: int
    _PRUNE: PruneSQL
    _MESSAGE_SELECT: str
    _DELIVERY_SELECT: str

    # -- hooks: a database with no day partitions and one process ---------------------------
    @contextlib.asynccontextmanager
    async def _retention_lock(self) -> AsyncIterator[bool]:
        """Held for a whole run; False: another process is pruning (the run does nothing)."""
        yield True

    async def _old_days(self, before: float, result: PruneResult
                        ) -> tuple[dict[int, int], list[Span]]:
        """The days before *before* all final (day -> messages), and the spans whose final
        messages go row by row, oldest first."""
        return {}, [(float("-inf"), before)]

    async def _drop_days(self, days: dict[int, int], newest: dict[int, int] | None,
                         since: float | None, result: PruneResult) -> set[int]:
        """Drop whole *days*; those dropped."""
        return set()

    async def _after_prune(self, result: PruneResult) -> None:
        """After a run (the lock released)."""

    # -- the run ----------------------------------------------------------------------------
    async def prune_messages(self, before: float, archive: Path | None = None) -> PruneResult:
        """Forget final messages received before *before* and free their disk space.

        A message goes with its raw bytes, content layers and deliveries, and only when its
        status is final and none of its deliveries is still QUEUED: nothing unfinished is
        deleted, however old. With *archive* (a directory), every message about to go is
        first written to one gzip JSON-lines file there (``engine.store.archive``), synced,
        and only then deleted; if the archive cannot be written, nothing is deleted.
        PostgreSQL drops whole days first; one process prunes at a time (another that tries
        meanwhile does nothing: ``skipped``). One run forgets at most ``prune_max_per_run``
        messages and then says ``more`` (module docstring).

        Raises ``ArchiveError`` when the archive cannot be written (nothing is
        deleted), ``StoreUnavailable`` (retry later) or ``StoreError``."""
        before = float(before)
        result = PruneResult()
        async with self._retention_lock() as mine:
            if not mine:
                result.skipped = True
                return result
            result.bytes_freed += await self._shrinks(result)
            await self._prune(before, archive, result)
        result.days_kept = sorted(set(result.days_kept))
        await self._after_prune(result)
        return result

    async def _shrinks(self, result: PruneResult) -> int:
        """Whether the file gives freed pages back (``file_shrinks``); bytes it did now."""
        freed = await self._transact(shrink_op)
        result.file_shrinks = freed is not None
        return freed or 0

    async def _prune(self, before: float, archive: Path | None, result: PruneResult) -> None:
        since = time.time()  # rows changed after this are left for the next run
        budget = max(1, int(self.prune_max_per_run))
        whole, spans = await self._old_days(before, result)
        days: dict[int, int] = {}  # whole days this run takes: oldest first, at least one
        for day, n in whole.items():
            if days and n > budget:
                result.more = True
                break
            days[day] = n
            budget -= n
        budget = max(0, budget)
        if archive is None:
            await self._drop_days(days, None, None, result)
            await self._prune_spans(spans, since, budget, result)
            return
        plan = _Plan(days=list(days), spans=spans, budget=budget)
        archived = await write_archive(archive, before, self._archive_batches(plan, since))
        result.archive = archived.path
        result.more |= plan.more
        dropped: set[int] = set()
        if days:
            counts, newest = await asyncio.to_thread(
                lambda: (archived.per_day(), archived.newest_per_day()))
            # A day is dropped only if the archive holds all of it (as many as it had).
            complete = {day: n for day, n in days.items() if counts[day] == n}
            result.days_kept += [day for day in days if day not in complete]
            dropped = await self._drop_days(complete, newest, since, result)
        # Everything else archived goes row by row: kept days (unfinished, changed or busy)
        # too, so that no message is archived by two runs.
        ids = await asyncio.to_thread(archived.ids_outside, dropped)
        for start in range(0, len(ids), PRUNE_BATCH):
            n, freed = await self._transact(prune_ids_op, self._PRUNE,
                                            ids[start:start + PRUNE_BATCH], before, since)
            self._count(result, n, freed)

    async def _prune_spans(self, spans: list[Span], since: float, budget: int,
                           result: PruneResult) -> None:
        """Delete the prunable messages of *spans* a page at a time, within *budget*."""
        for span in spans:
            key: Key | None = (span[0], 0)
            while key is not None and budget > 0:
                n, freed, key = await self._transact(prune_page_op, self._PRUNE, span, since,
                                                     key, min(PRUNE_BATCH, budget))
                budget -= n
                self._count(result, n, freed)
            if key is not None:
                result.more = True
                return

    @staticmethod
    def _count(result: PruneResult, n: int, freed: int) -> None:
        result.messages += n
        result.batches += 1 if n else 0
        result.bytes_freed += freed

    async def _archive_batches(self, plan: _Plan, since: float) -> AsyncIterator[list[Item]]:
        """What *plan* takes, with layers and deliveries, a batch at a time: every prunable
        message of its whole days, then those of its spans up to its budget."""
        for day in plan.days:
            async for batch in self._archive_span((float(day * DAY), float((day + 1) * DAY)),
                                                  since, None):
                yield batch
        for span in plan.spans:
            if plan.budget <= 0:
                plan.more = True
                return
            async for batch in self._archive_span(span, since, plan):
                yield batch

    async def _archive_span(self, span: Span, since: float, plan: _Plan | None
                            ) -> AsyncIterator[list[Item]]:
        """Prunable messages received within *span*, in key order; with *plan*, within its
        budget (and ``plan.more`` when that runs out)."""
        after: Key = (span[0], 0)
        select = (self._MESSAGE_SELECT, self._DELIVERY_SELECT)
        while plan is None or plan.budget > 0:
            limit = PRUNE_BATCH if plan is None else min(PRUNE_BATCH, plan.budget)
            batch: list[Item] = await self._apart(archive_page_op, self._PRUNE, select, span,
                                                  since, after, limit)
            if not batch:
                return
            if plan is not None:
                plan.budget -= len(batch)
            yield batch
            last = batch[-1][0]
            after = (last.received_at if self._PRUNE.by_time else after[0], last.id)
        assert plan is not None
        plan.more = True  # the budget ran out inside this span

