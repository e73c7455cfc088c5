"""What HL7 v2 plugs into the engine: processors and result payloads.

* ``process = "orders"``: map ADT/ORM/OMI into patients and orders; the store applies the
  mapped event in the same transaction as the message's status, so a crash can never leave
  one without the other. A message that cannot be mapped ends as ERROR with the reason (its
  sender already had its ACK: mapping never runs on the ACK path).
* ``process = "final_reports"``: the radiologist's final ORU from the RIS, compared with the
  AI findings of the case (agreement per model version: the drift signal).
* payload ``hl7``: the ORU^R01 of an AI report; payload ``order_update``: the RIS order
  update (ORM^O01 or OMI^O23) when AI raised the case's priority.
* field language ``hl7``: the reader's compiled paths, for channel filters and routes, and the
  message that transformer steps (``mappings.hl7v2.steps``) change.

The builders import their HL7 writers when first used, so loading the plugins stays cheap.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from engine.model import Message, Status
from engine.registry import register_fields, register_payload, register_processor
from engine.results.model import ResultBuild
from engine.store.base import Outcome
from engine.store.results import FinalReportEvent
from mappings.hl7v2.fieldmap import FieldMap, check_options
from mappings.hl7v2.orders import (
    MappingError,
    OrderEvent,
    PatientEvent,
    map_message,
    priority_flags,
)
from mappings.hl7v2.reader import parse
from mappings.hl7v2.readpath import compile_path

# A priority as the HL7 order priority code of an order update (ORC-7.6 / TQ1-9).
HL7_PRIORITY = {"STAT": "S", "URGENT": "A", "ROUTINE": "R"}


def _jsonable(obj: Any) -> bytes:
    return json.dumps(dataclasses.asdict(obj), default=str, sort_keys=True).encode()


@register_fields("hl7")
class HL7Fields:
    """Rules read HL7 v2 with the fast reader: paths compiled once, the message parsed lazily."""

    @staticmethod
    def compile(path: str) -> Any:
        """A reader of *path* (``PID-3[.5=MR].1``); raises ``PathError`` (a ValueError)."""
        return compile_path(path).get

    @staticmethod
    def parse(raw: bytes) -> Any:
        """The message the compiled readers read (and transformer steps change)."""
        return parse(raw)

    @staticmethod
    def encode(message: Any) -> bytes:
        """A parsed (perhaps changed) message as bytes, in the codec it was read with."""
        return message.to_bytes()  # type: ignore[no-any-return]

    @staticmethod
    def validate(data: bytes) -> None:
        """Check a message we built (an ORU, an order update) again after a destination's
        steps changed it; raise ValueError (``OutboundInvalid``) with the reason."""
        from mappings.hl7v2.order_update import check_sent

        check_sent(parse(data).encode())

    @staticmethod
    def measure(raw: bytes) -> dict[str, int]:
        """Segments (lines, whatever the terminator) and fields (field separators, MSH-1's)
        of *raw*: a few passes over the bytes in C, however hostile the message."""
        fs = raw[3:4] if raw.startswith(b"MSH") and len(raw) > 3 else b"|"
        lines = raw.count(b"\r") + raw.count(b"\n") - raw.count(b"\r\n") + 1
        return {"segments": lines, "fields": raw.count(fs)}


class OrdersProcessor:
    """Map to domain objects, then forward like ``Passthrough``."""

    cpu_bound = True  # python-hl7 parsing: runs in an executor
    needs_raw = True

    def __init__(self, forward_to: Sequence[str], fieldmap: FieldMap | None = None) -> None:
        self.forward_to = list(forward_to)
        self.fieldmap = fieldmap or FieldMap()

    def process(self, msg: Message) -> Outcome:
        flags: list[str] = []  # what was mapped leniently (map_message's notes, priorities)
        try:
            mapped: PatientEvent | OrderEvent = map_message(msg.raw, self.fieldmap, flags)
        except MappingError as exc:
            return Outcome(msg.id, Status.ERROR, error=f"cannot map: {exc.reason}")
        layers = {"mapped": _jsonable(mapped)}
        if isinstance(mapped, OrderEvent):
            flags += priority_flags(mapped, self.fieldmap)
        if flags:  # what was mapped leniently, beside the mapped layer (intake repairs: "flags")
            layers["mapped-flags"] = json.dumps(flags).encode()
        return Outcome(msg.id, Status.TRANSFORMED, layers=layers,
                       deliveries=[(dest, None) for dest in self.forward_to], domain=mapped)


@register_processor("orders", "also map ADT/ORM/OMI into patients and orders and correlate "
                              "them with studies", rank=10, options=("map", "values"),
                    check=check_options)
def _orders(channel: Any, config: Any) -> OrdersProcessor:
    fieldmap = FieldMap.from_options(getattr(channel, "map", None),
                                     getattr(channel, "values", None))
    return OrdersProcessor(channel.destinations, fieldmap)


class FinalReportsProcessor:
    """``process = "final_reports"``: the radiologist's ORU, compared with the AI findings."""

    cpu_bound = True
    needs_raw = True

    def __init__(self, channel: Any, config: Any) -> None:
        self.forward_to = list(channel.destinations)
        self.model_codes = {f"{m.name}|{m.version}": [label.code for label in m.output.labels]
                            for m in config.model}

    def process(self, msg: Message) -> Outcome:
        from mappings.hl7v2.final_report import read_final_report

        try:
            final = read_final_report(msg.raw)
        except Exception as exc:
            return Outcome(msg.id, Status.ERROR, error=f"cannot read final report: {exc}")
        if (final.status or "").upper() not in ("F", "C"):
            return Outcome(msg.id, Status.FILTERED,
                           error=f"result status {final.status!r} is not final (F or C)")
        ev = FinalReportEvent(final.accession, final.placer, final.filler,
                              [c[0] for c in final.codes], final.status, self.model_codes)
        return Outcome(msg.id, Status.TRANSFORMED,
                       layers={"mapped": json.dumps({"codes": ev.codes}).encode()},
                       deliveries=[(dest, None) for dest in self.forward_to], domain=ev)


register_processor("final_reports", "compare the radiologist's final ORU with the AI findings "
                                    "(agreement statistics)", rank=30)(FinalReportsProcessor)


@register_payload("hl7", "ORU^R01 of the AI report (built once per report)")
def oru_payload(job: ResultBuild) -> list[tuple[str, bytes]]:
    from mappings.hl7v2.oru import build_oru

    source = job.source
    oru = job.layers.get("oru") or build_oru(
        job.report, version=source.oru_version, sending_application=job.app,
        sending_facility=job.facility, receiving_application=source.receiving_application,
        receiving_facility=source.receiving_facility)
    return [("oru", oru)]


@register_payload("order_update", "the RIS order update, when AI raised the priority")
def order_update_payload(job: ResultBuild) -> list[tuple[str, bytes]]:
    from mappings.hl7v2.order_update import build_order_update

    if not job.raised:
        return []
    source = job.source
    update = build_order_update(job.report, HL7_PRIORITY[job.priority], job.reason or "",
                                message=source.order_update_message,
                                priority_field=source.priority_field,
                                sending_application=job.app, sending_facility=job.facility)
    return [("order_update", update)]
