"""PostgreSQL keeps messages in daily partitions: retention drops whole days whose messages
are all final (disk freed at once), a day with unfinished work and today's messages stay, and
a message for a dropped day can still be stored."""

from __future__ import annotations

import time

import asyncpg

from engine.model import Status
from engine.store import pg_schema
from engine.store.base import NewMessage, Outcome, open_store
from engine.store.postgres import PostgresStore
from tests.conftest import wait_for

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


async def test_a_day_that_has_doubled_is_analyzed_once_until_it_doubles_again(pg_url: str
                                                                              ) -> None:
    """A young day's partitions get statistics long before autovacuum's next look, so the
    planner finds rows by their keys (``pg_schema.analyze_grown_days``)."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:  # the store makes the day; closed, its own analyzing (every 2 s) leaves it to us
        now = time.time()
        await store.insert_message(NewMessage("ris", now, b"MSH|first", key="P1"))
    finally:
        await store.close()
    day = int(now // DAY)
    conn = await asyncpg.connect(pg_url)
    try:  # rows of the day written by a session that ends: its statistics are reported
        await conn.execute(f"ALTER TABLE messages_d{day} SET (autovacuum_enabled = false)")
        await conn.execute(
            "INSERT INTO messages (channel, received_at, status, msg_key)"
            " SELECT 'ris', $1, 'SENT', 'P' || g FROM generate_series(1, 1500) g", now)
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_url)
    try:
        live = ("SELECT n_live_tup FROM pg_stat_user_tables WHERE"
                " schemaname = current_schema() AND relname = $1")
        await wait_for(lambda: _at_least(conn, live, f"messages_d{day}", 1501))
        assert await pg_schema.analyze_grown_days(conn) == [f"messages_d{day}"]
        assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1"
                                   " AND relnamespace = current_schema()::regnamespace",
                                   f"messages_d{day}") == 1501
        assert await pg_schema.analyze_grown_days(conn) == []  # not grown since
    finally:
        await conn.close()


async def _at_least(conn: asyncpg.Connection, sql: str, table: str, n: int) -> bool:
    return int(await conn.fetchval(sql, table) or 0) >= n
