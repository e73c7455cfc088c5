"""``import fhir.resources`` must work however radbridge runs (see fhir/README.md)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = "import fhir.resources, radbridge_fhir; print(fhir.resources.__file__)"


def test_fhir_resources_imports_under_pytest() -> None:
    import fhir.resources
    from fhir.resources.R4B.patient import Patient

    assert "site-packages" in (fhir.resources.__file__ or "")
    assert Patient(id="p1").id == "p1"


def test_fhir_resources_imports_from_the_source_tree_root() -> None:
    # cwd first on sys.path: the repo's data-only fhir/ folder must not shadow the library.
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout


def test_the_fhir_folder_is_data_only() -> None:
    assert not (REPO / "fhir" / "__init__.py").exists()
    assert not list((REPO / "fhir").glob("*.py"))


def test_the_wheel_ships_no_top_level_fhir_package(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("radbridge-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "fhir" not in tops
    assert {"engine", "channels", "mappings", "radbridge_fhir"} <= tops


def test_fhir_resources_imports_from_an_installed_radbridge(tmp_path: Path) -> None:
    # The editable install under test: run from an unrelated directory.
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
