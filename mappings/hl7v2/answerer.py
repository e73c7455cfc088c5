"""The MLLP/HL7 answer policy the engine's ingest calls (``engine.connectors.Answerer``).

The engine decides and stores; this reads the MSH, maps each refusal to its HL7 error code
(ERR-3) and location (ERR-2) and builds the ACK (original or enhanced mode, per MSH-15):

=================  ====  ============================  ==========
why                MSA-1 ERR-3                         ERR-2
=================  ====  ============================  ==========
MSH unreadable     AR    100/101/102                   as read
later segment bad  AE    100                           as read
not_accepted       AR    200 unsupported message type  MSH^1^9
duplicate          AR    205 duplicate key             MSH^1^10
oversized          AR    100 segment sequence error    MSH^1
over_budget        AR    207 application error         MSH^1
store_failed       AR    207 application error         (none)
=================  ====  ============================  ==========

A frame holding an HL7 batch (FHS/BHS) is split by :mod:`mappings.hl7v2.batch`; the engine
decides and stores each message as above and answers them together, once all are stored:
by default one batch whose messages are the ACKs (HL7 v2.5 §2.10.3.2), or each ACK as its
own frame where the channel says ``batch_ack = "per_message"``.
"""

from __future__ import annotations

from engine.connectors import Refusal
from engine.registry import register_answerer
from mappings.hl7v2.ack import AckSpec, build_ack, fallback_ack
from mappings.hl7v2.batch import Batch, BatchAck, batch_answer, split_batch
from mappings.hl7v2.header import (
    APPLICATION_INTERNAL_ERROR,
    DUPLICATE_KEY,
    SEGMENT_SEQUENCE_ERROR,
    UNSUPPORTED_MESSAGE_TYPE,
    Header,
    HeaderError,
    parse_header,
)

_REFUSALS: dict[str, tuple[int, str]] = {
    "not_accepted": (UNSUPPORTED_MESSAGE_TYPE, "MSH^1^9"),
    "duplicate": (DUPLICATE_KEY, "MSH^1^10"),
    "oversized": (SEGMENT_SEQUENCE_ERROR, "MSH^1"),
    "over_budget": (APPLICATION_INTERNAL_ERROR, "MSH^1"),
    "store_failed": (APPLICATION_INTERNAL_ERROR, ""),
}


@register_answerer("hl7")
class HL7Answerer:
    """Answers HL7 v2 over MLLP as ``app``/``facility`` (our MSH-3/MSH-4).

    ``empty_control_id`` is the channel's option: ``reject`` answers an empty MSH-10 AR 101;
    ``generate`` takes it with a generated control id (``header.generated_id``), flagged.
    ``batch_ack`` answers a batch frame with one batch of ACKs (``batch``) or with one ACK
    frame per message (``per_message``).
    """

    accepted = AckSpec("AA")  # immutable: one for every accepted message

    def __init__(self, app: str, facility: str, *, empty_control_id: str = "reject",
                 batch_ack: BatchAck = "batch") -> None:
        self.app, self.facility = app, facility
        self.generate_control_id = empty_control_id == "generate"
        self.batch_ack: BatchAck = batch_ack

    def unbatch(self, payload: bytes) -> Batch | None:
        """The messages of an FHS/BHS batch frame, or None when it holds one message."""
        return split_batch(payload)

    def batch_answer(self, batch: Batch, answers: list[bytes | None]) -> bytes | tuple[bytes, ...]:
        """The answer to a whole batch, from its messages' answers in order."""
        return batch_answer(batch, answers, self.batch_ack, app=self.app, facility=self.facility)

    def read(self, payload: bytes) -> tuple[Header | None, AckSpec | None]:
        """The MSH; AE if it was readable but a later segment is not, AR if it is not."""
        try:
            return parse_header(payload, generate_control_id=self.generate_control_id), None
        except HeaderError as exc:
            code = "AE" if exc.header is not None else "AR"
            return exc.header, AckSpec(code, exc.reason, exc.code, exc.location)

    def read_head(self, head: bytes) -> Header | None:
        """The MSH of a discarded frame's kept head (its first segment), or None."""
        try:
            return parse_header(head.split(b"\r", 1)[0])
        except HeaderError:
            return None

    def refuse(self, why: Refusal, reason: str) -> AckSpec:
        code, location = _REFUSALS[why]
        return AckSpec("AR", reason, code, location)

    def build(self, header: Header | None, answer: AckSpec) -> bytes | None:
        return build_ack(header, answer, app=self.app, facility=self.facility)

    def fallback(self, header: Header | None, answer: AckSpec) -> bytes:
        return fallback_ack(header, answer.code, app=self.app)
