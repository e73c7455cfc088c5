"""bench.e2e's end check: every ACKed message stored, final, at the sink, in order per patient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.e2e import Run, check, shipped_config
from bench.loadgen import patient_of

IDS = [f"A{c:03d}{n:015d}" for c in range(2) for n in range(1, 5)]
GOOD = [(cid, "SENT", i) for i, cid in enumerate(IDS)]


class _Probe:
    label = "fake"

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def rows(self) -> list[tuple[Any, ...]]:
        return self._rows


def _check(tmp_path: Path, rows: list[tuple[Any, ...]], sunk: list[str]) -> list[str]:
    sink = tmp_path / "sink.txt"
    sink.write_text("".join(f"{c}\n" for c in sunk))
    run = Run("sqlite", "radbridge", "A", {"acked": [4, 4], "patients": 2, "connections": 2})
    return check(_Probe(rows), [run], sink)  # type: ignore[arg-type]


def test_a_clean_run_passes_the_check(tmp_path: Path) -> None:
    assert _check(tmp_path, GOOD, IDS) == []


def test_a_patients_messages_stored_out_of_order_are_reported(tmp_path: Path) -> None:
    swapped = [(c, s, {0: 1, 1: 0}.get(i, i)) for c, s, i in GOOD]
    assert "out of order 1" in _check(tmp_path, swapped, IDS)[0]


def test_a_patients_messages_reaching_the_sink_out_of_order_are_reported(tmp_path: Path) -> None:
    assert "out of order 1" in _check(tmp_path, GOOD, [IDS[1], IDS[0], *IDS[2:]])[0]


def test_a_missing_an_unfinished_and_an_unsent_message_are_reported(tmp_path: Path) -> None:
    assert "missing 1" in _check(tmp_path, GOOD[:-1], IDS)[0]
    assert "not final 8" in _check(tmp_path, [(c, "QUEUED", i) for c, _, i in GOOD], IDS)[0]
    assert "not at sink 1" in _check(tmp_path, GOOD, IDS[:-1])[0]


def test_each_patient_gets_a_whole_cycle_on_one_connection() -> None:
    assert {patient_of(0, n, 2, 8) for n in range(1, 5)} == {"P00000000"}
    assert patient_of(0, 5, 2, 8) == "P00000002"
    assert patient_of(1, 1, 2, 8) == "P00000001"


def test_the_shipped_config_is_rewritten_only_in_ports_data_dir_store_and_forward_to(
    tmp_path: Path,
) -> None:
    text = shipped_config(tmp_path, "sqlite:////x/y.db", 7777).read_text()
    assert 'url = "sqlite:////x/y.db"' in text
    assert 'forward_to = ["order-archive", "ehr-results"]' in text
    assert 'endpoint = "127.0.0.1:7777"' in text
    assert ":2575" not in text and ":11112" not in text and ":8080" not in text
    assert 'process = "orders"' in text and 'name = "demo-cxr"' in text
