"""Lint checks every TLS file the config names: it exists and is readable (issue 12).

Before, lint said ok and ``radbridge run`` died with a bare ``FileNotFoundError`` (for the
admin TLS, after the other listeners had started). Every path key is now a
``configbase.ReadableFile``, checked once by the config model and reported as
``file:line: key: message``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.base import check_readable_file
from engine.config.schema import lint_text
from tests.conftest import REPO

KEYS = (
    "admin_cert",
    "admin_key",
    "ris_cert",
    "ris_key",
    "ris_ca",
    "ehr_cert",
    "ehr_key",
    "ehr_ca",
    "dicom_cert",
    "dicom_key",
    "web_cert",
    "web_key",
    "pacs_ca",
    "fhir_ca",
    "triton_ca",
)

TEMPLATE = """
[admin]
listen = "127.0.0.1:0"
tls = {{ cert = "{admin_cert}", key = "{admin_key}" }}

[[channel]]
name = "ris"
[channel.source]
type = "mllp"
listen = "127.0.0.1:0"
tls = {{ cert = "{ris_cert}", key = "{ris_key}", client_ca = "{ris_ca}" }}

[[channel]]
name = "ehr"
[channel.destination]
type = "mllp"
endpoint = "ehr:6661"
tls = {{ cert = "{ehr_cert}", key = "{ehr_key}", ca = "{ehr_ca}" }}

[[channel]]
name = "pacs"
[channel.source]
type = "dicom"
ae_title = "RB"
listen = "127.0.0.1:0"
tls = {{ cert = "{dicom_cert}", key = "{dicom_key}" }}

[[channel]]
name = "web"
source = {{ type = "dicomweb", listen = ":0", tls = {{ cert = "{web_cert}", key = "{web_key}" }} }}

[[channel]]
name = "stow"
destination = {{ type = "dicomweb_stow", url = "https://pacs/dicom-web", ca_file = "{pacs_ca}" }}

[[channel]]
name = "fhir"
destination = {{ type = "fhir_rest", base_url = "https://ehr/fhir", ca_file = "{fhir_ca}" }}

[[model]]
name = "remote-cxr"
version = "1"
format = "kserve"
remote = {{ url = "https://triton:8000", ca_file = "{triton_ca}" }}
output = {{ labels = [{{ code = "36118008", display = "Pneumothorax" }}] }}
"""


def every_tls_key(ok: Path, **bad: Path) -> str:
    """A config with every kind of TLS key (listeners, destinations, admin, models): each
    file is *ok* unless named in *bad*."""
    return TEMPLATE.format(**{key: bad.get(key, ok) for key in KEYS})


@pytest.fixture
def ok(tmp_path: Path) -> Path:
    path = tmp_path / "ok.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_every_missing_or_unreadable_tls_file_is_named_with_its_line_and_key(ok: Path) -> None:
    gone = ok.parent / "gone"
    text = every_tls_key(
        ok,
        admin_cert=gone / "admin.pem",
        ris_ca=gone / "ris-ca.pem",
        ehr_key=gone / "ehr.key",
        dicom_cert=gone / "dicom.pem",
        web_key=ok.parent,
        pacs_ca=gone / "pacs-ca.pem",
        fhir_ca=gone / "fhir-ca.pem",
        triton_ca=gone / "triton-ca.pem",
    )
    config, problems = lint_text(text, "c.toml")
    assert config is None

    def line_of(path: Path) -> int:
        return next(n for n, line in enumerate(text.splitlines(), 1) if f'"{path}"' in line)

    assert [(p.line, p.key) for p in problems] == [
        (line_of(gone / "admin.pem"), "admin.tls.cert"),
        (line_of(gone / "ris-ca.pem"), "channel[0].source.tls.client_ca"),
        (line_of(gone / "ehr.key"), "channel[1].destination.tls.key"),
        (line_of(gone / "dicom.pem"), "channel[2].source.tls.cert"),
        (line_of(ok.parent), "channel[3].source.tls.key"),
        (line_of(gone / "pacs-ca.pem"), "channel[4].destination.ca_file"),
        (line_of(gone / "fhir-ca.pem"), "channel[5].destination.ca_file"),
        (line_of(gone / "triton-ca.pem"), "model[0].remote.ca_file"),
    ]
    assert f"file not found: {gone}/admin.pem" in problems[0].message
    assert f"not a file: {ok.parent}" in problems[4].message


def test_tls_files_that_exist_lint_clean(ok: Path) -> None:
    assert lint_text(every_tls_key(ok), "c.toml")[1] == []


def test_a_relative_path_is_checked_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "server.pem").write_text("x")
    monkeypatch.chdir(tmp_path)
    tls = 'tls = { cert = "certs/server.pem", key = "certs/server.key" }'
    text = f'[[channel]]\nname = "ris"\nsource = {{ type = "mllp", listen = ":0", {tls} }}\n'
    problems = [str(p) for p in lint_text(text, "c.toml")[1]]
    assert problems == [
        "c.toml:3: channel[0].source.tls.key: Value error, file not found: certs/server.key"
    ]


def test_the_readable_file_check_is_reusable_and_names_the_problem(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret")
    assert check_readable_file(str(secret)) == str(secret)
    with pytest.raises(ValueError, match="file not found: .*nope"):
        check_readable_file(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="not a file"):
        check_readable_file(str(tmp_path))


def test_radbridge_lint_and_run_report_the_missing_admin_certificate_as_one_line(
    tmp_path: Path,
) -> None:
    ok = tmp_path / "ok.pem"
    ok.write_text("x")
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f"""[store]
url = "sqlite:///{tmp_path / "rb.db"}"
[admin]
listen = "127.0.0.1:0"
tls = {{ cert = "{tmp_path}/gone.pem", key = "{ok}" }}
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
""")
    expected = f"{cfg}:5: admin.tls.cert: Value error, file not found: {tmp_path}/gone.pem"
    for command, code in (("lint", 1), ("run", 2)):
        out = subprocess.run(
            [sys.executable, "-m", "engine.cli", command, str(cfg)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert (out.returncode, out.stderr.strip()) == (code, expected), out.stderr[-2000:]
        assert "listening" not in out.stdout  # run stops before any listener opens
    skipped = subprocess.run(
        [sys.executable, "-m", "engine.cli", "lint", "--skip-file-checks", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert skipped.returncode == 0, skipped.stderr
