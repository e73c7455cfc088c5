"""The STOW-RS response: an application/dicom+json Store Instances Response (PS3.18 10.5.3).

``ReferencedSOPSequence`` (0008,1199) lists the stored instances and
``FailedSOPSequence`` (0008,1198) the failed ones with their FailureReason
(0008,1197). No RetrieveURL is given: this engine does not serve WADO-RS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from channels.dicom.status import Failure
from engine.store.clinical import InstanceMeta

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
RETRY_AFTER_SECS = 30


@dataclass(slots=True)
class Outcome:
    """What happened to one part: ``failure`` is None when it was stored."""

    failure: Failure | None
    meta: InstanceMeta | None = None


def _item(outcome: Outcome) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if outcome.meta is not None:
        item[REFERENCED_SOP_CLASS_UID] = {"vr": "UI", "Value": [outcome.meta.sop_class_uid]}
        item[REFERENCED_SOP_INSTANCE_UID] = {"vr": "UI", "Value": [outcome.meta.sop_uid]}
    if outcome.failure is not None:
        item[FAILURE_REASON] = {"vr": "US", "Value": [outcome.failure.code]}
    return item


def http_status(outcomes: list[Outcome]) -> int:
    """200 all stored, 202 some failed, 409 all failed, 503 if the store was unavailable."""
    failures = [o.failure for o in outcomes if o.failure is not None]
    if any(f.transient for f in failures):
        return 503
    if not failures:
        return 200
    return 409 if len(failures) == len(outcomes) else 202


def stow_response(outcomes: list[Outcome]) -> tuple[int, bytes, dict[str, str]]:
    """(HTTP status, dicom+json body, extra headers) for the parts of one request."""
    stored = [_item(o) for o in outcomes if o.failure is None]
    failed = [_item(o) for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    if stored:
        body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": stored}
    if failed:
        body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
    status = http_status(outcomes)
    headers: dict[str, str] = {}
    first = next((o.failure for o in outcomes if o.failure is not None), None)
    if first is not None:
        text = first.comment.replace('"', "'")
        headers["Warning"] = f'299 radbridge "{len(failed)} of {len(outcomes)} failed: {text}"'
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECS)
    return status, json.dumps(body).encode(), headers
