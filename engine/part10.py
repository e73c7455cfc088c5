"""Identify an incoming instance and refuse truncated ones, without decoding pixels.

Every DICOM edge goes through here (via ``engine.instances.read_meta``).
pydicom reads a truncated file silently (a short last value, or elements
missing at the end), so a plain header read would index a file cut in its
Pixel Data. ``inspect_part10`` reads the header with
``stop_before_pixels`` and then checks the Pixel Data element's framing
against the byte count: a native value must fit, an encapsulated one must
end with its sequence delimiter, and an image (an "... Image Storage" SOP
class, or Rows present) must have pixels. Deflated data sets are checked by
zlib while pydicom inflates them. A non-image object (SR, KO) cut between
two elements is not detected: it has no framing to check against.

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

from engine.instances import InvalidInstance, meta_from_dataset
from engine.store.clinical import InstanceMeta

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_UNDEFINED = 0xFFFFFFFF
_SEQ_DELIMITER = (0xFFFE, 0xE0DD)
_READ_ERRORS = (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError,
                NotImplementedError, AttributeError, IndexError, struct.error, zlib.error)


class DamagedInstance(InvalidInstance):
    """Identified (``meta`` holds its UIDs) but damaged: truncated or badly framed pixels."""

    def __init__(self, reason: str, meta: InstanceMeta) -> None:
        super().__init__(reason)
        self.meta = meta


def inspect_part10(part10: bytes, own_manufacturer: str = "RADBRIDGE") -> InstanceMeta:
    """``InstanceMeta`` of a Part 10 byte string; raise ``InvalidInstance`` if unusable."""
    fp = io.BytesIO(part10)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=False)
    except _READ_ERRORS as exc:
        raise InvalidInstance(f"not a readable DICOM Part 10 file ({type(exc).__name__})") \
            from exc
    meta = meta_from_dataset(ds, getattr(ds, "file_meta", None), own_manufacturer)
    if meta.transfer_syntax != "1.2.840.10008.1.2.1.99":  # deflate: zlib already checked
        try:
            _check_pixel_framing(part10, fp.tell(), ds)
        except InvalidInstance as exc:
            raise DamagedInstance(exc.reason, meta) from None
    return meta


def _check_pixel_framing(data: bytes, pos: int, ds: Any) -> None:
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = ds.is_implicit_VR, ds.is_little_endian
    if pos >= len(data):
        if "Rows" in ds or "Image Storage" in UID(str(ds.SOPClassUID)).name:
            raise InvalidInstance("image without pixel data (file truncated?)")
        return
    end = "<" if little else ">"
    group, elem = struct.unpack(f"{end}HH", data[pos:pos + 4])
    if (group, elem) not in _PIXEL_TAGS:
        return
    if implicit:
        (length,), start = struct.unpack(f"{end}I", data[pos + 4:pos + 8] or b"\0" * 4), pos + 8
    elif data[pos + 4:pos + 6] in _LONG_VRS:
        (length,), start = struct.unpack(f"{end}I", data[pos + 8:pos + 12] or b"\0" * 4), pos + 12
    else:
        (length,), start = struct.unpack(f"{end}H", data[pos + 6:pos + 8] or b"\0" * 2), pos + 8
    if start > len(data):
        raise InvalidInstance("pixel data element cut short (file truncated)")
    if length == _UNDEFINED:
        _check_encapsulated(data, start, end)
    elif start + length > len(data):
        raise InvalidInstance(
            f"pixel data is {length} bytes but only {len(data) - start} arrived (truncated)")


def _check_encapsulated(data: bytes, pos: int, end: str) -> None:
    """Walk the fragment items; the last must be followed by a sequence delimiter."""
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack(f"{end}HHI", data[pos:pos + 8])
        if (group, elem) == _SEQ_DELIMITER:
            return
        if (group, elem) != (0xFFFE, 0xE000):
            raise InvalidInstance("malformed encapsulated pixel data (bad item tag)")
        pos += 8 + length
    raise InvalidInstance("encapsulated pixel data has no end (file truncated)")
