"""bench.study_latency's configuration: the shipped channels.toml with every result fed."""

from __future__ import annotations

from pathlib import Path

from bench.study_latency import DESTINATIONS, Sample, columns, latency_config, pct
from engine.config.schema import lint_text


def test_the_latency_configuration_lints_clean_and_feeds_every_result_destination(
        tmp_path: Path) -> None:
    path = latency_config(tmp_path, 6661, "http://127.0.0.1:8080/fhir", 11113, 2.0)
    config, problems = lint_text(path.read_text(), str(path), check_files=False)
    assert problems == [] and config is not None
    channels = {c.name: c for c in config.channel}
    assert list(channels["ai-results"].forward_to) == list(DESTINATIONS)
    assert channels["pacs-in"].study_quiet_secs == 2.0


def test_results_are_measured_from_complete_with_the_model_time_taken_out() -> None:
    sent = {dest: 10.5 for dest in DESTINATIONS} | {"sr-out": 10.8}
    s = Sample("idle quiet", due=10.0, completed_at=10.1, model_ms=50.0, preprocess_ms=5.0,
               batch_ms=20.0, jobs_queued=10.1, inference_final=10.3, report_stored=10.35,
               worklist=10.4, sent=sent)
    cols = columns(s)
    assert round(cols["ORU file"]) == 450  # 500 ms after the quiet period ended, less 50
    assert round(cols["all results"]) == 750
    assert round(cols["(-> assembler completes)"]) == 100
    assert pct([float(v) for v in range(100, 0, -1)], 0.95) == 95.0
    assert pct([5.0], 0.95) == 5.0
