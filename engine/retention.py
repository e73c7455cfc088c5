"""Retention: forget old instances and really free their disk space."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from engine.logs import event
from engine.store.base import Store

log = logging.getLogger("radbridge.retention")


def delete_files(paths: list[str]) -> int:
    """Delete files and the study/series folders they leave empty; return bytes freed."""
    freed = 0
    parents: set[Path] = set()
    for p in paths:
        path = Path(p)
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        parents.add(path.parent)
    for folder in sorted(parents | {p.parent for p in parents}, key=lambda p: -len(p.parts)):
        try:
            os.rmdir(folder)  # only if empty
        except OSError:
            pass
    return freed


class Retention:
    def __init__(self, store: Store, days: float, every_secs: float = 3600) -> None:
        self.store = store
        self.days = days
        self.every_secs = every_secs

    async def run_once(self, now: float | None = None) -> tuple[int, int]:
        """Prune instances older than the retention period; return (files, bytes freed)."""
        cutoff = (now if now is not None else time.time()) - self.days * 86400
        paths = await self.store.prune_instances(cutoff)
        freed = await asyncio.to_thread(delete_files, paths)
        if paths:
            event(log, "RET-201", "instances pruned", files=len(paths), bytes=freed)
        return len(paths), freed

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                event(log, "RET-401", "retention failed", reason=type(exc).__name__,
                      level=logging.ERROR)
            await asyncio.sleep(self.every_secs)
