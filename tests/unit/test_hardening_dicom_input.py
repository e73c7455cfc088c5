"""Bad DICOM input, the pure half: the Part 10 walker, the pixel rules, the storage class list.

Everything here works on bytes or numbers: the integration file of the same
name sends the same cases over C-STORE and STOW-RS.
"""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AllStoragePresentationContexts

from channels.dicom.part10_walk import MAX_DEPTH, Broken, walk_part10
from channels.dicom.rules import PixelGeometry, pixel_data_required, pixel_shortfall
from channels.dicom.sop_classes import storage_sop_classes
from tests.fixtures.dicom import part10, synth_instance


def image_bytes() -> bytes:
    return part10(synth_instance(generate_uid(), generate_uid(), 1))


def sample(name: str) -> bytes:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    with open(path, "rb") as fh:
        return fh.read()


# -- the walker --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "rtplan.dcm",
        "JPEG2000.dcm",
        "MR_small_RLE.dcm",
        "image_dfl.dcm",
        "MR_small_bigendian.dcm",
        "rtdose.dcm",
    ],
)
def test_an_intact_file_walks_to_its_end(name: str) -> None:
    layout = walk_part10(sample(name))
    assert layout.transfer_syntax


def test_the_walk_finds_native_pixel_data_and_its_length() -> None:
    layout = walk_part10(image_bytes())
    assert (layout.pixel_tag, layout.pixel_length) == ((0x7FE0, 0x0010), 64 * 64 * 2)


def test_encapsulated_pixel_data_has_no_length_in_the_layout() -> None:
    layout = walk_part10(sample("JPEG2000.dcm"))
    assert layout.pixel_tag == (0x7FE0, 0x0010) and layout.pixel_length is None


def test_a_value_cut_short_names_the_element_and_both_lengths() -> None:
    with pytest.raises(Broken, match=r"^truncated: \(300A,00B0\) needs 976 bytes, 711 left$"):
        walk_part10(sample("rtplan_truncated.dcm"))


def test_a_cut_inside_an_element_header_says_so() -> None:
    data = image_bytes()
    ends = [len(data) - 64 * 64 * 2 - 12 + 5]  # five bytes into the Pixel Data header
    with pytest.raises(Broken, match="truncated inside"):
        walk_part10(data[: ends[0]])


def test_encapsulated_pixel_data_without_its_delimiter_is_truncated() -> None:
    with pytest.raises(Broken, match=r"truncated: \(7FE0,0010\) has no end delimiter"):
        walk_part10(sample("emri_small_jpeg_2k_lossless_too_short.dcm"))


def nested(depth: int) -> bytes:
    """An RT Plan whose private sequence nests *depth* undefined-length levels deep."""
    ds = pydicom.dcmread(io.BytesIO(sample("rtplan.dcm")))
    inner = Dataset()
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedFrameOfReferenceSequence = Sequence([inner])
        outer["ReferencedFrameOfReferenceSequence"].is_undefined_length = True
        inner.is_undefined_length_sequence_item = True
        inner = outer
    ds.ReferencedFrameOfReferenceSequence = Sequence([inner])
    ds["ReferencedFrameOfReferenceSequence"].is_undefined_length = True
    inner.is_undefined_length_sequence_item = True
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()


def test_sequences_nested_too_deep_are_refused_not_recursed_into() -> None:
    walk_part10(nested(MAX_DEPTH - 2))
    with pytest.raises(Broken, match=f"nested deeper than {MAX_DEPTH}"):
        walk_part10(nested(MAX_DEPTH + 5))


def test_an_undefined_length_sequence_cut_before_its_delimiter_is_truncated() -> None:
    data = nested(3)
    with pytest.raises(Broken, match="truncated"):
        walk_part10(data[:-8])


def test_a_few_trailing_zero_bytes_are_tolerated_but_other_trailing_bytes_are_not() -> None:
    walk_part10(image_bytes() + b"\0\0")
    with pytest.raises(Broken, match="truncated inside an element header"):
        walk_part10(image_bytes() + b"\x10\0")


def test_a_file_without_the_dicm_prefix_is_not_part_10() -> None:
    with pytest.raises(Broken, match="no DICM prefix"):
        walk_part10(b"\0" * 200)


def deflated() -> tuple[bytes, int]:
    """A deflated image and where its compressed data set starts."""
    ds = pydicom.dcmread(io.BytesIO(image_bytes()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert data[132:140] == b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) group length
    return data, 144 + struct.unpack_from("<I", data, 140)[0]


def test_a_deflated_data_set_cut_short_is_truncated() -> None:
    data, _ = deflated()
    assert walk_part10(data).transfer_syntax == DeflatedExplicitVRLittleEndian
    with pytest.raises(Broken, match="deflated data set is truncated"):
        walk_part10(data[:-50])


def test_a_deflated_body_that_is_not_deflate_is_refused() -> None:
    data, start = deflated()
    with pytest.raises(Broken, match="does not inflate"):
        walk_part10(data[:start] + b"\xff" * 50)


def test_implicit_data_under_an_explicit_syntax_is_named_as_a_mismatch() -> None:
    with pytest.raises(
        Broken, match="encoded implicit VR but transfer syntax says explicit VR"
    ) as caught:
        walk_part10(sample("SC_rgb_jpeg.dcm"))  # pydicom's own example of the mistake
    assert caught.value.mismatch


# -- pixel rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        (PixelGeometry(64, 64, 1, 16, 1), 8192),
        (PixelGeometry(64, 64, 1, 16, 3), 24576),
        (PixelGeometry(10, 10, 3, 8, 1, "RGB"), 300),
        (PixelGeometry(10, 10, 3, 8, 1, "YBR_FULL_422"), 200),
        (PixelGeometry(3, 3, 1, 1, 1), 2),  # 9 bits round up to 2 bytes
        (PixelGeometry(4, 4, 1, 32, 2), 128),  # float pixel data
    ],
)
def test_native_pixel_data_needs_rows_columns_samples_bits_and_frames(
    geometry: PixelGeometry, expected: int
) -> None:
    assert geometry.expected_bytes() == expected
    assert pixel_shortfall(expected, geometry) is None
    assert pixel_shortfall(expected + 1, geometry) is None  # padding is fine
    assert pixel_shortfall(expected - 1, geometry) == (
        f"Pixel Data too short: {expected - 1} of {expected} bytes"
    )


@pytest.mark.parametrize(
    ("name", "module", "provider", "required"),
    [
        ("CT Image Storage", False, False, True),
        ("Ultrasound Multi-frame Image Storage", False, False, True),
        ("Digital X-Ray Image Storage - For Presentation", False, False, True),
        ("Segmentation Storage", True, False, True),  # carries the Image Pixel module
        ("RT Plan Storage", False, False, False),
        ("Comprehensive SR Storage", False, False, False),
        ("Encapsulated PDF Storage", False, False, False),
        ("CT Image Storage", True, True, False),  # pixels referenced by a JPIP provider URL
    ],
)
def test_pixel_data_is_required_of_images_and_of_objects_with_the_image_pixel_module(
    name: str, module: bool, provider: bool, required: bool
) -> None:
    assert pixel_data_required(name, module, provider) is required


# -- storage classes ---------------------------------------------------------------------------


def test_the_storage_class_list_holds_pynetdicoms_and_the_retired_ones_it_leaves_out() -> None:
    classes = set(storage_sop_classes())
    assert {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts} <= classes
    assert {
        "1.2.840.10008.5.1.4.1.1.6",
        "1.2.840.10008.5.1.4.1.1.3",  # US (retired)
        "1.2.840.10008.5.1.4.1.1.88.1",  # Text SR - Trial (retired)
        "1.2.840.10008.5.1.4.1.1.601.1",
    } <= classes  # Eddy Current Image
    assert "1.2.840.10008.1.3.10" not in classes  # a DICOMDIR is never sent over C-STORE
    assert "1.2.840.10008.1.20.1" not in classes  # Storage Commitment is not storage
    assert len(classes) - len(AllStoragePresentationContexts) >= 35
