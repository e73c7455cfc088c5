"""Identify an incoming instance and refuse damaged ones, without decoding pixels.

Every DICOM edge goes through here (``read_meta``, also the reader
``engine.flow.instances.InstanceIngest`` is given for ``dicom``), in this order:

1. ``channels.dicom.part10_walk.walk_part10`` checks the framing of the whole file to
   its last byte: a value or sequence cut short, or data encoded otherwise
   than its transfer syntax declares, is refused with what is wrong. pydicom
   alone would read a truncated file silently.
2. pydicom reads the header (``stop_before_pixels``) and
   ``meta_from_dataset`` checks the UIDs it relies on.
3. The pixel rules of ``channels.dicom.rules``: an image (an "... Image
   Storage" SOP class, or one carrying Rows and Columns) must have pixel data,
   and native pixel data must hold Rows x Columns x samples x bits x frames.

A damaged instance that can still be identified raises ``DamagedInstance``
(it carries the UIDs, so a STOW-RS answer can name it). An instance cut
exactly between two top-level elements cannot be told from a complete one
unless it loses its pixel data that way.

Lenient in: values that break their VR's rules are read as sent. pydicom's
reading validation is turned off for the process when this module loads,
because its warnings quote the offending value (patient data) in logs.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from channels.dicom.part10_walk import Broken, Layout, walk_part10
from channels.dicom.rules import (
    NATIVE_SYNTAXES,
    PixelGeometry,
    pixel_data_required,
    pixel_shortfall,
    uid_problem,
)
from engine.flow.instances import InvalidInstance, InvalidUID
from engine.registry import register_reader
from engine.store.clinical import InstanceMeta

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# SR and segmentation storage classes: our own outputs come back as these.
_OUTPUT_CLASS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.66.")
_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")

_READ_ERRORS = (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError,
                NotImplementedError, AttributeError, IndexError, struct.error, zlib.error)


class DamagedInstance(InvalidInstance):
    """Identified (``meta`` holds its UIDs) but damaged: truncated or badly framed."""

    def __init__(self, reason: str, meta: InstanceMeta) -> None:
        super().__init__(reason)
        self.meta = meta


def inspect_part10(part10: bytes, own_manufacturer: str = "RADBRIDGE") -> InstanceMeta:
    """``InstanceMeta`` of a Part 10 byte string; raise ``InvalidInstance`` if unusable."""
    try:
        layout = walk_part10(part10)
    except Broken as exc:
        raise _damaged(part10, exc, own_manufacturer) from None
    ds = _read_header(part10)
    meta = meta_from_dataset(ds, getattr(ds, "file_meta", None), own_manufacturer)
    problem = pixel_problem(ds, layout)
    if problem is not None:
        raise DamagedInstance(problem, meta)
    return meta


def _read_header(part10: bytes) -> Any:
    try:
        return pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True, force=False)
    except _READ_ERRORS as exc:
        raise InvalidInstance(f"not a readable DICOM Part 10 file ({type(exc).__name__})") \
            from exc


def _damaged(part10: bytes, exc: Broken, own_manufacturer: str) -> InvalidInstance:
    """The refusal for a badly framed file, naming the instance when its header still reads.

    A VR mismatch is not read further: pydicom would guess the encoding (and warn)."""
    if exc.mismatch:
        return InvalidInstance(exc.reason)
    try:
        ds = _read_header(part10)
        meta = meta_from_dataset(ds, getattr(ds, "file_meta", None), own_manufacturer)
    except Exception:
        return InvalidInstance(exc.reason)
    return DamagedInstance(exc.reason, meta)


def pixel_problem(ds: Any, layout: Layout) -> str | None:
    """Why the pixel data of an intact file cannot be used, or None (``dicom_rules``)."""
    if layout.pixel_tag is None:
        name = UID(str(ds.get("SOPClassUID", ""))).name
        image_module = "Rows" in ds and "Columns" in ds
        if pixel_data_required(name, image_module, "PixelDataProviderURL" in ds):
            return ("image has no Pixel Data (required by its SOP class)"
                    if "Image Storage" in name else
                    "no Pixel Data, yet Rows and Columns say it is an image")
        return None
    if layout.pixel_length is None or layout.transfer_syntax not in NATIVE_SYNTAXES:
        return None  # encapsulated: the walk checked its fragments and delimiter
    geometry = _geometry(ds)
    return pixel_shortfall(layout.pixel_length, geometry) if geometry else None


def _geometry(ds: Any) -> PixelGeometry | None:
    """The pixel geometry of *ds*, or None when an attribute is missing or unreadable."""
    try:
        frames = ds.get("NumberOfFrames")
        return PixelGeometry(
            rows=int(ds.Rows), columns=int(ds.Columns),
            samples=int(ds.get("SamplesPerPixel", 1) or 1),
            bits_allocated=int(ds.BitsAllocated),
            frames=int(frames) if frames not in (None, "") else 1,
            photometric=str(ds.get("PhotometricInterpretation", "") or "").strip())
    except (AttributeError, TypeError, ValueError, KeyError):
        return None


@register_reader("dicom")
def read_meta(part10: bytes, own_manufacturer: str = "RADBRIDGE") -> InstanceMeta:
    """Identify an instance from its Part 10 bytes (header only; pixels are not decoded).

    Truncated or badly framed pixel data is refused (see ``inspect_part10``).
    """
    return inspect_part10(part10, own_manufacturer)


def meta_from_dataset(ds: Any, file_meta: Any, own_manufacturer: str = "RADBRIDGE"
                      ) -> InstanceMeta:
    """Build ``InstanceMeta`` from a decoded dataset; checks the UIDs it relies on."""
    missing = [k for k in _REQUIRED if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise InvalidInstance(f"missing {', '.join(missing)}")
    uids = [str(ds.get(k)).strip("\0 ") for k in _REQUIRED]
    tsyntax = str(getattr(file_meta, "TransferSyntaxUID", "") or "").strip("\0 ")
    if not tsyntax:
        raise InvalidInstance("no transfer syntax in the file meta information")
    for name, uid in [*zip(_REQUIRED, uids, strict=True), ("TransferSyntaxUID", tsyntax)]:
        problem = uid_problem(uid)
        if problem is not None:
            raise InvalidUID(f"{name} is not a valid UID ({problem})")
    sop_class = uids[3]
    own = (str(ds.get("Manufacturer", "") or "").upper() == own_manufacturer.upper()
           and sop_class.startswith(_OUTPUT_CLASS_PREFIXES))
    return InstanceMeta(
        study_uid=uids[0], series_uid=uids[1], sop_uid=uids[2], sop_class_uid=sop_class,
        transfer_syntax=tsyntax, patient_id=_text(ds, "PatientID"),
        issuer=_text(ds, "IssuerOfPatientID"), accession=_text(ds, "AccessionNumber"),
        modality=_text(ds, "Modality"), body_part=_text(ds, "BodyPartExamined"),
        own_output=own)


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None
