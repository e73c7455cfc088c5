"""Series selection: the frontal chest view, the thinnest axial CT series, volumes.

Also home of ``write_instance`` / ``ct_series``, the small DICOM builders that the
other inference tests import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine.config.inference import InputSpec
from inference import series
from inference.errors import NotApplicable
from inference.preprocess import prepare_volume

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]


def write_instance(path: Path, pixels: np.ndarray | None = None, **attrs: Any) -> Path:
    """A Part 10 file with *pixels* (uint16 or int16, one frame) and any attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = attrs.pop("SOPClassUID", CR_IMAGE)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID", "1.2.3.4")
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", generate_uid())
    ds.PatientID, ds.PatientName, ds.Modality = "MRN1", "DOE^JANE", attrs.pop("Modality", "CR")
    if pixels is not None:
        signed = pixels.dtype.kind == "i"
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
        ds.PixelRepresentation = int(signed)
        ds.PhotometricInterpretation = attrs.pop("PhotometricInterpretation", "MONOCHROME2")
        ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_series(root: Path, n: int, thickness: float, orientation: list[float] | None = None,
              size: int = 16, **attrs: Any) -> list[Path]:
    """*n* CT slices of one series, written in shuffled order."""
    uid = generate_uid()
    orientation = orientation or AXIAL
    normal = np.cross(orientation[:3], orientation[3:])
    order = np.random.default_rng(1).permutation(n)
    paths = []
    for k in order:
        pixels = np.full((size, size), int(k) * 10, np.int16)
        paths.append(write_instance(
            root / uid / f"{k}.dcm", pixels, Modality="CT", SOPClassUID=CT_IMAGE,
            SeriesInstanceUID=uid, SliceThickness=thickness, ImageOrientationPatient=orientation,
            ImagePositionPatient=[float(v) for v in normal * k * thickness],
            RescaleSlope=1, RescaleIntercept=-1024, **attrs))
    return paths


def headers(paths: list[Path]) -> list[series.InstanceHeader]:
    return series.read_headers([str(p) for p in paths])


def cr(tmp: Path, name: str, view: str, **attrs: Any) -> Path:
    return write_instance(tmp / f"{name}.dcm", np.zeros((8, 8), np.uint16), ViewPosition=view,
                          **attrs)


def test_the_pa_view_is_chosen_over_the_lateral(tmp_path: Path) -> None:
    paths = [cr(tmp_path, "lat", "LL"), cr(tmp_path, "pa", "PA"), cr(tmp_path, "ap", "AP")]
    assert series.select_frontal(headers(paths)).path == str(paths[1])


def test_an_ap_view_is_chosen_when_there_is_no_pa(tmp_path: Path) -> None:
    paths = [cr(tmp_path, "lat", "LATERAL"), cr(tmp_path, "ap", "AP")]
    assert series.select_frontal(headers(paths)).path == str(paths[1])


def test_an_original_image_is_preferred_to_a_derived_one(tmp_path: Path) -> None:
    paths = [cr(tmp_path, "d", "PA", ImageType=["DERIVED", "SECONDARY"]),
             cr(tmp_path, "o", "PA", ImageType=["ORIGINAL", "PRIMARY"])]
    assert series.select_frontal(headers(paths)).path == str(paths[1])


def test_a_study_of_laterals_only_has_no_frontal_view(tmp_path: Path) -> None:
    with pytest.raises(NotApplicable, match="no frontal view"):
        series.select_frontal(headers([cr(tmp_path, "lat", "RL")]))


def test_the_thinnest_axial_series_is_chosen_and_sorted(tmp_path: Path) -> None:
    thick = ct_series(tmp_path, 10, 5.0)
    thin = ct_series(tmp_path, 12, 1.0)
    coronal = ct_series(tmp_path, 12, 0.5, CORONAL)
    chosen = series.select_thinnest_axial(headers(thick + thin + coronal), min_slices=8)
    assert {h.path for h in chosen} == {str(p) for p in thin}
    z = [float(h.position[2]) for h in chosen]  # type: ignore[index]
    assert z == sorted(z) and len(z) == 12


def test_a_series_with_too_few_slices_is_not_a_volume(tmp_path: Path) -> None:
    short = ct_series(tmp_path, 4, 0.5)
    normal = ct_series(tmp_path, 10, 3.0)
    chosen = series.select_thinnest_axial(headers(short + normal), min_slices=8)
    assert len(chosen) == 10
    with pytest.raises(NotApplicable):
        series.select_thinnest_axial(headers(short), min_slices=8)


def test_auto_picks_frontal_for_radiographs_and_a_middle_slice_for_2d_ct(tmp_path: Path) -> None:
    assert series.select(headers([cr(tmp_path, "pa", "PA")]), "auto", False, 8)[0].view_position \
        == "PA"
    chosen = series.select(headers(ct_series(tmp_path, 9, 2.0)), "auto", False, 8)
    assert len(chosen) == 1 and chosen[0].position[2] == pytest.approx(8.0)  # type: ignore[index]


def test_a_volume_stacks_the_sorted_slices(tmp_path: Path) -> None:
    chosen = series.select(headers(ct_series(tmp_path, 10, 1.0)), "auto", True, 8)
    spec = InputSpec(size=[5, 8, 8], window="fixed", window_center=-1024 + 50, window_width=101)
    vol, _ = prepare_volume([h.path for h in chosen], spec)
    assert vol.shape == (1, 5, 8, 8)
    means = vol[0].mean(axis=(1, 2))
    assert np.all(np.diff(means) > 0)  # slices 0..9 have rising values: order kept
