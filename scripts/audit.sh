#!/usr/bin/env bash
# Audit the installed Python environment (.venv, without radbridge itself) for known
# vulnerabilities with pip-audit; exit 1 when any is found.
#
# pip-audit needs a vulnerability service: PyPI's JSON API (GET /pypi/NAME/VERSION/json, its
# "vulnerabilities") or OSV (POST https://api.osv.dev/v1/query). A registry mirror can serve
# packages yet answer 404 for every per-version JSON page, and then pip-audit reports each
# package as "not found on PyPI", skips it and says "No known vulnerabilities found": a silent
# pass. So each service is probed first with a package version that is certainly published;
# if neither answers properly, this script says so loudly (NOT AUDITED) and exits 3 when
# CI=true, unless RADBRIDGE_AUDIT_OFFLINE_OK=1 (then, and outside CI, it exits 0).
#
#   RADBRIDGE_AUDIT_PYPI_URL  default https://pypi.org/pypi      (probe only; tests point it
#   RADBRIDGE_AUDIT_OSV_URL   default https://api.osv.dev/v1/query  at loopback fakes)
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${RADBRIDGE_VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$VENV/bin/pip-audit" ] || { echo "audit: $VENV/bin/pip-audit missing: ./dev setup" >&2; exit 2; }

# Prints the first usable service (pypi or osv); the reason for each unusable one on stderr.
service=$("$PY" - <<'EOF'
import json, os, sys, urllib.error, urllib.request
from importlib.metadata import version

def usable(name, request, check):
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            body = json.loads(resp.read())
        if check(body):
            return True
        print(f"audit: {name}: answered, but without vulnerability data", file=sys.stderr)
    except urllib.error.HTTPError as exc:
        print(f"audit: {name}: HTTP {exc.code} for {request.full_url}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"audit: {name}: unreachable: {exc}", file=sys.stderr)
    return False

pypi = os.environ.get("RADBRIDGE_AUDIT_PYPI_URL", "https://pypi.org/pypi").rstrip("/")
osv = os.environ.get("RADBRIDGE_AUDIT_OSV_URL", "https://api.osv.dev/v1/query")
# pip as installed here is certainly published; jinja2 2.4.1 has known advisories.
probe_pypi = urllib.request.Request(f"{pypi}/pip/{version('pip')}/json")
probe_osv = urllib.request.Request(osv, method="POST", headers={"Content-Type": "application/json"},
    data=json.dumps({"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "2.4.1"}).encode())
if usable("PyPI JSON API", probe_pypi, lambda b: "vulnerabilities" in b):
    print("pypi")
elif usable("OSV", probe_osv, lambda b: bool(b.get("vulns"))):
    print("osv")
EOF
)

not_audited() {
    cat >&2 <<'EOF'
######################################################################################
# NOT AUDITED: no vulnerability service answered (PyPI JSON API or OSV, see above).  #
# The installed packages were NOT checked for known vulnerabilities.                 #
######################################################################################
EOF
    if [ "${CI:-}" = "true" ] && [ "${RADBRIDGE_AUDIT_OFFLINE_OK:-}" != "1" ]; then
        echo "audit: failing (CI=true); set RADBRIDGE_AUDIT_OFFLINE_OK=1 to accept." >&2
        exit 3
    fi
    exit 0
}

[ -n "$service" ] || not_audited

echo "audit: pip-audit on $VENV with the $service service" >&2
report=$(mktemp)
trap 'rm -f "$report"' EXIT
"$VENV/bin/pip-audit" --skip-editable -s "$service" --progress-spinner off --desc on \
    -f json -o "$report" >&2
rc=$?
[ -s "$report" ] && "$PY" - "$report" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
deps = data.get("dependencies", [])
vulns = [(d["name"], d["version"], v["id"], ",".join(v.get("fix_versions") or []) or "none")
         for d in deps for v in d.get("vulns", [])]
skipped = [(d["name"], d.get("skip_reason", "")) for d in deps if "skip_reason" in d]
for name, ver, vid, fix in vulns:
    print(f"  {name} {ver}: {vid} (fixed in {fix})")
for name, why in skipped:
    print(f"  skipped {name}: {why}")
print(f"AUDIT: {len(vulns)} known vulnerabilities in {len(deps) - len(skipped)} packages "
      f"audited ({len(skipped)} skipped)")
sys.exit(4 if deps and len(skipped) == len(deps) else 0)  # every package skipped: no data
EOF
[ $? -eq 4 ] && { echo "audit: the $service service knew none of the packages" >&2; not_audited; }
exit $rc
