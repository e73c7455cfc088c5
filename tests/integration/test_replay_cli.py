"""``radbridge replay --diff`` beside a running engine, on SQLite and PostgreSQL.

The engine runs in-process and stores what it receives over MLLP; ``radbridge replay`` runs
as a real process (through ``asyncio.to_thread``, so the engine's loop keeps serving) against
the same store, with a candidate configuration that changes the filter and the routes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from engine.errors import StoreError
from engine.flow.runtime import Engine
from engine.store.base import open_store
from mappings.hl7v2.ack import read_ack
from tests.conftest import REPO, wait_for

RUNNING = """
[store]
url = "{url}"
[[channel]]
name = "ris"
process = "orders"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
filter = {{ name = "no-test-traffic", not = {{ field = "MSH-11", eq = "T" }} }}
forward_to = [
  {{ to = "ct-mr", when = {{ field = "OBR-24", in = ["CT", "MR"] }} }},
  {{ to = "others", when = 'int(msg["PV1-2"]) >= 0' }},
]
{map}
[[channel]]
name = "ct-mr"
destination = {{ type = "file", directory = "{tmp}/ct-mr" }}
[[channel]]
name = "others"
destination = {{ type = "file", directory = "{tmp}/others" }}
"""
# test traffic let through, US orders dropped, MR no longer to ct-mr, a route that fails
# on a non-numeric OBR-1 instead of one that failed on a non-numeric PV1-2
CANDIDATE = RUNNING.replace(
    'filter = {{ name = "no-test-traffic", not = {{ field = "MSH-11", eq = "T" }} }}',
    'filter = {{ name = "no-us", not = {{ field = "OBR-24", eq = "US" }} }}',
).replace('in = ["CT", "MR"]', 'eq = "CT"').replace('int(msg["PV1-2"]) >= 0',
                                                      'int(msg["OBR-1"]) > 0')


def order(control_id: str, modality: str, mode: str = "P", pv1: str = "1",
          obr1: str = "1") -> bytes:
    raw = orm_o01(control_id, accession=f"ACC{control_id}", patient_id=f"MRN{control_id}")
    raw = raw.replace(f"|{control_id}|P|".encode(), f"|{control_id}|{mode}|".encode())
    raw = raw.replace(b"PV1|1|E|", f"PV1|1|{pv1}|".encode())
    raw = raw.replace(b"\rOBR|1|", f"\rOBR|{obr1}|".encode())
    return raw.replace(b"||||CR|||", f"|||||{modality}||".encode())


MESSAGES = {  # control id: (message, what the candidate makes of it)
    "C1": (order("C1", "CT"), "unchanged"),
    "M1": (order("M1", "MR"), "changed"),
    "T1": (order("T1", "CT", mode="T"), "no longer filtered"),
    "X1": (order("X1", "CT", pv1="X"), "no longer erroring"),
    "U1": (order("U1", "US"), "newly filtered"),
    "N1": (order("N1", "CT", obr1="A"), "newly erroring"),
}


def write(tmp: Path, name: str, template: str, url: str, map_line: str = "") -> Path:
    path = tmp / name
    path.write_text(template.format(url=url, tmp=tmp, map=map_line), encoding="utf-8")
    return path


async def send(engine: Engine, *messages: bytes) -> None:
    client = MLLPClient(*engine.address("ris"))
    try:
        for raw in messages:
            assert read_ack(await client.send(raw))[0] in ("AA", "CA")
    finally:
        await client.close()


async def settled(engine: Engine, n: int) -> dict[str, Any]:
    """Every message's status once all *n* are final, by control id."""
    by_id: dict[str, Any] = {}

    async def done() -> bool:
        for i in range(1, n + 1):
            found = await engine.store.get_message(i)
            if found is None or not found[0].status.final:
                return False
            by_id[found[0].control_id or ""] = found[0]
        return True

    await wait_for(done, timeout=60)
    return by_id


async def replay(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "engine.cli", "replay", *args],
        capture_output=True, text=True, cwd=tmp, env=env, timeout=300)


async def counts(url: str) -> dict[tuple[str, str], int]:
    store = open_store(url)
    await store.open_reads()
    try:
        return dict(await store.counts())
    finally:
        await store.close()


async def test_replay_classifies_each_stored_message_and_diffs_each_destination(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    running = write(tmp_path, "channels.toml", RUNNING, db_url)
    engine = await engine_factory(running.read_text(encoding="utf-8"))
    await send(engine, *(raw for raw, _ in MESSAGES.values()))
    stored = await settled(engine, len(MESSAGES))
    assert stored["T1"].status == "FILTERED" and stored["X1"].status == "ERROR"
    before = await counts(db_url)
    candidate = write(tmp_path, "candidate.toml", CANDIDATE, db_url)

    done = await replay(tmp_path, "--config", str(candidate), "--store-config", str(running),
                        "--diff", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    total = body["summary"]["total"]
    assert body["summary"]["ris"] == total
    assert total == {"changed": 1, "unchanged": 1, "newly filtered": 1,
                     "no longer filtered": 1, "newly erroring": 1, "no longer erroring": 1,
                     "skipped": 0}
    by_id = {m["message_id"]: m for m in body["messages"]}
    classes = {cid: by_id[msg.id]["class"] for cid, msg in stored.items() if msg.id in by_id}
    assert classes == {cid: want for cid, (_, want) in MESSAGES.items() if want != "unchanged"}
    mr = by_id[stored["M1"].id]
    assert mr["destinations"] == [{"name": "ct-mr", "state": "gone", "changes": []}]
    assert by_id[stored["U1"].id]["after"] == {"status": "FILTERED",
                                               "error": "filtered by no-us"}
    assert by_id[stored["N1"].id]["after"]["error"].startswith("rule forward_to[1].when failed")
    assert await counts(db_url) == before  # nothing stored
    await send(engine, order("AFTER", "CT"))  # the engine went on untouched
    await settled(engine, len(MESSAGES) + 1)


async def test_replay_shows_a_mapping_change_field_by_field_and_a_summary_table(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    running = write(tmp_path, "channels.toml", RUNNING, db_url)
    engine = await engine_factory(running.read_text(encoding="utf-8"))
    await send(engine, MESSAGES["C1"][0], MESSAGES["T1"][0])
    stored = await settled(engine, 2)
    candidate = write(tmp_path, "candidate.toml", RUNNING, db_url,
                      map_line='map = { accession = ["OBR-19"] }')
    done = await replay(tmp_path, "--config", str(candidate), "--channel", "ris", "--since",
                        "2000-01-01", "--diff")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    # stored SENT (or still QUEUED), would now be QUEUED again: the status as it would be stored
    assert out[0] in (f"== message {stored['C1'].id} (ris): changed: {was} → QUEUED"
                      for was in ("SENT", "QUEUED"))
    assert out[1] == "  [layer mapped] changed:"
    assert out[2] == '      orders[0].accession: "ACCC1" → "RPACCC1"'  # only what changed
    assert out[-4].split() == ["channel", "changed", "unchanged", "newly", "filtered", "no",
                               "longer", "filtered", "newly", "erroring", "no", "longer",
                               "erroring", "skipped"]
    assert out[-3].split() == ["ris", "1", "1", "0", "0", "0", "0", "0"]
    assert out[-2].split() == ["total", "1", "1", "0", "0", "0", "0", "0"]
    assert out[-1] == f"2 stored message(s) replayed through {candidate}; nothing stored or sent"
    window = await replay(tmp_path, "--config", str(candidate), "--until", "2000-01-01")
    assert window.stdout.splitlines()[-2].split() == ["total", *"0000000"]


async def test_a_store_opened_for_replay_refuses_writes(db_url: str) -> None:
    owner = open_store(db_url)
    await owner.open()  # the running engine's store: schema made
    await owner.close()
    reader = open_store(db_url)
    await reader.open_reads()
    try:
        assert await reader.counts() == {}
        with pytest.raises(StoreError):
            await reader._rows("DELETE FROM messages")  # what every read goes through
    finally:
        await reader.close()


async def test_replay_refuses_an_unknown_channel_and_a_missing_store(tmp_path: Path) -> None:
    candidate = write(tmp_path, "candidate.toml", CANDIDATE, f"sqlite:///{tmp_path}/none.db")
    unknown = await replay(tmp_path, "--config", str(candidate), "--channel", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith(f"{candidate}:0: channel: no channel named 'nope'")
    missing = await replay(tmp_path, "--config", str(candidate))
    assert missing.returncode == 1
    assert "cannot read the store: no SQLite database at" in missing.stderr
    assert not (tmp_path / "none.db").exists()
