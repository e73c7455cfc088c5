"""SQLite store: WAL, synchronous=FULL, one writer thread with group commit.

All writes go through a single writer thread. It drains whatever is queued,
runs it in one transaction, commits (one fsync for the whole group) and only
then hands the results back to the event loop. Reads use a small pool of
reader connections (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import StoreError, StoreUnavailable
from engine.fsmode import private_database
from engine.logs import event
from engine.store.base import (
    FLAGS_LAYER,
    NewMessage,
    PruneResult,
    Store,
    flag_rows,
)
from engine.store.claims import Claims
from engine.store.clinical_sql import CLINICAL_SCHEMA, ClinicalWrites
from engine.store.fhir_sql import FHIR_SCHEMA, FhirWrites
from engine.store.inference_sql import INFERENCE_SCHEMA
from engine.store.pruning import PruneSQL, Pruning
from engine.store.results_sql import RESULTS_SCHEMA, ResultsWrites
from engine.store.schema import SQLITE_SCHEMA, migrate_sqlite
from engine.store.signals import SQLITE_SIGNALS_SCHEMA
from engine.store.tx import Op, SQLiteTx, new_message, on_sqlite, run_sync

T = TypeVar("T")
log = logging.getLogger("radbridge.store")
_STOP = object()
_MAX_GROUP = 4096
_ROWS_PER_INSERT = 256  # 11 parameters a row, well under SQLITE_MAX_VARIABLE_NUMBER
_WAL_LIMIT = 64 * 1024 * 1024

_INSERT = (
    "INSERT INTO message_in (id, channel, received_at, status, control_id, message_type, msg_key,"
    " duplicate, error, updated_at, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_MORE = ",(?,?,?,?,?,?,?,?,?,?,?)"
_MSG_COLS_M = ("m.id, m.channel, m.received_at, m.status, (SELECT raw FROM message_raw r WHERE"
               " r.id = m.id), m.control_id, m.message_type, m.msg_key, m.duplicate, m.error")
_CLAIMED_COLS = ("t.id, t.channel, t.received_at, t.status, {raw}, t.control_id, t.message_type,"
                 " t.msg_key, t.duplicate, t.error")
_DLV_COLS = ("d.id, d.message_id, d.destination, d.status, d.attempts,"
             " coalesce(d.payload, (SELECT raw FROM message_raw r WHERE r.id = d.message_id)),"
             " d.response, d.error, m.msg_key")


def _connect(path: str, *, writer: bool = False, wal_limit: int = _WAL_LIMIT
             ) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    if writer:
        # Checkpoints run in their own thread (see _Checkpointer), not inside our commits.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # Once a checkpoint has copied everything back, the WAL is cut down to this size when
        # the writer starts it over: a burst (or a retention run) does not keep its disk.
        conn.execute(f"PRAGMA journal_size_limit={int(wal_limit)}")
    return conn


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database beside the writer (PASSIVE never blocks it).

    PASSIVE alone never lets the WAL start over while writes keep coming (some reader or the
    writer is always on it), so under sustained load it grew without end: 2 GB in 30 s at
    10k msg/s. Once the WAL passes ``restart_bytes`` a RESTART checkpoint follows the
    PASSIVE one: it copies the few frames left and waits (at most ``restart_wait_ms``, new
    writes held meanwhile) for readers to leave the WAL, so the next write starts it from
    the beginning and ``journal_size_limit`` gives the disk back.
    """

    def __init__(self, path: str, every_secs: float = 0.5, restart_bytes: int = _WAL_LIMIT,
                 restart_wait_ms: int = 2000) -> None:
        super().__init__(name="radbridge-store-ckpt", daemon=True)
        self._path = path
        self._wal = Path(path + "-wal")
        self._every = every_secs
        self._restart_bytes = restart_bytes
        self._restart_wait_ms = restart_wait_ms
        self.stopping = threading.Event()
        self.restarts = 0

    def _wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size
        except OSError:
            return 0

    def run(self) -> None:
        conn = _connect(self._path)
        conn.execute(f"PRAGMA busy_timeout={self._restart_wait_ms}")
        try:
            while not self.stopping.wait(self._every):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if self._wal_bytes() > self._restart_bytes:
                        busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                        self.restarts += int(not busy)
                except sqlite3.Error:
                    continue  # busy or full: the next round tries again; the WAL keeps the data
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        finally:
            conn.close()


def _to_store_error(exc: sqlite3.Error) -> StoreError:
    text = str(exc).lower()
    transient = ("full", "readonly", "read-only", "locked", "busy", "disk i/o", "unable to open")
    if any(word in text for word in transient):
        return StoreUnavailable(str(exc))
    return StoreError(str(exc))


class _Writer(threading.Thread):
    """Runs write operations in groups; one commit per group."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop,
                 wal_limit: int = _WAL_LIMIT) -> None:
        super().__init__(name="radbridge-store-writer", daemon=True)
        self._path = path
        self._loop = loop
        self.wal_limit = wal_limit
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.groups = 0
        self.ops = 0
        self._next: int | None = None  # the next message id, while this writer is alone

    def run(self) -> None:
        conn = _connect(self._path, writer=True, wal_limit=self.wal_limit)
        try:
            while True:
                item = self.q.get()
                if item is _STOP:
                    return
                batch = [item]
                while len(batch) < _MAX_GROUP:
                    try:
                        nxt = self.q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        self.q.put(_STOP)
                        break
                    batch.append(nxt)
                self._run_group(conn, batch)
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        results = self._insert_alone(conn, batch)
        if results is None:
            results = self._run_transaction(conn, batch)
            self._next = None  # the transaction may have added messages by its own ids
        self.groups += 1
        self.ops += len(batch)
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown: nobody waits now
            self._loop.call_soon_threadsafe(_deliver, results)

    def _insert_alone(self, conn: sqlite3.Connection, batch: list[Any]
                      ) -> list[tuple[Callable[..., None], Any, BaseException | None]] | None:
        """Commit a group of new messages only as one statement, its own transaction.

        One statement is one GIL hand-off and one fsync; BEGIN and COMMIT would each cost
        another hand-off. Returns None if the group is not that simple or the statement fails
        (the transaction path then retries it row by row).
        """
        if (len(batch) > _ROWS_PER_INSERT or conn.in_transaction  # never ACK uncommitted rows
                or any(op is not new_message or args[0].flags for op, args, _ in batch)):
            return None  # a flagged message also writes a content row: not one statement
        try:
            first = self._next if self._next is not None else _next_id(conn)
            _insert_rows(conn, [args[0] for _, args, _ in batch], first)
        except sqlite3.Error:
            self._next = None  # perhaps another writer took the ids: read them again
            return None
        self._next = first + len(batch)
        return [(done, first + i, None) for i, (_, _, done) in enumerate(batch)]

    def _run_transaction(self, conn: sqlite3.Connection, batch: list[Any]
                         ) -> list[tuple[Callable[..., None], Any, BaseException | None]]:
        results: list[tuple[Callable[..., None], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            inserts: list[tuple[NewMessage, Callable[..., None]]] = []
            for op, args, done in batch:
                if op is new_message:
                    inserts.append((args[0], done))
                    continue
                if inserts:
                    results.extend(_insert_many(conn, inserts))
                    inserts = []
                results.append(self._run_op(conn, op, args, done))
            if inserts:
                results.extend(_insert_many(conn, inserts))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = _to_store_error(exc)
            results = [(done, None, err) for _, _, done in batch]
        return results

    @staticmethod
    def _run_op(conn: sqlite3.Connection, op: Callable[..., Any], args: tuple[Any, ...],
                done: Callable[..., None]) -> tuple[Callable[..., None], Any, BaseException | None]:
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn, *args)
            conn.execute("RELEASE op")
            return done, value, None
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return done, None, _to_store_error(exc)


def _insert_row(m: NewMessage, msg_id: int) -> tuple[Any, ...]:
    return (msg_id, m.channel, m.received_at, str(m.status), m.control_id, m.message_type, m.key,
            int(m.duplicate), m.error, m.received_at, m.raw)


def _next_id(conn: sqlite3.Connection) -> int:
    """The id the next message gets (what SQLite itself would choose)."""
    return int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0])


def _insert_many(conn: sqlite3.Connection, items: list[tuple[NewMessage, Callable[..., None]]]
                 ) -> list[tuple[Callable[..., None], Any, BaseException | None]]:
    """Insert messages inside the group's transaction, a chunk of rows per statement."""
    try:
        first = _insert_rows(conn, [m for m, _ in items], _next_id(conn))
    except sqlite3.Error:
        # One bad row must not fail its neighbours: fall back to row by row.
        out: list[tuple[Callable[..., None], Any, BaseException | None]] = []
        for m, done in items:
            try:
                out.append((done, _insert_op(conn, m), None))
            except sqlite3.Error as exc:
                out.append((done, None, _to_store_error(exc)))
        return out
    return [(done, first + i, None) for i, (_, done) in enumerate(items)]


def _insert_rows(conn: sqlite3.Connection, msgs: list[NewMessage], first: int) -> int:
    """Insert *msgs* with ids from *first* on (one statement per chunk); return *first*.

    All or nothing: a statement is atomic, and chunks already in are deleted again.
    """
    try:
        # Multi-row VALUES: one sqlite3_step (one GIL hand-off) per chunk instead of per row.
        for start in range(0, len(msgs), _ROWS_PER_INSERT):
            chunk = msgs[start:start + _ROWS_PER_INSERT]
            params = [v for i, m in enumerate(chunk, first + start) for v in _insert_row(m, i)]
            conn.execute(_INSERT + _INSERT_MORE * (len(chunk) - 1), params)
        flagged = flag_rows(msgs, range(first, first + len(msgs)))
        if flagged:
            conn.executemany("INSERT OR REPLACE INTO content (message_id, layer, data, created_at)"
                             f" VALUES (?, '{FLAGS_LAYER}', ?, ?)",
                             [(mid, data, at) for mid, at, data in flagged])
    except sqlite3.Error:
        if len(msgs) > _ROWS_PER_INSERT:
            conn.execute("DELETE FROM content WHERE message_id >= ?", (first,))
            conn.execute("DELETE FROM message_raw WHERE id >= ?", (first,))
            conn.execute("DELETE FROM messages WHERE id >= ?", (first,))
        raise
    return first


def _deliver(results: list[tuple[Callable[..., None], Any, BaseException | None]]) -> None:
    for done, value, err in results:
        done(value, err)


def _insert_op(conn: sqlite3.Connection, m: NewMessage) -> int:
    return _insert_rows(conn, [m], _next_id(conn))


class SQLiteStore(ClinicalWrites, Claims, Pruning, ResultsWrites, FhirWrites, Store):
    """The embedded default store."""

    _MESSAGE_SELECT = f"SELECT {_MSG_COLS_M} FROM messages m"
    _DELIVERY_SELECT = (f"SELECT {_DLV_COLS} FROM deliveries d JOIN messages m"
                        " ON m.id = d.message_id")
    _OLDEST_QUEUED = ("SELECT m.received_at FROM deliveries d JOIN messages m"
                      " ON m.id = d.message_id WHERE d.id = (SELECT min(id) FROM deliveries"
                      " WHERE destination = ? AND status = 'QUEUED')")
    _CLAIMED_MESSAGE = _CLAIMED_COLS.format(raw="(SELECT raw FROM message_raw r WHERE"
                                            " r.id = t.id)")
    _CLAIMED_MESSAGE_BARE = _CLAIMED_COLS.format(raw="x''")
    _CLAIMED_DELIVERY = ("t.id, t.message_id, t.destination, t.status, t.attempts,"
                         " coalesce(t.payload, (SELECT raw FROM message_raw r WHERE"
                         " r.id = t.message_id)), t.response, t.error,"
                         " (SELECT msg_key FROM messages m WHERE m.id = t.message_id)")
    _on_writer = staticmethod(on_sqlite)
    # Keyset paging on messages_received: each old row is looked at once per run, however
    # many old unfinished ones are skipped. The newest row is never deleted: ids are
    # max(id) + 1, so keeping it means an id is never handed out twice.
    _PRUNE = PruneSQL(prunable=" AND m.id < (SELECT max(id) FROM messages)",
                      page="m.received_at < ? AND (m.received_at, m.id) > (?, ?)",
                      order="m.received_at, m.id", by_time=True)
    wal_restart_bytes = _WAL_LIMIT  # a WAL larger than this is started over (_Checkpointer)
    checkpoint_secs = 0.5  # how often the checkpointer runs
    _query_only = False  # opened by open_reads: reads only, beside the owning engine

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._writer: _Writer | None = None
        self._checkpointer: _Checkpointer | None = None
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="radbridge-store-r")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """The store for a ``sqlite:///path`` URL. Raises nothing."""
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel/path or ////abs
        return cls(path or "radbridge.db")

    async def open(self) -> None:
        # 0600 database (and so -wal, -shm) in a 0700 directory: it holds patient data
        await asyncio.to_thread(private_database, self.path)
        await asyncio.to_thread(self._create_schema)
        self._writer = _Writer(self.path, asyncio.get_running_loop(), self.wal_restart_bytes)
        self._writer.start()
        self._checkpointer = _Checkpointer(self.path, self.checkpoint_secs,
                                           restart_bytes=self.wal_restart_bytes)
        self._checkpointer.start()

    async def open_reads(self) -> None:
        if not await asyncio.to_thread(Path(self.path).is_file):
            raise StoreUnavailable(f"no SQLite database at {self.path}")
        self._query_only = True  # each reader connection refuses writes (PRAGMA query_only)

    def _create_schema(self) -> None:
        conn = _connect(self.path)
        try:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                # A new database: incremental auto-vacuum lets retention shrink the file. It
                # must be chosen before the first table, and WAL mode has already written the
                # header, so the (empty) file is rebuilt once here.
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                conn.execute("VACUUM")
            migrate_sqlite(conn)
            conn.executescript(SQLITE_SCHEMA + CLINICAL_SCHEMA + INFERENCE_SCHEMA + RESULTS_SCHEMA
                               + FHIR_SCHEMA + SQLITE_SIGNALS_SCHEMA)
        finally:
            conn.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.q.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.stopping.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        # Readers first: a query still running in a reader thread (its awaiting task may have
        # been cancelled) must finish before its connection is closed under it, which crashes
        # the interpreter (a segfault in sqlite3), not just the query.
        await asyncio.to_thread(self._readers.shutdown, wait=True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    # -- writes --------------------------------------------------------------
    def _submit(self, op: Callable[..., Any], args: tuple[Any, ...],
                done: Callable[[Any, BaseException | None], None], lock: bool = False) -> None:
        """Queue a writer-thread operation (one writer: *lock* needs nothing more)."""
        if self._writer is None:
            done(None, StoreUnavailable("store is not open"))
            return
        self._writer.q.put((op, args, done))

    async def _apart(self, op: Op, *args: Any, marks: bool = False) -> Any:
        """Run a claim (``engine.store.claims``): one process owns the database, so a claim
        that *marks* rows is a writer operation, and one that does not is a read on a reader
        connection. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        if marks:
            return await self._transact(op, *args)

        def run() -> Any:
            try:
                return run_sync(op(SQLiteTx(self._conn()), *args))  # type: ignore[arg-type]
            except sqlite3.Error as exc:
                raise _to_store_error(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    # -- retention (``engine.store.pruning``) -------------------------------------------------
    async def _after_prune(self, result: PruneResult) -> None:
        """The file is cut when a checkpoint has copied the last frames back: do one now
        (PASSIVE never blocks the writer; the checkpointer thread would do it shortly)."""
        if result.bytes_freed:
            await asyncio.to_thread(self._checkpoint)

    def _checkpoint(self) -> None:
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # busy: the checkpointer thread tries again every half second
        finally:
            conn.close()

    async def vacuum(self) -> tuple[int, int]:
        """Rebuild the file with incremental auto-vacuum (databases made before retention
        could shrink them); return its size before and after. Holds the write lock for the
        whole rebuild: run it with the engine stopped (``radbridge messages vacuum``).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

        def run() -> tuple[int, int]:
            conn = _connect(self.path)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                size = Path(self.path).stat().st_size
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                raise _to_store_error(exc) from exc
            finally:
                conn.close()
            return size, Path(self.path).stat().st_size

        before, after = await asyncio.to_thread(run)
        event(log, "STORE-202", "database rebuilt", bytes_before=before, bytes_after=after)
        return before, after

    # -- reads ---------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            if self._query_only:
                conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            try:
                return self._conn().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _to_store_error(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """A read in portable SQL (``?`` placeholders): what the shared mixins call."""
        return await self._read(sql, params)

    def _by_control_id(self, clause: str, params: list[Any], control_id: str
                       ) -> tuple[str, list[Any]]:
        # messages_control_id covers messages past RECEIVED; messages_pending the rest.
        pending = self._MESSAGE_SELECT.replace("messages m", "messages m INDEXED BY"
                                               " messages_pending")
        return (f"{self._MESSAGE_SELECT} WHERE {clause} AND m.control_id = ? AND"
                f" m.status <> 'RECEIVED' UNION ALL {pending} WHERE {clause} AND"
                " m.control_id = ? AND m.status = 'RECEIVED'",
                [*params, control_id, *params, control_id])
