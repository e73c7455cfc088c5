"""The operator's controls: one channel at a time, while the engine runs.

One channel can be stopped, started or redeployed without touching the others, a
destination's queue paused and resumed, and a linted configuration applied while running
(``reload``): only the channels whose configuration changed are touched. A channel whose
change is in its steps alone (``STEP_KEYS``, its destinations' steps, the lookup tables they
use) keeps its listener, its connections and its queue: its pipeline's processor is swapped
between two batches (``Engine.swap_steps``); any other change restarts it. These operations
are serialised by one lock. What an operator stopped or paused is remembered here (and
survives a reload); how a channel's parts start and stop in order is the lifecycle's
business (``engine.flow.runtime.Engine``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.config.schema import Config, load_config
from engine.logs import event

if TYPE_CHECKING:
    from engine.flow.runtime import Engine

log = logging.getLogger("radbridge.engine")
# Sections that a running engine cannot swap: a change is reported, applied at the next start.
_RESTART_SECTIONS = ("store", "engine", "admin", "route", "model")
# What a channel's processor alone is built from: a change here swaps it in place.
STEP_KEYS = frozenset({"filter", "transform", "forward_to", "map", "values"})


@dataclass(slots=True)
class ReloadPlan:
    """What applying a new configuration does, channel by channel."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)  # of changed: steps only, no restart
    unchanged: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # channel -> why it did not start


def step_inputs(config: Config, ch: Any) -> tuple[Any, ...]:
    """What a channel's processor is built from beyond its own keys: the ``filter`` and
    ``transform`` of the destinations it feeds (their steps run in its pipeline) and the
    lookup tables its steps and theirs name, as loaded (a changed CSV changes them)."""
    names = set(ch.destinations)
    channels: list[Any] = list(config.channel)
    dests = [c for c in channels if c.name in names and c.source is None]
    stages = [(d.name, d.filter, d.transform) for d in dests]
    used = {str(step.get("lookup")) for c in [ch, *dests] for step in (c.transform or [])
            if isinstance(step, dict) and "lookup" in step}
    return tuple(stages), tuple((n, config.tables.get(n)) for n in sorted(used))


def steps_only(before: Any, after: Any) -> bool:
    """Whether two versions of a channel differ in ``STEP_KEYS`` at most."""
    return bool(before.model_dump(exclude=STEP_KEYS) == after.model_dump(exclude=STEP_KEYS))


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two configurations; a channel is changed when any of its keys differ, or what
    its steps are built from (:func:`step_inputs`). A changed channel whose difference is in
    ``STEP_KEYS`` alone (or only in what its steps are built from) is also ``swapped``: its
    steps change in place; any other change restarts it."""
    before: dict[str, Any] = {c.name: c for c in old.channel}
    after: dict[str, Any] = {c.name: c for c in new.channel}
    plan = ReloadPlan(restart_required=[s for s in _RESTART_SECTIONS
                                        if getattr(old, s, None) != getattr(new, s, None)])
    for name, ch in after.items():
        if name not in before:
            plan.added.append(name)
        elif before[name] != ch or (ch.source is not None and step_inputs(old, before[name])
                                    != step_inputs(new, ch)):
            plan.changed.append(name)
            if steps_only(before[name], ch):
                plan.swapped.append(name)
        else:
            plan.unchanged.append(name)
    plan.removed = [name for name in before if name not in after]
    return plan


class ChannelControls:
    """Stop, start, redeploy, pause, resume and reload, for the admin API and SIGHUP."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stopped: set[str] = set()  # channels an operator stopped
        self.paused: set[str] = set()  # destination queues an operator paused
        self._lock = asyncio.Lock()

    def channel_state(self, name: str) -> str:
        """``running``, ``stopped`` (by an operator or engine down), ``disabled`` or ``failed``."""
        ch = self.engine.channel(name)  # KeyError when unknown
        if not ch.enabled:
            return "disabled"
        if name in self.stopped or not self.engine.started:
            return "stopped"
        if self.engine.channel_failed(name):
            return "failed"
        return "running"

    async def stop_channel(self, name: str) -> None:
        """Stop one channel (listener, pipeline, delivery); it stays stopped until started."""
        async with self._lock:
            self.engine.channel(name)  # KeyError when unknown
            await self.engine.stop_channel_parts(name)
            self.stopped.add(name)
            event(log, "ENG-510", "channel stopped", channel=name)

    async def start_channel(self, name: str) -> None:
        """Start a stopped channel with its current configuration (a no-op when running)."""
        async with self._lock:
            ch = self.engine.channel(name)
            if not ch.enabled:
                raise ValueError(f"channel {name} is disabled in the configuration")
            self.stopped.discard(name)
            if not self.engine.channel_running(name):
                await self.engine.start_channel_parts(ch)
            event(log, "ENG-511", "channel started", channel=name)

    async def redeploy_channel(self, name: str) -> None:
        """Stop and start one channel: a new listener, pipeline and destination connection."""
        async with self._lock:
            ch = self.engine.channel(name)
            await self.engine.stop_channel_parts(name)
            self.stopped.discard(name)
            if ch.enabled:
                await self.engine.start_channel_parts(ch)
            event(log, "ENG-512", "channel redeployed", channel=name)

    async def pause_queue(self, name: str) -> None:
        """Stop sending from a destination's queue; messages keep queueing durably."""
        async with self._lock:
            if name not in self.engine.workers:
                raise KeyError(name)
            self.paused.add(name)
            await self.engine.halt_delivery(name)
            event(log, "ENG-513", "queue paused", channel=name)

    async def resume_queue(self, name: str) -> None:
        """Resume sending from a paused queue, oldest first."""
        async with self._lock:
            if name not in self.engine.workers:
                raise KeyError(name)
            self.paused.discard(name)
            self.engine.run_delivery(name)
            event(log, "ENG-514", "queue resumed", channel=name)

    async def reload(self, config: Config) -> ReloadPlan:
        """Apply a linted configuration: touch only the channels whose configuration changed.

        A channel whose steps alone changed (``swapped``) gets them from its pipeline's next
        batch, and this returns once it uses them; its listener and connections stay open
        and its queue keeps its order. Other changed channels restart. Sections that cannot
        change while running (store, engine, admin, routes, models) keep their running
        values and are listed in ``restart_required``. A channel that fails to start (or
        whose steps fail to build) is listed in ``failed`` and left stopped; the others go on.
        """
        async with self._lock:
            engine = self.engine
            plan = plan_reload(engine.config, config)
            restart = [name for name in plan.changed if name not in plan.swapped]
            for name in plan.removed + restart:
                await engine.stop_channel_parts(name)
            self.stopped -= set(plan.removed)
            self.paused -= set(plan.removed)
            keep = {s: getattr(engine.config, s) for s in plan.restart_required}
            engine.config = config.model_copy(update=keep) if keep else config
            for name in restart + plan.added:
                await self._start(name, plan)
            for name in plan.swapped:
                await self._swap(name, plan)
            event(log, "ENG-515", "configuration reloaded", added=len(plan.added),
                  removed=len(plan.removed), changed=len(plan.changed),
                  swapped=len(plan.swapped) or None, failed=len(plan.failed) or None)
            return plan

    async def _start(self, name: str, plan: ReloadPlan) -> None:
        """Start channel *name* as configured now, unless stopped or disabled."""
        ch = self.engine.config.channel_named(name)
        if name in self.stopped or not ch.enabled:
            return
        try:
            await self.engine.start_channel_parts(ch)
        except Exception as exc:
            plan.failed[name] = f"{type(exc).__name__}: {exc}"

    async def _swap(self, name: str, plan: ReloadPlan) -> None:
        """Swap the steps of channel *name*'s running pipeline (a destination has none: the
        pipelines feeding it are swapped); one that is not running is restarted instead."""
        ch = self.engine.config.channel_named(name)
        if ch.source is None or name in self.stopped or not ch.enabled:
            return
        try:
            if await self.engine.swap_steps(name):
                return
        except Exception as exc:
            await self.engine.stop_channel_parts(name)
            plan.failed[name] = f"{type(exc).__name__}: {exc}"
            return
        await self.engine.stop_channel_parts(name)
        await self._start(name, plan)

    async def reload_file(self, path: str | None = None) -> ReloadPlan:
        """Lint ``channels.toml`` and apply it; raise ``ConfigErrors`` (nothing changes).

        Lookup files are read again: one that is missing or broken is a lint problem, so the
        running tables stay and the error names the file."""
        target = path or self.engine.config_path
        if target is None:
            raise ValueError("this engine was not started from a configuration file")
        return await self.reload(load_config(target))
