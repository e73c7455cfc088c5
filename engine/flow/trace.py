"""What a dry run shows: each step a channel's processor took on one message, and its effect.

A processor that runs analyst steps (filters, transformers, routes, each destination's own
steps) may offer ``trace(msg) -> (Outcome, list[StepTrace])``: the same outcome that
``process(msg)`` gives, plus one :class:`StepTrace` per step in the order the steps ran.
``radbridge try`` (and the dashboard's tester) print them; ``radbridge replay --diff``
compares the outcomes. Tracing stores and sends nothing; ``process`` stays the hot path and
records no trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.model import Message
from engine.store.base import Outcome

# What a step did (``StepTrace.result``); an error carries its reason after "error: ".
PASSED = "passed"  # a filter or route rule that let the message through
FILTERED = "filtered"  # a filter or route rule that stopped it (on a route: this destination)
CHANGED = "changed"  # a transformer that changed the message
UNCHANGED = "unchanged"  # a transformer that left it as it was


@dataclass(frozen=True)
class StepTrace:
    """One step on one message.

    *scope* is ``"channel"`` for the channel's own steps, else the destination channel's
    name; *name* says which step as the analyst wrote it (its ``name`` or its key path,
    ``transform[2] set MSH-5``); *before* and *after* are the message around the step (the
    same bytes for a rule); *result* is one of the constants above or ``"error: <reason>"``.
    """

    scope: str
    name: str
    before: bytes
    after: bytes
    result: str

    @property
    def failed(self) -> bool:
        return self.result.startswith("error")


class Traceable(Protocol):
    """A processor that can say what each of its steps did to one message."""

    def trace(self, msg: Message) -> tuple[Outcome, list[StepTrace]]: ...
