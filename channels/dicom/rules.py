"""Pure rules for incoming DICOM instances: no I/O, no parsing, small enough to test as data.

Every edge (C-STORE, STOW-RS, the pollers) reaches these through
``channels.dicom.part10.inspect_part10`` and ``meta_from_dataset``.

* ``uid_problem``: the UID grammar of PS3.5 9.1 (digits and dots, no empty
  component, no leading zero in a multi-digit component, at most 64
  characters), defined in ``mappings.uid`` (the HL7 orders mapping checks Study
  Instance UIDs with it too) and re-exported here. A UID names a folder of the
  instance store, so this is also what keeps ``..`` and ``/`` out of file paths.
* ``pixel_data_required``: an instance must carry pixel data when its SOP
  class is an image storage class (the name says "Image Storage") or when it
  carries the Image Pixel module (Rows and Columns), unless the pixels are
  referenced elsewhere (Pixel Data Provider URL, JPIP). Anything else (SR,
  KO, RT Plan, encapsulated PDF, presentation states) needs no pixel data.
* ``pixel_shortfall``: native (uncompressed) pixel data must hold Rows x
  Columns x samples x bits allocated x frames; shorter is refused even when
  the element's own length is self-consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappings.uid import UID_MAX_CHARS as UID_MAX_CHARS  # re-exported: the edges' checks
from mappings.uid import uid_problem as uid_problem

# Transfer syntaxes whose pixel data is native (not encapsulated); deflate
# compresses the whole data set, its pixel data stays native once inflated.
NATIVE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # implicit VR little endian
        "1.2.840.10008.1.2.1",  # explicit VR little endian
        "1.2.840.10008.1.2.2",  # explicit VR big endian (retired)
        "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    }
)


def pixel_data_required(
    sop_class_name: str, has_image_pixel_module: bool, has_provider_url: bool
) -> bool:
    """Whether an instance must carry Pixel Data (see the module docstring for the rule)."""
    if has_provider_url:
        return False
    return "Image Storage" in sop_class_name or has_image_pixel_module


@dataclass(frozen=True, slots=True)
class PixelGeometry:
    """The attributes that size native pixel data (Image Pixel module, Multi-frame)."""

    rows: int
    columns: int
    samples: int = 1
    bits_allocated: int = 16
    frames: int = 1
    photometric: str = ""

    def expected_bytes(self) -> int:
        """Bytes of native pixel data these attributes call for (before even padding)."""
        samples = self.samples
        if self.photometric.endswith("_422") and samples == 3:
            samples = 2  # two luma samples share one pair of chroma samples
        bits = self.rows * self.columns * samples * self.bits_allocated * self.frames
        return (bits + 7) // 8


def pixel_shortfall(length: int, geometry: PixelGeometry) -> str | None:
    """A reason when *length* bytes of native pixel data cannot hold *geometry*, else None."""
    expected = geometry.expected_bytes()
    if length >= expected:
        return None
    return f"Pixel Data too short: {length} of {expected} bytes"
