"""Per-channel statistics and rates, sampled in the background.

Two clocks: every second the engine's in-process counters (frames received,
messages processed, deliveries sent, errors) are sampled for rates over the
last minute; every ``stats_interval_secs`` the store is asked for totals
(messages by status, deliveries by status, queue heads, studies by state). API
calls and ``/metrics`` read the last sample; they never scan the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from engine import metrics
from engine.admin.views import StoreViews
from engine.logs import event

log = logging.getLogger("radbridge.admin")
COUNTERS = ("received", "processed", "sent", "errored")


@dataclass(slots=True)
class Snapshot:
    """What the store said at ``at``."""

    at: float = 0.0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_queued: dict[str, float] = field(default_factory=dict)
    studies: dict[str, int] = field(default_factory=dict)


class Sampler:
    def __init__(self, engine: Any, views: StoreViews, interval_secs: float,
                 window_secs: float = 60.0, tick_secs: float = 1.0) -> None:
        self.engine = engine
        self.views = views
        self.interval = interval_secs
        self.window = window_secs
        self.tick = min(tick_secs, interval_secs)
        self.snapshot = Snapshot()
        self._history: deque[tuple[float, dict[str, dict[str, int]]]] = deque()
        self._lag_since = time.time()
        self._lag_seen: set[tuple[str, int]] = set()

    async def run(self) -> None:
        next_refresh = 0.0
        while True:
            self.sample_counters()
            if time.monotonic() >= next_refresh:
                try:
                    await self.refresh()
                except Exception as exc:  # store trouble shows as stale numbers, not a crash
                    event(log, "ADM-110", "statistics refresh failed",
                          reason=type(exc).__name__, level=logging.WARNING)
                next_refresh = time.monotonic() + self.interval
            await asyncio.sleep(self.tick)

    def counters(self) -> dict[str, dict[str, int]]:
        """In-process counters per channel (reset when a channel restarts)."""
        out: dict[str, dict[str, int]] = {}
        for name, sink in self.engine.ingests.items():
            stats = getattr(sink, "stats", None)
            c = out.setdefault(name, dict.fromkeys(COUNTERS, 0))
            if stats is None:
                c["received"] += int(getattr(sink, "stored", 0))
            else:
                c["received"] += int(stats.get("received", 0))
                c["errored"] += int(stats.get("AR", 0)) + int(stats.get("AE", 0))
        for name, pipeline in self.engine.pipelines.items():
            out.setdefault(name, dict.fromkeys(COUNTERS, 0))["processed"] += pipeline.processed
        for name, worker in self.engine.workers.items():
            c = out.setdefault(name, dict.fromkeys(COUNTERS, 0))
            c["sent"] += worker.sent
            c["errored"] += worker.errors
        return out

    def sample_counters(self) -> None:
        now = time.monotonic()
        self._history.append((now, self.counters()))
        while self._history and now - self._history[0][0] > self.window:
            self._history.popleft()

    def rates(self) -> dict[str, dict[str, float]]:
        """Per second over the window; a counter that went down (restart) counts from 0."""
        if len(self._history) < 2:
            return {}
        span = self._history[-1][0] - self._history[0][0]
        totals: dict[str, dict[str, float]] = {}
        items = list(self._history)
        for (_, before), (_, after) in zip(items, items[1:], strict=False):
            for name, now_c in after.items():
                prev = before.get(name, {})
                acc = totals.setdefault(name, dict.fromkeys(COUNTERS, 0.0))
                for key in COUNTERS:
                    delta = now_c[key] - prev.get(key, 0)
                    acc[key] += delta if delta >= 0 else now_c[key]
        return {name: {k: round(v / span, 3) for k, v in acc.items()} if span > 0 else acc
                for name, acc in totals.items()}

    async def refresh(self) -> Snapshot:
        """Read totals from the store now."""
        store = self.engine.store
        counts = await store.counts()
        deliveries = await self.views.delivery_counts()
        queued = sorted({d for (d, status), n in deliveries.items() if status == "QUEUED" and n})
        oldest = await self.views.oldest_queued(queued)
        studies = await self.views.study_counts()
        await self._observe_study_lag()
        self.snapshot = Snapshot(time.time(), counts, deliveries, oldest, studies)
        return self.snapshot

    async def _observe_study_lag(self) -> None:
        """Feed the completion-lag histogram with studies completed since the last look."""
        for study in await self.engine.store.list_studies(state="complete", limit=500):
            key = (study.uid, study.revision)
            done = study.completed_at
            if done is None or done < self._lag_since or key in self._lag_seen:
                continue
            self._lag_seen.add(key)
            metrics.observe_study_completion(study.channel, max(0.0, done - study.last_at))
        if len(self._lag_seen) > 10_000:
            self._lag_seen.clear()
            self._lag_since = time.time()

    def channel_stats(self, name: str, rates: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Totals from the last store sample and rates, for one channel."""
        snap = self.snapshot
        msgs = {status: n for (ch, status), n in snap.counts.items() if ch == name}
        dlv = {status: n for (dest, status), n in snap.deliveries.items() if dest == name}
        if msgs or not dlv:
            totals = {"received": sum(msgs.values()), "filtered": msgs.get("FILTERED", 0),
                      "queued": msgs.get("QUEUED", 0) + msgs.get("RECEIVED", 0),
                      "sent": msgs.get("SENT", 0), "errored": msgs.get("ERROR", 0)}
        else:
            totals = {"received": sum(dlv.values()), "filtered": 0,
                      "queued": dlv.get("QUEUED", 0), "sent": dlv.get("SENT", 0),
                      "errored": dlv.get("ERROR", 0)}
        oldest = snap.oldest_queued.get(name)
        return {"totals": totals, "messages": msgs, "deliveries": dlv,
                "rates": rates.get(name, dict.fromkeys(COUNTERS, 0.0)),
                "queue": {"depth": dlv.get("QUEUED", 0),
                          "oldest_age_secs": round(time.time() - oldest, 3) if oldest else None},
                "sampled_at": snap.at or None}
