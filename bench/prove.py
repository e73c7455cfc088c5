"""One report of every robustness figure: crashes, fuzzing, hostile input, faults, security.

    .venv/bin/python -m bench.prove            # the long run: 100 SIGKILLs, 10 000 000 fuzz runs
                                               # (about 1 000 fuzz runs a second here: hours)
    .venv/bin/python -m bench.prove --quick    # a few minutes: 5 kills, 5 000 fuzz runs

It runs the crash loop (bench.crashloop), the atheris fuzzer (bench.fuzz_mllp), the test
suites that check hostile input, peer faults, slow clients, TLS, the authorization matrix
and the PHI log scan (one pytest run, counted case by case from its JUnit report), and the
dependency audit (scripts/audit.sh), then prints one table. Exits 1 if any figure misses
its target. The peers the tests need (Orthanc, dcmtk, PostgreSQL) must be installed, as for
the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.crashloop import crash_loop

REPO = Path(__file__).resolve().parent.parent
IT = "tests/integration"


@dataclass(frozen=True)
class Suite:
    """A group of test cases counted together: the files run and which cases belong."""

    label: str
    target: str
    files: tuple[str, ...]
    picks: Callable[[str, str], bool]  # (file stem, test name) -> belongs


def _in(stem: str, *names: str) -> Callable[[str, str], bool]:
    return lambda s, n: s == stem and (not names or n.split("[")[0] in names)


def _hardening(label: str, *stems: str) -> Suite:
    """A row of issue 12's findings: every case in the named test files (unit or integration)."""
    files = tuple(str(p.relative_to(REPO)) for stem in stems
                  for p in sorted(REPO.glob(f"tests/*/{stem}.py")))
    return Suite(label, "all pass", files, lambda s, n: s in stems)


def _named(*words: str) -> Callable[[str, str], bool]:
    return lambda s, n: any(w in n.lower() for w in words)


_FORWARDING_FAULTS = ("test_a_peer_rejection_is_recorded_with_its_reason",
                      "test_a_down_peer_keeps_messages_queued_then_delivers_them_in_order",
                      "test_a_silent_peer_times_out_and_is_retried",
                      "test_unfinished_messages_are_redriven_at_start",
                      "test_stop_is_clean_while_a_destination_retries")
_DICOM_FAULTS = ("test_an_unavailable_store_gives_503_with_retry_after",
                 "test_the_orthanc_poller_backs_off_while_the_pacs_is_down_then_catches_up",
                 "test_a_body_over_the_limit_gives_413_before_it_is_read",
                 "test_a_chunked_body_over_the_limit_gives_413_while_streaming",
                 "test_a_malformed_multipart_body_gives_400_with_a_reason")
_DIMSE_FAULTS = ("test_a_truncated_file_is_answered_0xc000_and_not_stored",
                 "test_an_instance_with_a_malformed_study_uid_is_answered_0xc000_with_the_reason",
                 "test_a_store_that_cannot_commit_is_answered_0xa700")

SUITES = [
    Suite("hostile HL7 corpus (each case, its answer)", "all pass",
          (f"{IT}/test_hostile_input.py",),
          _in("test_hostile_input", "test_hostile_message_gets_its_expected_answer")),
    Suite("property tests: header reader, framing", "all pass",
          (f"{IT}/test_hostile_input.py", "tests/unit/test_framing.py"),
          lambda s, n: s == "test_framing" or (s == "test_hostile_input" and not n.startswith(
              "test_hostile_message_gets_its_expected_answer"))),
    Suite("peer faults (down, AE/AR, slow, PACS down, disk full)", "all pass",
          (f"{IT}/test_faults.py", f"{IT}/test_forwarding.py", f"{IT}/test_dicomweb.py",
           f"{IT}/test_dicom_ingest.py", f"{IT}/test_mllp_ingest.py"),
          lambda s, n: s == "test_faults" or _in("test_forwarding", *_FORWARDING_FAULTS)(s, n)
          or _in("test_dicomweb", *_DICOM_FAULTS)(s, n)
          or _in("test_dicom_ingest", *_DIMSE_FAULTS)(s, n)
          or _in("test_mllp_ingest",
                 "test_an_oversized_message_is_refused_and_the_connection_recovers")(s, n)),
    Suite("slow-drip and connection limits (MLLP, STOW-RS, admin)", "all pass",
          (f"{IT}/test_slow_drip.py",), _in("test_slow_drip")),
    Suite("TLS / mutual TLS (MLLP, DICOM, STOW-RS)", "all pass",
          (f"{IT}/test_mllp_ingest.py", f"{IT}/test_dicom_ingest.py", f"{IT}/test_dicomweb.py",
           f"{IT}/test_admin_access.py"),
          lambda s, n: s != "test_admin_access" and _named("tls", "https")(s, n)
          or s == "test_admin_access" and _named("tls", "https", "certificate")(s, n)),
    Suite("authorization matrix (role x endpoint)", "all pass", (f"{IT}/test_admin_authz.py",),
          _in("test_admin_authz", "test_each_role_gets_the_documented_answer")),
    Suite("authorization policy checks", "all pass", (f"{IT}/test_admin_authz.py",),
          lambda s, n: s == "test_admin_authz" and not n.startswith(
              "test_each_role_gets_the_documented_answer")),
    Suite("PHI log scan (end-to-end run at DEBUG)", "all pass", (f"{IT}/test_logs_phi.py",),
          _in("test_logs_phi")),
    *(_hardening(label, *stems) for label, *stems in (
        ("hardening: traversal (DICOM UIDs, paths under their root)", "test_hardening_traversal"),
        ("hardening: hostile DICOM input (pixel length, truncation, SOP classes, STOW-RS)",
         "test_hardening_dicom_input"),
        ("hardening: poison message (deterministic failure, skip, stalled head)",
         "test_hardening_poison", "test_hardening_skip"),
        ("hardening: credentials (one policy, generated admin password, cookies)",
         "test_hardening_credentials"),
        ("hardening: login throttle and bounded names", "test_hardening_throttle"),
        ("hardening: viewer masking (allow-list, every viewer endpoint)",
         "test_hardening_viewer_phi"),
        ("hardening: bad admin and CLI input gets a 4xx or one line",
         "test_hardening_admin_input"),
        ("hardening: exhaustion (per-peer limits, IPv6 /64, buffer budget, PDU limits)",
         "test_hardening_exhaustion", "test_hardening_exhaustion_dimse"),
        ("hardening: routing key (PID-3, else PID-2: one patient, one order)",
         "test_hardening_routing_key"),
        ("hardening: every stored frame gets an answer", "test_hardening_answer_total"),
        ("hardening: secrets (never in channels.toml, never from the API)",
         "test_hardening_secrets"),
        ("hardening: file modes (0600 files, 0700 directories)", "test_hardening_file_modes"),
        ("hardening: CLI changes reach the running engine", "test_hardening_cli_reaches_engine"),
        ("hardening: files a config names exist (TLS, CA bundles)", "test_hardening_tls_lint"),
        ("hardening: installs pinned, no known-vulnerable floor", "test_hardening_constraints"),
        ("first ten minutes: radbridge demo in the dashboard", "test_demo", "test_demo_data"),
        ("lenient intake (BOM, stray CR, empty MSH-10)", "test_lenient_intake"),
    )),
]


@dataclass
class Row:
    figure: str
    value: str
    target: str
    ok: bool


def run_crash(kills: int) -> list[Row]:
    started = time.monotonic()
    report = asyncio.run(crash_loop(kills, senders=4, seed=1))
    lost = report.lost_downstream + report.missing_in_store
    secs = time.monotonic() - started
    return [
        Row("crash loop: SIGKILLs under load", f"{report.kills} ({secs:.0f} s)",
            f">= {kills}", report.kills >= kills),
        Row("crash loop: ACKed messages checked", str(len(report.acked)), "> 0",
            len(report.acked) > 0),
        Row("crash loop: lost (ACKed, not stored or not delivered)", str(lost), "0", lost == 0),
        Row("crash loop: delivered twice (in flight at a kill)", str(report.duplicates),
            f"<= {64 * max(report.kills, 1)}", report.duplicates <= 64 * max(report.kills, 1)),
        Row("crash loop: stored but never final (RECEIVED/QUEUED)", str(report.unfinished), "0",
            report.unfinished == 0),
        Row("crash loop: resent by senders after a kill", str(report.resent), "-", True),
    ]


def run_fuzz(runs: int) -> list[Row]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="radbridge-fuzz-") as tmp:  # crash files land here
        out = subprocess.run([sys.executable, "-m", "bench.fuzz_mllp", f"-runs={runs}", "-seed=1",
                              f"-artifact_prefix={tmp}/"], capture_output=True, text=True,
                             cwd=REPO)
    found = re.findall(r"executions: (\d+) crashes: (\d+)", out.stdout)
    executions = int(found[-1][0]) if found else 0
    crashed = out.returncode != 0
    secs = time.monotonic() - started
    if crashed:
        print(out.stderr[-3000:], file=sys.stderr)
    return [Row("fuzz (atheris): framer + HL7 readers, executions",
                f"{executions} ({secs:.0f} s)", f">= {runs}", executions >= runs),
            Row("fuzz: crashes", "1 (see stderr)" if crashed else "0", "0", not crashed)]


def run_suites() -> list[Row]:
    files = sorted({f for s in SUITES for f in s.files})
    with tempfile.TemporaryDirectory(prefix="radbridge-prove-") as tmp:
        junit = Path(tmp) / "junit.xml"
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"--junitxml={junit}", *files],
                             capture_output=True, text=True, cwd=REPO)
        secs = time.monotonic() - started
        if not junit.exists():
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            return [Row("test suites", f"pytest exited {out.returncode}, no report", "-", False)]
        cases = _cases(junit)
    print(f"(test suites: {len(cases)} cases in {secs:.0f} s)", file=sys.stderr)
    rows = []
    for suite in SUITES:
        mine = [(name, ok, why) for stem, name, ok, why in cases if suite.picks(stem, name)]
        passed = sum(ok for _, ok, _ in mine)
        for name, ok, why in mine:
            if not ok:
                print(f"FAILED {suite.label}: {name}: {why[:300]}", file=sys.stderr)
        rows.append(Row(suite.label, f"{passed}/{len(mine)} pass", suite.target,
                        bool(mine) and passed == len(mine)))
    rows.append(_phi_hits(cases))
    return rows


def _cases(junit: Path) -> list[tuple[str, str, bool, str]]:
    """(file stem, test name, passed, failure text) for every case in a JUnit report."""
    out = []
    for case in ET.parse(junit).iter("testcase"):
        stem = case.get("classname", "").rsplit(".", 1)[-1]
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skipped = case.find("skipped") is not None
        why = "" if bad is None else (bad.get("message") or "") + (bad.text or "")
        out.append((stem, case.get("name", ""), bad is None and not skipped,
                    "skipped" if skipped else why))
    return out


def _phi_hits(cases: list[tuple[str, str, bool, str]]) -> Row:
    """The PHI scan asserts ``hits == []``: a pass is 0 hits, a failure names them."""
    scan = [c for c in cases if c[0] == "test_logs_phi"]
    if not scan:
        return Row("PHI log scan: names and patient ids found in logs", "not run", "0", False)
    if all(ok for _, _, ok, _ in scan):
        return Row("PHI log scan: names and patient ids found in logs", "0", "0", True)
    hits = re.findall(r"assert \[(.*?)\] == \[\]", " ".join(c[3] for c in scan))
    value = f"{len(hits[0].split(','))}" if hits else "scan failed"
    return Row("PHI log scan: names and patient ids found in logs", value, "0", False)


def run_audit() -> Row:
    env = {**os.environ, "CI": "", "RADBRIDGE_AUDIT_OFFLINE_OK": "1"}
    out = subprocess.run(["bash", "scripts/audit.sh"], capture_output=True, text=True,
                         cwd=REPO, env=env)
    text = out.stdout + out.stderr
    if "NOT AUDITED" in text:
        return Row("dependency audit (pip-audit)", "not audited: service unreachable", "0 known",
                   False)
    found = re.search(r"AUDIT: (\d+) known vulnerabilit", text)
    count = found.group(1) if found else "?"
    return Row("dependency audit (pip-audit): known vulnerabilities", count, "0",
               out.returncode == 0 and count == "0")


def table(rows: list[Row]) -> str:
    width = max(len(r.figure) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':>{vwidth}}  {'target':<10}  ok",
             "-" * (width + vwidth + 18)]
    lines += [f"{r.figure:<{width}}  {r.value:>{vwidth}}  {r.target:<10}  "
              f"{'yes' if r.ok else 'NO'}" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 kills, 5 000 fuzz runs")
    ap.add_argument("--kills", type=int, help="SIGKILLs in the crash loop (default 100, 5)")
    ap.add_argument("--fuzz-runs", type=int, help="fuzz executions (default 10 000 000, 5 000)")
    args = ap.parse_args()
    kills = args.kills or (5 if args.quick else 100)
    runs = args.fuzz_runs or (5_000 if args.quick else 10_000_000)
    started = time.monotonic()
    rows: list[Row] = []
    for step in (lambda: run_crash(kills), lambda: run_fuzz(runs), run_suites,
                 lambda: [run_audit()]):
        rows += step()
        print(table(rows).splitlines()[-1], file=sys.stderr, flush=True)
    print(f"\nradbridge prove ({'quick' if args.quick else 'full'} run, "
          f"{time.monotonic() - started:.0f} s)\n")
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
