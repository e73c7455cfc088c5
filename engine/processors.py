"""Channel processors: what the pipeline does with each stored message.

``forward`` passes messages on unchanged. ``orders`` maps ADT/ORM/OMI into
patients and orders; the store applies the mapped event in the same
transaction as the message's status, so a crash can never leave one without
the other. A message that cannot be mapped ends as ERROR with the reason
(its sender already had its ACK: mapping never runs on the ACK path).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from engine.model import Message, Status
from engine.pipeline import Passthrough, Processor
from engine.store.base import Outcome
from mappings.hl7v2.fieldmap import FieldMap
from mappings.hl7v2.orders import MappingError, OrderEvent, PatientEvent, map_message


def _jsonable(obj: Any) -> bytes:
    return json.dumps(dataclasses.asdict(obj), default=str, sort_keys=True).encode()


class OrdersProcessor:
    """Map to domain objects, then forward like ``Passthrough``."""

    cpu_bound = True  # python-hl7 parsing: runs in an executor
    needs_raw = True

    def __init__(self, forward_to: Sequence[str], fieldmap: FieldMap | None = None) -> None:
        self.forward_to = list(forward_to)
        self.fieldmap = fieldmap or FieldMap()

    def process(self, msg: Message) -> Outcome:
        try:
            mapped: PatientEvent | OrderEvent = map_message(msg.raw, self.fieldmap)
        except MappingError as exc:
            return Outcome(msg.id, Status.ERROR, error=f"cannot map: {exc.reason}")
        return Outcome(msg.id, Status.TRANSFORMED, layers={"mapped": _jsonable(mapped)},
                       deliveries=[(dest, None) for dest in self.forward_to], domain=mapped)


def processor_for(channel: Any, config: Any = None) -> Processor:
    if channel.process == "results" or (channel.source is not None
                                        and channel.source.type == "ai_results"):
        from engine import registry
        from engine.results import ResultsProcessor

        sinks = {c.name: registry.get("destination", c.destination.type).sink
                 for c in config.channel if c.destination is not None}
        return ResultsProcessor(channel, config, sinks)
    if channel.process == "final_reports":
        from engine.results import FinalReportsProcessor

        return FinalReportsProcessor(channel, config)
    if channel.process == "orders":
        return OrdersProcessor(channel.forward_to)
    return Passthrough(channel.forward_to)
