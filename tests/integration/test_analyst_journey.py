"""Issue 14's "done when", as an interface analyst does it: a real ``radbridge run`` process,
``channels.toml`` and a CSV written here, and nothing but the command line and MLLP.

The engine starts from a plain configuration and takes traffic (orders over MLLP; a study,
its AI inference and the ORU by ``radbridge demo``). The analyst then writes a candidate that
drops test traffic, reads the accession from OBR-20 and the priority from OBR-5 through a
value map, maps local procedure codes to RadLex Playbook ids for the archive, routes CT/MR
orders to one destination and the rest to another, and shapes the ORU for one EHR (MSH-5/6,
the AI disclaimer after the results). Each change is proved with ``radbridge try`` and
``radbridge replay --diff`` before the engine is told to reload (SIGHUP); the RIS's MLLP
connection stays open across the reload, and what arrives after it follows the candidate.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from mappings.hl7v2.ack import read_ack
from tests.conftest import wait_for
from tests.fixtures.peers import HL7Sink

SLOW = 300.0  # generous: a loaded machine runs inference and a dozen CLI processes

PROCEDURES = """\
# our RIS's local procedure codes -> RadLex Playbook ids (illustrative)
local,rpid,radlex_name
LCT101,RPID16,CT CHEST WO IV CONTRAST
LMR201,RPID37,MR BRAIN WO IV CONTRAST
LXR301,RPID1262,XR CHEST 2 VIEWS
"""

RUNNING = """\
[store]
url = "{url}"
[engine]
data_dir = "var"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:{ris_port}" }}
process = "orders"
forward_to = ["archive"]
[[channel]]
name = "pacs-in"
source = {{ type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:{pacs_port}" }}
[[channel]]
name = "archive"
destination = {{ type = "file", directory = "out/archive" }}
[[channel]]
name = "ct-mr"
destination = {{ type = "file", directory = "out/ct-mr" }}
[[channel]]
name = "others"
destination = {{ type = "file", directory = "out/others" }}
[[channel]]
name = "ai-results"
source = {{ type = "ai_results" }}
forward_to = ["epic", "other-ehr"]
[[channel]]
name = "epic"
destination = {{ type = "mllp", endpoint = "{epic}" }}
[[channel]]
name = "other-ehr"
destination = {{ type = "file", directory = "out/other-ehr" }}
[[route]]
name = "chest"
when = {{ modality = ["CR", "DX"] }}
models = ["demo-cxr"]
[[model]]
name = "demo-cxr"
version = "0.1.0"
format = "builtin"
batch_max = 1
max_wait_ms = 0
mode = "second_reader"
"""

# What the analyst adds: every change is channels.toml text, plus the CSV above.
CHANGES = {
    'process = "orders"\nforward_to = ["archive"]': """\
process = "orders"
filter = { name = "no-test-traffic", not = { field = "MSH-11", eq = "T" } }
map = { accession = ["OBR-20!", "OBR-18!"], priority = ["OBR-5", "ORC-7.6"] }
values = { priority = { HIGH = "S", NORMAL = "R" } }
forward_to = [
  { to = "ct-mr", when = { field = "OBR-24", in = ["CT", "MR"] } },
  { to = "others", when = { not = { field = "OBR-24", in = ["CT", "MR"] } } },
  "archive",
]""",
    'directory = "out/archive" }': """directory = "out/archive" }
transform = [
  { name = "radlex-id", map = "OBR-4.1", lookup = "procedures", to = "OBR-4.4" },
  { name = "radlex-name", map = "OBR-4.1", lookup = "procedures", column = "radlex_name", \
to = "OBR-4.5" },
  { name = "radlex-system", set = "OBR-4.6", value = "RADLEX", when = { field = "OBR-4.4", \
exists = true } },
]""",
    'name = "epic"\n': """\
name = "epic"
transform = [
  { name = "epic-receiver", set = "MSH-5", value = "EPIC" },
  { name = "epic-facility", set = "MSH-6", value = "MAIN-HOSPITAL" },
  { name = "disclaimer-after-results", move = "NTE", after = "OBX" },
]
""",
}
LOOKUP = """
[[lookup]]
name = "procedures"
file = "procedures.csv"
key = "local"
value = "rpid"
on_missing = "keep"
"""


def candidate_of(running: str) -> str:
    for old, new in CHANGES.items():
        assert old in running
        running = running.replace(old, new)
    return running + LOOKUP


def order(cid: str, modality: str, code: str, priority: str, mode: str = "P") -> bytes:
    """An ORM^O01 as our RIS sends it: a local procedure code in OBR-4, the priority in
    OBR-5, the accession in OBR-20 (OBR-18 holds the RIS's own number), test traffic
    marked in MSH-11."""
    raw = orm_o01(cid, accession=f"RIS{cid}", patient_id=f"MRN{cid}").decode("latin-1")
    raw = raw.replace(f"|{cid}|P|", f"|{cid}|{mode}|").replace("||||CR|||", f"|||||{modality}||")
    raw = raw.replace("|71046^XR CHEST 2 VIEWS^CPT4|||", f"|{code}^LOCAL PROC^L|{priority}||", 1)
    return raw.replace(f"|RPRIS{cid}||", f"|RPRIS{cid}|ACC-{cid}|", 1).encode("latin-1")


def batch(*cids: str) -> list[bytes]:
    """A CT order, a radiograph and an MR order marked as test traffic."""
    ct, xr, test = cids
    return [order(ct, "CT", "LCT101", "HIGH"), order(xr, "CR", "LXR301", "NORMAL"),
            order(test, "MR", "LMR201", "HIGH", mode="T")]


def free_port() -> int:
    """A port for a listener the demo must find in channels.toml (port 0 would not do)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def segments(raw: bytes) -> list[str]:
    return raw.decode("latin-1").replace("\n", "\r").strip("\r").split("\r")


def field(raw: bytes, seg: str, n: int) -> str:
    line = next(s for s in segments(raw) if s.startswith(seg + "|"))
    return (line.split("|") + [""] * n)[n - 1 if seg == "MSH" else n]


def control_ids(folder: Path) -> set[str]:
    return {field(p.read_bytes(), "MSH", 10) for p in folder.glob("*")} if folder.exists() \
        else set()


class Analyst:
    """Runs ``radbridge`` commands in the directory holding channels.toml, as a user does (in
    a thread: the EHR listener of this test shares the event loop)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))

    async def run(self, *args: str, expect: int = 0) -> str:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "engine.cli", *args], capture_output=True,
            text=True, cwd=self.home, env=self.env, timeout=900)
        assert done.returncode == expect, f"radbridge {' '.join(args)}: {done.returncode}\n" \
                                          f"{done.stdout}\n{done.stderr}"
        return done.stdout

    async def start_engine(self) -> asyncio.subprocess.Process:
        with (self.home / "engine.err").open("wb") as err:  # the child keeps its own copy
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "engine.cli", "run", "channels.toml", "--log-level",
                "WARNING", cwd=self.home, env=self.env, stdout=asyncio.subprocess.PIPE,
                stderr=err)
        await self.line(proc, "READY")
        return proc

    async def line(self, proc: asyncio.subprocess.Process, start: str) -> str:
        """The engine's next stdout line that starts with *start*."""
        assert proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), SLOW)
            err = (self.home / "engine.err").read_text(errors="replace")
            assert raw, f"radbridge run exited ({proc.returncode}): {err}"
            if raw.decode().startswith(start):
                return raw.decode().rstrip("\n")


async def send(client: MLLPClient, messages: list[bytes]) -> None:
    for raw in messages:
        assert read_ack(await client.send(raw))[0] in ("AA", "CA")


def summary(out: str) -> dict[str, list[str]]:
    """``radbridge replay``'s table: channel -> its counts."""
    head = next(i for i, ln in enumerate(out.splitlines()) if ln.startswith("channel "))
    rows = [ln.split() for ln in out.splitlines()[head + 1:] if ln.strip()]
    return {row[0]: row[1:] for row in rows if len(row) == 8}


async def test_an_analyst_shapes_the_running_engine_with_channels_toml_and_a_csv_only(
        db_url: str, tmp_path: Path, sink: HL7Sink) -> None:
    ris_port = free_port()
    running = RUNNING.format(url=db_url, ris_port=ris_port, pacs_port=free_port(),
                             epic=sink.endpoint)
    (tmp_path / "channels.toml").write_text(running, encoding="utf-8")
    (tmp_path / "procedures.csv").write_text(PROCEDURES, encoding="utf-8")
    (tmp_path / "candidate.toml").write_text(candidate_of(running), encoding="utf-8")
    (tmp_path / "orders.hl7").write_bytes(b"\n\n".join(batch("C1", "X1", "T1")))
    analyst = Analyst(tmp_path)
    out = await analyst.run("lint", "channels.toml", "candidate.toml")
    assert out.splitlines() == ["channels.toml: ok", "candidate.toml: ok"]

    engine = await analyst.start_engine()
    ris = MLLPClient("127.0.0.1", ris_port)
    try:
        await journey(analyst, engine, ris, sink, tmp_path)
    finally:
        await ris.close()
        if engine.returncode is None:
            engine.kill()
            await engine.wait()


async def journey(analyst: Analyst, engine: asyncio.subprocess.Process, ris: MLLPClient,
                  epic: HL7Sink, home: Path) -> None:
    out = home / "out"
    # Before: the plain channel archives every order as sent; a study comes back as an ORU.
    await send(ris, batch("C1", "X1", "T1"))
    await wait_for(lambda: len(control_ids(out / "archive")) == 3, timeout=SLOW)
    await analyst.run("demo", "channels.toml", "--timeout", str(SLOW))
    await wait_for(lambda: len(epic.received) == 1, timeout=SLOW)
    first_oru = epic.received[0]
    assert field(first_oru, "MSH", 9).startswith("ORU^R01") and field(first_oru, "MSH", 5) == ""
    (home / "oru.hl7").write_bytes(first_oru)

    await prove_with_try(analyst)
    await prove_with_replay(analyst, home)
    assert len(control_ids(out / "archive")) == 4 and len(epic.received) == 1  # none sent

    # Apply: the candidate becomes channels.toml, and the running engine is told.
    (home / "channels.toml").write_text((home / "candidate.toml").read_text())
    engine.send_signal(signal.SIGHUP)
    assert await analyst.line(engine, "reloaded:") == (
        "reloaded: changed ris, archive, ai-results, epic (steps swapped in place: ris, "
        "archive, ai-results, epic); added -; removed -")

    await send(ris, batch("C2", "X2", "T2"))  # the connection opened before the reload
    await wait_for(lambda: len(control_ids(out / "archive")) == 6, timeout=SLOW)
    await after_the_reload(analyst, home)

    await analyst.run("demo", "channels.toml", "--timeout", str(SLOW))
    await wait_for(lambda: len(epic.received) == 2, timeout=SLOW)
    shaped = epic.received[1]
    assert (field(shaped, "MSH", 5), field(shaped, "MSH", 6)) == ("EPIC", "MAIN-HOSPITAL")
    ids = [s[:3] for s in segments(shaped)]
    assert ids.index("NTE") > max(i for i, s in enumerate(ids) if s == "OBX")
    assert field(shaped, "NTE", 3).startswith("AI-generated preliminary result")
    plain = next(p.read_bytes() for p in sorted((out / "other-ehr").glob("*"))
                 if field(p.read_bytes(), "MSH", 10) == field(shaped, "MSH", 10))
    assert field(plain, "MSH", 5) == ""  # one EHR shaped, the other as built
    plain_ids = [s[:3] for s in segments(plain)]
    assert plain_ids.index("NTE") < plain_ids.index("OBX")

    engine.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(engine.wait(), SLOW) == 0


async def prove_with_try(analyst: Analyst) -> None:
    """``radbridge try`` on the candidate: each step's effect, nothing stored or sent."""
    out = await analyst.run("try", "ris", "orders.hl7", "--config", "candidate.toml")
    ct, xr, test = out.split("== orders.hl7 #")[1:]
    assert "  [ct-mr] forward_to[0].when: passed" in ct
    assert "  [others] forward_to[1].when: filtered" in ct
    assert '  [archive] radlex-id: changed\n      OBR-4.4: "" → "RPID16"\n' in ct
    assert '      OBR-4.5: "" → "CT CHEST WO IV CONTRAST"' in ct
    assert '      orders[0].accession: "ACC-C1"' in ct and '      orders[0].priority: "S"' in ct
    assert "  [others] forward_to[1].when: passed" in xr
    assert '      orders[0].priority: "R"' in xr and '      OBR-4.4: "" → "RPID1262"' in xr
    assert test.splitlines()[1:] == ["  [channel] filter no-test-traffic: filtered",
                                     "  outcome: FILTERED (filtered by no-test-traffic)",
                                     "3 message(s) tried on ris: 0 in ERROR; nothing stored or "
                                     "sent"]
    oru = await analyst.run("try", "epic", "oru.hl7", "--config", "candidate.toml")
    lines = oru.splitlines()
    assert lines[0].startswith("== oru.hl7 #1: ORU^R01 control id ")
    assert lines[1:5] == ["  [channel] epic-receiver: changed", '      MSH-5: "" → "EPIC"',
                          "  [channel] epic-facility: changed",
                          '      MSH-6: "" → "MAIN-HOSPITAL"']
    assert lines[5] == "  [channel] disclaimer-after-results: changed"
    assert re.fullmatch(r"      ~ NTE\[1\]: after OBR → after OBX\[\d+\]", lines[6])


async def prove_with_replay(analyst: Analyst, home: Path) -> None:
    """``radbridge replay --diff``: what the stored messages would become, per destination."""
    out = await analyst.run("replay", "--config", "candidate.toml", "--store-config",
                            "channels.toml", "--diff")
    counts = summary(out)
    # changed, unchanged, newly filtered, no longer filtered, newly erroring, no longer
    # erroring, skipped: the two orders and the demo's are routed now, the test order dropped
    assert counts["ris"] == ["3", "0", "1", "0", "0", "0", "0"]
    assert counts["ai-results"] == ["1", "0", "0", "0", "0", "0", "0"]
    assert '  [epic] changed:\n      MSH-5: "" → "EPIC"\n      MSH-6: "" → "MAIN-HOSPITAL"\n' \
           in out
    assert '      orders[0].accession: "RISC1" → "ACC-C1"' in out
    assert out.splitlines()[-1].endswith("replayed through candidate.toml; nothing stored or "
                                         "sent")


async def after_the_reload(analyst: Analyst, home: Path) -> None:
    """What arrived after the reload follows the candidate."""
    out = home / "out"
    assert control_ids(out / "ct-mr") == {"C2"} and control_ids(out / "others") == {"X2"}
    assert "T2" not in control_ids(out / "archive")
    archived = next(p.read_bytes() for p in (out / "archive").glob("*")
                    if field(p.read_bytes(), "MSH", 10) == "C2")
    assert field(archived, "OBR", 4) == "LCT101^LOCAL PROC^L^RPID16^CT CHEST WO IV " \
                                        "CONTRAST^RADLEX"
    sent_to_ct = next((out / "ct-mr").glob("*")).read_bytes()
    assert field(sent_to_ct, "OBR", 4) == "LCT101^LOCAL PROC^L"  # only the archive's steps

    listed = await analyst.run("messages", "list", "--channel", "ris", "--status", "FILTERED",
                               "--config", "channels.toml")
    (row,) = [ln.split() for ln in listed.splitlines()[1:] if ln.strip()]
    assert row[-1] == "T2" and row[-3] == "FILTERED"
    shown = await analyst.run("messages", "show", row[0], "--config", "channels.toml")
    assert "error: filtered by no-test-traffic" in shown.splitlines()

    orders = await analyst.run("orders", "--config", "channels.toml")
    by_accession = {row[3]: row for row in (ln.split() for ln in orders.splitlines()[1:]
                                            if ln.strip())}
    assert by_accession["ACC-C2"][5:7] == ["CT", "S"]  # OBR-20, and OBR-5 HIGH -> S
    assert by_accession["ACC-X2"][5:7] == ["CR", "R"]  # OBR-5 NORMAL -> R
    assert by_accession["RISC1"][5:7] == ["CT", "S"]  # before: OBR-18, ORC-7.6
    assert "ACC-T2" not in by_accession and "RIST2" not in by_accession
