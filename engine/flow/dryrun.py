"""A dry run: messages through a channel's steps as the engine would take them, nothing kept.

``radbridge try`` and the dashboard's tester hand a message to :func:`try_message`: intake's
checks (the header the answerer reads, ``accept``), then the channel's processor, traced
where it can be (``engine.flow.trace``): its filters, transformers, routes and each
destination's own steps. Nothing is stored, no peer is contacted, nothing is logged about
the message. :func:`report` turns the result into JSON: each step with its field-level
changes (the ``message_diff`` view, from the package that knows the protocol), the outcome,
each destination's payload and the mapped layers, masked for viewers.

Processors are pure (``engine.flow.pipeline.Processor``), so a dry run gives exactly what
the pipeline would store; a processor that raises is reported as ERROR with the exception's
type and message, like a step that fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine import registry
from engine.flow.ingest import not_accepted
from engine.flow.processors import runner_for, trace_of
from engine.flow.trace import StepTrace
from engine.model import Message, Status
from engine.store.base import Outcome

REFUSED = "REFUSED"  # what intake would answer AR: never stored as received, never processed


@dataclass
class Tried:
    """One message's dry run: the outcome, its steps, and intake's refusal if any."""

    message: Message
    outcome: Outcome
    steps: list[StepTrace] = field(default_factory=list)
    refused: str | None = None  # intake's reason (the NAK's text); outcome is then ERROR

    @property
    def status(self) -> str:
        return REFUSED if self.refused is not None else str(self.outcome.status)

    @property
    def failed(self) -> bool:
        return self.outcome.status == Status.ERROR


def intake(channel: Any, config: Any, raw: bytes, number: int = 0) -> tuple[Message, str | None]:
    """The message as intake would store it, and why intake would refuse it (None: taken).

    Only a channel whose source hands over raw HL7 has intake checks (its header, ``accept``);
    the duplicate window is left out: a dry run has no history. A destination channel (its
    steps read HL7 v2: an ORU it would be sent, say) has its header read, never refused.
    Raises nothing."""
    msg = Message(id=number, channel=channel.name, received_at=time.time(),
                  status=Status.RECEIVED, raw=raw)
    source = channel.source
    if source is not None and registry.get("source", source.type).sink != "hl7":
        return msg, None
    answerer = registry.answerer("hl7", config.engine.app_name, config.engine.facility,
                                 empty_control_id=channel.empty_control_id)
    header, refusal = answerer.read(raw)
    if header is not None:
        msg.control_id, msg.message_type = header.control_id, header.message_type
        msg.key = header.patient_id or None
    if source is None:
        return msg, None
    if refusal is not None:
        return msg, refusal.text
    return msg, not_accepted(channel.accept, msg.message_type, channel.name)


def run(processor: Any, msg: Message) -> tuple[Outcome, list[StepTrace]]:
    """The processor's outcome and steps for *msg*; one that raises ends ERROR, naming the
    exception (its type and message: shown to the operator who ran the dry run)."""
    try:
        return trace_of(processor, msg)
    except Exception as exc:  # a processor bug must not hide the other messages' results
        reason = f"the processor failed: {type(exc).__name__}: {exc}"
        return Outcome(msg.id, Status.ERROR, error=reason), []


def try_message(channel: Any, config: Any, raw: bytes, number: int = 0,
                processor: Any = None) -> Tried:
    """*raw* through *channel* of *config* as the engine would take it (see the module)."""
    msg, refused = intake(channel, config, raw, number)
    if refused is not None:
        return Tried(msg, Outcome(msg.id, Status.ERROR, error=refused), [], refused)
    outcome, steps = run(processor or runner_for(channel, config), msg)
    return Tried(msg, outcome, steps)


def _step(step: StepTrace, masked: bool) -> dict[str, Any]:
    result, _, reason = step.result.partition(": ")
    changes = registry.view("message_diff")(step.before, step.after, masked)
    return {"scope": step.scope, "name": step.name, "result": result,
            "reason": reason or None, "changes": changes}


def report(tried: Tried, masked: bool = False) -> dict[str, Any]:
    """*tried* as JSON: ``status`` (an ``engine.model.Status`` or ``REFUSED``), ``error``,
    ``steps`` (scope, name, result, reason, changes), ``deliveries`` (destination, whether
    the raw message goes unchanged, and the payload as the message viewer renders it) and
    ``layers`` (the mapped domain object and what else the processor kept). Raises nothing."""
    render = registry.view("message_layer")
    msg, outcome = tried.message, tried.outcome
    return {
        "status": tried.status, "error": outcome.error, "masked": masked,
        "message_type": msg.message_type, "control_id": msg.control_id,
        "steps": [_step(s, masked) for s in tried.steps],
        "deliveries": [{"destination": dest, "raw": payload is None,
                        "payload": render(f"to {dest}", msg.raw if payload is None else payload,
                                          masked)}
                       for dest, payload in outcome.deliveries],
        "layers": [render(name, data, masked) for name, data in outcome.layers.items()],
    }


def flat_json(value: Any, path: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON value as its leaves by path: ``{"orders[0].accession": "ACC1"}``."""
    out = {} if out is None else out
    if isinstance(value, dict) and value:
        for key, item in value.items():
            flat_json(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            flat_json(item, f"{path}[{i}]", out)
    else:
        out[path or "(value)"] = value
    return out
