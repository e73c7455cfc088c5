"""dicom-qa: a rule-based checker of DICOM headers, useful on day one.

Rules (thresholds from the model's ``qa`` table; findings are coded in the
local scheme ``99RADBRIDGE`` and carry the measured values in ``detail``):

* dose: CT CTDIvol (0018,9345) and DLP against the reference level of the
  body part. DLP comes from a CT dose SR in the study ("DLP Total", DCM
  113813) when there is one, else it is estimated as CTDIvol x scan length of
  the longest axial series (the detail says which).
* laterality: images of a paired body part (knee, hand ...) without
  Laterality (0020,0060) or Image Laterality (0020,0062).
* slice thickness: the thinnest axial CT series against the protocol maximum
  of the body part.
* body part: BodyPartExamined against the ordered procedure (the procedure
  code's configured body parts, else body-part words in the procedure text).

It reads headers only and runs on the CPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.inference import LabelSpec, ModelConfig, QAOptions
from engine.model import Finding
from inference import series
from inference.models import InferenceModel, ModelOutput, Prepared, StudyInput

RDSR_CLASS = "1.2.840.10008.5.1.4.1.1.88.67"
SYNONYMS = {"THORAX": "CHEST", "LUNG": "CHEST", "CXR": "CHEST", "BRAIN": "HEAD", "SKULL": "HEAD",
            "ABD": "ABDOMEN", "HANDS": "HAND", "KNEES": "KNEE"}
KNOWN_PARTS = ("CHEST", "HEAD", "ABDOMEN", "PELVIS", "SPINE", "NECK", "HAND", "WRIST", "ELBOW",
               "SHOULDER", "HIP", "KNEE", "ANKLE", "FOOT", "BREAST")


def _label(code: str, display: str) -> LabelSpec:
    return LabelSpec.model_validate({"code": code, "display": display, "system": "99RADBRIDGE",
                                     "criticality": "low"})


LABELS = {
    "ctdivol": _label("QA-DOSE-CTDIVOL", "CTDIvol above the reference level"),
    "dlp": _label("QA-DOSE-DLP", "DLP above the reference level"),
    "laterality": _label("QA-LATERALITY", "Laterality missing for a paired body part"),
    "thickness": _label("QA-SLICE-THICKNESS", "Slice thickness above the protocol maximum"),
    "body_part": _label("QA-BODY-PART", "Body part does not match the ordered procedure"),
}


def part_of(text: str | None) -> str | None:
    word = (text or "").strip().upper()
    return SYNONYMS.get(word, word) or None


def parts_in(text: str | None) -> set[str]:
    """Known body-part words in free text ("XR CHEST 2 VIEWS" -> {"CHEST"})."""
    words = {SYNONYMS.get(w, w) for w in "".join(c if c.isalnum() else " "
                                                   for c in (text or "").upper()).split()}
    return {p for p in KNOWN_PARTS if p in words}


def _compatible(seen: str, wanted: str) -> bool:
    return seen == wanted or wanted in seen or seen in wanted


def rdsr_dlp(ds: Any) -> float | None:
    """"CT Dose Length Product Total" (DCM 113813) from a dose SR, searched recursively."""
    for item in ds.get("ContentSequence", []) or []:
        names = item.get("ConceptNameCodeSequence") or []
        if names and names[0].get("CodeValue") == "113813":
            values = item.get("MeasuredValueSequence") or []
            if values:
                return float(values[0].NumericValue)
        found = rdsr_dlp(item)
        if found is not None:
            return found
    return None


@dataclass(slots=True)
class QAFacts:
    """What the rules read from a study (numbers and codes only)."""

    modality: str
    body_parts: list[str]
    ordered_parts: list[str]
    unlateralised: int = 0
    images: int = 0
    ctdivol: float | None = None
    dlp: float | None = None
    dlp_source: str | None = None
    thinnest_mm: float | None = None
    checks: dict[str, str] = field(default_factory=dict)


def _dose(headers: list[series.InstanceHeader], facts: QAFacts) -> None:
    ctdi = [float(h.ds.CTDIvol) for h in headers if h.ds.get("CTDIvol") not in (None, "")]
    facts.ctdivol = max(ctdi) if ctdi else None
    for h in headers:
        if h.ds.get("SOPClassUID") == RDSR_CLASS and (dlp := rdsr_dlp(h.ds)) is not None:
            facts.dlp, facts.dlp_source = dlp, "dose SR"
            return
    if facts.ctdivol is None:
        return
    best = 0.0
    for slices in series.axial_series(headers, 2).values():
        z = [s.along(slices[0].normal) for s in slices]
        length_cm = (max(z) - min(z) + series.series_thickness(slices)) / 10.0
        ct = max((float(s.ds.CTDIvol) for s in slices if s.ds.get("CTDIvol")), default=0.0)
        best = max(best, ct * length_cm)
    if best > 0:
        facts.dlp, facts.dlp_source = round(best, 1), "estimated: CTDIvol x scan length"


def gather(headers: list[series.InstanceHeader], case: Any, qa: QAOptions) -> QAFacts:
    imgs = series.images(headers)
    parts = sorted({p for h in imgs if (p := part_of(h.ds.get("BodyPartExamined")))})
    ordered = qa.procedure_body_part.get(case.procedure_code or "")
    wanted = ({part_of(p) or "" for p in ordered} if ordered is not None else
              parts_in(case.procedure_text) | parts_in(case.procedure_code))
    facts = QAFacts(modality=next((h.modality for h in imgs), case.modality or ""),
                    body_parts=parts, ordered_parts=sorted(wanted), images=len(imgs))
    paired = {p.upper() for p in qa.paired_body_parts}
    facts.unlateralised = sum(1 for h in imgs if part_of(h.ds.get("BodyPartExamined")) in paired
                              and not (h.ds.get("Laterality") or h.ds.get("ImageLaterality")))
    if facts.modality == "CT":
        _dose(headers, facts)
        axial = series.axial_series(headers, 2)
        if axial:
            facts.thinnest_mm = min(series.series_thickness(s) for s in axial.values())
    return facts


class DicomQA(InferenceModel):
    """The rule-based checker as a model: batches are lists of studies' header facts."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, rules_checksum(config), "cpu")

    def prepare(self, study: StudyInput) -> Prepared:
        facts = gather(series.read_headers(study.paths), study.case, self.config.qa)
        return Prepared(study.case.study_uid, payload=facts)

    def run_batch(self, items: list[Prepared]) -> list[ModelOutput]:
        return [self.check(item) for item in items]

    def check(self, item: Prepared) -> ModelOutput:
        facts: QAFacts = item.payload
        found = self._dose(facts) + self._laterality(facts) + self._thickness(facts) + \
            self._body_part(facts)
        outputs = {name: value for name in QAFacts.__slots__
                   if (value := getattr(facts, name)) not in (None, [], 0)}
        return ModelOutput(item.study_uid, found, outputs)

    def _flag(self, key: str, detail: str) -> list[Finding]:
        return [self.finding(LABELS[key], None, detail)]

    def _dose(self, f: QAFacts) -> list[Finding]:
        ref = next((r for r in self.config.qa.dose_reference
                    if any(_compatible(p, r.body_part.upper()) for p in f.body_parts)), None)
        if f.modality != "CT" or ref is None or f.ctdivol is None:
            f.checks["dose"] = "n/a"
            return []
        out: list[Finding] = []
        if f.ctdivol > ref.ctdivol_mgy:
            out += self._flag("ctdivol", f"CTDIvol {f.ctdivol:g} mGy > reference "
                                         f"{ref.ctdivol_mgy:g} mGy ({ref.body_part})")
        if f.dlp is not None and f.dlp > ref.dlp_mgycm:
            out += self._flag("dlp", f"DLP {f.dlp:g} mGy.cm ({f.dlp_source}) > reference "
                                     f"{ref.dlp_mgycm:g} mGy.cm ({ref.body_part})")
        f.checks["dose"] = "flag" if out else "ok"
        return out

    def _laterality(self, f: QAFacts) -> list[Finding]:
        f.checks["laterality"] = "flag" if f.unlateralised else "ok"
        if not f.unlateralised:
            return []
        return self._flag("laterality", f"{f.unlateralised} of {f.images} images of a paired "
                                        f"body part ({', '.join(f.body_parts)}) lack laterality")

    def _thickness(self, f: QAFacts) -> list[Finding]:
        limits = self.config.qa.slice_thickness_max_mm
        part = next((p for p in f.body_parts if p in limits), None)
        if f.thinnest_mm is None or part is None:
            f.checks["slice_thickness"] = "n/a"
            return []
        ok = f.thinnest_mm <= limits[part]
        f.checks["slice_thickness"] = "ok" if ok else "flag"
        return [] if ok else self._flag("thickness", f"thinnest axial series {f.thinnest_mm:g} mm"
                                                     f" > protocol {limits[part]:g} mm ({part})")

    def _body_part(self, f: QAFacts) -> list[Finding]:
        if not f.body_parts or not f.ordered_parts:
            f.checks["body_part"] = "n/a"
            return []
        ok = any(_compatible(s, w) for s in f.body_parts for w in f.ordered_parts)
        f.checks["body_part"] = "ok" if ok else "flag"
        return [] if ok else self._flag("body_part", f"images: {', '.join(f.body_parts)};"
                                                     f" ordered: {', '.join(f.ordered_parts)}")


def rules_checksum(config: ModelConfig) -> str:
    """SHA-256 of the rules' source and their settings: changes when either does."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(json.dumps(config.qa.model_dump(), sort_keys=True).encode())
    return h.hexdigest()
