"""PostgreSQL keeps messages in daily partitions: retention drops whole days whose messages
are all final (disk freed at once), a day with unfinished work and today's messages stay, and
a message for a dropped day can still be stored."""

from __future__ import annotations

import time

import asyncpg

from engine.model import Status
from engine.store.base import NewMessage, Outcome, open_store
from engine.store.postgres import PostgresStore

DAY = 86400.0


async def test_old_days_are_dropped_whole_and_new_ones_made_on_demand(pg_url: str) -> None:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        now = time.time()
        old = [await store.insert_message(NewMessage("ris", now - 10 * DAY, b"x" * 5000,
                                                     key="P1")) for _ in range(20)]
        new = await store.insert_message(NewMessage("ris", now, b"MSH|new", key="P1"))
        waiting = await store.insert_message(NewMessage("ris", now - 9 * DAY, b"w", key="P2"))
        await store.apply_outcomes([Outcome(i, Status.TRANSFORMED, layers={"parsed": b"p"})
                                    for i in old])  # final: nowhere to send them
        await store.apply_outcomes([Outcome(i, Status.TRANSFORMED, layers={"parsed": b"p"},
                                            deliveries=[("ehr", None)])
                                    for i in (waiting, new)])
        conn = await asyncpg.connect(pg_url)
        try:
            size = "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c" \
                   " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE $1"
            old_day = int((now - 10 * DAY) // DAY)
            assert await conn.fetchval(size, f"message_raw_d{old_day}%") > 0

            dropped = await store.drop_message_days(now - 5 * DAY)
            assert dropped == [old_day]
            assert await conn.fetchval(size, f"%_d{old_day}%") == 0  # the files are gone
        finally:
            await conn.close()
        assert await store.get_message(old[0]) is None
        kept = await store.get_message(new)
        assert kept is not None and kept[0].layers == {"parsed": b"p"} and len(kept[1]) == 1
        # The day of a message still waiting for its delivery is not dropped.
        assert await store.get_message(waiting) is not None
        assert [d.message_id for d in await store.next_deliveries("ehr", 10)] == [new, waiting]
        # A late message for the dropped day gets its partition again.
        late = await store.insert_message(NewMessage("ris", now - 10 * DAY, b"late"))
        found = await store.get_message(late)
        assert found is not None and found[0].raw == b"late"
    finally:
        await store.close()
