"""An AI report -> DICOM Comprehensive 3D SR (TID 1500 Measurement Report), for the PACS.

One SR per model run, so a radiologist sees each model's second read beside the images
and a re-run of the same (study, model version) replaces its earlier SR: the series and
SOP Instance UIDs derive from ``report.uid("sr", model, version, ...)``, and the content
date and time from the report, never from a clock, so the same report gives the same bytes.

What the document says, and why::

    header    Manufacturer RADBRIDGE (``engine.flow.instances`` then knows its own output and never
              re-triggers a study with it); SeriesDescription "<model> <version> AI preliminary
              (second read)", prefixed DEMO for a demo model; patient and study from the source
              instances' headers; CompletionFlag COMPLETE (PARTIAL when the model failed: no
              conclusion either way), VerificationFlag UNVERIFIED and PreliminaryFlag
              PRELIMINARY: AI output is a second read, never verified and never final
    evidence  every source instance of the report (CurrentRequestedProcedureEvidenceSequence)
    observer  a device: name = the model, model name = "<model> <version>", manufacturer
              RADBRIDGE, UID derived from the model and version (the same model, same UID)
    groups    one TID 1501 Measurement Group per finding of this model (and of no other):
                Tracking Identifier  "<code> (<model> <version>)" and a deterministic UID
                Finding (121071 DCM) the finding's code, with its coding scheme designator
                Algorithm Identification (TID 4019): the model's name and version
                Finding Site (363698007 SCT) from ``location``, when the finding has one
                Presence of property (121052 DCM) = Present (121053 DCM)
                Certainty of Finding (111012 DCM), UCUM "1", the model's probability (0..1)
                Source (260753009 SCT): the images the model read
              no finding: one group, Finding = Finding (404684003 SCT), Presence = Absent:
              a negative result is a result, and the PACS shows it as one; a failed model:
              the same group with Presence Undetermined (121059 DCM) in a PARTIAL document

Probability as a number. TID 1501 leaves its measurement concepts open (TID 300 with no
defined CID), so the concept is taken from the CAD templates that already express "how
likely is this detection": (111012, DCM, "Certainty of Finding"). Its unit is UCUM's unity
"1": the model's 0..1 value is sent as is, as in the ORU (no silent rescaling to percent).

Geometry. ``Finding`` carries no region yet, so findings are TID 1501 groups (whole-image
findings). TODO: when a finding carries a region (a bounding box or a contour on one image),
build a ``PlanarROIMeasurementsAndQualitativeEvaluations`` group with an ``ImageRegion``
(SCOORD on the referenced image) instead.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import highdicom as hd
import pydicom
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from engine.model import Finding
from engine.results.model import AIReport, ModelRun, SourceInstance

MANUFACTURER = "RADBRIDGE"
LOCAL_SCHEME = "99RADBRIDGE"
SERIES_NUMBER = 9901
SERIES_SUFFIX = "AI preliminary (second read)"

PRESENCE = codes.DCM.PresenceOfProperty
CERTAINTY = codes.DCM.CertaintyOfFinding  # see the module docstring
UNITY = codes.UCUM.NoUnits  # UCUM "1": the model's 0..1 probability, unscaled
NO_FINDING = codes.SCT.Finding  # with Presence = Absent: nothing found
IMAGING_STUDY = CodedConcept("18748-4", "LN", "Diagnostic imaging study")
ENGLISH = CodedConcept("en-US", "RFC5646", "English (United States)")

# Our procedure coding systems (HL7 table 0396 names) -> DICOM coding scheme designators.
SCHEMES = {"CPT": "C4", "C4": "C4", "LN": "LN", "LOINC": "LN", "SCT": "SCT", "SNOMED": "SCT",
           "SRT": "SCT", "RADLEX": "RADLEX", "DCM": "DCM"}

# Free-text locations the built-in models use -> SNOMED CT anatomy (laterality kept apart).
SITES = {"lung": codes.SCT.Lung, "lungs": codes.SCT.Lung, "chest": codes.SCT.Chest,
         "thorax": codes.SCT.Thorax, "heart": codes.SCT.Heart, "pleura": codes.SCT.Pleura,
         "abdomen": codes.SCT.Abdomen, "head": codes.SCT.Head, "brain": codes.SCT.Brain}
LATERALITY = {"right": codes.SCT.Right, "left": codes.SCT.Left,
              "bilateral": codes.SCT.Bilateral}


def build_sr(report: AIReport, model: ModelRun) -> Dataset:
    """The TID 1500 SR of *model*'s findings on the report's study (see the module docstring).

    Raises ``ValueError`` when the report has no source instance to refer to.
    """
    if not report.instances:
        raise ValueError("an SR needs the source instances as evidence; the report has none")
    evidence = _evidence_list(report)
    findings = report.findings_of(model.name, model.version)
    algorithm = hd.sr.AlgorithmIdentification(name=_lo(model.name), version=_lo(model.version))
    sources = [hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID)
               for ds in evidence if "Image Storage" in pydicom.uid.UID(ds.SOPClassUID).name]
    done = model.state == "done"
    if not done:  # the model failed: nothing concluded either way (and the document PARTIAL)
        groups = [_summary_group(report, model, algorithm, sources, "not determined",
                                 codes.DCM.PresenceUndetermined)]
    elif findings:
        groups = [_finding_group(report, model, f, algorithm, sources) for f in findings]
    else:
        groups = [_summary_group(report, model, algorithm, sources, "no finding",
                                 codes.DCM.Absent)]
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=_procedure(report),
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            ENGLISH))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=content,
        series_instance_uid=report.uid("sr", model.name, model.version, "series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=report.uid("sr", model.name, model.version, "instance"),
        instance_number=1, manufacturer=MANUFACTURER,
        is_complete=done, is_final=False, is_verified=False)
    _stamp(sr, report, model, findings)
    return sr


def sr_part10(ds: Dataset) -> bytes:
    """The SR in the DICOM File Format (preamble, file meta, explicit VR little endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def series_description(model: ModelRun, demo: bool) -> str:
    """LO (64 characters): the model part is shortened, never the DEMO mark or the suffix."""
    prefix = "DEMO " if demo else ""
    room = 64 - len(prefix) - len(SERIES_SUFFIX) - 1
    return f"{prefix}{_clean(f'{model.name} {model.version}')[:room]} {SERIES_SUFFIX}"


def _stamp(sr: Dataset, report: AIReport, model: ModelRun, findings: list[Finding]) -> None:
    """Header values highdicom takes from the clock or leaves out."""
    when = report.reported_datetime()
    for prefix in ("Content", "Series", "InstanceCreation"):
        sr[f"{prefix}Date"] = pydicom.DataElement(f"{prefix}Date", "DA", when.strftime("%Y%m%d"))
        sr[f"{prefix}Time"] = pydicom.DataElement(f"{prefix}Time", "TM",
                                                  when.strftime("%H%M%S.%f"))
    for item in sr.get("ContributingEquipmentSequence", []):  # highdicom stamps the clock
        item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    sr.SeriesDescription = series_description(model, model.demo or any(f.demo for f in findings))
    sr.ManufacturerModelName = "radbridge"
    if report.accession and not sr.get("AccessionNumber"):
        sr.AccessionNumber = report.accession[:16]


_TYPE2_FROM_EVIDENCE = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                        "AccessionNumber", "StudyID", "StudyDate", "StudyTime")


def _evidence_list(report: AIReport) -> list[Dataset]:
    """Evidence for highdicom: the first readable source header (patient and study are
    copied from it), then every other instance by its UIDs alone. Reading one header, not
    hundreds, keeps a CT study's SR cheap; the references need nothing more."""
    first = next((ds for inst in report.instances if (ds := _header(inst)) is not None), None)
    if first is None:  # every file gone (e.g. after retention): the report still builds it
        first = _stand_in(report, report.instances[0], with_patient=True)
    return [first] + [_stand_in(report, inst) for inst in report.instances
                      if inst.sop_uid != first.SOPInstanceUID]


def _header(inst: SourceInstance) -> Dataset | None:
    if not os.path.exists(inst.path):
        return None
    ds: Dataset = pydicom.dcmread(inst.path, stop_before_pixels=True)
    if ds.get("SOPInstanceUID") != inst.sop_uid:
        return None
    for keyword in _TYPE2_FROM_EVIDENCE:  # highdicom copies them; images may lack them
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _stand_in(report: AIReport, inst: SourceInstance, with_patient: bool = False) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = report.study_uid, inst.series_uid
    ds.SOPInstanceUID, ds.SOPClassUID = inst.sop_uid, inst.sop_class_uid
    if not with_patient:
        return ds
    patient = report.patient
    ds.PatientID = patient.patient_id if patient else ""
    ds.PatientName = "^".join(filter(None, (patient.family, patient.given))) if patient else ""
    ds.PatientBirthDate = (patient.birth_date or "") if patient else ""
    ds.PatientSex = {"F": "F", "M": "M", "O": "O"}.get(patient.sex or "", "") if patient else ""
    ds.AccessionNumber = (report.accession or "")[:16]
    ds.StudyID = ds.StudyDate = ds.StudyTime = ds.ReferringPhysicianName = ""
    return ds


def _observation_context(model: ModelRun) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=_model_uid(model), name=_lo(model.name), manufacturer_name=MANUFACTURER,
        model_name=_lo(f"{model.name} {model.version}"))
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.cid270.Device, observer_identifying_attributes=device))


def _model_uid(model: ModelRun) -> str:
    """The device observer's UID: one per model version, the same on every study."""
    digest = hashlib.sha256(f"radbridge-model|{model.name}|{model.version}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:15], 'big')}"


def _procedure(report: AIReport) -> CodedConcept:
    order = report.order
    if order and order.procedure_code and order.procedure_system:
        scheme = SCHEMES.get(order.procedure_system.upper(), order.procedure_system)
        return CodedConcept(order.procedure_code, _clean(scheme)[:16],
                            _lo(order.procedure_text or order.procedure_code))
    return IMAGING_STUDY


def _finding_group(report: AIReport, model: ModelRun, finding: Finding,
                   algorithm: hd.sr.AlgorithmIdentification,
                   sources: list[Any]) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    code = CodedConcept(finding.code, _clean(finding.coding_system)[:16], _lo(finding.display))
    measurements = []
    if finding.probability is not None:
        measurements.append(hd.sr.Measurement(
            name=CERTAINTY, value=float(finding.probability), unit=UNITY,
            algorithm_id=algorithm))
    sites = [_finding_site(finding.location)] if finding.location else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(report, model, finding.coding_system, finding.code),
        finding_type=code, algorithm_id=algorithm, finding_sites=sites,
        measurements=measurements or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(PRESENCE, codes.DCM.Present)],
        source_images=sources or None)


def _summary_group(report: AIReport, model: ModelRun, algorithm: hd.sr.AlgorithmIdentification,
                   sources: list[Any], label: str, presence: Any
                   ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """No finding: Finding (SCT) Absent; a failed model: Presence Undetermined."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(report, model, "none", label),
        finding_type=NO_FINDING, algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(PRESENCE, presence)],
        source_images=sources or None)


def _tracking(report: AIReport, model: ModelRun, system: str, code: str
              ) -> hd.sr.TrackingIdentifier:
    uid = report.uid("sr", model.name, model.version, "finding", system, code)
    return hd.sr.TrackingIdentifier(uid=uid, identifier=_lo(f"{code} ({model.name} "
                                                            f"{model.version})"))


def _finding_site(location: str) -> hd.sr.FindingSite:
    """A coded site: "Right lung" -> Lung (SCT) with laterality Right; an unknown text keeps
    its words as the meaning of a local code (99RADBRIDGE), so nothing is lost."""
    words = _clean(location).strip().split()
    side = LATERALITY.get(words[0].lower()) if words else None
    rest = " ".join(words[1:] if side else words)
    site = SITES.get(rest.lower())
    if site is None:
        value = "L" + hashlib.sha256(rest.lower().encode()).hexdigest()[:15].upper()
        site, side = CodedConcept(value, LOCAL_SCHEME, _lo(rest or location)), side
    return hd.sr.FindingSite(anatomic_location=site, laterality=side)


def _clean(text: str) -> str:
    """Printable, no backslash (the value delimiter): free text cannot break an element."""
    return "".join(c if c.isprintable() and c != "\\" else " " for c in text)


def _lo(text: str) -> str:
    """A short text value (LO: at most 64 characters)."""
    return _clean(text).strip()[:64] or "-"
