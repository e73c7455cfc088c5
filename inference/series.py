"""Which images of a study a model reads: header index and series selection.

Headers are read without pixel data. Selection rules:

* ``frontal`` (chest radiographs): a PA view, else AP, else an image whose view
  is not known to be lateral; ORIGINAL before DERIVED images, larger first.
* ``thinnest_axial`` (CT, MR volumes): among series whose slices are axial
  (slice normal within ~25 degrees of the patient's z axis) and have at least
  ``min_slices`` slices, the thinnest, then the one with most slices; its
  slices sorted along the normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom

from inference.errors import NotApplicable

_LATERAL = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")
_FRONTAL_RANK = {"PA": 0, "AP": 1}
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA"})
CROSS_SECTIONAL = frozenset({"CT", "MR", "PT"})


@dataclass(slots=True)
class InstanceHeader:
    """The header of one instance, as series selection and dicom-qa need it."""

    path: str
    ds: Any  # pydicom Dataset without pixel data
    series_uid: str
    modality: str
    has_pixels: bool
    rows: int
    columns: int
    view_position: str
    derived: bool
    slice_thickness: float | None
    normal: np.ndarray | None
    position: np.ndarray | None

    def along(self, normal: np.ndarray | None) -> float:
        """This slice's position along a series' normal (mm)."""
        if self.position is None or normal is None:
            return 0.0
        return float(np.dot(self.position, normal))

    @property
    def axial(self) -> bool:
        return self.normal is not None and abs(float(self.normal[2])) > 0.9


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


def header_of(path: str, ds: Any) -> InstanceHeader:
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    normal = np.cross(iop[:3], iop[3:]) if iop is not None else None
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    thickness = ds.get("SliceThickness")
    try:
        thick = float(thickness) if thickness not in (None, "") else None
    except (TypeError, ValueError):
        thick = None
    return InstanceHeader(
        path=path, ds=ds, series_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "") or "").upper(),
        has_pixels="Rows" in ds and "Columns" in ds,  # read without pixels: go by the header
        rows=int(ds.get("Rows", 0) or 0), columns=int(ds.get("Columns", 0) or 0),
        view_position=str(ds.get("ViewPosition", "") or "").upper().strip(),
        derived=bool(image_type) and image_type[0] == "DERIVED", slice_thickness=thick,
        normal=normal, position=_floats(ds.get("ImagePositionPatient"), 3))


def read_headers(paths: list[str]) -> list[InstanceHeader]:
    """Headers of every readable instance (unreadable files are left out)."""
    out = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError, EOFError, ValueError):
            continue
        out.append(header_of(path, ds))
    return out


def images(headers: list[InstanceHeader]) -> list[InstanceHeader]:
    return [h for h in headers if h.has_pixels and h.rows > 0 and h.columns > 0]


def select_frontal(headers: list[InstanceHeader]) -> InstanceHeader:
    """The frontal view of a projection study; ``NotApplicable`` when there is none."""
    candidates = [h for h in images(headers) if h.view_position not in _LATERAL]
    if not candidates:
        raise NotApplicable("no frontal view in the study")
    return min(candidates, key=lambda h: (_FRONTAL_RANK.get(h.view_position, 2), h.derived,
                                          -h.rows * h.columns, h.path))


def axial_series(headers: list[InstanceHeader], min_slices: int
                 ) -> dict[str, list[InstanceHeader]]:
    """Axial series with at least *min_slices* slices, each sorted along its normal."""
    series: dict[str, list[InstanceHeader]] = {}
    for h in images(headers):
        if h.axial and h.position is not None:
            series.setdefault(h.series_uid, []).append(h)
    out = {}
    for uid, slices in series.items():
        if len(slices) >= min_slices:
            normal = slices[0].normal
            out[uid] = sorted(slices, key=lambda h: h.along(normal))
    return out


def series_thickness(slices: list[InstanceHeader]) -> float:
    """Nominal slice thickness (median SliceThickness, else the median slice spacing)."""
    values = [h.slice_thickness for h in slices if h.slice_thickness]
    if values:
        return float(np.median(values))
    if len(slices) > 1:
        pos = [h.along(slices[0].normal) for h in slices]
        return float(np.median(np.abs(np.diff(pos))))
    return float("inf")


def select_thinnest_axial(headers: list[InstanceHeader], min_slices: int
                          ) -> list[InstanceHeader]:
    candidates = axial_series(headers, min_slices)
    if not candidates:
        raise NotApplicable(f"no axial series with at least {min_slices} slices")
    best = min(candidates.values(), key=lambda s: (series_thickness(s), -len(s), s[0].path))
    return best


def select(headers: list[InstanceHeader], rule: str, volume: bool, min_slices: int
           ) -> list[InstanceHeader]:
    """The images a model reads: one for 2-D models, a sorted series for 3-D ones.

    ``auto``: the frontal view of a radiograph; the thinnest axial series of a CT, MR or PET
    study (its middle slice for a 2-D model); else the first image."""
    if rule == "auto":
        modality = next((h.modality for h in images(headers)), "")
        rule = ("frontal" if modality in PROJECTION_MODALITIES and not volume else
                "thinnest_axial" if volume or modality in CROSS_SECTIONAL else "first")
    if rule == "thinnest_axial":
        slices = select_thinnest_axial(headers, min_slices if volume else 1)
        return slices if volume else [slices[len(slices) // 2]]
    if volume:
        raise NotApplicable(f"series rule {rule!r} cannot make a volume")
    if rule == "frontal":
        return [select_frontal(headers)]
    found = images(headers)
    if not found:
        raise NotApplicable("no image in the study")
    return [found[0]]
