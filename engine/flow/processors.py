"""Channel processors: what the pipeline does with each stored message.

A channel's ``process`` names a processor registered with ``engine.registry``:
``forward`` (here) passes messages on unchanged; the others register from the
package that owns their protocol (``orders`` and ``final_reports`` in
``mappings.hl7v2.plugin``, ``results`` in ``engine.results.channel``). A processor's
outcome (status, layers, deliveries, mapped domain event) is applied by the
store in one transaction; mapping never runs on the ACK path.

A channel's ``filter`` runs before its processor (a message that does not pass ends
FILTERED, naming the rule, with no destination and no domain event) and the ``when`` of
its ``forward_to`` entries after it (``Filtered``; rules in ``engine.config.rules``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine import registry
from engine.config.rules import Rule, RuleError, compile_filter, compile_routes, field_language
from engine.flow.pipeline import Passthrough, Processor
from engine.flow.trace import FILTERED, PASSED, StepTrace
from engine.model import Message, Status
from engine.store.base import Outcome


@registry.register_processor("forward", "pass messages on unchanged", rank=0)
def _forward(channel: Any, config: Any) -> Processor:
    return Passthrough(channel.destinations)


class Filtered:
    """A processor behind a channel's filter, its deliveries kept where their route passes."""

    cpu_bound = True  # reads the message
    needs_raw = True

    def __init__(
        self, inner: Processor, rules: list[Rule], routes: dict[str, Rule], fields: Any
    ) -> None:
        self.inner, self.rules, self.routes, self.fields = inner, rules, routes, fields

    def process(self, msg: Message) -> Outcome:
        view = self.fields.parse(msg.raw)
        rule = None
        try:
            for rule in self.rules:
                if not rule.test(view):
                    return Outcome(msg.id, Status.FILTERED, error=f"filtered by {rule.name}")
            outcome = self.inner.process(msg)
            if not self.routes or not outcome.deliveries:
                return outcome
            kept = []
            for dest, payload in outcome.deliveries:
                rule = self.routes.get(dest)
                if rule is None or rule.test(view):
                    kept.append((dest, payload))
        except RuleError as exc:
            name = rule.name if rule is not None else "filter"
            return Outcome(msg.id, Status.ERROR, error=f"rule {name} failed: {exc}")
        return dataclasses.replace(outcome, deliveries=kept)

    # -- the dry run (engine.flow.trace): the same decisions as process, each one recorded --

    def trace(self, msg: Message) -> tuple[Outcome, list[StepTrace]]:
        """What :meth:`process` gives, with one step per filter rule, the inner processor's
        own steps (when it traces) and one per route; stores and sends nothing."""
        view, raw, steps = self.fields.parse(msg.raw), msg.raw, []
        for rule in self.rules:
            result = _rule_result(rule, view)
            steps.append(StepTrace("channel", f"filter {rule.name}", raw, raw, result))
            if result != PASSED:
                return _stopped(msg, rule, result), steps
        outcome, inner = trace_of(self.inner, msg)
        steps += inner
        kept = []
        for dest, payload in outcome.deliveries:
            route = self.routes.get(dest)
            result = PASSED if route is None else _rule_result(route, view)
            if route is not None:
                steps.append(StepTrace(dest, route.name, raw, raw, result))
            if result == PASSED:
                kept.append((dest, payload))
            elif result != FILTERED:
                return _stopped(msg, route, result), steps
        return dataclasses.replace(outcome, deliveries=kept), steps


def _rule_result(rule: Rule, view: Any) -> str:
    """A rule's result as a step records it (an evaluation failure: ``error: <reason>``)."""
    try:
        return PASSED if rule.test(view) else FILTERED
    except RuleError as exc:
        return f"error: {exc}"


def _stopped(msg: Message, rule: Any, result: str) -> Outcome:
    """The outcome of a filter that stopped a message, or of a rule that failed (as process)."""
    if result == FILTERED:
        return Outcome(msg.id, Status.FILTERED, error=f"filtered by {rule.name}")
    return Outcome(msg.id, Status.ERROR,
                   error=f"rule {rule.name} failed: {result.removeprefix('error: ')}")


def trace_of(processor: Any, msg: Message) -> tuple[Outcome, list[StepTrace]]:
    """``processor.trace(msg)`` where it has one, else ``process(msg)`` and no steps."""
    trace = getattr(processor, "trace", None)  # optional: engine.flow.trace.Traceable
    if trace is not None:
        return trace(msg)  # type: ignore[no-any-return]
    return processor.process(msg), []


def processor_for(channel: Any, config: Any = None) -> Processor:
    """The processor a channel's ``process`` names (an ``ai_results`` source: ``results``),
    behind the channel's filter and routes when it has any (compiled here, once per start)."""
    name = channel.process
    if channel.source is not None and channel.source.type == "ai_results":
        name = "results"
    inner: Processor = registry.processor(name).factory(channel, config)
    raw_routes = [r.model_dump() if not isinstance(r, str) else r for r in channel.forward_to]
    if channel.filter is None and all(isinstance(r, str) for r in raw_routes):
        return inner
    fields = field_language()
    rules = compile_filter(channel.filter, ("filter",), fields)[0] if channel.filter else []
    routes = compile_routes(raw_routes, ("forward_to",), fields)[0]
    return Filtered(inner, rules, routes, fields)
