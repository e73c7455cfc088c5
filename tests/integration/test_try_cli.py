"""``radbridge try`` as an analyst runs it: a real process on message files written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.hl7gen import orm_o01
from channels.mllp.framing import frame
from tests.conftest import REPO

CONFIG = """
[store]
url = "sqlite:///{tmp}/never-made.db"
[[channel]]
name = "ris"
process = "orders"
source = {{ type = "mllp", listen = "127.0.0.1:2575" }}
accept = ["ORM^O01", "ADT^A01"]
filter = {{ name = "no-test-traffic", not = {{ field = "MSH-11", eq = "T" }} }}
forward_to = [
  {{ to = "ct-mr", when = {{ field = "OBR-24", in = ["CT", "MR"] }} }},
  {{ to = "others", when = 'msg["OBR-24"] != "CT" && msg["OBR-24"] != "MR"' }},
  {{ to = "by-class", when = 'int(msg["PV1-2"]) > 1' }},
]
[[channel]]
name = "ct-mr"
destination = {{ type = "mllp", endpoint = "127.0.0.1:9" }}
[[channel]]
name = "others"
destination = {{ type = "file", directory = "{tmp}/others" }}
[[channel]]
name = "by-class"
destination = {{ type = "file", directory = "{tmp}/by-class" }}
"""


def order(control_id: str, modality: str = "CT", mode: str = "P", pv1: str = "2") -> bytes:
    raw = orm_o01(control_id, accession=f"ACC{control_id}", patient_id=f"MRN{control_id}")
    raw = raw.replace(f"|{control_id}|P|".encode(), f"|{control_id}|{mode}|".encode())
    raw = raw.replace(b"PV1|1|E|", f"PV1|1|{pv1}|".encode())
    return raw.replace(b"||||CR|||", f"|||||{modality}||".encode())


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "channels.toml"
    path.write_text(text.format(tmp=tmp_path), encoding="utf-8")
    return path


def radbridge(*args: str, cwd: Path, stdin: bytes | None = None
              ) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], input=stdin,
                          capture_output=True, cwd=cwd, env=env, timeout=120)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())


def test_try_shows_each_rule_the_outcome_and_the_payload_and_stores_nothing(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "ct.hl7").write_bytes(order("C1").replace(b"\r", b"\n"))
    done = radbridge("try", "ris", "ct.hl7", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "== ct.hl7 #1: ORM^O01 control id C1"
    assert out[1:5] == ["  [channel] filter no-test-traffic: passed",
                        "  [ct-mr] forward_to[0].when: passed",
                        "  [others] forward_to[1].when: filtered",
                        "  [by-class] forward_to[2].when: passed"]
    assert "  outcome: TRANSFORMED, 2 destination(s)" in out
    assert "  → ct-mr (the message as received):" in out
    assert any(line.strip().startswith("PID|1||MRNC1^^^GENHOSP^MR") for line in out)
    assert "  layer mapped:" in out and '      orders[0].accession: "ACCC1"' in out
    assert out[-1] == "1 message(s) tried on ris: 0 in ERROR; nothing stored or sent"
    assert not (tmp_path / "never-made.db").exists()
    assert not (tmp_path / "others").exists() and not (tmp_path / "by-class").exists()


def test_try_reads_several_messages_per_file_framed_or_blank_line_separated_and_stdin(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "two.txt").write_bytes(order("P1", "US") + b"\n\n" + order("T1", mode="T"))
    (tmp_path / "framed.mllp").write_bytes(frame(order("F1")) + frame(order("F2", "MR")))
    done = radbridge("try", "ris", "two.txt", "framed.mllp", "-", "--config", str(config),
                     "--json", cwd=tmp_path, stdin=order("S1", "CR"))
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    seen = [(m["file"], m["number"], m["control_id"], m["status"]) for m in body["messages"]]
    assert seen == [("two.txt", 1, "P1", "TRANSFORMED"), ("two.txt", 2, "T1", "FILTERED"),
                    ("framed.mllp", 1, "F1", "TRANSFORMED"),
                    ("framed.mllp", 2, "F2", "TRANSFORMED"), ("-", 1, "S1", "TRANSFORMED")]
    test_msg = body["messages"][1]
    assert test_msg["error"] == "filtered by no-test-traffic" and test_msg["deliveries"] == []
    assert [d["destination"] for d in body["messages"][0]["deliveries"]] == ["others",
                                                                             "by-class"]
    step = body["messages"][0]["steps"][0]
    assert step == {"scope": "channel", "name": "filter no-test-traffic", "result": "passed",
                    "reason": None, "changes": []}


def test_a_message_in_error_names_the_step_and_the_reason_and_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "bad.hl7").write_bytes(order("E1", pv1="E") + b"\r\r" + order("OK1"))
    done = radbridge("try", "ris", "bad.hl7", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("  [by-class] forward_to[2].when: error: the expression failed (RuntimeError)"
            in done.stdout.splitlines())
    assert ("  outcome: ERROR at by-class forward_to[2].when: rule forward_to[2].when failed: "
            "the expression failed (RuntimeError)") in done.stdout
    assert "2 message(s) tried on ris: 1 in ERROR" in done.stdout


def test_a_message_intake_would_refuse_is_shown_refused_and_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "adt.hl7").write_bytes(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|X1|P|2.5\rPID|1||M")
    done = radbridge("try", "ris", "adt.hl7", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 1
    assert ("outcome: REFUSED at intake (the sender gets AR): message type ADT^A08 is not "
            "accepted on channel ris") in done.stdout


def test_usage_and_config_problems_exit_2_with_file_line_key_message(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "ok.hl7").write_bytes(order("U1"))
    (tmp_path / "empty.hl7").write_bytes(b"\n\n")
    unknown = radbridge("try", "nope", "ok.hl7", "--config", str(config), cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr == (f"{config}:0: channel: no channel named 'nope' (known: ris, "
                              "ct-mr, others, by-class)\n")
    missing = radbridge("try", "ris", "gone.hl7", "empty.hl7", "--config", str(config),
                        cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == ["gone.hl7:0: (file): No such file or directory",
                                           "empty.hl7:0: (file): holds no message"]
    broken = write_config(tmp_path, CONFIG.replace('eq = "T"', 'eq = 7'))
    bad = radbridge("try", "ris", "ok.hl7", "--config", str(broken), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr == f"{broken}:9: channel[0].filter.not.eq: must be a string\n"
