"""Changes made by the CLI reach the running engine, with no restart, on SQLite and PostgreSQL.

A real ``radbridge run`` process (or, where a timer must be ruled out, an engine in this
process) and the ``radbridge`` CLI as a second process on the same store: what the CLI
changes is announced through the store (``engine.store.signals``) and the engine acts on it
as it does on its own changes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from engine.flow import pipeline
from engine.model import Status
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import read_ack
from tests.conftest import REPO, wait_for
from tests.fixtures.dicom import require, write_study

# Long enough that no study completes, and no case is routed, by any timer during a test.
NEVER_SECS = 3600


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def engine_config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path / "data"}"
[[channel]]
name = "orders"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
[[channel]]
name = "pacs"
source = {{ type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0" }}
study_quiet_secs = {NEVER_SECS}
[[route]]
name = "every-study"
models = ["dicom-qa"]
[[model]]
name = "dicom-qa"
version = "1.0.0"
format = "builtin"
""")
    return cfg


def send_order(
    address: tuple[str, int], accession: str, patient: str, tmp_path: Path, env: dict[str, str]
) -> None:
    log = tmp_path / f"{accession}.hl7"
    log.write_bytes(orm_o01(f"ORD-{accession}", patient_id=patient, accession=accession))
    out = cli("send", str(log), "--to", f"mllp://{address[0]}:{address[1]}", "--quiet", env=env)
    assert out.returncode == 0, out.stdout + out.stderr


def store_study(address: tuple[str, int], directory: Path, accession: str, patient: str) -> str:
    study = write_study(directory, [("CR", 1)], patient_id=patient, accession=accession)
    out = subprocess.run(
        [
            require("storescu"),
            "-aet",
            "MODALITY",
            "-aec",
            "RADBRIDGE",
            address[0],
            str(address[1]),
            *map(str, study.paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return study.uid


def wait_for_cli(args: list[str], want: str, env: dict[str, str], secs: float = 90) -> str:
    """Run the CLI until its output holds *want* (a generous bound: the machine is shared)."""
    deadline = time.monotonic() + secs
    while True:
        out = cli(*args, env=env)
        assert out.returncode == 0, out.stderr
        if want in out.stdout:
            return out.stdout
        assert time.monotonic() < deadline, f"{want!r} never appeared in:\n{out.stdout}"
        time.sleep(0.5)


def audit_rows(cfg: Path, study_uid: str, env: dict[str, str]) -> list[str]:
    out = cli("audit", "--config", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.endswith(study_uid)]


def test_studies_completed_and_proceeded_by_the_cli_are_routed_by_the_running_engine(
    db_url: str, tmp_path: Path, engine_process: Any, cli_env: dict[str, str]
) -> None:
    cfg = engine_config(tmp_path, db_url)
    proc = engine_process(cfg)
    proc.start()
    send_order(proc.addresses["orders"], "ACC-CLI1", "PAT-CLI1", tmp_path, cli_env)
    ordered = store_study(proc.addresses["pacs"], tmp_path / "ordered", "ACC-CLI1", "PAT-CLI1")
    orphan = store_study(proc.addresses["pacs"], tmp_path / "orphan", "ACC-NONE", "PAT-NONE")
    studies = ["studies", "--config", str(cfg)]
    listed = wait_for_cli(studies, ordered, cli_env)
    assert orphan in listed and "complete" not in listed  # nothing completes by itself

    done = cli(*studies, "complete", ordered, env=cli_env)
    assert done.returncode == 0 and "1 new case(s)" in done.stdout, done.stdout + done.stderr
    # The engine runs the case's inference without a restart: an audit row per model.
    wait_for_cli(["audit", "--config", str(cfg)], ordered, cli_env)
    assert "dicom-qa" in audit_rows(cfg, ordered, cli_env)[0]

    assert "0 new case(s)" in cli(*studies, "complete", orphan, env=cli_env).stdout
    going = cli(*studies, "proceed", orphan, env=cli_env)
    assert going.returncode == 0 and "study_only" in going.stdout, going.stdout + going.stderr
    wait_for_cli(["audit", "--config", str(cfg)], orphan, cli_env)
    assert "dicom-qa" in audit_rows(cfg, orphan, cli_env)[0]
    assert proc.terminate() == 0


async def send(engine: Any, payload: bytes) -> str:
    client = MLLPClient(*engine.address("ris"), ack_timeout=30)
    try:
        return read_ack(await client.send(payload))[0]
    finally:
        await client.close()


async def test_messages_reprocessed_by_the_cli_are_processed_by_the_running_engine_at_once(
    db_url: str,
    tmp_path: Path,
    engine_factory: Any,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pipeline's own rescan would find the messages eventually: rule it out, so that
    # only the CLI's signal can bring them to the engine's notice.
    monkeypatch.setattr(pipeline, "RESCAN_SECS", NEVER_SECS)
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path / "data"}"
signal_poll_secs = 0.2
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
forward_to = ["archive"]
[[channel]]
name = "archive"
destination = {{ type = "file", directory = "{tmp_path / "archive"}" }}
""")
    engine = await engine_factory(cfg.read_text())
    assert await send(engine, orm_o01("REPRO1")) in ("AA", "CA")
    await wait_for(lambda: engine.pipelines["ris"].processed == 1, timeout=60)
    (msg,) = await engine.store.query_messages(MessageQuery(channel="ris"))
    out = await asyncio.to_thread(
        cli, "messages", "--config", str(cfg), "reprocess", str(msg.id), env=cli_env
    )
    assert out.returncode == 0 and "reprocessing 1 message(s)" in out.stdout, out.stderr

    await wait_for(lambda: engine.pipelines["ris"].processed == 2, timeout=60)
    found = await engine.store.get_message(msg.id)
    assert found is not None and found[0].status != Status.RECEIVED
    assert engine.signals.handled == 1


async def test_on_postgresql_a_notify_brings_the_change_without_waiting_for_a_poll(
    pg_url: str,
    tmp_path: Path,
    engine_factory: Any,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "RESCAN_SECS", NEVER_SECS)
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f"""
[store]
url = "{pg_url}"
[engine]
data_dir = "{tmp_path / "data"}"
signal_poll_secs = {NEVER_SECS}
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
""")
    engine = await engine_factory(cfg.read_text())
    assert await send(engine, orm_o01("NOTIFY1")) in ("AA", "CA")
    await wait_for(lambda: engine.pipelines["ris"].processed == 1, timeout=60)
    out = await asyncio.to_thread(
        cli, "messages", "--config", str(cfg), "reprocess", "--channel", "ris", env=cli_env
    )
    assert out.returncode == 0 and "reprocessing 1 message(s)" in out.stdout, out.stderr
    await wait_for(lambda: engine.pipelines["ris"].processed == 2, timeout=60)


async def test_a_signal_whose_handler_fails_is_handled_again_and_old_ones_are_not_replayed(
    db_url: str, tmp_path: Path
) -> None:
    from engine.flow.signals import SignalWatcher
    from engine.store.base import NewMessage, open_store

    writer, reader = open_store(db_url), open_store(db_url)  # the CLI's and the engine's
    await writer.open()
    await reader.open()
    watcher = SignalWatcher(reader, {})
    try:
        mid = await writer.insert_message(NewMessage("ris", time.time(), b"MSH|^~\\&|"))
        assert await writer.reprocess([mid], announce=True) == 1  # before the engine started
        seen: list[list[str]] = []
        failing = [True]

        async def handler(signals: list[Any]) -> None:
            if failing[0]:
                raise ConnectionError("store trouble")
            seen.extend(s.subjects for s in signals)

        watcher.handlers["messages"] = handler
        await watcher.open()
        assert await watcher.poll() == 0  # start-up recovery's business, not a signal's
        assert await writer.reprocess([mid], announce=True) == 1
        assert await writer.reprocess([], announce=True) == 0  # no change: no signal
        with pytest.raises(ConnectionError):
            await watcher.poll()
        failing[0] = False
        assert await watcher.poll() == 1 and seen == [[str(mid)]]
        assert await watcher.poll() == 0
    finally:
        await watcher.close()
        await writer.close()
        await reader.close()


async def test_old_signals_are_forgotten_and_a_new_one_never_reuses_an_id(db_url: str) -> None:
    from engine.store.base import NewMessage, open_store
    from engine.store.signals import KEEP_SECS

    store = open_store(db_url)
    await store.open()
    try:
        mid = await store.insert_message(NewMessage("ris", time.time(), b"MSH|^~\\&|"))
        assert await store.reprocess([mid], announce=True) == 1
        (old,) = await store.signals_after(0)
        await _age_signals(store, KEEP_SECS + 60)
        assert await store.reprocess([mid], announce=True) == 1
        (new,) = await store.signals_after(0)  # the old one went with this write
        assert new.id > old.id and new.topic == "messages" and new.subjects == [str(mid)]
    finally:
        await store.close()


async def _age_signals(store: Any, secs: float) -> None:
    """Move every signal *secs* into the past (as if the engine had been down that long)."""

    def sqlite_op(conn: Any) -> None:
        conn.execute("UPDATE signals SET created_at = created_at - ?", (secs,))

    async def pg_op(conn: Any) -> None:
        await conn.execute("UPDATE signals SET created_at = created_at - $1", secs)

    from engine.store.sqlite import SQLiteStore

    await store._write(sqlite_op if isinstance(store, SQLiteStore) else pg_op)
