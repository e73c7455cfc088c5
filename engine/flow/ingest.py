"""The ACK path: read the header, decide, store, then answer.

The protocol's answerer (``engine.connectors.Answerer``; for HL7 v2 over MLLP
``mappings.hl7v2.answerer``, which also tabulates the error codes) reads the header and
builds the answers; the engine decides and stores. Nothing here awaits. A frame is
turned into a ``NewMessage`` and handed to the store's group commit; the ACK is written
from the commit callback, so the sender hears AA only once the message is durable. Every
frame is stored, accepted or not: rejected ones as ERROR with their raw bytes and the reason.

Outcomes (MSA-1 in original mode; CA/CE/CR in enhanced mode per MSH-15):

* AA  stored as RECEIVED (duplicates flagged when the window is on)
* AR  MSH unreadable (100/101/102), type not in ``accept`` (200), duplicate
      rejected (205), frame over the size limit (100), store refused (207), frame
      shed by the listener's buffer budget (207)
* AE  MSH readable but a later segment is not (100)

A batch frame (several messages, e.g. HL7 FHS/BHS) is split by the answerer; each message
gets one of the outcomes above, stored as its own row, and the frame is answered once all
are stored or refused (``Answerer.batch_answer``: one batch of answers, or one per message).
A bad message never holds back the others' answers.

Every frame gets an answer: a failure while deciding (MLLP-199) or storing (STORE-201) is
answered AR 207, and one while building the ACK (MLLP-198) still sends a generic ACK with the
same MSA-1 and MSA-2 (``_answer``), so a sender never waits for an ACK that will not come.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from engine import metrics, registry
from engine.connectors import Answer, Answerer, Batch, Reply
from engine.errors import StoreUnavailable
from engine.logs import event
from engine.model import Status
from engine.store.base import NewMessage
from engine.store.protocols import MessageIntake

log = logging.getLogger("radbridge.ingest")
_PENDING = object()  # a batch message not answered yet
_FAILED = object()  # unbatching raised: the frame is answered already


class DuplicateWindow:
    """Control ids seen in the last ``window_secs`` (bounded, oldest evicted first)."""

    def __init__(self, window_secs: float, max_entries: int = 1_000_000) -> None:
        self.window = window_secs
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, control_id: str, now: float) -> bool:
        """Record *control_id*; True if it was already seen inside the window."""
        cutoff = now - self.window
        while self._seen and (next(iter(self._seen.values())) < cutoff
                              or len(self._seen) > self.max_entries):
            self._seen.popitem(last=False)
        dup = control_id in self._seen
        self._seen[control_id] = now
        self._seen.move_to_end(control_id)
        return dup


class Ingest:
    """The ``RawSink`` of one channel."""

    def __init__(self, channel: Any, store: MessageIntake, *, app: str, facility: str,
                 on_stored: Callable[[], None], answerer: Answerer | None = None) -> None:
        self.channel = channel
        self.name: str = channel.name
        self.store = store
        self.app, self.facility = app, facility
        self.answerer: Answerer = answerer or registry.answerer(
            "hl7", app, facility,
            empty_control_id=channel.empty_control_id, batch_ack=channel.batch_ack)
        self.on_stored = on_stored
        self.accept = frozenset(channel.accept) if channel.accept is not None else None
        self.duplicates = (DuplicateWindow(channel.duplicates.window_secs)
                           if channel.duplicates.window_secs > 0 else None)
        self.stats: Counter[str] = Counter()
        self._ack_latency = metrics.ack_latency(self.name)

    def seed_duplicates(self, control_ids: list[str], now: float) -> None:
        if self.duplicates is not None:
            for cid in control_ids:
                self.duplicates.seen(cid, now)

    # -- RawSink -------------------------------------------------------------
    def receive(self, payload: bytes, reply: Reply, peer: str) -> None:
        """Decide and store; a bug in deciding becomes an AR 207, never a dropped connection.

        A frame holding several messages (the answerer's ``unbatch``: an HL7 batch) is
        decided and stored message by message, each its own row (bad ones as ERROR); the
        frame is answered once, when the last of them is stored or refused.
        """
        batch = self._guarded_unbatch(payload, reply)
        if batch is None:
            self._guarded(reply, lambda: self._receive(payload, reply))
        elif batch is not _FAILED:
            self._receive_batch(batch, reply)

    def _guarded_unbatch(self, payload: bytes, reply: Reply) -> Any:
        """The frame's batch, None for one message, ``_FAILED`` (answered AR 207) on a bug."""
        try:
            return self.answerer.unbatch(payload)
        except Exception as exc:
            event(log, "MLLP-199", "ingest failed unexpectedly", channel=self.name,
                  reason=type(exc).__name__, level=logging.ERROR)
            self._store_failed(None, exc, reply)
            return _FAILED

    def _receive_batch(self, batch: Batch, reply: Reply) -> None:
        """Each message of *batch* through the one-message path, its answer kept; the frame is
        answered with ``answerer.batch_answer`` once every message has its answer."""
        answers: list[Any] = [_PENDING] * len(batch.messages)
        waiting = [len(answers)]

        def part_reply(i: int) -> Reply:
            def done(answer: Any) -> None:
                if answers[i] is not _PENDING:
                    return  # answered already (a late second answer changes nothing)
                answers[i] = answer
                waiting[0] -= 1
                if waiting[0] == 0:
                    self._answer_batch(batch, answers, reply)
            return done

        if not answers:
            self._answer_batch(batch, answers, reply)
        for i, (part, note) in enumerate(zip(batch.messages, batch.notes, strict=True)):
            r = part_reply(i)
            self._guarded(r, functools.partial(self._receive, part, r, (note,)))

    def _answer_batch(self, batch: Batch, answers: list[Any], reply: Reply) -> None:
        """Answer a whole batch; if that answer cannot be built (MLLP-197), each message's
        own answer goes as its own frame, so the sender still hears every outcome."""
        try:
            answer = self.answerer.batch_answer(batch, answers)
        except Exception as exc:
            event(log, "MLLP-197", "batch answer could not be built, per-message answers sent",
                  channel=self.name, reason=type(exc).__name__, level=logging.ERROR)
            answer = tuple(a for a in answers if a is not None)
        reply(answer)

    def _guarded(self, reply: Reply, step: Callable[[], None]) -> None:
        """Run *step*; if it raises, log MLLP-199 and answer AR 207 (the sender resends)."""
        try:
            step()
        except Exception as exc:
            event(log, "MLLP-199", "ingest failed unexpectedly", channel=self.name,
                  reason=type(exc).__name__, level=logging.ERROR)
            self._store_failed(None, exc, reply)

    def _receive(self, payload: bytes, reply: Reply, notes: tuple[str, ...] = ()) -> None:
        now = time.time()
        self.stats["received"] += 1
        header, unreadable = self.answerer.read(payload)
        if unreadable is not None:
            self._reject(payload, now, header, unreadable, reply, notes=notes)
            return
        reason = not_accepted(self.accept, header.message_type, self.name)
        if reason is not None:
            self._reject(payload, now, header, self.answerer.refuse("not_accepted", reason),
                         reply, notes=notes)
            return
        duplicate = self.duplicates is not None and self.duplicates.seen(header.control_id, now)
        if duplicate and self.channel.duplicates.action == "reject":
            reason = f"duplicate message control id {header.control_id}"
            self._reject(payload, now, header, self.answerer.refuse("duplicate", reason),
                         reply, duplicate=True, notes=notes)
            return
        msg = NewMessage(self.name, now, payload, Status.RECEIVED, header.control_id,
                         header.message_type, header.patient_id or None, duplicate,
                         flags=header.flags + notes)
        self.store.submit_insert(msg, self._on_commit(header, reply))

    def oversized(self, head: bytes, size: int, reply: Reply, peer: str) -> None:
        """AR the frame over ``max_message_bytes`` (its head is stored as ERROR)."""
        self._guarded(reply, lambda: self._oversized(head, size, reply))

    def over_budget(self, head: bytes, size: int, reply: Reply, peer: str) -> None:
        """AR 207 a frame the listener shed to keep its buffer budget (its head is stored)."""
        limit = self.channel.source.max_buffer_bytes
        reason = (f"receiver busy: its {limit}-byte buffer for unfinished messages was full; "
                  "resend later")
        spec = self.answerer.refuse("over_budget", reason)
        self._guarded(reply, lambda: self._refuse_head(head, spec, reply))

    def _oversized(self, head: bytes, size: int, reply: Reply) -> None:
        limit = self.channel.source.max_message_bytes
        reason = f"message of {size} bytes exceeds the {limit}-byte limit"
        self._refuse_head(head, self.answerer.refuse("oversized", reason), reply)

    def _refuse_head(self, head: bytes, spec: Answer, reply: Reply) -> None:
        """Store the kept head of a discarded frame as ERROR and answer *spec*."""
        now = time.time()
        self.stats["received"] += 1
        self._reject(head, now, self.answerer.read_head(head), spec, reply)

    # -- internals -----------------------------------------------------------
    def _answer(self, header: Any, spec: Answer, reply: Reply) -> None:
        """Answer one frame with *spec*; total: if the ACK cannot be built, a generic one goes.

        The fallback keeps MSA-1 (AA stays AA: the message is stored; AE/AR keep their code)
        and MSA-2, with a generic reason; the failure is logged as MLLP-198 without PHI.
        """
        try:
            ack = self.answerer.build(header, spec)
        except Exception as exc:
            event(log, "MLLP-198", "ACK could not be built, generic answer sent",
                  channel=self.name, ack=spec.code, reason=type(exc).__name__,
                  level=logging.ERROR)
            ack = self.answerer.fallback(header, spec)
        reply(ack)

    def _on_commit(self, header: Any, reply: Reply) -> Callable[[int | None, Any], None]:
        t0 = time.perf_counter()

        def done(msg_id: int | None, err: BaseException | None) -> None:
            if err is not None:
                self._store_failed(header, err, reply)
                return
            self.stats["AA"] += 1
            self._answer(header, self.answerer.accepted, reply)
            self._ack_latency.observe(time.perf_counter() - t0)  # accept -> ACK written
            self.on_stored()

        return done

    def _store_failed(self, header: Any, err: BaseException, reply: Reply) -> None:
        self.stats["AR"] += 1
        kind = "store unavailable" if isinstance(err, StoreUnavailable) else "store error"
        event(log, "STORE-201", "message not stored, refused", channel=self.name,
              reason=type(err).__name__, level=logging.ERROR)
        self._answer(header, self.answerer.refuse(
            "store_failed", f"message not stored ({kind}); resend later"), reply)

    def _reject(self, raw: bytes, now: float, header: Any, spec: Answer, reply: Reply,
                duplicate: bool = False, notes: tuple[str, ...] = ()) -> None:
        """Store the refused message as ERROR with its reason, then NAK it."""
        self.stats[spec.code] += 1
        event(log, "MLLP-110", "message refused", channel=self.name, ack=spec.code,
              error=spec.error_code, control_id=header.control_id if header else None)
        msg = NewMessage(self.name, now, raw, Status.ERROR,
                         header.control_id if header else None,
                         header.message_type if header else None, None, duplicate, spec.text,
                         flags=notes)

        def done(msg_id: int | None, err: BaseException | None) -> None:
            if err is not None:
                self._store_failed(header, err, reply)
            else:
                self._answer(header, spec, reply)

        self.store.submit_insert(msg, done)


def not_accepted(accept: Any, message_type: str | None, channel: str) -> str | None:
    """Why a channel whose ``accept`` lists types refuses *message_type*; None: it takes it."""
    if accept is None or message_type in accept:
        return None
    return f"message type {message_type} is not accepted on channel {channel}"
