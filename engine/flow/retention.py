"""Retention: forget old instances and final messages, and really free their disk space."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.flow.instances import is_under
from engine.logs import event
from engine.store.archive import ArchiveError
from engine.store.base import PruneResult
from engine.store.protocols import RetentionWork

log = logging.getLogger("radbridge.retention")
DAY = 86400
AGAIN_SECS = 60.0  # a message run stopped at the store's cap goes on this soon, not hourly


def delete_files(paths: list[str], root: Path | None = None) -> int:
    """Delete files and the study/series folders they leave empty; return bytes freed.

    With *root* (the instance store), a path that does not resolve inside it is left alone
    and logged (RET-403): a row can never make retention delete anything else."""
    freed = 0
    parents: set[Path] = set()
    for p in paths:
        path = Path(p)
        if root is not None and not is_under(path, root):
            event(log, "RET-403", "instance path outside the instance store, not deleted",
                  level=logging.ERROR)
            continue
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        parents.add(path.parent)
    for folder in sorted(parents | {p.parent for p in parents}, key=lambda p: -len(p.parts)):
        if root is not None and not is_under(folder, root):
            continue
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only if empty
    return freed


def log_pruned(result: PruneResult) -> None:
    """Counts only: what a message said never reaches the log."""
    if result.messages or result.days_dropped:
        event(log, "RET-202", "messages pruned", messages=result.messages,
              batches=result.batches, bytes=result.bytes_freed,
              days_dropped=len(result.days_dropped) or None,
              archive=result.archive.name if result.archive else None,
              more=result.more or None)
    if result.days_kept:
        event(log, "RET-203", "days kept whole: unfinished, changed or busy",
              days=len(result.days_kept))


class Retention:
    """The periodic task: instance files older than *days*, final messages older than
    *message_days* (archived first under *archive_dir* when given). None: keep them. A
    message run that stopped at the store's cap (a backlog) is followed after *again_secs*.
    *instances_root*: only files under it are ever deleted (the engine always passes it)."""

    def __init__(self, store: RetentionWork, days: float | None, every_secs: float = 3600, *,
                 message_days: float | None = None, archive_dir: Path | None = None,
                 again_secs: float = AGAIN_SECS, instances_root: Path | None = None) -> None:
        self.store = store
        self.instances_root = instances_root
        self.days = days
        self.every_secs = every_secs
        self.again_secs = again_secs
        self.message_days = message_days
        self.archive_dir = archive_dir
        self._warned_no_shrink = False

    async def run_once(self, now: float | None = None) -> tuple[int, int]:
        """Prune instances older than the retention period; return (files, bytes freed)."""
        if self.days is None:
            return 0, 0
        cutoff = (now if now is not None else time.time()) - self.days * DAY
        paths = await self.store.prune_instances(cutoff)
        freed = await asyncio.to_thread(delete_files, paths, self.instances_root)
        if paths:
            event(log, "RET-201", "instances pruned", files=len(paths), bytes=freed)
        return len(paths), freed

    async def prune_messages(self, now: float | None = None) -> PruneResult | None:
        """Prune final messages older than their retention period (None if it is off)."""
        if self.message_days is None:
            return None
        cutoff = (now if now is not None else time.time()) - self.message_days * DAY
        result = await self.store.prune_messages(cutoff, self.archive_dir)
        log_pruned(result)
        if not result.file_shrinks and not self._warned_no_shrink:
            self._warned_no_shrink = True
            event(log, "RET-301", "database file does not shrink (auto_vacuum off): run"
                  " `radbridge messages vacuum` once, engine stopped", level=logging.WARNING)
        return result

    async def run(self) -> None:
        jobs: tuple[tuple[str, Callable[[], Awaitable[Any]]], ...] = (
            ("instances", self.run_once), ("messages", self.prune_messages))
        while True:
            more = False
            for what, job in jobs:
                try:
                    done = await job()
                    more |= isinstance(done, PruneResult) and done.more
                except ArchiveError:
                    event(log, "RET-402", "message archive not written: nothing pruned",
                          level=logging.ERROR)
                except Exception as exc:
                    event(log, "RET-401", "retention failed", what=what,
                          reason=type(exc).__name__, level=logging.ERROR)
            await asyncio.sleep(min(self.again_secs, self.every_secs) if more
                                else self.every_secs)
