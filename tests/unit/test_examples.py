"""docs/examples/ is what the engine's own builders produce today (scripts/make_examples.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


def _script() -> object:
    spec = importlib.util.spec_from_file_location("make_examples",
                                                  REPO / "scripts" / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_examples_are_what_the_builders_produce(tmp_path: Path) -> None:
    written = _script().build(tmp_path)  # type: ignore[attr-defined]
    assert {p.name for p in written} == {p.name for p in EXAMPLES.iterdir()}
    for path in written:
        committed = (EXAMPLES / path.name).read_text()
        assert path.read_text() == committed, (
            f"docs/examples/{path.name} is stale: run .venv/bin/python scripts/make_examples.py")


def test_the_examples_say_what_they_are() -> None:
    oru = (EXAMPLES / "oru_r01_v251.hl7").read_text().splitlines()
    assert oru[0].startswith("MSH|^~\\&|") and "ORU^R01" in oru[0]
    assert any(line.startswith("NTE") and "DEMO" in line for line in oru)
    bundle = json.loads((EXAMPLES / "fhir_bundle.json").read_text())
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"DiagnosticReport", "Observation", "Device", "Provenance", "ImagingStudy",
            "Task"} <= types
    report = next(e["resource"] for e in bundle["entry"]
                  if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report["status"] == "preliminary"
    sr = pydicom.Dataset.from_json((EXAMPLES / "sr_tid1500.json").read_text())
    assert sr.Manufacturer == "RADBRIDGE" and sr.VerificationFlag == "UNVERIFIED"
