"""Identify an incoming instance and refuse damaged ones, without decoding pixels.

Every DICOM edge goes through here (via ``engine.instances.read_meta``), in
this order:

1. ``engine.part10_walk.walk_part10`` checks the framing of the whole file to
   its last byte: a value or sequence cut short, or data encoded otherwise
   than its transfer syntax declares, is refused with what is wrong. pydicom
   alone would read a truncated file silently.
2. pydicom reads the header (``stop_before_pixels``) and
   ``engine.instances.meta_from_dataset`` checks the UIDs it relies on.
3. The pixel rules of ``engine.dicom_rules``: an image (an "... Image
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

from engine.dicom_rules import NATIVE_SYNTAXES, PixelGeometry, pixel_data_required, pixel_shortfall
from engine.instances import InvalidInstance, meta_from_dataset
from engine.part10_walk import Broken, Layout, walk_part10
from engine.store.clinical import InstanceMeta

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

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
