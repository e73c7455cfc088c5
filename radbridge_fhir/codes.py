"""Code systems and fixed codings of the FHIR side, in one place.

Findings arrive with DICOM coding scheme designators (SCT, LN, RADLEX,
99RADBRIDGE); orders with HL7 table 0396 names (CPT, C4, LN ...). FHIR wants a
system URI for each. A designator we do not know becomes a URN under
``urn:radbridge:code-system:`` so the code is never sent without a system (a
receiver can map it), and never silently attached to a wrong one.
"""

from __future__ import annotations

from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RADLEX = "http://radlex.org"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOCAL = "urn:radbridge:codes"

# DICOM coding scheme designators (findings) and HL7 0396 names (orders) -> FHIR system URI.
SYSTEMS: dict[str, str] = {
    "SCT": SNOMED, "SRT": SNOMED, "SNM": SNOMED, "SNOMED": SNOMED,
    "LN": LOINC, "LOINC": LOINC,
    "RADLEX": RADLEX, "RLX": RADLEX,
    "DCM": DCM, "UCUM": UCUM,
    "CPT": "http://www.ama-assn.org/go/cpt", "C4": "http://www.ama-assn.org/go/cpt",
    "ICD10": "http://hl7.org/fhir/sid/icd-10", "I10": "http://hl7.org/fhir/sid/icd-10",
    "99RADBRIDGE": LOCAL,
}


def system_uri(designator: str | None) -> str:
    """The FHIR system of a DICOM / HL7 coding system name (unknown ones get a URN)."""
    name = (designator or "").strip()
    known = SYSTEMS.get(name.upper())
    if known:
        return known
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in name) or "unknown"
    return f"urn:radbridge:code-system:{safe}"


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(*codings: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


# meta.security of every resource an AI asserted (HL7 v3 ObservationValue, AI transparency).
AIAST = coding("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST",
               "Artificial Intelligence asserted")

_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# A critical finding is "critical abnormal" (AA): HH/LL say a number is far too high/low,
# which a detected finding is not. Other findings are abnormal (A); a model that ran and
# found nothing says "not detected" (ND), not "normal": it looked for its labels only.
CRITICAL = concept(coding(_INTERPRETATION, "AA", "Critical abnormal"))
ABNORMAL = concept(coding(_INTERPRETATION, "A", "Abnormal"))
NOT_DETECTED = concept(coding(_INTERPRETATION, "ND", "Not detected"))

IMAGING_CATEGORY = concept(coding(
    "http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging"))
RADIOLOGY_CATEGORY = concept(
    coding(LOINC, "LP29684-5", "Radiology"),
    coding("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology"))
IMAGING_STUDY_CODE = concept(coding(LOINC, "18748-4", "Diagnostic imaging study"),
                             text="Diagnostic imaging study")
NO_FINDING = concept(coding(LOCAL, "NOFINDING", "No finding detected by the AI model"),
                     text="No finding detected by the AI model")
AI_METHOD = concept(coding(LOCAL, "AI", "Artificial intelligence algorithm"),
                    text="AI algorithm")
DEMO_PROPERTY = concept(coding(LOCAL, "DEMO", "Demonstration model: not for clinical use"))
YES = concept(coding("http://terminology.hl7.org/CodeSystem/v2-0136", "Y", "Yes"))
ACCESSION_TYPE = concept(coding("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN",
                                "Accession ID"))
PLACER_TYPE = concept(coding("http://terminology.hl7.org/CodeSystem/v2-0203", "PLAC",
                             "Placer Identifier"))
PERFORMER = concept(coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                           "performer", "Performer"))
ASSEMBLER = concept(coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                           "assembler", "Assembler"))
CREATE = concept(coding("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "CREATE",
                        "create"))
PROBABILITY_UNIT = {"unit": "1", "system": UCUM, "code": "1"}

# HL7 administrative sex (PID-8) -> FHIR AdministrativeGender.
GENDER = {"F": "female", "M": "male", "O": "other", "A": "other", "N": "other", "U": "unknown"}
