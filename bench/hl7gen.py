"""Synthetic HL7 v2 messages for benchmarks and tests (fictional patients only)."""

from __future__ import annotations

import random

_FAMILY = ["TESTPATIENT", "DOE", "ROE", "MUSTERMANN", "DUPONT", "ROSSI", "NOWAK", "SILVA"]
_GIVEN = ["ALEX", "SAM", "JO", "KIM", "ROBIN", "CHARLIE", "DREW", "JESSE"]


def orm_o01(
    control_id: str,
    *,
    patient_id: str = "MRN0001",
    accession: str = "ACC0001",
    seed: int = 0,
    pad_to: int = 1300,
) -> bytes:
    """An ORM^O01 for a chest radiograph, padded with an NTE to about *pad_to* bytes."""
    rnd = random.Random(seed)
    fam, giv = rnd.choice(_FAMILY), rnd.choice(_GIVEN)
    segs = [
        f"MSH|^~\\&|RIS|GENERAL_HOSP|RADBRIDGE|AI|20261130101500||ORM^O01^ORM_O01|{control_id}|P|"
        "2.5.1|||AL|NE||8859/1",
        f"PID|1||{patient_id}^^^GENHOSP^MR~998877^^^SSA^SS||{fam}^{giv}^Q^^^^L||19700101|F|||"
        "1 MAIN ST^^SPRINGFIELD^IL^62701^USA^H||^PRN^PH^^1^217^5551234|||S||"
        f"{patient_id}V1^^^GENHOSP^VN",
        "PV1|1|E|ED^BAY3^01^GENHOSP||||1234^ATTENDING^ALEX^^^DR|||RAD||||1|||1234^ATTENDING^ALEX"
        f"^^^DR|E|{patient_id}V1^^^GENHOSP^VN|||||||||||||||||||||||||20261130100000",
        f"ORC|NW|PL{accession}^RIS|FL{accession}^PACS||SC||^^^20261130101500^^S|||"
        "5678^ORDERING^SAM^^^DR||||||ED^Emergency Department",
        f"OBR|1|PL{accession}^RIS|FL{accession}^PACS|71046^XR CHEST 2 VIEWS^CPT4|||20261130101500"
        "||||||Cough and fever|||5678^ORDERING^SAM^^^DR||"
        f"{accession}|RP{accession}||||CR|||1^^^20261130101500^^S||||||||||||||||"
        "71046^XR CHEST 2 VIEWS^CPT4",
        f"ZDS|1.2.826.0.1.3680043.10.543.{seed}^RADBRIDGE^Application^DICOM",
    ]
    msg = "\r".join(segs)
    pad = pad_to - len(msg) - 10
    if pad > 0:
        msg += "\rNTE|1||" + ("Clinical history: cough, fever, rule out pneumonia. " * 40)[:pad]
    return msg.encode("latin-1")


def adt_a01(control_id: str, *, patient_id: str = "MRN0001", seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    segs = [
        f"MSH|^~\\&|ADT|GENERAL_HOSP|RADBRIDGE|AI|20261130090000||ADT^A01^ADT_A01|{control_id}|P|"
        "2.5.1",
        "EVN|A01|20261130090000",
        f"PID|1||{patient_id}^^^GENHOSP^MR||{rnd.choice(_FAMILY)}^{rnd.choice(_GIVEN)}||19800202|M",
        "PV1|1|I|W2^201^A^GENHOSP",
    ]
    return "\r".join(segs).encode("latin-1")


def adt_a08(control_id: str, *, patient_id: str = "MRN0001", seed: int = 0) -> bytes:
    """An ADT^A08 (update patient information) for *patient_id*."""
    return (
        adt_a01(control_id, patient_id=patient_id, seed=seed)
        .replace(b"ADT^A01^ADT_A01", b"ADT^A08^ADT_A01")
        .replace(b"EVN|A01", b"EVN|A08")
    )


def omi_o23(
    control_id: str, *, patient_id: str = "MRN0001", accession: str = "ACC0001", seed: int = 0
) -> bytes:
    """An OMI^O23 (imaging order) for *patient_id*, shaped like :func:`orm_o01`."""
    return orm_o01(control_id, patient_id=patient_id, accession=accession, seed=seed).replace(
        b"ORM^O01^ORM_O01", b"OMI^O23^OMI_O23"
    )


# The mixed feed's cycle, per patient: admit, order, update, imaging order.
MIXED_CYCLE = ("A01", "ORM", "A08", "OMI")


def mixed_templates(control: str, patient: str) -> list[bytes]:
    """The mixed feed's messages, one per :data:`MIXED_CYCLE` entry, with *control* and
    *patient* as placeholders for the control id (also the accession) and the patient id."""
    return [
        adt_a01(control, patient_id=patient),
        orm_o01(control, patient_id=patient, accession=control),
        adt_a08(control, patient_id=patient),
        omi_o23(control, patient_id=patient, accession=control),
    ]
