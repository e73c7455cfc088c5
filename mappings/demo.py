"""Synthetic DEMO data for ``radbridge demo``: one order and one chest radiograph, made in code.

Nothing here is a patient and nothing is downloaded. Every name, identifier and
description says DEMO, so that a demo case can never be mistaken for a real one
in the dashboard, the worklist or a result: the patient is ``DEMO^PATIENT``, the
patient id, accession number and control id start with ``DEMO``, and the image
is a drawing (a bright body with two darker lung fields and some noise), not an
X-ray. The order carries the study's Study Instance UID (ZDS-1), so the two meet
on it exactly.
"""

from __future__ import annotations

import io
import secrets
import time
import zlib
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DEMO_PATIENT_NAME = "DEMO^PATIENT"
DEMO_NOTE = "DEMO: synthetic data made by radbridge demo, not a patient"


@dataclass(frozen=True, slots=True)
class DemoIds:
    """The identifiers of one demo run (fresh each run, so runs never collide)."""

    patient_id: str
    accession: str
    control_id: str
    study_uid: str

    @classmethod
    def new(cls) -> DemoIds:
        token = secrets.token_hex(4).upper()
        return cls(
            patient_id=f"DEMO-{token}",
            accession=f"DEMO{token}",
            control_id=f"DEMO-{token}",
            study_uid=generate_uid(),
        )


def _hl7_time(at: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(at))


def demo_order(ids: DemoIds, at: float | None = None, receiver: str = "RADBRIDGE") -> bytes:
    """An ORM^O01 (v2.5.1) for a two-view chest radiograph of the DEMO patient."""
    now = _hl7_time(time.time() if at is None else at)
    code = "71046^XR CHEST 2 VIEWS (DEMO)^CPT4"
    segments = [
        f"MSH|^~\\&|DEMO|DEMO_HOSPITAL|{receiver}|AI|{now}||ORM^O01^ORM_O01|{ids.control_id}"
        "|P|2.5.1|||AL|NE",
        f"PID|1||{ids.patient_id}^^^DEMO^MR||{DEMO_PATIENT_NAME}||19700101|O",
        "PV1|1|O|DEMO^CLINIC",
        f"ORC|NW|PL{ids.accession}^DEMO|FL{ids.accession}^DEMO||SC||^^^{now}^^R|||"
        "DEMO^ORDERING^DOCTOR",
        f"OBR|1|PL{ids.accession}^DEMO|FL{ids.accession}^DEMO|{code}|||{now}||||||"
        f"DEMO: cough (synthetic)|||DEMO^ORDERING^DOCTOR||{ids.accession}|RP{ids.accession}"
        f"|||||CR|||1^^^{now}^^R",
        f"NTE|1||{DEMO_NOTE}",
        f"ZDS|{ids.study_uid}^RADBRIDGE^Application^DICOM",
    ]
    return "\r".join(segments).encode("ascii")


def _chest_pixels(size: int, seed: int) -> np.ndarray:
    """A drawing of a PA chest: a bright body, two darker lung fields, a spine, noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 300.0)
    img[((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1] = 2600.0  # the body
    for cx in (0.33, 0.67):  # the lungs
        img[((x - cx) / 0.14) ** 2 + ((y - 0.48) / 0.3) ** 2 < 1] = 900.0
    img[(abs(x - 0.5) < 0.03) & (y > 0.15)] = 3200.0  # the spine
    img += np.random.default_rng(seed).normal(0, 40, (size, size))
    return np.clip(img, 0, 4095).astype(np.uint16)


def demo_chest_radiograph(ids: DemoIds, at: float | None = None, size: int = 256) -> bytes:
    """One CR PA chest image of the DEMO patient as a DICOM Part 10 file."""
    when = time.localtime(time.time() if at is None else at)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ids.study_uid, generate_uid()
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = DEMO_PATIENT_NAME, ids.patient_id, "DEMO"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.AccessionNumber, ds.StudyID = ids.accession, "DEMO"
    ds.StudyDate = ds.SeriesDate = time.strftime("%Y%m%d", when)
    ds.StudyTime = ds.SeriesTime = time.strftime("%H%M%S", when)
    ds.StudyDescription = "DEMO chest radiograph (synthetic, not a patient)"
    ds.SeriesDescription = "DEMO PA chest (synthetic)"
    ds.ImageComments = DEMO_NOTE
    ds.Manufacturer, ds.InstitutionName = "radbridge demo", "DEMO HOSPITAL"
    ds.ReferringPhysicianName = "DEMO^REFERRER"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.PatientOrientation = ["L", "F"]  # as a PA chest is read: patient's left on the right
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [f"{430 / size:.4f}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = _chest_pixels(size, zlib.crc32(ids.study_uid.encode())).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
