"""De-identification before an external model sees a study (DICOM PS3.15 Annex E).

The subset of the Basic Application Level Confidentiality Profile that
matters for pixel models: identifying attributes are removed (X) or emptied
(Z); identifiers the model may echo are replaced by pseudonyms (patient ID,
accession number); UIDs are replaced (U) everywhere, nested ones included;
private attributes, overlays and curves are removed. A study whose pixels
carry burned-in annotation is refused. The pseudonyms are kept in the store
(``pseudonyms``), so a result about the pseudonymous study is re-linked to
the real one.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.store.inference import CaseContext, derived_uid
from inference.errors import DeidentificationRefused

REMOVE = (  # X
    "PatientAge", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "MedicalRecordLocator", "EthnicGroup", "Occupation", "MilitaryRank", "BranchOfService",
    "PatientComments", "AdditionalPatientHistory", "IssuerOfPatientID", "PatientWeight",
    "PatientSize", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "StationName", "DeviceSerialNumber",
    "StudyDescription", "SeriesDescription", "RequestAttributesSequence",
    "ReferencedStudySequence", "ReferencedPatientSequence", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID", "ImageComments",
    "ProtocolName", "DerivationDescription", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "AcquisitionTime", "AcquisitionDateTime", "InstanceCreationDate", "InstanceCreationTime",
    "CurrentPatientLocation", "AdmittingDiagnosesDescription",
)
EMPTY = (  # Z
    "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ContentDate",
    "ContentTime", "ReferringPhysicianName", "StudyID",
)
UIDS = frozenset({  # U, wherever they occur
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "MediaStorageSOPInstanceUID", "ReferencedSOPInstanceUID", "IrradiationEventUID",
    "SynchronizationFrameOfReferenceUID", "ConcatenationUID", "DimensionOrganizationUID",
    "StorageMediaFileSetUID",
})


class PseudonymMap:
    """Real -> pseudonym for one study. Study UID, patient ID and accession come from the
    store; the other UIDs are derived with the study's secret salt and collected in ``pairs``
    so that the caller can keep them."""

    def __init__(self, study: dict[str, str], real_study_uid: str) -> None:
        self.study = study
        self.real_study_uid = real_study_uid
        self.pairs: dict[tuple[str, str], str] = {}

    @property
    def study_uid(self) -> str:
        return self.study["study_uid"]

    def uid(self, real: str) -> str:
        if real == self.real_study_uid:
            return self.study_uid
        pseudo = derived_uid(self.study["salt"], real)
        self.pairs[("uid", real)] = pseudo
        return pseudo

    def kept(self) -> list[tuple[str, str, str]]:
        """(kind, real, pseudo) for the store."""
        return [(kind, real, pseudo) for (kind, real), pseudo in self.pairs.items()]


def _replace_uids(ds: Dataset, pseudo: PseudonymMap) -> None:
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or Sequence():
                _replace_uids(item, pseudo)
        elif elem.keyword in UIDS and elem.value:
            if elem.VM > 1:
                elem.value = [pseudo.uid(str(v)) for v in elem.value]
            else:
                elem.value = pseudo.uid(str(elem.value))


def _remove_groups(ds: Dataset) -> None:
    """Overlays (60xx) and curves (50xx) go; so do private attributes."""
    for tag in [e.tag for e in ds if (e.tag.group & 0xFF00) in (0x5000, 0x6000)]:
        del ds[tag]
    ds.remove_private_tags()


def deidentify(ds: Dataset, pseudo: PseudonymMap) -> None:
    """De-identify *ds* in place (PS3.15 basic profile subset; see the module docstring)."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise DeidentificationRefused("burned-in annotation: not sent to an external model")
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY:
        if keyword in ds:
            ds.data_element(keyword).value = None  # type: ignore[union-attr]
    ds.PatientID = pseudo.study.get("patient_id", "")
    if "AccessionNumber" in ds:
        ds.AccessionNumber = pseudo.study.get("accession", "")
    _remove_groups(ds)
    _replace_uids(ds, pseudo)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    _mark(ds)


def _mark(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "radbridge: PS3.15 basic profile (pixel-model subset)"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def transform_for(pseudo: PseudonymMap | None) -> Any:
    """A per-dataset transform for preprocessing (None when the model is not external)."""
    if pseudo is None:
        return None
    return lambda ds: deidentify(ds, pseudo)


def deid_case(case: CaseContext, pseudo: PseudonymMap) -> CaseContext:
    """What an external model may know of the case: pseudonyms and codes, no free text."""
    return CaseContext(case_id=case.case_id, study_uid=pseudo.study_uid, revision=case.revision,
                       state=case.state, accession=pseudo.study.get("accession"),
                       patient_id=pseudo.study.get("patient_id"), modality=case.modality,
                       body_part=case.body_part, procedure_code=case.procedure_code,
                       priority=case.priority, patient_class=case.patient_class)
