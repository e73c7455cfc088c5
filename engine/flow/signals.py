"""The running engine's ear for changes made by other processes (see ``engine.store.signals``).

``SignalWatcher`` remembers the newest signal present when the engine opened
its store (what came before is start-up recovery's business), then reads the
signals after it every ``poll_secs`` (``[engine] signal_poll_secs``), or at once
when the store says one was written (PostgreSQL LISTEN/NOTIFY). Each topic's
signals go to its handler, which runs the engine's own code for that change.
A handler that raises (store trouble) leaves the cursor where it was: the same
signals are handled again at the next poll, so handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from engine.logs import event
from engine.store.protocols import SignalFeed
from engine.store.signals import Signal

log = logging.getLogger("radbridge.signals")

Handler = Callable[[list[Signal]], Awaitable[None]]


class SignalWatcher:
    """Polls ``signals`` and hands each topic's new rows to its handler."""

    def __init__(
        self, store: SignalFeed, handlers: Mapping[str, Handler], poll_secs: float = 1.0
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.poll_secs = poll_secs
        self.cursor = 0
        self.handled = 0
        self._wake = asyncio.Event()
        self._unlisten: Callable[[], Awaitable[None]] | None = None
        self._unknown: set[str] = set()

    def wake(self) -> None:
        """Poll now (a NOTIFY arrived)."""
        self._wake.set()

    async def open(self) -> None:
        """Start after the newest signal there is, and listen where the store can."""
        self.cursor = await self.store.signal_cursor()
        self._unlisten = await self.store.listen_signals(self.wake)

    async def close(self) -> None:
        if self._unlisten is not None:
            await self._unlisten()
            self._unlisten = None

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before reading: a NOTIFY meanwhile is not lost
            try:
                await self.poll()
            except Exception as exc:  # store trouble: the same signals again next time
                event(
                    log,
                    "SIG-401",
                    "signals not handled, will retry",
                    reason=type(exc).__name__,
                    level=logging.WARNING,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_secs)

    async def poll(self) -> int:
        """Handle every signal after the cursor; return how many there were."""
        signals = await self.store.signals_after(self.cursor)
        if not signals:
            return 0
        by_topic: dict[str, list[Signal]] = {}
        for s in signals:
            by_topic.setdefault(s.topic, []).append(s)
        for topic, group in by_topic.items():
            handler = self.handlers.get(topic)
            if handler is not None:
                await handler(group)
            elif topic not in self._unknown:  # written by a newer version: not ours to act on
                self._unknown.add(topic)
                event(
                    log,
                    "SIG-402",
                    "signal topic unknown, ignored",
                    topic=topic,
                    level=logging.WARNING,
                )
            event(log, "SIG-201", "signals handled", topic=topic, count=len(group))
        self.cursor = signals[-1].id
        self.handled += len(signals)
        return len(signals)
