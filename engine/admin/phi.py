"""What a viewer may see, as allow-lists: everything not listed is masked.

Two allow-lists, one per kind of content:

* **JSON answers.** Every answer of a non-public operation to a masked caller (the
  ``viewer`` role) passes through that operation's ``ViewerView`` (declared on its route,
  ``engine.admin.routing``) in ``engine.admin.app``: a key it lists is shown in clear (a
  container under it is filtered the same way, key by key), any other key has its value
  replaced by ``***``. A new field, or a new endpoint, is masked until someone allows it
  here. The key groups below are the vocabulary routes compose their views from.
* **Message content.** The message viewer's layers are rendered by the view registered as
  ``message_layer`` (for HL7: ``mappings.hl7v2.view``, whose allow-list
  ``mappings.hl7v2.phi.HL7_CLEAR`` names, per segment, the fields shown in clear; every
  other field, every field of a segment not listed (Z-segments, anything unexpected) and
  the id of a line that is not a segment is masked; non-HL7 content is withheld whole).

What stays in clear: ids of our own rows, UIDs (the keys the dashboard navigates by),
states, counts, times, channel and model names, procedure codes and modality. What never
does: patient identifiers and names, birth dates, accession, placer and filler numbers,
order keys, message control ids, free text (comments, clinical information) and error
strings (they may quote message bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MASK = "***"

def mask_value(value: Any) -> Any:
    """Empty stays empty (its absence is not PHI); anything else becomes ``***``."""
    return MASK if value not in (None, "", [], {}) else value


# -- key groups routes compose their viewer views from --------------------------------------

PAGING = frozenset({"limit", "window", "older_than_secs", "sampled_at"})
CHANNEL = frozenset({
    "name", "description", "enabled", "state", "paused", "source", "destination", "address",
    "forward_to", "accept", "totals", "received", "filtered", "queued", "sent", "errored",
    "processed", "rates", "queue", "depth", "oldest_age_secs", "sampled_at", "errors",
    "retries", "backoff_secs"})
CHANNEL_MAPS = frozenset({"acks", "messages", "deliveries"})  # keyed by ACK code or status
MESSAGE = frozenset({"id", "channel", "received_at", "status", "message_type", "duplicate",
                     "size", "masked"})
DELIVERY = frozenset({"id", "destination", "status", "attempts"})
#: the message viewer's layers; ``text`` and ``value`` were masked by the layer view already
LAYERS = frozenset({"layers", "name", "size", "masked", "format", "segments", "id", "fields",
                    "n", "value", "text"})
STUDY = frozenset({"uid", "modality", "body_part", "state", "revision", "series_count",
                   "instance_count", "expected_count", "quiet_secs", "channel", "first_at",
                   "last_at", "completed_at"})
ORDER = frozenset({"id", "study_uid", "modality", "procedure_code", "procedure_text",
                   "priority", "status", "control", "patient_class", "cancelled", "created_at",
                   "updated_at"})
CASE = frozenset({"id", "order_id", "study_uid", "revision", "state", "created_at", "modality",
                  "body_part", "procedure_code", "priority", "patient_class"})
TIMELINE = frozenset({"timeline", "step", "at", "detail", "since_previous_secs",
                      "since_start_secs", "message_id", "procedure", "priority", "control",
                      "status", "modality", "series", "instances", "revision", "state",
                      "device", "total_ms", "forward_ms", "batch_size", "model", "probability",
                      "critical"})
FINDING_FLAGS = frozenset({"code", "system", "display", "probability", "criticality", "model",
                           "version", "demo"})
WORKLIST = frozenset({"case_id", "study_uid", "modality", "body_part", "procedure", "priority",
                      "order_priority", "reason", "ai_flags", "created_at", "raised_at",
                      "state"})
FEEDBACK = frozenset({"case_id", "model", "version", "code", "verdict", "source",
                      "corrected_code", "reader", "created_at"})
AGREEMENT = frozenset({"model", "version", "accepted", "rejected", "modified", "missed",
                       "agreement", "judged"})


@dataclass(frozen=True, slots=True)
class ViewerView:
    """What one operation shows a viewer: the keys in clear, the keys whose object is keyed
    by data (a status, an ACK code, a channel name: every entry shown, its value filtered),
    and whether a body that is not JSON was reviewed to hold no PHI (``/metrics``)."""

    clear: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()
    raw: bool = False

    def apply(self, data: Any) -> Any:
        """*data* with every value under a key not allowed replaced by ``***``."""
        if isinstance(data, dict):
            return {k: self._entry(k, v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.apply(v) for v in data]
        return data

    def _entry(self, key: str, value: Any) -> Any:
        if key in self.maps and isinstance(value, dict):
            return {k: self.apply(v) for k, v in value.items()}
        if key in self.clear or key in self.maps:
            return self.apply(value)
        return mask_value(value)


def view(*groups: Iterable[str], maps: Iterable[str] = (), raw: bool = False) -> ViewerView:
    """A ``ViewerView`` showing the union of *groups* (key names) in clear."""
    return ViewerView(frozenset().union(*groups), frozenset(maps), raw)


MASKED_WHOLE = ViewerView()  # an operation that declares nothing shows a viewer nothing
