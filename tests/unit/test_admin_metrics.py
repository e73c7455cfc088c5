"""/metrics text: the hooks, the engine collector and the sampler's rates."""

from __future__ import annotations

import sys
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import metrics
from engine.admin.stats import Sampler, Snapshot


class FakeControls:
    def __init__(self) -> None:
        self.paused = {"out"}

    def channel_state(self, name: str) -> str:
        return "running" if name == "ris" else "stopped"


class FakeEngine:
    def __init__(self) -> None:
        ingest = SimpleNamespace(stats=Counter({"received": 10, "AA": 8, "AR": 2}))
        self.config = SimpleNamespace(channel=[SimpleNamespace(name="ris"),
                                               SimpleNamespace(name="out")])
        self.ingests: dict[str, Any] = {"ris": ingest}
        self.pipelines: dict[str, Any] = {"ris": SimpleNamespace(processed=8)}
        self.workers: dict[str, Any] = {"out": SimpleNamespace(sent=7, errors=1, retries=3,
                                                               backoff=0.0,
                                                               head_age=lambda: 0.0)}
        self.controls = FakeControls()
        self.store = None

    def stalled_queues(self) -> list[str]:
        return []


def _families(text: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no {sample} {labels}")


def test_the_exposition_parses_and_carries_channel_counters_and_queue_state() -> None:
    snap = Snapshot(1.0, {("ris", "SENT"): 7, ("ris", "ERROR"): 2},
                    {("out", "QUEUED"): 4, ("out", "SENT"): 7}, {"out": 0.0},
                    {"complete": 3})
    fam = _families(metrics.render(FakeEngine(), snap))
    assert _value(fam, "radbridge_channel_received", "radbridge_channel_received_total",
                  channel="ris") == 10
    assert _value(fam, "radbridge_channel_acks", "radbridge_channel_acks_total",
                  channel="ris", code="AR") == 2
    assert _value(fam, "radbridge_channel_up", "radbridge_channel_up", channel="out") == 0
    assert _value(fam, "radbridge_queue_depth", "radbridge_queue_depth", channel="out") == 4
    assert _value(fam, "radbridge_queue_paused", "radbridge_queue_paused", channel="out") == 1
    assert _value(fam, "radbridge_messages", "radbridge_messages", channel="ris",
                  status="ERROR") == 2
    assert _value(fam, "radbridge_studies", "radbridge_studies", state="complete") == 3
    assert _value(fam, "radbridge_queue_oldest_age_seconds",
                  "radbridge_queue_oldest_age_seconds", channel="out") > 0


def test_the_hooks_record_ack_inference_and_study_lag_histograms() -> None:
    child = metrics.ack_latency("unit-ack")
    child.observe(0.003)
    metrics.observe_ack("unit-ack", 0.2)
    metrics.observe_inference("unit-model", "cuda:0", 1.5)
    metrics.observe_study_completion("unit-pacs", 31.0)
    fam = _families(metrics.render(FakeEngine()))
    assert _value(fam, "radbridge_ack_latency_seconds", "radbridge_ack_latency_seconds_count",
                  channel="unit-ack") == 2
    assert _value(fam, "radbridge_ack_latency_seconds", "radbridge_ack_latency_seconds_bucket",
                  channel="unit-ack", le="0.005") == 1
    assert _value(fam, "radbridge_inference_latency_seconds",
                  "radbridge_inference_latency_seconds_sum", model="unit-model",
                  device="cuda:0") == 1.5
    assert _value(fam, "radbridge_study_completion_lag_seconds",
                  "radbridge_study_completion_lag_seconds_count", channel="unit-pacs") == 1


def test_no_gpu_family_appears_when_cuda_is_not_in_use() -> None:
    assert "radbridge_gpu_memory_bytes" not in _families(metrics.render(FakeEngine()))


def test_rates_are_per_second_over_the_window_and_survive_a_counter_reset() -> None:
    engine = FakeEngine()
    sampler = Sampler(engine, views=None, interval_secs=5)  # type: ignore[arg-type]
    sampler._history.extend([
        (0.0, {"ris": {"received": 0, "processed": 0, "sent": 0, "errored": 0}}),
        (1.0, {"ris": {"received": 10, "processed": 8, "sent": 0, "errored": 1}}),
        (2.0, {"ris": {"received": 4, "processed": 12, "sent": 0, "errored": 1}}),  # restarted
    ])
    rates = sampler.rates()["ris"]
    assert rates == {"received": 7.0, "processed": 6.0, "sent": 0.0, "errored": 0.5}


def test_channel_stats_come_from_messages_for_sources_and_deliveries_for_destinations() -> None:
    sampler = Sampler(FakeEngine(), views=None, interval_secs=5)  # type: ignore[arg-type]
    sampler.snapshot = Snapshot(5.0, {("ris", "SENT"): 5, ("ris", "RECEIVED"): 1},
                                {("out", "QUEUED"): 2, ("out", "ERROR"): 1}, {"out": 1.0}, {})
    ris = sampler.channel_stats("ris", {})
    assert ris["totals"] == {"received": 6, "filtered": 0, "queued": 1, "sent": 5, "errored": 0}
    out = sampler.channel_stats("out", {})
    assert out["totals"] == {"received": 3, "filtered": 0, "queued": 2, "sent": 0, "errored": 1}
    assert out["queue"]["depth"] == 2 and out["queue"]["oldest_age_secs"] > 0


def test_gpu_memory_is_reported_per_device_when_cuda_is_in_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = SimpleNamespace(is_initialized=lambda: True, device_count=lambda: 2,
                           memory_allocated=lambda i: 1000 * (i + 1),
                           memory_reserved=lambda i: 4000 * (i + 1))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    fam = _families(metrics.render(FakeEngine()))
    assert _value(fam, "radbridge_gpu_memory_bytes", "radbridge_gpu_memory_bytes",
                  device="cuda:1", kind="reserved") == 8000
    assert _value(fam, "radbridge_gpu_memory_bytes", "radbridge_gpu_memory_bytes",
                  device="cuda:0", kind="allocated") == 1000
