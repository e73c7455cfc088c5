"""DICOM pixels -> model input. Runs in a worker thread, never on the event loop.

Per image: decode (compressed transfer syntaxes through pylibjpeg / pydicom's
RLE decoder), modality LUT (rescale slope/intercept or LUT), VOI LUT or
window (linear, linear exact, sigmoid as PS3.3 C.11.2.1.2 defines them) to
[0, 1], MONOCHROME1 inversion (so that bone is always bright), resize, then
normalisation and channel repetition. A volume stacks the slices of a sorted
series before the resize (trilinear).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi

from engine.config.inference import InputSpec
from inference.errors import PreprocessError

Transform = Callable[[Any], None]  # applied to each dataset before decoding (de-identification)


def read_pixels(path: str, transform: Transform | None = None) -> tuple[np.ndarray, Any]:
    """Decode one instance; returns (first frame as float32 in modality units, dataset)."""
    try:
        ds = pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError, EOFError, ValueError) as exc:
        raise PreprocessError(f"cannot read instance ({type(exc).__name__})") from exc
    if transform is not None:
        transform(ds)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # any decoder failure (missing plugin, corrupt stream)
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise PreprocessError(f"cannot decode pixel data ({type(exc).__name__}; transfer "
                              f"syntax {ts})") from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        rgb = arr.astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], np.float32), ds
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32), ds


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A VOI window to [0, 1] (PS3.3 C.11.2.1.2)."""
    function = function.upper()
    if function == "SIGMOID":
        z = np.clip(-4.0 * (x - center) / width, -80.0, 80.0)  # exp() stays finite
        return (1.0 / (1.0 + np.exp(z))).astype(np.float32)
    if function == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    else:
        width = max(width, 1.0 + 1e-6)
        y = (x - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def _first(value: Any) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def voi(x: np.ndarray, ds: Any, spec: InputSpec) -> np.ndarray:
    """The image's own VOI LUT / window (``dicom``), a fixed window, or min-max, to [0, 1]."""
    if spec.window == "fixed":
        assert spec.window_center is not None and spec.window_width is not None
        return window(x, spec.window_center, spec.window_width)
    if spec.window == "dicom" and "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        lut_out = apply_voi(np.rint(x).astype(np.int64), ds)  # LUT input: integer values
        return np.clip(lut_out / float(2 ** bits - 1), 0, 1).astype(np.float32)
    if spec.window == "dicom" and "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        return window(x, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    return minmax(x)


def to_unit(x: np.ndarray, ds: Any, spec: InputSpec) -> np.ndarray:
    """Modality values -> [0, 1] with bone bright (MONOCHROME1 is inverted)."""
    y = voi(x, ds, spec)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        y = 1.0 - y
    return y


def resize(x: np.ndarray, size: list[int]) -> np.ndarray:
    """Resize a 2-D image (bilinear, antialiased) or a 3-D volume (trilinear)."""
    import torch
    import torch.nn.functional as F

    if list(x.shape) == list(size):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    if x.ndim == 2:
        out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False,
                            antialias=True)
    else:
        out = F.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def normalise(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """[0, 1] image -> the model's input: normalised, with ``spec.channels`` channels first."""
    if spec.normalize == "zscore":
        x = (x - x.mean()) / max(float(x.std()), 1e-6)
    out = np.repeat(x[None], spec.channels, axis=0).astype(np.float32)
    if spec.normalize == "mean_std":
        n = spec.channels
        mean = np.resize(np.asarray(spec.mean, np.float32), n).reshape((n,) + (1,) * x.ndim)
        std = np.resize(np.asarray(spec.std, np.float32), n).reshape((n,) + (1,) * x.ndim)
        out = (out - mean) / std
    return np.ascontiguousarray(out)


def prepare_image(path: str, spec: InputSpec, transform: Transform | None = None
                  ) -> tuple[np.ndarray, Any]:
    """One instance -> [C, H, W] float32; also returns its (possibly de-identified) dataset."""
    x, ds = read_pixels(path, transform)
    return normalise(resize(to_unit(x, ds, spec), spec.size[-2:]), spec), ds


def prepare_volume(paths: list[str], spec: InputSpec, transform: Transform | None = None
                   ) -> tuple[np.ndarray, Any]:
    """Sorted slices -> [C, D, H, W] float32 (one window for the whole volume)."""
    planes: list[np.ndarray] = []
    first: Any = None
    for path in paths:
        x, ds = read_pixels(path, transform)
        if planes and x.shape != planes[0].shape:
            raise PreprocessError("slices of the series differ in size")
        planes.append(x)
        first = first if first is not None else ds
    vol = to_unit(np.stack(planes), first, spec)
    return normalise(resize(vol, spec.size if len(spec.size) == 3 else [len(paths), *spec.size]),
                     spec), first
