"""The FHIR side of a raised worklist priority: a ``Task`` asking for the study to be read first."""

from __future__ import annotations

import uuid
from typing import Any

from engine.results.model import AIReport

FHIR_PRIORITY = {"STAT": "stat", "URGENT": "urgent", "ROUTINE": "routine"}


def priority_task(bundle: dict[str, Any], report: AIReport, priority: str, reason: str
                  ) -> dict[str, Any]:
    """A transaction entry for the FHIR side of a raised priority: a Task asking for the
    study to be read first (focus: the ImagingStudy, for: the patient), conditional on its
    identifier like every entry we send. Validated with the R4B Task model."""
    from fhir.resources.R4B.task import Task

    refs = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle.get("entry", [])}
    identifier = f"{report.report_id}-priority"
    system = "urn:radbridge:worklist"
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                         "v3-ObservationValue", "code": "AIAST",
                               "display": "Artificial Intelligence asserted"}]},
        "identifier": [{"system": system, "value": identifier}],
        "status": "requested", "intent": "order", "priority": FHIR_PRIORITY[priority],
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}],
                 "text": f"Read first: worklist priority raised to {priority}"},
        "reasonCode": {"text": reason},
        "authoredOn": report.reported_datetime().isoformat(timespec="seconds"),
    }
    if "ImagingStudy" in refs:
        task["focus"] = {"reference": refs["ImagingStudy"]}
    if "Patient" in refs:
        task["for"] = {"reference": refs["Patient"]}
    Task.model_validate(task)
    return {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, system + '/' + identifier)}",
            "resource": task,
            "request": {"method": "POST", "url": "Task",
                        "ifNoneExist": f"identifier={system}|{identifier}"}}
