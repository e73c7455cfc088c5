"""Issue 3's acceptance path with real processes: storescu + `radbridge send`, either order,
end as one case listed by `radbridge cases`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.hl7gen import orm_o01
from tests.conftest import REPO
from tests.fixtures.dicom import require, write_study


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def storescu(host: str, port: int, paths: list[Path]) -> None:
    out = subprocess.run([require("storescu"), "-aet", "MODALITY", "-aec", "RADBRIDGE", host,
                          str(port), *map(str, paths)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


def send_orm(host: str, port: int, tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "orm.hl7"
    log.write_bytes(orm_o01("ORDER-E2E", patient_id="PAT001", accession="ACC-E2E"))
    out = cli("send", str(log), "--to", f"mllp://{host}:{port}", "--quiet", env=env)
    assert out.returncode == 0 and "CA 1" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("order_first", [True, False], ids=["order-first", "study-first"])
def test_storescu_study_and_radbridge_send_order_become_one_case(
        order_first: bool, tmp_path: Path, engine_process: Any,
        cli_env: dict[str, str]) -> None:
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / 'rb.db'}"
[engine]
data_dir = "{tmp_path / 'data'}"
[[channel]]
name = "orders"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
[[channel]]
name = "pacs"
source = {{ type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0" }}
study_quiet_secs = 0.5
""")
    proc = engine_process(cfg)
    proc.start()
    study = write_study(tmp_path / "study", [("CR", 2)], patient_id="PAT001",
                        accession="ACC-E2E")
    steps = [lambda: send_orm(*proc.addresses["orders"], tmp_path, cli_env),
             lambda: storescu(*proc.addresses["pacs"], study.paths)]
    for step in steps if order_first else reversed(steps):
        step()
        time.sleep(1.0)  # let the study complete (quiet period) before the next arrival
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = cli("cases", "--config", str(cfg), env=cli_env).stdout
        if study.uid in listed:
            break
        time.sleep(0.5)
    rows = [line for line in listed.splitlines() if study.uid in line]
    assert len(rows) == 1, listed
    assert "ready" in rows[0] and "ACC-E2E" in rows[0] and "PAT001" in rows[0]
