"""De-identification (PS3.15 basic profile subset) and the reversible pseudonym map."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.store.base import Store, open_store
from engine.store.inference import CaseContext
from inference.deid import PseudonymMap, deid_case, deidentify
from inference.errors import DeidentificationRefused
from tests.unit.test_inference_series import write_instance

STUDY = "1.2.840.99.1"
SERIES = "1.2.840.99.1.2"
PSEUDO = {"study_uid": "2.25.1111", "patient_id": "RBPATIENT", "accession": "RBACC",
          "salt": "00" * 32}


def identified(tmp_path: Path) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.840.99.7"
    path = write_instance(
        tmp_path / "a.dcm", np.zeros((4, 4), np.uint16), StudyInstanceUID=STUDY,
        SeriesInstanceUID=SERIES, FrameOfReferenceUID="1.2.840.99.5", PatientBirthDate="19700101",
        PatientSex="F", PatientAge="056Y", InstitutionName="General Hospital",
        ReferringPhysicianName="WHO^DR", AccessionNumber="ACC123", StudyDate="20260101",
        OperatorsName="TECH^T", StudyDescription="CHEST PA", PatientWeight=70,
        SourceImageSequence=Sequence([ref]))
    ds = pydicom.dcmread(path)
    ds.add_new(0x00091001, "LO", "private secret")
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    return ds


def test_identifying_attributes_are_removed_or_emptied(tmp_path: Path) -> None:
    ds = identified(tmp_path)
    deidentify(ds, PseudonymMap(PSEUDO, STUDY))
    for gone in ("PatientAge", "InstitutionName", "OperatorsName", "StudyDescription",
                 "PatientWeight"):
        assert gone not in ds, gone
    for empty in ("PatientName", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
                  "StudyDate"):
        assert not ds.get(empty), empty
    assert (ds.PatientID, ds.AccessionNumber) == ("RBPATIENT", "RBACC")
    assert 0x00091001 not in ds and 0x60003000 not in ds
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


def test_every_uid_is_replaced_nested_ones_included(tmp_path: Path) -> None:
    ds = identified(tmp_path)
    sop = ds.SOPInstanceUID
    pseudo = PseudonymMap(PSEUDO, STUDY)
    deidentify(ds, pseudo)
    assert ds.StudyInstanceUID == "2.25.1111"
    assert ds.SeriesInstanceUID != SERIES and ds.SOPInstanceUID != sop
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    nested = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert nested != "1.2.840.99.7" and nested.startswith("2.25.")
    kept = {real: p for _, real, p in pseudo.kept()}
    assert kept[SERIES] == ds.SeriesInstanceUID and kept["1.2.840.99.7"] == nested
    # Derived UIDs are stable within a study: a second instance of the series maps alike.
    assert PseudonymMap(PSEUDO, STUDY).uid(SERIES) == ds.SeriesInstanceUID


def test_burned_in_annotation_is_never_sent_to_an_external_model(tmp_path: Path) -> None:
    ds = identified(tmp_path)
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationRefused):
        deidentify(ds, PseudonymMap(PSEUDO, STUDY))


def test_the_case_an_external_model_sees_has_pseudonyms_and_no_free_text() -> None:
    case = CaseContext(7, STUDY, 0, "ready", accession="ACC123", patient_id="MRN1",
                       issuer="HOSP", modality="CR", body_part="CHEST", procedure_code="CXR",
                       procedure_text="XR CHEST for Jane Doe", location="ED")
    seen = deid_case(case, PseudonymMap(PSEUDO, STUDY))
    assert (seen.study_uid, seen.accession, seen.patient_id) == ("2.25.1111", "RBACC",
                                                                 "RBPATIENT")
    assert seen.procedure_text is None and seen.issuer is None and seen.location is None
    assert (seen.modality, seen.procedure_code) == ("CR", "CXR")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = open_store(db_url)
    await s.open()
    yield s
    await s.close()


async def test_the_pseudonym_map_is_kept_and_reversible(store: Store) -> None:
    first = await store.pseudonymize_study(1, STUDY, "MRN1", "ACC123")
    again = await store.pseudonymize_study(2, STUDY, "MRN1", "ACC123")
    assert first == again  # one pseudonym per real value, whichever case asks
    assert first["study_uid"].startswith("2.25.") and len(first["accession"]) <= 16
    assert first["patient_id"] != "MRN1" and len(first["salt"]) == 64
    assert await store.real_for("study_uid", first["study_uid"]) == STUDY
    assert await store.real_for("accession", first["accession"]) == "ACC123"
    pseudo = PseudonymMap(first, STUDY)
    series_pseudo = pseudo.uid(SERIES)
    await store.save_pseudonyms(1, pseudo.kept())
    await store.save_pseudonyms(1, pseudo.kept())  # idempotent
    assert await store.real_for("uid", series_pseudo) == SERIES
    assert await store.real_for("study_uid", "2.25.999") is None
