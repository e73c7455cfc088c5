"""Bounded cost per message: a hostile size is refused before anything parses it.

The listener bounds a frame's bytes (``max_message_bytes``); what a message costs to process
grows with its segments and fields, so a 5 MB message of 400,000 segments would hold a worker
for seconds. Before a channel's cpu_bound processor runs, the field language of what its
source carries (``engine.registry.register_fields``: for HL7 v2, segments and fields counted
in one pass over the bytes) measures the message; over ``[engine] max_segments`` or
``max_fields`` it ends ERROR naming the count and the limit: stored, visible, reprocessable
after the limit is raised, never lost, and never in the way of the messages behind it.
"""

from __future__ import annotations

from typing import Any

from engine import registry
from engine.flow.pipeline import Processor
from engine.flow.processors import processor_for
from engine.model import Message, Status
from engine.store.base import Outcome


class Bounded:
    """*inner* behind the size limits: ``limits`` maps a measure (``segments``) to its most."""

    def __init__(self, inner: Processor, measure: Any, limits: dict[str, int]) -> None:
        self.inner, self.measure, self.limits = inner, measure, limits
        self.cpu_bound, self.needs_raw = inner.cpu_bound, inner.needs_raw

    def over(self, raw: bytes) -> str | None:
        """Why *raw* is too large to process, or None."""
        counts = self.measure(raw)
        for name, limit in self.limits.items():
            if counts.get(name, 0) > limit:
                return (f"too large to process: {counts[name]:,} {name} "
                        f"([engine] max_{name} = {limit:,})")
        return None

    def process(self, msg: Message) -> Outcome:
        reason = self.over(msg.raw)
        if reason is not None:
            return Outcome(msg.id, Status.ERROR, error=reason)
        return self.inner.process(msg)


def bounded_processor(channel: Any, config: Any) -> Processor:
    """The channel's processor (``processor_for``), behind the size limits when it is
    cpu_bound and its source carries a payload with a field language (HL7 v2)."""
    processor = processor_for(channel, config)
    if not processor.cpu_bound or channel.source is None:
        return processor
    try:
        fields = registry.fields(registry.get("source", channel.source.type).sink)
    except KeyError:  # JSON reports, DICOM: made by us or bounded where they arrive
        return processor
    limits = {"segments": config.engine.max_segments, "fields": config.engine.max_fields}
    return Bounded(processor, fields.measure, limits)
