"""One write transaction, on either database: what the store's operations are written on.

An operation is written once, as ``async def op(tx: Tx, *args)``, in portable SQL
(``?`` placeholders; both databases take ``ON CONFLICT``, ``coalesce``, ``CASE``).
Where the dialects must differ, the difference is a hook of the transaction
(``for_update``, ``unclaim``, ``lock``, ``signal``, ``insert``, ``ids_in``, ``texts_in``,
``many``, ``many_rows``, ``claim``, ``unheld``), not a second copy of the rule. ``many``
runs one statement over many rows the fastest way each database has (SQLite: the row's
``VALUES`` tuple repeated, a chunk of rows per statement; PostgreSQL: one statement over
``unnest`` arrays), so a ``Many`` carries that statement in both forms: SQL per dialect
only where it must differ (``many_rows`` runs one with ``RETURNING``). A ``Claim`` says
which rows of a queue a claim takes, once; ``claim`` takes them the database's way
(SQLite: one process, the rows as they are; PostgreSQL: ``FOR UPDATE SKIP LOCKED`` and a
lease, ``engine.store.pg_claims``).

How an operation runs is each store's own concurrency model, unchanged:

* **SQLite** (``on_sqlite``): in the store's single writer thread, inside its group
  transaction (``engine.store.sqlite``). ``SQLiteTx``'s methods never suspend, so the
  coroutine is driven to its end at once by ``run_sync``, in that thread, without an
  event loop: one writer, so no locks are needed and ``lock`` does nothing.
* **PostgreSQL** (``on_pg``): in the writer task's group transaction
  (``engine.store.pg_writer``) on asyncpg; ``?`` become ``$1``, ``$2``...; ``lock`` is a
  transaction-scoped advisory lock, ``for_update`` locks the rows read, because several
  engine processes may share the database.

Errors are the drivers' own (``sqlite3.Error``, ``asyncpg`` errors): each writer turns
them into ``StoreError`` / ``StoreUnavailable`` for the caller, as before.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import re
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

from engine.store import pg_claims, pg_schema, signals
from engine.store.signals import SubjectsOf, Topic

T = TypeVar("T")
Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Claim:
    """Which rows of a queue one claim takes (``Tx.claim``), in portable SQL: ``{t}`` is the
    table's alias, ``?`` the parameters (those of *where*, then those of *mark*).

    ``where``: the rows waiting; ``order``: which go first; ``returning``: the columns handed
    back (on alias ``t``); ``mark``: what a claim sets on them (besides its lease; empty: the
    claim only reads them, on SQLite). PostgreSQL's leases (``pg_claims``): ``key``, a column
    whose rows are claimed oldest first by one process at a time; ``takeover``, when the rows
    *where* names are never held (the claim's *mark* moves them out of it), the held rows,
    taken over once their lease has run out; ``by_day``, rows are found by
    ``(id, received_at)`` (day partitions); ``besides``, a condition on the rows taken only
    (not on the rows whose holders keep a key's order), its parameters after *where*'s: the
    rows this process is still working on, left out."""

    table: str
    where: str
    order: str
    returning: str
    mark: str = ""
    key: str | None = None
    takeover: str | None = None
    by_day: bool = False
    besides: str = ""

    @property
    def where_params(self) -> int:
        """How many parameters *where* and *besides* take (they come first)."""
        return (self.where + self.besides).count("?")


@functools.lru_cache(maxsize=64)
def sqlite_claim(c: Claim) -> str:
    """*c* on SQLite, where one process owns the database: its rows are read (or marked)
    as they are. Parameters: *mark*'s, *where*'s and *besides*'s, the limit."""
    where = (c.where + c.besides).format(t="t")
    if not c.mark:
        return (f"SELECT {c.returning} FROM {c.table} t WHERE {where} ORDER BY {c.order}"
                " LIMIT ?")
    return (f"UPDATE {c.table} SET {c.mark} WHERE id IN (SELECT t.id FROM {c.table} t WHERE"
            f" {where} ORDER BY {c.order} LIMIT ?) RETURNING {c.returning}")


@dataclass(frozen=True, slots=True)
class Many:
    """One statement over many rows, in each database's form (``Tx.many``).

    ``sqlite``: the statement for one row, ``?`` for the row's values then the extras; an
    ``INSERT ... VALUES (...)`` (perhaps with an ``ON CONFLICT`` tail) whose tuple holds no
    parenthesis runs a chunk of rows per statement (``SQLiteTx.many``), others row by row.
    ``pg``: one statement over every row, ``$1``... ``$n`` a column array each (in the row's
    order, cast: ``$1::bigint[]``), then ``$n+1``... the extras."""

    sqlite: str
    pg: str


# SQLite: rows per multi-row statement, and parameters at most (SQLITE_MAX_VARIABLE_NUMBER is
# 32766 since 3.32). Each statement step releases the GIL and must take it back: under load
# the event loop holds it, and a batch that stepped once per row (executemany) waited for it
# thousands of times (a 512-message batch: 23 ms alone, 170 ms beside a busy loop).
ROWS_PER_STATEMENT = 256
_MAX_PARAMS = 32766
_VALUES = re.compile(r"\bVALUES\s*(\([^()]*\))", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def _multi_row(sql: str) -> tuple[str, str, str] | None:
    """(head, the row's tuple, tail) of an ``INSERT ... VALUES (...) tail``, or None."""
    m = _VALUES.search(sql)
    if m is None or not sql.lstrip().upper().startswith(("INSERT", "REPLACE")):
        return None
    return sql[:m.start(1)], m.group(1), sql[m.end(1):]


def _sqlite_chunks(sql: str, rows: Sequence[Sequence[Any]]
                   ) -> list[tuple[str, list[Any]]] | None:
    """The multi-row statements (and their parameters) that run *sql*, one row's statement,
    over *rows* a chunk at a time, in order; None where the statement takes one row only."""
    parts = _multi_row(sql)
    width = len(rows[0]) if rows else 0
    if parts is None or width == 0:
        return None
    head, row, tail = parts
    step = max(1, min(ROWS_PER_STATEMENT, _MAX_PARAMS // width))
    return [(f"{head}{row}{(',' + row) * (len(chunk) - 1)}{tail}",
             [v for r in chunk for v in r])
            for chunk in (rows[start:start + step] for start in range(0, len(rows), step))]


def sqlite_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run *sql* (one row's statement) over *rows*: multi-row VALUES a chunk at a time where
    the statement allows (rows in order, as executemany), else ``executemany``."""
    chunks = _sqlite_chunks(sql, rows) if len(rows) > 1 else None
    if chunks is None:
        conn.executemany(sql, rows)
        return
    for statement, params in chunks:
        conn.execute(statement, params)


def sqlite_many_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]
                     ) -> list[Row]:
    """``sqlite_many`` for a statement with ``RETURNING``: the rows every chunk returned
    (executemany returns none, so a statement that takes one row runs row by row)."""
    chunks = _sqlite_chunks(sql, rows)
    if chunks is None:
        chunks = [(sql, list(r)) for r in rows]
    return [r for statement, params in chunks for r in conn.execute(statement, params)]


async def new_message(tx: Tx, msg: Any) -> int:
    """The op that marks a queued message insert (``WriterStore.submit_insert``). Never run:
    each writer batches the inserts of a group its own fastest way (``sqlite``: multi-row
    VALUES; ``pg_writer``: ``unnest``). Raises ``RuntimeError`` if it is."""
    raise RuntimeError("new_message is a marker: the writer inserts messages itself")


class Tx(Protocol):
    """The open write transaction an operation runs in (see the module docstring)."""

    for_update: str  # appended to a SELECT whose rows the transaction goes on to change
    unclaim: str  # appended to an UPDATE's SET: hands a row's claim back (``pg_claims``)

    async def execute(self, sql: str, *params: Any) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per parameter row (none: nothing)."""

    async def rows(self, sql: str, *params: Any) -> list[Row]:
        """Every row of a query."""

    async def row(self, sql: str, *params: Any) -> Row | None:
        """The first row of a query, or None."""

    async def value(self, sql: str, *params: Any) -> Any:
        """The first column of the first row, or None when there is no row."""

    async def insert(self, sql: str, *params: Any) -> int:
        """Run an INSERT of one row into a table with an ``id`` key; that id."""

    async def many(self, stmt: Many, rows: Sequence[Sequence[Any]], *extra: Any) -> None:
        """Run *stmt* over *rows* (none: nothing), *extra* after each row's values."""

    async def many_rows(self, stmt: Many, rows: Sequence[Sequence[Any]], *extra: Any
                        ) -> list[Row]:
        """``many`` for a statement with ``RETURNING``: every row it returned, in no
        particular order (match them by a column, not by position)."""

    def ids_in(self, ids: Sequence[int]) -> tuple[str, list[Any]]:
        """``id IN (...)`` for these ids: the SQL that follows the column and its parameters
        (``IN (?,?,?)`` on SQLite; ``= ANY(?::bigint[])`` on PostgreSQL, one statement
        however many ids)."""

    def texts_in(self, values: Sequence[str]) -> tuple[str, list[Any]]:
        """``ids_in`` for a text column (``= ANY(?::text[])`` on PostgreSQL)."""

    async def lock(self, name: str) -> None:
        """Hold a named lock until the transaction ends (across processes where that can
        matter)."""

    async def lock_rows(self, sql: str, *params: Any) -> None:
        """Lock the rows a SELECT names until the transaction ends, where other processes
        could change them meanwhile (nothing on SQLite)."""

    async def signal(self, topic: Topic, subjects: list[str]) -> None:
        """Tell running engines of a change, at commit (``engine.store.signals``)."""

    async def claim(self, c: Claim, limit: int, *params: Any) -> list[Row]:
        """Take up to *limit* rows *c* names for this process (*params*: *c.where*'s and
        *c.besides*'s, then *c.mark*'s), in no particular order. SQLite: the rows as they are
        (one process); PostgreSQL: rows no live process holds, locked ``SKIP LOCKED``, leased
        to this one (``pg_claims``)."""

    async def unheld(self) -> tuple[str, list[Any]]:
        """`` AND ...`` and its parameters: the row is held by no live process but perhaps
        this one (SQLite: always true, one process; PostgreSQL: unclaimed, ours, or its
        lease ran out)."""

    def same_day(self, a: str, b: str) -> str:
        """`` AND ...``: rows *a* and *b* of one message are in the same day partition (so
        PostgreSQL looks in that one only; SQLite has no partitions)."""

    def within(self, alias: str, span: tuple[float, float]) -> tuple[str, list[Any]]:
        """`` AND ...`` and its parameters: *alias*'s message was received within *span*,
        for the day partitions (nothing on SQLite, whose layers and deliveries do not keep
        when their message arrived)."""

    async def shrink(self) -> int | None:
        """Give the pages this transaction's deletes freed back to the file system; the
        bytes, or None when this database file cannot shrink (SQLite without incremental
        auto-vacuum; PostgreSQL drops partitions instead: 0)."""


class SQLiteTx:
    """``Tx`` on the SQLite writer thread's connection (its methods never suspend)."""

    for_update = ""  # one writer: nothing to lock against
    unclaim = ""  # one process: rows carry no claims
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *params: Any) -> int:
        return self.conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.executemany(sql, rows)

    async def rows(self, sql: str, *params: Any) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    async def row(self, sql: str, *params: Any) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    async def value(self, sql: str, *params: Any) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    async def insert(self, sql: str, *params: Any) -> int:
        rowid = self.conn.execute(sql, params).lastrowid
        assert rowid is not None
        return rowid

    async def many(self, stmt: Many, rows: Sequence[Sequence[Any]], *extra: Any) -> None:
        if rows:
            sqlite_many(self.conn, stmt.sqlite, [(*row, *extra) for row in rows])

    async def many_rows(self, stmt: Many, rows: Sequence[Sequence[Any]], *extra: Any
                        ) -> list[Row]:
        return sqlite_many_rows(self.conn, stmt.sqlite, [(*row, *extra) for row in rows])

    def ids_in(self, ids: Sequence[int]) -> tuple[str, list[Any]]:
        return f"IN ({','.join('?' * len(ids))})", list(ids)

    def texts_in(self, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"IN ({','.join('?' * len(values))})", list(values)

    async def lock(self, name: str) -> None:
        return None  # the writer thread is the only writer

    async def lock_rows(self, sql: str, *params: Any) -> None:
        return None

    async def signal(self, topic: Topic, subjects: list[str]) -> None:
        signals.sqlite_signal(self.conn, topic, subjects)

    async def claim(self, c: Claim, limit: int, *params: Any) -> list[Row]:
        n = c.where_params
        return self.conn.execute(sqlite_claim(c), (*params[n:], *params[:n], limit)).fetchall()

    async def unheld(self) -> tuple[str, list[Any]]:
        return "", []

    def same_day(self, a: str, b: str) -> str:
        return ""

    def within(self, alias: str, span: tuple[float, float]) -> tuple[str, list[Any]]:
        return "", []

    async def shrink(self) -> int | None:
        # Read here, in the writer's transaction: outside one, a connection answers what the
        # file said when it last read it, perhaps before a ``vacuum`` changed it.
        mode = int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        if mode != 2:  # NONE only reuses freed pages; FULL shrinks at each commit by itself
            return None if mode == 0 else 0
        # Incremental: move the freed pages off the end of the file, one a step.
        pages = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        for _ in range(int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])):
            self.conn.execute("PRAGMA incremental_vacuum")
        pages -= int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        return pages * int(self.conn.execute("PRAGMA page_size").fetchone()[0])


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """Portable SQL with PostgreSQL placeholders (cached: most statements are constants)."""
    return pg_schema.pg(sql)


def _changed(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PgTx:
    """``Tx`` on the PostgreSQL writer's connection, inside its transaction."""

    for_update = " FOR UPDATE"
    unclaim = ", claimed_by = NULL, lease_until = NULL"
    __slots__ = ("conn", "owner", "lease")

    def __init__(self, conn: asyncpg.Connection, owner: str = "", lease: float = 0.0) -> None:
        self.conn = conn
        self.owner = owner  # this process, in claims (``pg_claims``)
        self.lease = lease  # seconds a claim holds its rows unless renewed

    async def execute(self, sql: str, *params: Any) -> int:
        return _changed(await self.conn.execute(pg_sql(sql), *params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self.conn.executemany(pg_sql(sql), rows)

    async def rows(self, sql: str, *params: Any) -> list[Row]:
        return list(await self.conn.fetch(pg_sql(sql), *params))

    async def row(self, sql: str, *params: Any) -> Row | None:
        row: Row | None = await self.conn.fetchrow(pg_sql(sql), *params)
        return row

    async def value(self, sql: str, *params: Any) -> Any:
        return await self.conn.fetchval(pg_sql(sql), *params)

    async def insert(self, sql: str, *params: Any) -> int:
        return int(await self.conn.fetchval(pg_sql(sql + " RETURNING id"), *params))

    async def many(self, stmt: Many, rows: Sequence[Sequence[Any]], *extra: Any) -> None:
        if rows:
            await self.conn.execute(stmt.pg, *map(list, zip(*rows, strict=True)), *extra)

    async def many_rows(self, stmt: Many, rows: Sequence[Sequence[Any]], *extra: Any
                        ) -> list[Row]:
        if not rows:
            return []
        return list(await self.conn.fetch(stmt.pg, *map(list, zip(*rows, strict=True)),
                                          *extra))

    def ids_in(self, ids: Sequence[int]) -> tuple[str, list[Any]]:
        return "= ANY(?::bigint[])", [list(ids)]

    def texts_in(self, values: Sequence[str]) -> tuple[str, list[Any]]:
        return "= ANY(?::text[])", [list(values)]

    async def lock(self, name: str) -> None:
        await pg_schema.lock(self.conn, name)

    async def lock_rows(self, sql: str, *params: Any) -> None:
        await self.conn.execute(pg_sql(sql + " FOR UPDATE"), *params)

    async def signal(self, topic: Topic, subjects: list[str]) -> None:
        await signals.pg_signal(self.conn, topic, subjects)

    async def claim(self, c: Claim, limit: int, *params: Any) -> list[Row]:
        n = c.where_params
        now = await pg_claims.db_now(self.conn)
        return list(await self.conn.fetch(pg_claims.claim_sql(c), *params[:n], limit,
                                          self.owner, now, self.lease, *params[n:]))

    async def unheld(self) -> tuple[str, list[Any]]:
        return (" AND (claimed_by IS NULL OR claimed_by = ? OR lease_until IS NULL OR"
                " lease_until < ?)", [self.owner, await pg_claims.db_now(self.conn)])

    def same_day(self, a: str, b: str) -> str:
        return f" AND {a}.received_at = {b}.received_at"

    def within(self, alias: str, span: tuple[float, float]) -> tuple[str, list[Any]]:
        return (f" AND {alias}.received_at >= ? AND {alias}.received_at < ?",
                [span[0], span[1]])

    async def shrink(self) -> int | None:
        return 0  # dead rows are VACUUM's; whole days are dropped (``pg_schema``)


Op = Callable[..., Awaitable[Any]]  # async def op(tx: Tx, *args) -> value


def announcing(op: Op, topic: Topic, subjects_of: SubjectsOf) -> Op:
    """*op* followed by its signal when it changed anything, in the same transaction."""

    @functools.wraps(op)
    async def run(tx: Tx, *args: Any) -> Any:
        value = await op(tx, *args)
        subjects = subjects_of(value, args) if value else []
        if subjects:
            await tx.signal(topic, subjects)
        return value

    return run


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (an operation on ``SQLiteTx``) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite store operation suspended (it awaited something not on Tx)")


def on_sqlite(op: Op) -> Callable[..., Any]:
    """*op* as a SQLite writer-thread operation (``op(conn, *args)``)."""

    @functools.wraps(op)
    def run(conn: sqlite3.Connection, *args: Any) -> Any:
        return run_sync(op(SQLiteTx(conn), *args))  # type: ignore[arg-type]

    return run


def on_pg(op: Op) -> Callable[..., Awaitable[Any]]:
    """*op* as a PostgreSQL writer operation (``await op(conn, *args)``)."""

    @functools.wraps(op)
    async def run(conn: asyncpg.Connection, *args: Any) -> Any:
        return await op(PgTx(conn), *args)

    return run


class WriterStore(abc.ABC):
    """How a store runs writes: a base of every store mixin that writes, so an operation
    written once reaches each store's own writer (thread or task) through ``_transact``."""

    # How an operation written once (``engine.store.tx``) runs on this store's writer.
    _on_writer: Callable[[Op], Callable[..., Any]]

    @abc.abstractmethod
    def _submit(self, op: Callable[..., Any], args: tuple[Any, ...],
                done: Callable[[Any, BaseException | None], None], lock: bool = False) -> None:
        """Queue a writer operation; *done(value, error)* runs on the loop after its commit."""

    @abc.abstractmethod
    async def _apart(self, op: Op, *args: Any, marks: bool = False) -> Any:
        """Run an operation (``op(tx, *args)``) in a short transaction apart from the writer's
        groups: claims (``engine.store.claims``) and retention's reads. SQLite (one process):
        on a reader connection, or the writer when it *marks* rows; PostgreSQL: its own
        transaction on a pooled connection, the ``Tx`` leasing to this process. Raises
        ``StoreUnavailable`` (retry later) or ``StoreError``."""

    async def _write(self, op: Callable[..., Any], *args: Any, lock: bool = False) -> Any:
        """Run a writer operation of this store (``op(conn, *args)``) in its next group
        transaction; *lock*: under the clinical lock (PostgreSQL, see ``pg_writer``)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(value: Any, err: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(err) if err is not None else fut.set_result(value)

        self._submit(op, args, done, lock)
        return await fut

    async def _transact(self, op: Op, *args: Any, lock: bool = False) -> Any:
        """Run an operation written once (``async def op(tx, *args)``) in the writer's next
        group transaction: what the shared mixins call."""
        return await self._write(self._on_writer(op), *args, lock=lock)

