#!/usr/bin/env bash
# Install the real peers the test suite talks to (idempotent). Services the
# tests need are started by the test fixtures themselves (Orthanc on loopback
# ports chosen per run); PostgreSQL is started here when it is down.
set -euo pipefail

need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts its own Orthanc service on 4242/8042; the tests
# run their own instances, so stop the packaged one if it is running.
if pgrep -x Orthanc >/dev/null && [ -f /etc/orthanc/orthanc.json ]; then
    service orthanc stop >/dev/null 2>&1 || pkill -x Orthanc || true
fi
# Headless Chromium for the dashboard tests (tests/e2e; Playwright drives the system browser).
command -v chromium >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
# PostgreSQL: the second store every store/pipeline test also runs against (db "test", trust
# auth on 127.0.0.1:5432). Started here when it is down; the tests fail, never skip, without it.
if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Triton Inference Server (PyTriton wheel: tritonserver plus its Python backend, CPU-only here)
# for the remote-inference tests. It lives in its own venv because PyTriton pins numpy and
# gRPC versions the project does not need. tests/fixtures/triton.py finds it here.
TRITON_VENV="${RADBRIDGE_TRITON_VENV:-.peers/triton}"
if ! "$TRITON_VENV/bin/python" -c "import pytriton" 2>/dev/null; then
    PY=${PYTHON:-python3.11}
    command -v "$PY" >/dev/null || PY=python3
    "$PY" -m venv "$TRITON_VENV"
    "$TRITON_VENV/bin/pip" install -q "nvidia-pytriton==0.7.0"
fi
