"""Replay with a diff: stored messages through a candidate configuration, nothing sent.

``radbridge replay --config CANDIDATE.toml --diff`` reads the messages of a window from the
store a running engine uses (read-only: ``Store.open_reads``), runs each through the
candidate's processor for its channel (intake's checks first, as ``engine.flow.dryrun``
does), and compares the result with what the store holds: the message's status and error,
and per destination what was sent or queued (the delivery's payload, or the raw message).

Each message falls in one class (:data:`CLASSES`), from what the processor decided before
and now, each of ``filtered`` (FILTERED), ``error`` (ERROR with no delivery: the processor
or intake refused it) or ``passed`` (it reached its destinations, whatever they did since):
newly filtered, no longer filtered, newly erroring, no longer erroring; between two
``passed`` (or two ``error``) it is changed when a destination, a payload, a mapped layer
or the error differs, else unchanged. Messages still RECEIVED (not processed yet) and
duplicates refused at intake are skipped: there is nothing to compare.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import registry
from engine.flow.dryrun import flat_json, try_message
from engine.flow.processors import processor_for
from engine.model import Message, Status
from engine.store.base import Delivery, MessageQuery, Outcome

UNCHANGED, CHANGED = "unchanged", "changed"
NEWLY_FILTERED, NO_LONGER_FILTERED = "newly filtered", "no longer filtered"
NEWLY_ERRORING, NO_LONGER_ERRORING = "newly erroring", "no longer erroring"
SKIPPED = "skipped"
CLASSES = (CHANGED, UNCHANGED, NEWLY_FILTERED, NO_LONGER_FILTERED, NEWLY_ERRORING,
           NO_LONGER_ERRORING, SKIPPED)
_MOVES = {("filtered", "passed"): NO_LONGER_FILTERED, ("filtered", "error"): NEWLY_ERRORING,
          ("passed", "filtered"): NEWLY_FILTERED, ("error", "filtered"): NEWLY_FILTERED,
          ("passed", "error"): NEWLY_ERRORING, ("error", "passed"): NO_LONGER_ERRORING}
_COMPARED_LAYERS = ("mapped",)  # processor layers compared (intake's "flags" are not redone)
PAGE = 200  # messages compared per hop off the event loop


@dataclass
class Part:
    """One destination (or layer) of one message: what it got, what it would get now."""

    name: str  # a destination channel, or "layer mapped"
    before: list[bytes]
    after: list[bytes]
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        if not self.before:
            return "new"
        if not self.after:
            return "gone"
        return CHANGED if self.before != self.after else UNCHANGED


@dataclass
class Verdict:
    """One stored message replayed."""

    message_id: int
    channel: str
    klass: str
    before: tuple[str, str | None]  # stored status, error
    after: tuple[str, str | None]  # candidate status, error
    parts: list[Part] = field(default_factory=list)


def _stored_kind(msg: Message, deliveries: Sequence[Delivery]) -> str | None:
    if msg.status == Status.RECEIVED:
        return None
    if msg.status == Status.FILTERED:
        return "filtered"
    if msg.status == Status.ERROR and not deliveries:
        return None if msg.duplicate else "error"  # a duplicate refused at intake
    return "passed"


def _new_kind(outcome: Outcome) -> str:
    if outcome.status == Status.FILTERED:
        return "filtered"
    return "error" if outcome.status == Status.ERROR else "passed"


def _by_destination(pairs: Sequence[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for dest, payload in pairs:
        out.setdefault(dest, []).append(payload)
    return out


def _parts(msg: Message, deliveries: Sequence[Delivery], outcome: Outcome,
           differ: Any) -> list[Part]:
    old = _by_destination([(d.destination, d.payload) for d in deliveries])
    new = _by_destination([(dest, msg.raw if p is None else p)
                           for dest, p in outcome.deliveries])
    parts = [Part(dest, old.get(dest, []), new.get(dest, []))
             for dest in dict.fromkeys([*old, *new])]
    for name in _COMPARED_LAYERS:
        if name in msg.layers or name in outcome.layers:
            parts.append(Part(f"layer {name}", [msg.layers[name]] if name in msg.layers else [],
                              [outcome.layers[name]] if name in outcome.layers else []))
    for part in parts:
        if part.state == CHANGED:
            for a, b in zip(part.before, part.after, strict=False):
                part.changes += _changes(part.name, a, b, differ)
    return parts


def _changes(name: str, before: bytes, after: bytes, differ: Any) -> list[dict[str, Any]]:
    if name.startswith("layer "):
        try:
            return json_changes(before, after)
        except ValueError:
            pass
    return differ(before, after, False)  # type: ignore[no-any-return]


def compare(msg: Message, deliveries: Sequence[Delivery], channel: Any, config: Any,
            processor: Any) -> Verdict:
    """*msg* (with its stored *deliveries*) through the candidate, against what it got."""
    before = (str(msg.status), msg.error)
    was = _stored_kind(msg, deliveries)
    if was is None:
        return Verdict(msg.id, msg.channel, SKIPPED, before, before)
    tried = try_message(channel, config, msg.raw, msg.id, processor)
    outcome = tried.outcome
    queued = outcome.status == Status.TRANSFORMED and outcome.deliveries
    after = (str(Status.QUEUED) if queued else tried.status, outcome.error)  # as it would store
    now = _new_kind(outcome)
    parts = _parts(msg, deliveries if was == "passed" else [], outcome,
                   registry.view("message_diff"))
    klass = _MOVES.get((was, now))
    if klass is None:
        same = all(p.state == UNCHANGED for p in parts)
        klass = UNCHANGED if same and (now != "error" or msg.error == outcome.error) else CHANGED
    return Verdict(msg.id, msg.channel, klass, before, after, parts)


async def replay(store: Any, config: Any, channels: Sequence[str], since: float | None,
                 until: float | None, limit: int) -> list[Verdict]:
    """The messages of *channels* received in [*since*, *until*) (at most *limit* per
    channel, oldest first), each compared with the candidate *config*. Only reads the store.
    Raises ``StoreError`` when it cannot be read."""
    verdicts: list[Verdict] = []
    for name in channels:
        channel = config.channel_named(name)
        processor = processor_for(channel, config)
        found = await store.query_messages(MessageQuery(channel=name, since=since,
                                                        until=until, limit=limit))
        ids = sorted(m.id for m in found)
        for start in range(0, len(ids), PAGE):
            rows = [await store.get_message(i) for i in ids[start:start + PAGE]]
            page = [r for r in rows if r is not None]
            verdicts += await asyncio.to_thread(_compare_page, page, channel, config, processor)
    return verdicts


def _compare_page(page: list[tuple[Message, list[Delivery]]], channel: Any, config: Any,
                  processor: Any) -> list[Verdict]:
    return [compare(msg, deliveries, channel, config, processor) for msg, deliveries in page]


def summary(verdicts: Sequence[Verdict]) -> dict[str, dict[str, int]]:
    """Per channel (and ``total``): how many messages fell in each class."""
    out: dict[str, dict[str, int]] = {}
    for v in verdicts:
        for key in (v.channel, "total"):
            row = out.setdefault(key, dict.fromkeys(CLASSES, 0))
            row[v.klass] += 1
    out.setdefault("total", dict.fromkeys(CLASSES, 0))
    total = out.pop("total")
    return {**out, "total": total}


def as_json(v: Verdict) -> dict[str, Any]:
    """One verdict as the CLI's ``--json`` prints it (payloads are not repeated)."""
    return {"message_id": v.message_id, "channel": v.channel, "class": v.klass,
            "before": {"status": v.before[0], "error": v.before[1]},
            "after": {"status": v.after[0], "error": v.after[1]},
            "destinations": [{"name": p.name, "state": p.state, "changes": p.changes}
                             for p in v.parts if p.state != UNCHANGED]}


def json_changes(before: bytes, after: bytes) -> list[dict[str, Any]]:
    """A JSON layer's changes key by key (``orders[0].accession``), like the message diff;
    raises ``ValueError`` when either is not JSON."""
    a, b = flat_json(json.loads(before)), flat_json(json.loads(after))
    return [{"path": key, "kind": "changed", "before": a.get(key), "after": b.get(key)}
            for key in dict.fromkeys([*b, *a]) if a.get(key) != b.get(key)]
