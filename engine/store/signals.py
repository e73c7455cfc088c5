"""Signals: how a change made outside the running engine reaches it.

The CLI (``radbridge studies complete``, ``studies proceed``, ``messages
reprocess``, ``radbridge demo``) changes the store from its own process. The
running engine acts on such changes only when it hears of them: a new case must
be routed to inference, a reprocessed message picked up by its pipeline. The
store is the channel of record: the writer adds one row to ``signals`` *in the
same transaction* as its change (``announce=True`` on the store operation), so
the change and its signal commit together or not at all.

Each engine process polls ``signals`` for rows after the last one it saw
(``engine.flow.signals.SignalWatcher``, every ``[engine] signal_poll_secs``) and runs
the same code it runs for the change made in-process: ``Engine._on_cases`` for
new cases, a pipeline wake-up for reprocessed messages. Acting twice is
harmless (routing a case and waking a pipeline are idempotent), so every engine
on a shared PostgreSQL acts on every signal. On PostgreSQL the writer also
sends ``NOTIFY radbridge_signals`` (delivered at commit), which the engine
LISTENs for to poll at once instead of at the next tick; the poll alone is
correct, the notification only makes it prompt.

Ordering: once a poller has seen row *n*, no row below *n* may commit after it.
SQLite serialises writers, and ``AUTOINCREMENT`` never hands an id out
twice, even after pruning. On PostgreSQL identities are handed out before
commit, so signal writers take a transaction lock (``pg_schema.lock``) first:
ids then commit in order. Only out-of-process writers signal; the engine never
does, so it never waits on that lock.

Rows older than ``KEEP_SECS`` are deleted by the next writer. A change made
while no engine ran needs no signal: start-up recovery routes unrouted cases and
picks up RECEIVED messages, and an engine starts reading signals after the
newest row present when it opened the store.

Topics and their subjects:

==========  ======================================  ==========================
topic       written by                              subjects
==========  ======================================  ==========================
cases       ``complete_study``, ``proceed_study_``  the new cases' ids
            ``only``
messages    ``reprocess``                           the message ids (the first
                                                    ``MAX_SUBJECTS``); every
                                                    pipeline looks
==========  ======================================  ==========================
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

KEEP_SECS = 86400.0
MAX_SUBJECTS = 1000
NOTIFY_CHANNEL = "radbridge_signals"

SQLITE_SIGNALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    subjects   TEXT    NOT NULL,
    created_at REAL    NOT NULL
);
"""

PG_SIGNALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, topic TEXT NOT NULL,
    subjects TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
"""


class Topic(StrEnum):
    CASES = "cases"
    MESSAGES = "messages"


@dataclass(slots=True, frozen=True)
class Signal:
    id: int
    topic: str
    subjects: list[str]


def _row(r: Sequence[Any]) -> Signal:
    return Signal(int(r[0]), str(r[1]), [str(s) for s in json.loads(r[2])])


class SignalReads:
    """Mixed into both stores: the reads an engine polls with (portable SQL on ``_rows``)."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def signal_cursor(self) -> int:
        """The newest signal's id (0 when none): an engine acts on what comes after it.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._rows("SELECT coalesce(max(id), 0) FROM signals")
        return int(rows[0][0])

    async def signals_after(self, cursor: int, limit: int = 500) -> list[Signal]:
        """Signals committed after *cursor*, oldest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        return [
            _row(r)
            for r in await self._rows(
                "SELECT id, topic, subjects FROM signals WHERE id > ? ORDER BY id LIMIT ?",
                int(cursor),
                int(limit),
            )
        ]

    async def listen_signals(self, wake: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call *wake* as soon as another process signals, where the database can say so
        (PostgreSQL); returns the coroutine function that stops listening. Raises nothing."""

        async def nothing() -> None:
            return None

        return nothing


# -- writing: the change's own operation, then its signal, in one transaction ---------------

SubjectsOf = Callable[[Any, tuple[Any, ...]], list[str]]


def sqlite_signal(conn: sqlite3.Connection, topic: Topic, subjects: list[str]) -> None:
    """Add one signal (and forget old ones) in the caller's transaction."""
    now = time.time()
    conn.execute("DELETE FROM signals WHERE created_at < ?", (now - KEEP_SECS,))
    conn.execute(
        "INSERT INTO signals (topic, subjects, created_at) VALUES (?, ?, ?)",
        (str(topic), json.dumps(subjects), now),
    )


async def pg_signal(conn: asyncpg.Connection, topic: Topic, subjects: list[str]) -> None:
    """Add one signal (and forget old ones) in the caller's transaction; NOTIFY at commit."""
    from engine.store.pg_schema import lock

    await lock(conn, "signals")  # ids commit in order: see the module docstring
    now = time.time()
    await conn.execute("DELETE FROM signals WHERE created_at < $1", now - KEEP_SECS)
    await conn.execute(
        "INSERT INTO signals (topic, subjects, created_at) VALUES ($1, $2, $3)",
        str(topic),
        json.dumps(subjects),
        now,
    )
    await conn.execute("SELECT pg_notify($1, current_schema())", NOTIFY_CHANNEL)


def case_ids(value: Any, args: tuple[Any, ...]) -> list[str]:
    """The subjects of a ``cases`` signal: the ids of the case(s) an operation returned."""
    cases = value if isinstance(value, list) else [value]
    return [str(c.id) for c in cases if c is not None]


def reprocessed_ids(value: Any, args: tuple[Any, ...]) -> list[str]:
    """The subjects of a ``messages`` signal: the ids a ``reprocess`` was given."""
    return [str(i) for i in list(args[0])[:MAX_SUBJECTS]]
