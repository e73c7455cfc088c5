"""Channel processors: what the pipeline does with each stored message.

A channel's ``process`` names a processor registered with ``engine.registry``:
``forward`` (here) passes messages on unchanged; the others register from the
package that owns their protocol (``orders`` and ``final_reports`` in
``mappings.hl7v2.plugin``, ``results`` in ``engine.results.channel``). A processor's
outcome (status, layers, deliveries, mapped domain event) is applied by the
store in one transaction; mapping never runs on the ACK path.

A channel's ``filter`` and ``transform`` run before its processor, the ``when`` of its
``forward_to`` entries after it, and each destination channel's ``filter`` and ``transform``
on what is queued for it: :class:`engine.flow.steps.StepRunner`, built here from the
configuration (rules in ``engine.config.rules``, steps in ``engine.config.steps``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import registry
from engine.config.lookups import LookupTable, load_table
from engine.config.rules import compile_filter, compile_routes, field_language
from engine.config.steps import compile_steps
from engine.flow.pipeline import Passthrough, Processor
from engine.flow.steps import Stage, StepRunner
from engine.flow.trace import StepTrace
from engine.model import Message
from engine.store.base import Outcome


@registry.register_processor("forward", "pass messages on unchanged", rank=0)
def _forward(channel: Any, config: Any) -> Processor:
    return Passthrough(channel.destinations)


def processor_for(channel: Any, config: Any = None) -> Processor:
    """The processor a channel's ``process`` names (an ``ai_results`` source: ``results``),
    behind the channel's steps and its destinations' when there are any (compiled here,
    once per start; a function of *config* and the files it names alone)."""
    runner = runner_for(channel, config)
    return runner.inner if runner.plain else runner


def runner_for(channel: Any, config: Any = None) -> StepRunner:
    """:func:`processor_for` always wrapped in a :class:`StepRunner`, even with no step, so
    that ``trace`` can be asked of any channel (``radbridge try``, ``replay --diff``)."""
    name = channel.process
    if channel.source is not None and channel.source.type == "ai_results":
        name = "results"
    inner: Processor = registry.processor(name).factory(channel, config)
    fields = field_language()
    tables, base_dir = _tables(config), getattr(config, "base_dir", Path())
    raw_routes = [r.model_dump() if not isinstance(r, str) else r for r in channel.forward_to]
    routes = compile_routes(raw_routes, ("forward_to",), fields)[0]
    own = _stage(channel, fields, tables, base_dir)
    targets = {c.name: c for c in getattr(config, "channel", [])
               if c.name in channel.destinations and c.source is None}
    others = {name: _stage(ch, fields, tables, base_dir) for name, ch in targets.items()}
    return StepRunner(inner, fields, own, routes, others)


def _stage(channel: Any, fields: Any, tables: dict[str, LookupTable], base_dir: Path) -> Stage:
    """A channel's filter and steps; raise ValueError if they do not compile (a configuration
    that was not linted, or whose files changed since): a step is never silently skipped."""
    rules, problems = (compile_filter(channel.filter, ("filter",), fields) if channel.filter
                       else ([], []))
    steps, more = (compile_steps(channel.transform, ("transform",), "hl7", fields, tables,
                                 base_dir) if channel.transform else ([], []))
    if problems or more:
        loc, message = (problems + more)[0]
        where = ".".join(str(part) for part in loc)
        raise ValueError(f"channel {channel.name}: {where}: {message}")
    return Stage(tuple(rules), tuple(steps))


def _tables(config: Any) -> dict[str, LookupTable]:
    """The lookup tables as loaded with *config*; any it does not hold (read without files,
    or a copy that lost them) are read now. Raises ``TableProblem``."""
    if config is None:
        return {}
    held = config.tables if config.files_read else {}
    return {spec.name: held.get(spec.name) or load_table(spec, config.base_dir, ("lookup", i))
            for i, spec in enumerate(config.lookup)}


def trace_of(processor: Any, msg: Message) -> tuple[Outcome, list[StepTrace]]:
    """``processor.trace(msg)`` where it has one, else ``process(msg)`` and no steps."""
    trace = getattr(processor, "trace", None)  # optional: engine.flow.trace.Traceable
    if trace is not None:
        return trace(msg)  # type: ignore[no-any-return]
    return processor.process(msg), []
