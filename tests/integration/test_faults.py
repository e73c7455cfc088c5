"""Faults under the store: a full disk is a clean refusal, never corruption or loss."""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path
from typing import Any

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from mappings.hl7v2.ack import read_ack

FILE_LIMIT = 3 * 1024 * 1024


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG like a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


async def test_a_full_disk_is_refused_with_ar_and_nothing_acked_is_lost(
        tmp_path: Path, engine_process: Any) -> None:
    db = tmp_path / "rb.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{db}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
""")
    proc = engine_process(cfg, preexec=_limit_file_size)
    proc.start()
    client = MLLPClient(*proc.addresses["ris"], ack_timeout=20)
    acked, refusal = [], None
    for i in range(20_000):
        code, cid, reason = read_ack(await client.send(orm_o01(f"F{i}", pad_to=4000)))
        if code == "CA":
            acked.append(cid)
            continue
        refusal = (code, reason)
        break
    assert refusal is not None, "the file size limit was never reached"
    assert refusal[0] == "CR" and "not stored" in refusal[1] and "resend later" in refusal[1]
    # The connection and the engine survive the refusal.
    again = read_ack(await client.send(orm_o01("AFTER", pad_to=4000)))
    assert again[0] == "CR"
    await client.close()
    proc.kill()

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in conn.execute("SELECT control_id FROM messages")}
    finally:
        conn.close()
    assert len(acked) > 100 and set(acked) <= stored
