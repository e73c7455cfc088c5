"""Preprocessing: modality LUT, windowing and VOI LUT, MONOCHROME1, compressed syntaxes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.config.inference import InputSpec
from inference import preprocess
from inference.errors import PreprocessError
from tests.unit.test_inference_series import write_instance

RAMP = (np.arange(64 * 64, dtype=np.uint16) % 4096).reshape(64, 64)


def test_a_linear_window_follows_ps3_3() -> None:
    x = np.array([0.0, 39.5, 40.0, 90.0, 140.0, 200.0], np.float32)
    y = preprocess.window(x, center=90, width=101)
    # below c - 0.5 - (w-1)/2 = 39.5 -> 0; above c - 0.5 + (w-1)/2 = 139.5 -> 1
    assert y[0] == 0 and y[1] == 0 and y[4] == 1 and y[5] == 1
    assert y[3] == pytest.approx(0.505, abs=1e-3)


def test_a_sigmoid_window_is_one_half_at_its_center() -> None:
    y = preprocess.window(np.array([-1e4, 50.0, 1e4], np.float32), 50, 100, "SIGMOID")
    assert y.tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)


def test_rescale_slope_and_intercept_apply_before_the_window(tmp_path: Path) -> None:
    pixels = np.full((8, 8), 1064, np.uint16)  # 1064 * 1 - 1024 = 40 HU
    path = write_instance(tmp_path / "ct.dcm", pixels, Modality="CT", RescaleSlope=1,
                          RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    x, ds = preprocess.read_pixels(str(path))
    assert float(x[0, 0]) == 40.0
    assert preprocess.to_unit(x, ds, InputSpec())[0, 0] == pytest.approx(0.5, abs=0.01)


def test_the_images_voi_lut_sequence_is_used(tmp_path: Path) -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.LUTData = np.minimum(65535, np.arange(4096) * 20).astype("<u2").tobytes()
    lut["LUTData"].VR = "OW"
    path = write_instance(tmp_path / "voi.dcm", RAMP, VOILUTSequence=Sequence([lut]))
    x, ds = preprocess.read_pixels(str(path))
    y = preprocess.to_unit(x, ds, InputSpec())
    assert y[0, 0] == 0 and y.max() == pytest.approx(1.0)
    assert y.flat[800] == pytest.approx(16000 / 65535, abs=1e-6)


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path: Path) -> None:
    mono2 = write_instance(tmp_path / "m2.dcm", RAMP, WindowCenter=2048, WindowWidth=4096)
    mono1 = write_instance(tmp_path / "m1.dcm", RAMP, WindowCenter=2048, WindowWidth=4096,
                           PhotometricInterpretation="MONOCHROME1")
    spec = InputSpec(size=[64, 64])
    a, _ = preprocess.prepare_image(str(mono2), spec)
    b, _ = preprocess.prepare_image(str(mono1), spec)
    np.testing.assert_allclose(a, 1.0 - b, atol=1e-6)


def test_no_window_in_the_header_falls_back_to_min_max(tmp_path: Path) -> None:
    x, ds = preprocess.read_pixels(str(write_instance(tmp_path / "a.dcm", RAMP)))
    y = preprocess.to_unit(x, ds, InputSpec())
    assert y.min() == 0 and y.max() == 1


def _compress(tool: str, src: Path, dst: Path, *flags: str) -> Path:
    subprocess.run([tool, *flags, str(src), str(dst)], check=True, capture_output=True)
    return dst


@pytest.mark.parametrize(("tool", "flags", "syntax"), [
    ("dcmcjpeg", ("+e1",), "1.2.840.10008.1.2.4.70"),  # JPEG lossless, first-order prediction
    ("dcmcrle", (), "1.2.840.10008.1.2.5"),  # RLE lossless
])
def test_compressed_instances_decode_to_the_original_pixels(tmp_path: Path, tool: str,
                                                            flags: tuple[str, ...],
                                                            syntax: str) -> None:
    pixels = (RAMP // 2).astype(np.uint16)
    src = write_instance(tmp_path / "src.dcm", pixels)
    ds = pydicom.dcmread(src)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(src)
    out = _compress(tool, src, tmp_path / "out.dcm", *flags)
    assert str(pydicom.dcmread(out).file_meta.TransferSyntaxUID) == syntax
    x, _ = preprocess.read_pixels(str(out))
    np.testing.assert_array_equal(x, pixels.astype(np.float32))


def test_a_corrupt_pixel_stream_is_a_preprocess_error(tmp_path: Path) -> None:
    src = write_instance(tmp_path / "src.dcm", RAMP)
    out = _compress("dcmcrle", src, tmp_path / "rle.dcm")
    raw = bytearray(out.read_bytes())
    item = b"\xfe\xff\x00\xe0"
    fragment = raw.index(item, raw.index(item) + 1) + 8  # after the basic offset table
    raw[fragment:fragment + 8] = (15).to_bytes(4, "little") + (99999).to_bytes(4, "little")
    out.write_bytes(bytes(raw))
    with pytest.raises(PreprocessError, match="cannot (decode|read)"):
        preprocess.read_pixels(str(out))


def test_resize_normalise_and_channels_make_the_model_input(tmp_path: Path) -> None:
    path = write_instance(tmp_path / "a.dcm", RAMP)
    spec = InputSpec(size=[32, 48], channels=3, normalize="mean_std", mean=[0.5, 0.4, 0.3],
                     std=[0.25])
    arr, _ = preprocess.prepare_image(str(path), spec)
    assert arr.shape == (3, 32, 48) and arr.dtype == np.float32
    assert not np.allclose(arr[0], arr[2])  # per-channel means
    z = preprocess.normalise(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10),
                             InputSpec(normalize="zscore"))
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, abs=1e-3)


def test_the_real_pa_chest_radiograph_prepares_with_bright_bones() -> None:
    path = get_testdata_file("RG1_UNCI.dcm")
    assert path is not None
    arr, ds = preprocess.prepare_image(path, InputSpec(size=[224, 224]))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert arr.shape == (1, 224, 224) and arr.min() >= 0.0 and arr.max() <= 1.0
    # Air outside the body is dark after inversion: the image corners are darker than its middle.
    corners = np.concatenate([arr[0, :20, :20].ravel(), arr[0, :20, -20:].ravel()])
    assert corners.mean() < arr[0, 80:150, 80:150].mean()
