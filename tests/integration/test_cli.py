"""The radbridge command line against a real `radbridge run` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.hl7gen import adt_a01, orm_o01
from channels.mllp.framing import frame
from tests.conftest import REPO


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "channels.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / 'rb.db'}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
accept = ["ADT^A01", "ORM^O01"]
forward_to = ["archive"]
[[channel]]
name = "archive"
destination = {{ type = "file", directory = "{tmp_path / 'archive'}" }}
""")
    return cfg


def message_logs(tmp_path: Path) -> list[Path]:
    framed = tmp_path / "framed.mllp"
    framed.write_bytes(b"".join(frame(adt_a01(f"M{i}")) for i in range(5)))
    crlf = tmp_path / "log.hl7"
    crlf.write_bytes(b"\r\n\r\n".join(orm_o01(f"O{i}").replace(b"\r", b"\r\n")
                                      for i in range(5)))
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(b"FHS|^~\\&\rBHS|^~\\&\r" + b"\r".join(adt_a01(f"B{i}") for i in range(5))
                      + b"\rBTS|5\rFTS|1\r")
    return [framed, crlf, batch]


def test_send_replays_every_log_format_and_all_get_aa(tmp_path: Path, engine_process: Any,
                                                      cli_env: dict[str, str]) -> None:
    cfg = write_config(tmp_path)
    proc = engine_process(cfg)
    proc.start()
    host, port = proc.addresses["ris"]
    out = run_cli("send", *map(str, message_logs(tmp_path)), "--to", f"mllp://{host}:{port}",
                  "--rate", "200", env=cli_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sent 15 messages: AA 10, CA 5"

    listed = run_cli("messages", "--config", str(cfg), "list", "--channel", "ris",
                     "--type", "ADT^A01", env=cli_env)
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 11

    shown = run_cli("messages", "--config", str(cfg), "show", "1", env=cli_env)
    assert "--- raw ---" in shown.stdout and "control id M0" in shown.stdout
    assert proc.terminate() == 0


def test_send_exits_nonzero_when_a_message_is_nakd(tmp_path: Path, engine_process: Any,
                                                   cli_env: dict[str, str]) -> None:
    proc = engine_process(write_config(tmp_path))
    proc.start()
    host, port = proc.addresses["ris"]
    log = tmp_path / "mixed.hl7"
    log.write_bytes(adt_a01("OK1") + b"\r" + adt_a01("NO1").replace(b"ADT^A01", b"ADT^A08"))
    out = run_cli("send", str(log), "--to", f"mllp://{host}:{port}", "--quiet", env=cli_env)
    assert out.returncode == 1
    assert out.stdout.strip() == "sent 2 messages: AA 1, AR 1"
    assert "ADT^A08 is not accepted" in out.stderr


def test_messages_reprocess_redrives_through_a_running_engine(tmp_path: Path,
                                                               engine_process: Any,
                                                               cli_env: dict[str, str]) -> None:
    cfg = write_config(tmp_path)
    proc = engine_process(cfg)
    proc.start()
    host, port = proc.addresses["ris"]
    log = tmp_path / "one.hl7"
    log.write_bytes(adt_a01("RE1"))
    assert run_cli("send", str(log), "--to", f"mllp://{host}:{port}", env=cli_env).returncode == 0
    out = run_cli("messages", "--config", str(cfg), "reprocess", "--control-id", "RE1",
                  env=cli_env)
    assert out.stdout.strip() == "reprocessing 1 message(s)"
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shown = run_cli("messages", "--config", str(cfg), "show", "1", env=cli_env).stdout
        if shown.count(": SENT, 1 attempt(s)") == 2:
            break
        time.sleep(0.5)
    assert shown.count(": SENT, 1 attempt(s)") == 2, shown


def test_run_refuses_a_broken_config_with_every_problem(tmp_path: Path,
                                                        cli_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[channel]]\nname = "Bad Name"\nsource = { type = "mllp" }\n')
    out = run_cli("run", str(bad), env=cli_env)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"{bad}:2: channel[0].name: String should match pattern '^[a-z0-9][a-z0-9_-]*$'",
        f"{bad}:3: channel[0].source.listen: Field required",
    ]
