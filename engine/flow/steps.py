"""The step runner: a channel's analyst steps, and each destination's, around its processor.

For one message, in order:

1. the channel's ``filter`` rules: the first that does not pass ends it FILTERED
   ("filtered by <rule>"), with no destination and no domain event;
2. the channel's ``transform`` steps, on the message parsed once; when they changed it, the
   processor gets the changed bytes and the outcome keeps them as the ``transformed`` layer
   (no layer when nothing changed);
3. the processor (``orders``, ``forward``, ``results`` ...);
4. for each of its deliveries: the ``when`` of its ``forward_to`` entry, on the transformed
   message; then the destination channel's own ``filter`` and ``transform``, on the payload
   that destination gets (the transformed message, or what the processor built for it: an
   ORU, an order update). A destination filter drops that delivery alone, and the
   ``filtered-destinations`` layer says why (``{"order-archive": "filtered by no-us"}``); a
   message whose every delivery was dropped so stays TRANSFORMED (what its processor did, an
   order stored, stands). A payload the processor built and a destination's steps changed
   is validated again (the field language's ``validate``); the delivery payload is what
   the browser shows as sent to that destination.

A rule that cannot be evaluated or a step that fails ends the message ERROR naming the rule or
step (and the destination) and the reason; a step that filters ends it FILTERED. Nothing of
this is logged: reasons may hold what a script raised. ``trace(msg)`` gives the same outcome
with one :class:`~engine.flow.trace.StepTrace` per rule and step, in the order they ran;
``process`` records none.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from engine.config.rules import Rule, RuleError
from engine.config.steps import Step, StepError, StepFiltered
from engine.flow.pipeline import Processor
from engine.flow.trace import CHANGED, FILTERED, PASSED, UNCHANGED, StepTrace
from engine.model import Message, Status
from engine.store.base import Outcome

CHANNEL = "channel"  # the scope of the channel's own steps in a trace


@dataclass(frozen=True)
class Stage:
    """The filter rules and transformer steps of a channel, or of one destination."""

    rules: tuple[Rule, ...] = ()
    steps: tuple[Step, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules or self.steps)


class _Ended(Exception):
    """A rule or step ended the message: *outcome* is its outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


def _where(scope: str) -> str:
    return "" if scope == CHANNEL else f" of {scope}"


class StepRunner:
    """A processor behind its channel's steps, its deliveries behind their destinations'."""

    cpu_bound = True  # parses and changes messages: runs in an executor
    needs_raw = True

    def __init__(self, inner: Processor, fields: Any, channel: Stage = Stage(),
                 routes: dict[str, Rule] | None = None,
                 destinations: dict[str, Stage] | None = None) -> None:
        self.inner, self.fields, self.channel = inner, fields, channel
        self.routes = routes or {}
        self.destinations = {d: s for d, s in (destinations or {}).items() if s}

    @property
    def plain(self) -> bool:
        """True when there is no step at all: ``process`` is the inner processor's."""
        return not (self.channel or self.routes or self.destinations)

    def process(self, msg: Message) -> Outcome:
        if self.plain:
            return self.inner.process(msg)
        return self._run(msg, None)

    def trace(self, msg: Message) -> tuple[Outcome, list[StepTrace]]:
        """The outcome ``process`` gives, and what each rule and step did (stores nothing)."""
        log: list[StepTrace] = []
        return self._run(msg, log), log

    def _run(self, msg: Message, log: list[StepTrace] | None) -> Outcome:
        try:
            return self._steps(msg, log)
        except _Ended as end:
            return end.outcome

    def _steps(self, msg: Message, log: list[StepTrace] | None) -> Outcome:
        view = self.fields.parse(msg.raw) if self.channel or self.routes else None
        for rule in self.channel.rules:
            if not self._test(CHANNEL, rule, view, msg.id, log, "filter "):
                raise _Ended(Outcome(msg.id, Status.FILTERED, error=f"filtered by {rule.name}"))
        layers: dict[str, bytes] = {}
        if self.channel.steps:
            view, changed = self._transform(CHANNEL, self.channel.steps, view, msg.id, log)
            if changed is not None:
                msg = dataclasses.replace(msg, raw=changed)
                layers["transformed"] = changed
        outcome = self.inner.process(msg)
        if layers:
            outcome = dataclasses.replace(outcome, layers={**layers, **outcome.layers})
        if outcome.status != Status.TRANSFORMED or not outcome.deliveries:
            return outcome
        return self._deliver(msg, view, outcome, bool(layers), log)

    def _deliver(self, msg: Message, view: Any, outcome: Outcome, transformed: bool,
                 log: list[StepTrace] | None) -> Outcome:
        kept: list[tuple[str, bytes | None]] = []
        dropped: dict[str, str] = {}
        for dest, payload in outcome.deliveries:
            route = self.routes.get(dest)
            if route is not None and not self._test(CHANNEL, route, view, msg.id, log,
                                                    trace_scope=dest):
                continue
            data = payload if payload is not None else (msg.raw if transformed else None)
            stage = self.destinations.get(dest)
            if stage is not None:
                data, why = self._destination(dest, stage, msg, data, payload is not None, log)
                if why is not None:
                    dropped[dest] = why
                    continue
            kept.append((dest, data))
        layers = outcome.layers
        if dropped:
            layers = {**layers, "filtered-destinations": json.dumps(dropped).encode()}
        return dataclasses.replace(outcome, deliveries=kept, layers=layers)

    def _destination(self, dest: str, stage: Stage, msg: Message, data: bytes | None,
                     built: bool, log: list[StepTrace] | None) -> tuple[bytes | None, str | None]:
        """(the payload *dest* gets, None) or (None, why its filter dropped it)."""
        view = self.fields.parse(data if data is not None else msg.raw)
        for rule in stage.rules:
            if not self._test(dest, rule, view, msg.id, log, "filter "):
                return None, f"filtered by {rule.name}"
        if not stage.steps:
            return data, None
        view, changed = self._transform(dest, stage.steps, view, msg.id, log)
        if changed is None:
            return data, None
        if built:
            try:
                self.fields.validate(changed)
            except ValueError as exc:
                raise _Ended(Outcome(msg.id, Status.ERROR, error=f"the payload for {dest} is "
                                     f"invalid after its steps: {exc}")) from None
        return changed, None

    def _test(self, scope: str, rule: Rule, view: Any, message_id: int,
              log: list[StepTrace] | None, label: str = "", trace_scope: str = "") -> bool:
        """Whether *rule* passes; traced as ``<label><name>`` under *trace_scope* (a route
        is traced under the destination it decides, though it is the channel's rule)."""
        named = rule.name.startswith(label.strip()) if label else True  # "filter[1]" as is
        shown, under = rule.name if named else f"{label}{rule.name}", trace_scope or scope
        try:
            passed = rule.test(view)
        except RuleError as exc:
            self._record(log, under, shown, view, view, f"error: {exc}")
            raise _Ended(Outcome(message_id, Status.ERROR,
                                 error=f"rule {rule.name}{_where(scope)} failed: {exc}")) from None
        self._record(log, under, shown, view, view, PASSED if passed else FILTERED)
        return passed

    def _transform(self, scope: str, steps: tuple[Step, ...], view: Any, message_id: int,
                   log: list[StepTrace] | None) -> tuple[Any, bytes | None]:
        """Run *steps* on *view*: (the message after them, its bytes if they changed it)."""
        before = self.fields.encode(view)
        current = before
        for step in steps:
            try:
                view = step.run(view)
            except StepFiltered as exc:
                self._record(log, scope, step.name, current, current, FILTERED)
                raise _Ended(Outcome(message_id, Status.FILTERED, error=f"filtered by step "
                                     f"{step.name}{_where(scope)}: {exc.reason}")) from None
            except Exception as exc:  # StepError, RuleError of a when, or a script's own raise
                reason = (exc.reason if isinstance(exc, StepError)
                          else f"its when failed: {exc}" if isinstance(exc, RuleError)
                          else f"{type(exc).__name__}: {exc}")
                self._record(log, scope, step.name, current, current, f"error: {reason}")
                raise _Ended(Outcome(message_id, Status.ERROR, error=f"step {step.name}"
                                     f"{_where(scope)} failed: {reason}")) from None
            if log is not None:
                after = self.fields.encode(view)
                self._record(log, scope, step.name, current, after,
                             CHANGED if after != current else UNCHANGED)
                current = after
        after = self.fields.encode(view)
        return view, (after if after != before else None)

    def _record(self, log: list[StepTrace] | None, scope: str, name: str, before: Any,
                after: Any, result: str) -> None:
        if log is None:
            return
        if not isinstance(before, bytes):  # a parsed message: a rule leaves it as it was
            before = after = self.fields.encode(before) if before is not None else b""
        log.append(StepTrace(scope, name, before, after, result))
