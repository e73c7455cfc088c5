"""Message retention on both stores: only final messages go (with their raw bytes, layers and
deliveries), nothing unfinished however old; the archive written first reads back; the disk
is really freed (SQLite file shrinks, PostgreSQL day partitions are dropped)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.cli import main as cli_main
from engine.flow.retention import Retention
from engine.model import DeliveryStatus, Message, Status
from engine.store.archive import ArchiveError, archive_name, read_archive
from engine.store.base import Delivery, NewMessage, Outcome, PruneResult, Store, open_store
from engine.store.postgres import PostgresStore
from engine.store.sqlite import SQLiteStore
from tests.conftest import wait_for

DAY = 86400.0
TODAY = int(time.time() // DAY)


def at(days_ago: int, hour: int = 3) -> float:
    """A time inside the UTC day *days_ago* days back (never near a day boundary)."""
    return (TODAY - days_ago) * DAY + hour * 3600.0


def hl7(n: int, pad: int = 0) -> bytes:
    return (f"MSH|^~\\&|RIS|H|RB|H|20260101||ORM^O01|C{n}|P|2.5\rPID|1||MRN{n}\r"
            .encode() + b"NTE|1||" + b"x" * pad)


async def add(store: Store, received_at: float, n: int, pad: int = 0) -> int:
    return await store.insert_message(NewMessage("ris", received_at, hl7(n, pad),
                                                 control_id=f"C{n}", message_type="ORM^O01",
                                                 key=f"MRN{n}"))


async def sent(store: Store, received_at: float, n: int, pad: int = 0) -> int:
    """A message forwarded to "ehr" and acknowledged: SENT, final."""
    mid = await add(store, received_at, n, pad)
    await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, layers={"parsed": b"P%d" % n},
                                        deliveries=[("ehr", None)])])
    await finish(store, mid, DeliveryStatus.SENT)
    return mid


async def queued(store: Store, received_at: float, n: int, destinations: int = 1) -> int:
    """A message whose deliveries still wait: QUEUED, not final."""
    mid = await add(store, received_at, n)
    dests = [("ehr", None), ("pacs", b"other payload")][:destinations]
    await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, deliveries=dests)])
    return mid


async def filtered(store: Store, received_at: float, n: int, pad: int = 0) -> int:
    mid = await add(store, received_at, n, pad)
    await store.apply_outcomes([Outcome(mid, Status.FILTERED, layers={"parsed": b"P%d" % n})])
    return mid


async def finish(store: Store, mid: int, status: DeliveryStatus, dest: str = "ehr") -> None:
    for d in await store.next_deliveries(dest, 1000):
        if d.message_id == mid:
            await store.finish_delivery(d, status, b"MSA|AA|1", None)


async def exists(store: Store, *ids: int) -> list[bool]:
    return [await store.get_message(i) is not None for i in ids]


async def test_only_old_final_messages_go_and_unfinished_ones_stay_deliverable(
        store: Store) -> None:
    old_sent = [await sent(store, at(10), i) for i in range(3)]
    old_filtered = [await filtered(store, at(10), 10 + i) for i in range(2)]
    old_error = await add(store, at(10), 20)
    await store.apply_outcomes([Outcome(old_error, Status.TRANSFORMED,
                                        deliveries=[("ehr", None)])])
    await finish(store, old_error, DeliveryStatus.ERROR)
    old_queued = await queued(store, at(10), 30)
    half_done = await queued(store, at(10), 31, destinations=2)
    await finish(store, half_done, DeliveryStatus.SENT)  # "pacs" still waits
    old_received = await add(store, at(10), 32)
    recent = [await sent(store, at(0), 40 + i) for i in range(2)]

    result = await store.prune_messages(at(5))

    assert result.messages == 6 and result.batches >= 1
    assert await exists(store, *old_sent, *old_filtered, old_error) == [False] * 6
    assert await exists(store, old_queued, half_done, old_received, *recent) == [True] * 5
    if isinstance(store, PostgresStore):  # the old day holds unfinished work: kept whole
        assert result.days_dropped == [] and result.days_kept == [TODAY - 10]
    # The unfinished ones are still delivered and processed afterwards.
    waiting = {d.message_id for d in await store.next_deliveries("ehr", 100)}
    assert waiting == {old_queued}
    assert [d.message_id for d in await store.next_deliveries("pacs", 100)] == [half_done]
    assert [m.id for m in await store.fetch_received("ris", 100)] == [old_received]
    await finish(store, old_queued, DeliveryStatus.SENT)
    await finish(store, half_done, DeliveryStatus.SENT, dest="pacs")
    await store.apply_outcomes([Outcome(old_received, Status.FILTERED)])
    found = await store.get_message(old_queued)
    assert found is not None and found[0].status == Status.SENT

    again = await store.prune_messages(at(5))  # now final: they go on the next run
    assert again.messages == 3
    assert await exists(store, old_queued, half_done, old_received) == [False] * 3
    assert await exists(store, *recent) == [True, True]
    if isinstance(store, PostgresStore):
        assert again.days_dropped == [TODAY - 10] and again.bytes_freed > 0


async def test_a_reprocessed_old_message_is_not_pruned(store: Store) -> None:
    mid = await sent(store, at(9), 1)
    await sent(store, at(0), 2)
    assert await store.reprocess([mid]) == 1  # back to RECEIVED: unfinished again
    result = await store.prune_messages(at(5))
    assert result.messages == 0 and await exists(store, mid) == [True]


async def test_message_ids_are_never_handed_out_twice(store: Store) -> None:
    old = [await sent(store, at(9), i) for i in range(5)]  # everything old and final
    result = await store.prune_messages(at(5))
    # SQLite numbers messages max(id) + 1: it keeps the newest row so the count never goes back.
    assert result.messages == (4 if isinstance(store, SQLiteStore) else 5)
    assert await store.insert_message(NewMessage("ris", at(0), b"MSH|next")) > max(old)


async def test_ingest_goes_on_while_pruning(store: Store) -> None:
    import asyncio

    for start in range(0, 2500, 500):
        ids = await asyncio.gather(*[add(store, at(9), i, pad=2000)
                                     for i in range(start, start + 500)])
        await store.apply_outcomes([Outcome(i, Status.FILTERED) for i in ids])
    # One new message first: SQLite never prunes the newest row, so were the prune's first
    # batch to run before ingest's first insert, the newest old one would stay.
    new: list[int] = [await add(store, at(0), 10_000)]

    async def ingest() -> None:
        for i in range(1, 300):
            new.append(await add(store, at(0), 10_000 + i))

    result, _ = await asyncio.gather(store.prune_messages(at(5)), ingest())
    assert result.messages == 2500
    assert (result.batches, result.days_dropped) == (
        (3, []) if isinstance(store, SQLiteStore) else (0, [TODAY - 9]))
    assert await exists(store, *new) == [True] * 300
    assert [m.id for m in await store.fetch_received("ris", 1000)] == new


async def test_archive_holds_everything_pruned_and_reads_back(store: Store,
                                                              tmp_path: Path) -> None:
    old = [await sent(store, at(8), i) for i in range(3)]
    other = await add(store, at(8), 3)  # a delivery with its own payload and an error
    await store.apply_outcomes([Outcome(other, Status.TRANSFORMED, layers={"mapped": b"M"},
                                        deliveries=[("pacs", b"other payload")])])
    await finish(store, other, DeliveryStatus.ERROR, dest="pacs")
    old.append(other)
    old.append(await filtered(store, at(7), 4))
    unfinished = await queued(store, at(8), 5)
    await sent(store, at(0), 6)
    before: dict[int, tuple[Message, list[Delivery]]] = {}
    for mid in old:
        found = await store.get_message(mid)
        assert found is not None
        before[mid] = found

    folder = tmp_path / "archive"
    result = await store.prune_messages(at(5), archive=folder)

    assert result.messages == len(old)
    assert result.archive == folder / archive_name(at(5))
    assert stat.S_IMODE(result.archive.stat().st_mode) == 0o600  # it holds patient data
    archived = {m.id: (m, d) for m, d in read_archive(result.archive)}
    assert archived == before  # rows, raw bytes, every layer, every delivery
    assert before[other][1][0].payload == b"other payload"
    assert await exists(store, *old) == [False] * len(old)
    assert await exists(store, unfinished) == [True]
    # Nothing left to prune: no empty archive file is left behind.
    assert (await store.prune_messages(at(5), archive=folder)).archive is None
    assert list(folder.iterdir()) == [result.archive]


async def test_nothing_is_deleted_when_the_archive_cannot_be_written(store: Store,
                                                                    tmp_path: Path) -> None:
    old = [await sent(store, at(8), i) for i in range(3)]
    await sent(store, at(0), 3)
    not_a_dir = tmp_path / "archive"
    not_a_dir.write_bytes(b"")
    with pytest.raises(ArchiveError) as failed:
        await store.prune_messages(at(5), archive=not_a_dir)
    assert "MRN" not in str(failed.value)
    assert await exists(store, *old) == [True] * 3
    assert await store.counts() == {("ris", "SENT"): 4}
    # The failed run let go of everything it held (PostgreSQL: the retention lock).
    again = await store.prune_messages(at(5))
    assert not again.skipped and again.messages == 3


async def test_sqlite_file_shrinks_after_pruning(tmp_path: Path) -> None:
    path = tmp_path / "rb.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await store._read("PRAGMA auto_vacuum"))[0][0] == 2  # INCREMENTAL when new
        for start in range(0, 3000, 500):
            ids = [await add(store, at(9), i, pad=6000) for i in range(start, start + 500)]
            await store.apply_outcomes([Outcome(i, Status.FILTERED, layers={"parsed": b"p" * 500})
                                        for i in ids])
        recent = [await sent(store, at(0), 5000 + i, pad=6000) for i in range(20)]
        await wait_for(lambda: path.stat().st_size > 18_000_000)  # checkpointed into the file
        size_before = path.stat().st_size

        result = await store.prune_messages(at(5))

        size_after = path.stat().st_size
        assert result.messages == 3000 and result.batches == 3
        assert size_after < size_before / 5, (size_before, size_after)
        assert result.bytes_freed >= (size_before - size_after) * 0.9
        assert await exists(store, *recent) == [True] * 20
    finally:
        await store.close()
    print(f"SQLite file {size_before} -> {size_after} bytes "
          f"(pruned {result.messages}, reported freed {result.bytes_freed})")


async def test_an_old_sqlite_database_shrinks_after_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # made before incremental auto-vacuum: NONE
    conn.execute("CREATE TABLE earlier (x)")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        for i in range(300):
            await filtered(store, at(9), i, pad=6000)
        recent = await filtered(store, at(0), 999)
        result = await store.prune_messages(at(5))
        assert result.messages == 300 and not result.file_shrinks and result.bytes_freed == 0
        before, after = await store.vacuum()
        assert after < before / 3
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL now
        check.close()
        for i in range(300):
            await filtered(store, at(9), 1000 + i, pad=6000)
        await filtered(store, at(0), 2000)
        assert (await store.prune_messages(at(5))).file_shrinks
        assert await exists(store, recent) == [True]
    finally:
        await store.close()


async def _partitions(pg_url: str) -> set[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'messages'"
            " AND p.relnamespace = current_schema()::regnamespace")
        return {r[0] for r in rows}
    finally:
        await conn.close()


async def test_pg_drops_final_days_and_keeps_a_day_with_unfinished_work(pg_url: str,
                                                                        tmp_path: Path) -> None:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        final_day = [await sent(store, at(12), i, pad=20000) for i in range(20)]
        filtered_day = [await filtered(store, at(11), 100 + i) for i in range(5)]
        mixed = [await sent(store, at(10), 200 + i) for i in range(4)]
        waiting = await queued(store, at(10), 250)
        partial = [await sent(store, at(3, hour=1), 300), await sent(store, at(3, hour=20), 301)]
        today = await sent(store, at(0), 400)
        days = {f"messages_d{TODAY - d}" for d in (12, 11, 10, 3, 0)}
        assert await _partitions(pg_url) == days

        # The cutoff falls inside day -3: its earlier message goes by DELETE, the later stays.
        result = await store.prune_messages(at(3, hour=12), archive=tmp_path / "a")

        assert result.days_dropped == [TODAY - 12, TODAY - 11]
        assert result.days_kept == [TODAY - 10]
        assert result.messages == 20 + 5 + 4 + 1 and result.bytes_freed > 0
        assert await _partitions(pg_url) == days - {f"messages_d{TODAY - 12}",
                                                    f"messages_d{TODAY - 11}"}
        assert await exists(store, *final_day, *filtered_day, *mixed, partial[0]) == [False] * 30
        assert await exists(store, waiting, partial[1], today) == [True] * 3
        assert result.archive is not None
        assert len(list(read_archive(result.archive))) == 30

        await finish(store, waiting, DeliveryStatus.SENT)
        again = await store.prune_messages(at(3, hour=12))
        assert again.days_dropped == [TODAY - 10] and again.messages == 1
        assert f"messages_d{TODAY - 10}" not in await _partitions(pg_url)
        late = await store.insert_message(NewMessage("ris", at(10), b"late"))  # day made again
        assert await exists(store, late) == [True]
    finally:
        await store.close()


async def test_retention_task_prunes_messages_and_logs_counts_only(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        old = [await sent(store, at(4), i) for i in range(5)]
        await sent(store, at(0), 9)
        retention = Retention(store, None, message_days=2, archive_dir=tmp_path / "archive")
        with caplog.at_level(logging.INFO, logger="radbridge.retention"):
            result = await retention.prune_messages()
            assert await retention.run_once() == (0, 0)  # instances: off
        assert result is not None and result.messages == 5 and result.archive is not None
        assert await exists(store, *old) == [False] * 5
        line = next(r.getMessage() for r in caplog.records if "RET-202" in r.getMessage())
        assert "messages=5" in line and f"archive={result.archive.name}" in line
        assert "MRN" not in caplog.text and "MSH" not in caplog.text
        assert await Retention(store, 1).prune_messages() is None  # messages: off
    finally:
        await store.close()


async def test_engine_runs_message_retention_from_the_config(engine_factory: Any, db_url: str,
                                                             tmp_path: Path) -> None:
    store = open_store(db_url)
    await store.open()
    old = [await sent(store, at(6), i) for i in range(3)]
    kept = await queued(store, at(6), 3)
    await sent(store, at(0), 4)
    await store.close()
    engine = await engine_factory(f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path}"
message_retention_days = 2
message_archive_dir = "{tmp_path / 'archive'}"
""")

    async def pruned() -> bool:
        return await exists(engine.store, *old) == [False] * 3

    await wait_for(pruned)
    assert await exists(engine.store, kept) == [True]
    assert len(list((tmp_path / "archive").glob("messages-before-*.jsonl.gz"))) == 1


def test_cli_prunes_and_prints_counts(db_url: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def fill() -> None:
        store = open_store(db_url)
        await store.open()
        for i in range(4):
            await sent(store, at(9), i)
        await sent(store, at(0), 9)
        await store.close()

    asyncio.run(fill())
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f'[store]\nurl = "{db_url}"\n')
    archive = tmp_path / "archive"
    assert cli_main(["messages", "--config", str(cfg), "prune", "--older-than-days", "5",
                     "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "pruned 4 message(s)" in out and f"archive: {archive}" in out
    assert len(os.listdir(archive)) == 1


async def _old_and_unfinished(store: Store) -> tuple[list[int], int, int]:
    """Old final messages over three days, one of them with a message still waiting, and a
    recent one: (old final ids, the waiting one, the recent one)."""
    final = [await sent(store, at(9), i) for i in range(3)]
    final += [await sent(store, at(8), 10 + i) for i in range(3)]
    waiting = await queued(store, at(8), 20)
    final += [await filtered(store, at(7), 30 + i) for i in range(2)]
    return final, waiting, await sent(store, at(0), 40)


@pytest.mark.parametrize("archived", [True, False], ids=["archive", "no-archive"])
async def test_a_backlog_drains_over_runs_of_at_most_the_cap(store: Store, tmp_path: Path,
                                                             archived: bool) -> None:
    final, waiting, recent = await _old_and_unfinished(store)
    store.prune_max_per_run = 5
    folder = tmp_path / "archive" if archived else None

    first = await store.prune_messages(at(5), archive=folder)
    second = await store.prune_messages(at(5), archive=folder)

    assert (first.messages, first.more) == (5, True)
    assert (second.messages, second.more) == (3, False)
    assert await exists(store, *final) == [False] * 8
    assert await exists(store, waiting, recent) == [True, True]
    assert [d.message_id for d in await store.next_deliveries("ehr", 100)] == [waiting]
    if isinstance(store, PostgresStore):  # whole days go first, the row deletes next run
        assert first.days_dropped == [TODAY - 9, TODAY - 7] and second.days_dropped == []
        assert second.days_kept == [TODAY - 8]
    if archived:
        assert first.archive is not None and second.archive is not None
        runs = [{m.id for m, _ in read_archive(path)} for path in (first.archive, second.archive)]
        assert [len(ids) for ids in runs] == [5, 3]  # each run's own file, read back
        assert runs[0] | runs[1] == set(final)
    else:
        assert first.archive is None and second.archive is None


@pytest.mark.parametrize("day", ["whole", "kept"])
async def test_a_message_reprocessed_after_it_was_archived_keeps_its_new_data(
        store: Store, tmp_path: Path, day: str) -> None:
    old = [await sent(store, at(9), i) for i in range(3)]
    if day == "kept":  # PostgreSQL deletes the day's rows one by one instead of dropping it
        await queued(store, at(9), 3)
    await sent(store, at(0), 9)
    again = old[1]
    write = store._write  # type: ignore[attr-defined]
    raced: list[bool] = []

    async def racing_write(op: Any, *args: Any, **kw: Any) -> Any:
        # Between the archive and the delete (SQLite) or the day's drop (PostgreSQL): the
        # message is reprocessed and final again, with new data the archive does not hold.
        if op.__name__ in ("prune_ids_op", "drop_final_days") and not raced:
            raced.append(True)
            assert await store.reprocess([again]) == 1
            await store.apply_outcomes([Outcome(again, Status.FILTERED,
                                                layers={"parsed": b"second"})])
        return await write(op, *args, **kw)

    store._write = racing_write  # type: ignore[attr-defined]
    first = await store.prune_messages(at(5), archive=tmp_path / "a")
    store._write = write  # type: ignore[attr-defined]

    assert raced and first.messages == 2 and first.archive is not None
    stale = {m.id: m for m, _ in read_archive(first.archive)}
    assert set(stale) == set(old) and stale[again].layers == {"parsed": b"P1"}
    found = await store.get_message(again)
    assert found is not None and found[0].layers == {"parsed": b"second"}
    if isinstance(store, PostgresStore):
        assert first.days_dropped == [] and first.days_kept == [TODAY - 9]

    second = await store.prune_messages(at(5), archive=tmp_path / "a")
    assert second.messages == 1 and second.archive is not None
    fresh = [m for m, _ in read_archive(second.archive)]
    assert [(m.id, m.status, m.layers) for m in fresh] == [
        (again, Status.FILTERED, {"parsed": b"second"})]
    assert await exists(store, *old) == [False] * 3
    if isinstance(store, PostgresStore):
        assert second.days_dropped == ([TODAY - 9] if day == "whole" else [])


async def test_the_retention_task_comes_back_soon_after_a_capped_run(store: Store) -> None:
    import asyncio

    old = [await filtered(store, at(4 + i % 3), i) for i in range(6)]  # two a day
    await sent(store, at(0), 9)
    store.prune_max_per_run = 2
    retention = Retention(store, None, every_secs=3600, message_days=2, again_secs=0.01)
    task = asyncio.create_task(retention.run())
    try:
        async def pruned() -> bool:  # three capped runs (a day each), not three hours
            return await exists(store, *old) == [False] * 6

        await wait_for(pruned)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_pg_one_process_prunes_at_a_time_from_start_to_end(pg_url: str,
                                                                 tmp_path: Path) -> None:
    first, second = open_store(pg_url), open_store(pg_url)  # two engine processes
    assert isinstance(first, PostgresStore) and isinstance(second, PostgresStore)
    await first.open()
    await second.open()
    try:
        final, waiting, _ = await _old_and_unfinished(first)
        write = first._write
        meanwhile: list[PruneResult] = []

        async def second_runs_during_row_deletes(op: Any, *args: Any, **kw: Any) -> Any:
            if op.__name__ == "prune_ids_op" and not meanwhile:
                meanwhile.append(await second.prune_messages(at(5), archive=tmp_path / "b"))
            return await write(op, *args, **kw)

        first._write = second_runs_during_row_deletes  # type: ignore[method-assign]
        result = await first.prune_messages(at(5), archive=tmp_path / "a")
        first._write = write  # type: ignore[method-assign]

        # The days were dropped and the lock still held for the row deletes after them.
        assert result.days_dropped == [TODAY - 9, TODAY - 7] and result.messages == 8
        assert len(meanwhile) == 1 and meanwhile[0].skipped and meanwhile[0].messages == 0
        assert not (tmp_path / "b").exists()  # the second archived nothing a second time
        assert await exists(first, *final) == [False] * 8
        assert await exists(first, waiting) == [True]
        after = await second.prune_messages(at(5), archive=tmp_path / "b")
        assert not after.skipped and after.messages == 0  # released at the end of the run
    finally:
        await first.close()
        await second.close()


_WAITING_FOR_MESSAGES = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE"
    " c.relname = 'messages' AND c.relnamespace = current_schema()::regnamespace AND"
    " l.mode = 'AccessExclusiveLock' AND NOT l.granted)")


async def test_pg_drop_gives_up_behind_a_long_reader_and_ingest_goes_on(pg_url: str) -> None:
    import asyncio

    store, other = open_store(pg_url), open_store(pg_url)  # another engine process ingests
    assert isinstance(store, PostgresStore) and isinstance(other, PostgresStore)
    await store.open()
    await other.open()
    reader = await asyncpg.connect(store.dsn)
    watcher = await asyncpg.connect(store.dsn)
    try:
        old = [await sent(store, at(9), i) for i in range(4)]
        await sent(store, at(0), 9)
        # A long report: any lock on messages conflicts with the drop's ACCESS EXCLUSIVE.
        reading = reader.transaction()
        await reading.start()
        await reader.execute("LOCK TABLE messages IN ACCESS SHARE MODE")

        async def ingest_while_the_drop_waits() -> list[int]:
            await wait_for(lambda: watcher.fetchval(_WAITING_FOR_MESSAGES), interval=0.01)
            # Both queue behind the drop's lock request (this process's in its writer).
            return list(await asyncio.gather(add(store, at(0), 100), add(other, at(0), 101)))

        result, (mine, theirs) = await asyncio.wait_for(asyncio.gather(
            store.prune_messages(at(5)), ingest_while_the_drop_waits()), timeout=20)

        # All three came back while the reader still holds its lock: the drop gave up.
        assert not reader.is_closed() and reader.is_in_transaction()
        assert result.days_dropped == [] and result.days_kept == [TODAY - 9]
        assert result.messages == 0  # the busy day is kept whole for the next run's drop
        assert await exists(store, *old, mine, theirs) == [True] * 6
        assert f"messages_d{TODAY - 9}" in await _partitions(pg_url)

        await reading.rollback()
        again = await store.prune_messages(at(5))
        assert again.days_dropped == [TODAY - 9] and again.messages == 4
        assert f"messages_d{TODAY - 9}" not in await _partitions(pg_url)
    finally:
        await reader.close()
        await watcher.close()
        await store.close()
        await other.close()
