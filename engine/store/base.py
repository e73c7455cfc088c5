"""The store interface. SQLite (embedded default) and PostgreSQL implement it.

Writes that acknowledge a sender go through ``submit_insert``: the callback
runs on the event loop only after the row is committed (group commit), so the
caller can write its ACK from there and nothing acknowledged is ever lost.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.model import DeliveryStatus, Message, Status
from engine.store.clinical import ClinicalStore
from engine.store.deliveries import DeliveryStore
from engine.store.fhir import FhirStore
from engine.store.inference import InferenceStore
from engine.store.messages import Messages

# Re-exported: the rows are part of the store's interface.
from engine.store.records import Delivery as Delivery
from engine.store.records import MessageQuery as MessageQuery
from engine.store.results import ResultsStore
from engine.store.signals import SignalReads


@dataclass(slots=True)
class NewMessage:
    channel: str
    received_at: float
    raw: bytes
    status: Status = Status.RECEIVED
    control_id: str | None = None
    message_type: str | None = None
    key: str | None = None
    duplicate: bool = False
    error: str | None = None
    # What lenient reading repaired on intake (a stray line break joined back, a control id
    # generated, ...): stored with the message as its ``flags`` content layer, one per line.
    flags: tuple[str, ...] = ()


FLAGS_LAYER = "flags"


def flag_rows(msgs: Sequence[NewMessage], ids: Sequence[int]) -> list[tuple[int, float, bytes]]:
    """``(message id, received_at, flags layer)`` for the messages in *msgs* that carry flags."""
    return [(mid, m.received_at, "\n".join(m.flags).encode("utf-8"))
            for m, mid in zip(msgs, ids, strict=True) if m.flags]


@dataclass(slots=True)
class Outcome:
    """The result of processing one message, applied atomically with the others of its batch."""

    message_id: int
    status: Status
    error: str | None = None
    layers: dict[str, bytes] = field(default_factory=dict)
    # (destination, payload); a payload of None sends the raw message unchanged.
    deliveries: list[tuple[str, bytes | None]] = field(default_factory=list)
    # A domain event (``engine.model`` PatientEvent / OrderEvent, or a results event),
    # applied in the same transaction.
    domain: Any = None


InsertCallback = Callable[[int | None, BaseException | None], None]

# Retention may forget a message only when nothing more will happen to it: its own status is
# final and none of its deliveries still waits (see ``Status.final``).
FINAL_STATUSES: tuple[str, ...] = tuple(str(s) for s in Status if s.final)
WAITING_DELIVERY = str(DeliveryStatus.QUEUED)
PRUNE_BATCH = 1000  # messages per delete transaction: the writer is never held for long
# Messages one prune run forgets at most (PostgreSQL: whole days, one day even if larger): a
# first run over a large backlog archives and deletes a bounded share, and the Retention task
# comes back soon for the rest (``PruneResult.more``).
PRUNE_MAX_PER_RUN = 200_000


@dataclass(slots=True)
class PruneResult:
    """What one ``prune_messages`` run did (counts only: it is logged)."""

    messages: int = 0  # messages forgotten, with their raw bytes, layers and deliveries
    batches: int = 0  # delete transactions (SQLite and partly-kept PostgreSQL days)
    bytes_freed: int = 0  # returned to the file system: SQLite file shrink, dropped partitions
    days_dropped: list[int] = field(default_factory=list)  # PostgreSQL: whole UTC days
    days_kept: list[int] = field(default_factory=list)  # ...left: unfinished, changed or busy
    archive: Path | None = None  # the archive written before deleting, if any
    file_shrinks: bool = True  # False: SQLite without incremental auto-vacuum (see README)
    more: bool = False  # stopped at ``Store.prune_max_per_run``: run again soon for the rest
    skipped: bool = False  # PostgreSQL: another process was pruning; this run did nothing


class Store(ClinicalStore, InferenceStore, ResultsStore, FhirStore, DeliveryStore, Messages,
            SignalReads):
    """Durable messages, content layers and delivery queues; the clinical tables (see
    ``engine.store.clinical``).

    What a method raises is in its docstring, from ``engine.errors``:
    ``StoreUnavailable`` when the database cannot be reached or take writes now (disk
    full, locked, connection lost: refuse input and retry later), ``StoreError`` for any
    other database failure. Driver errors reach the caller only where a docstring says so."""

    prune_max_per_run: int = PRUNE_MAX_PER_RUN  # see ``prune_messages`` (tests lower it)

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the schema if needed and start the writer. Raises ``StoreUnavailable`` or
        ``StoreError`` (PostgreSQL); SQLite lets ``OSError`` or ``sqlite3.Error`` through when
        it cannot create the file or its schema."""

    @abc.abstractmethod
    async def open_reads(self) -> None:
        """Open for reads only, beside the engines that own the store (``radbridge replay``):
        no schema made, no writer, no leases; the database refuses every write on these
        connections. Raises ``StoreUnavailable`` when there is no such store or it cannot be
        reached, ``StoreError`` for another database failure."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the writer (after its last group commits) and close connections. Raises
        nothing."""

    async def insert_message(self, msg: NewMessage) -> int:
        """Insert one message and wait for its commit; its id.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        import asyncio

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()

        def done(msg_id: int | None, err: BaseException | None) -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                assert msg_id is not None
                fut.set_result(msg_id)

        self.submit_insert(msg, done)
        return await fut

    @abc.abstractmethod
    async def fetch_received(self, channel: str, limit: int, with_raw: bool = True,
                             besides: tuple[int, int] = (0, 0)) -> list[Message]:
        """Oldest RECEIVED messages of *channel*, in arrival order (``raw`` empty unless
        asked), but those with ids from ``besides[0]`` to ``besides[1]`` (a batch still being
        recorded). Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def next_deliveries(self, destination: str, limit: int) -> list[Delivery]:
        """Oldest QUEUED deliveries for *destination*, in order.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        """Run one read written in portable SQL (``?`` placeholders): the primitive the reads
        shared by both stores are written on (here and in ``inference_sql.InferenceReads``)."""

    async def recent_control_ids(self, channel: str, since: float) -> list[str]:
        """Control ids of *channel*'s messages received since *since*.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._rows("SELECT control_id FROM messages WHERE channel = ? AND"
                                " received_at >= ? AND control_id IS NOT NULL",
                                channel, float(since))
        return [r[0] for r in rows]

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries by (destination, status).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._rows("SELECT destination, status, count(*) FROM deliveries"
                                " GROUP BY destination, status")
        return {(r[0], r[1]): r[2] for r in rows}

    async def counts(self) -> dict[tuple[str, str], int]:
        """Message counts by (channel, status).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        rows = await self._rows("SELECT channel, status, count(*) FROM messages"
                                " GROUP BY channel, status")
        return {(r[0], r[1]): r[2] for r in rows}

    @abc.abstractmethod
    async def prune_messages(self, before: float, archive: Path | None = None) -> PruneResult:
        """Forget final messages received before *before* and free their disk space.

        A message goes with its raw bytes, content layers and deliveries, and only when its
        status is final and none of its deliveries is still QUEUED: nothing unfinished is
        deleted, however old. With *archive* (a directory), every message about to go is first
        written to one gzip JSON-lines file there (``engine.store.archive``), synced, and only
        then deleted; if the archive cannot be written, nothing is deleted.

        One run forgets at most ``prune_max_per_run`` messages and then says ``more``. A
        message changed after the run began (reprocessed, and perhaps final again) is left for
        the next run, so what is deleted is always what the archive holds.

        Raises ``ArchiveError`` when the archive cannot be written (nothing is
        deleted), ``StoreUnavailable`` (retry later) or ``StoreError``."""


def open_store(url: str) -> Store:
    """The store for a URL: ``sqlite:///path`` (default) or ``postgresql://...``."""
    if url.startswith("sqlite:"):
        from engine.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from engine.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise ValueError(f"unsupported store url scheme: {url.split(':', 1)[0]!r}")
