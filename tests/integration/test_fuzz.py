"""A short atheris run of the MLLP framer + HL7 readers must finish without a crash."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_a_short_fuzz_run_of_framer_and_parsers_finds_no_crash() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.fuzz_mllp", "-runs=5000", "-seed=1"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "executions: 5000 crashes: 0" in out.stdout
