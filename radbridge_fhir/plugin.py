"""What FHIR plugs into the engine: the ``fhir`` result payload.

Every report gets its transaction Bundle (with the priority ``Task`` when AI raised the
case) whether or not a FHIR destination listens: it is the case's record behind the FHIR
facade and the worklist. A ``fhir`` destination is sent that Bundle.
"""

from __future__ import annotations

import json

from engine.registry import register_payload
from engine.results.model import ResultBuild


def record_bundle(job: ResultBuild) -> None:
    """Build the report's Bundle once: the ``fhir`` layer and the case's resources, as the
    store keeps them (ids set, references resolved: ``ids.storable``).
    Raises ``ValueError`` for a resource without an id or business key."""
    from radbridge_fhir.bundle import build_bundle
    from radbridge_fhir.ids import storable
    from radbridge_fhir.task import priority_task

    bundle = build_bundle(job.report)
    if job.raised:
        bundle.setdefault("entry", []).append(
            priority_task(bundle, job.report, job.priority, job.reason or ""))
    job.layers["fhir"] = json.dumps(bundle, sort_keys=True).encode()
    job.resources[:] = storable([e["resource"] for e in bundle.get("entry", [])])


@register_payload("fhir", "a transaction Bundle (with a priority Task when AI raised the case)",
                  prepare=record_bundle)
def bundle_payload(job: ResultBuild) -> list[tuple[str, bytes]]:
    return [("fhir", job.layers["fhir"])]
