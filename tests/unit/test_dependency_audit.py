"""scripts/audit.sh never passes silently: a vulnerability service that cannot answer is
reported loudly (NOT AUDITED) and fails CI unless explicitly accepted.

The services are replaced by fakes on loopback: one answering like a registry mirror that
serves packages but 404s every per-version JSON page (what pip-audit would turn into
"No known vulnerabilities found"), and a closed port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "audit.sh"


class _Mirror(BaseHTTPRequestHandler):
    """A registry mirror: the project page exists, every per-version JSON page is a 404."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1/query"


def audit(pypi: str, ci: str, offline_ok: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": ci, "RADBRIDGE_AUDIT_OFFLINE_OK": offline_ok,
           "RADBRIDGE_AUDIT_PYPI_URL": f"{pypi}/pypi", "RADBRIDGE_AUDIT_OSV_URL": _closed_port()}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_mirror_without_vulnerability_data_fails_ci_loudly(mirror: str) -> None:
    out = audit(mirror, ci="true")
    assert out.returncode == 3
    assert "NOT AUDITED" in out.stderr
    assert "PyPI JSON API: HTTP 404" in out.stderr and "OSV: unreachable" in out.stderr


def test_ci_may_accept_an_unreachable_service_explicitly_but_still_hears_it(
        mirror: str) -> None:
    out = audit(mirror, ci="true", offline_ok="1")
    assert out.returncode == 0 and "NOT AUDITED" in out.stderr


def test_outside_ci_an_unreachable_service_is_reported_without_failing(mirror: str) -> None:
    out = audit(mirror, ci="")
    assert out.returncode == 0 and "NOT AUDITED" in out.stderr


def test_pip_audit_is_a_dev_dependency_and_ci_runs_the_audit() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    dev = project["project"]["optional-dependencies"]["dev"]
    assert any(dep.replace(" ", "").startswith("pip-audit") for dep in dev)
    assert "scripts/audit.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
