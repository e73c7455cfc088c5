"""Prometheus metrics: hooks called where things happen, and state read at scrape time.

Two sources make up ``/metrics``:

* **Hooks** (process-wide, in ``HOOKS``): observations made on the hot paths.
  Call them from the code that times the event; each call is a dict lookup and
  an increment, nothing awaits::

      ack = metrics.ack_latency(channel)        # once, e.g. in Ingest.__init__
      ack.observe(time.perf_counter() - t0)      # when the ACK is written

      metrics.observe_inference(model, device, seconds)
      metrics.observe_study_completion(channel, seconds)

* **State** (per engine, ``EngineCollector``): counters and gauges read from the
  running engine and from the admin sampler's last look at the store (message
  counts, queue depths), so a scrape never scans the store itself.

Metric names are stable; labels carry channel, destination, model and device
names only, never message content.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HOOKS = CollectorRegistry(auto_describe=True)

ACK_LATENCY = Histogram(
    "radbridge_ack_latency_seconds",
    "From a frame read to its ACK written (the store commit included), per channel.",
    ["channel"], registry=HOOKS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
INFERENCE_LATENCY = Histogram(
    "radbridge_inference_latency_seconds",
    "Model inference time per batch, per model and device.",
    ["model", "device"], registry=HOOKS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
STUDY_COMPLETION_LAG = Histogram(
    "radbridge_study_completion_lag_seconds",
    "From a study's last instance to the study being declared complete, per channel.",
    ["channel"], registry=HOOKS,
    buckets=(1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0))


def ack_latency(channel: str) -> Any:
    """The ACK latency histogram of *channel* (bind it once, then ``.observe(seconds)``)."""
    return ACK_LATENCY.labels(channel=channel)


def observe_ack(channel: str, seconds: float) -> None:
    """Record one ACK latency."""
    ACK_LATENCY.labels(channel=channel).observe(seconds)


def observe_inference(model: str, device: str, seconds: float) -> None:
    """Record one inference (batch) latency for *model* on *device* (``cpu``, ``cuda:0``)."""
    INFERENCE_LATENCY.labels(model=model, device=device).observe(seconds)


def observe_study_completion(channel: str, seconds: float) -> None:
    """Record how long after its last instance a study was declared complete."""
    STUDY_COMPLETION_LAG.labels(channel=channel).observe(seconds)


class Snapshot(Protocol):
    """What the admin sampler last read from the store (see ``engine.admin.stats``)."""

    counts: dict[tuple[str, str], int]
    deliveries: dict[tuple[str, str], int]
    oldest_queued: dict[str, float]
    studies: dict[str, int]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


class EngineCollector(Collector):
    """Reads one engine's state at scrape time."""

    def __init__(self, engine: Any, snapshot: Snapshot | None = None) -> None:
        self.engine = engine
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._channels()
        yield from self._deliveries()
        if self.snapshot is not None:
            yield from self._stored(self.snapshot)
        yield from gpu_memory()

    def _channels(self) -> Iterator[Metric]:
        up = _gauge("radbridge_channel_up", "1 when the channel runs, 0 when stopped.",
                    ["channel"])
        received = _counter("radbridge_channel_received",
                            "Frames or instances received since the channel started.",
                            ["channel"])
        acks = _counter("radbridge_channel_acks", "ACKs sent, by code.", ["channel", "code"])
        processed = _counter("radbridge_pipeline_processed",
                             "Messages processed from the durable queue.", ["channel"])
        for ch in self.engine.config.channel:
            up.add_metric([ch.name], 1.0 if self.engine.controls.channel_state(ch.name) == "running"
                          else 0.0)
        for name, sink in self.engine.ingests.items():
            stats = getattr(sink, "stats", None)
            if stats is not None:
                received.add_metric([name], float(stats.get("received", 0)))
                for code in ("AA", "AE", "AR"):
                    acks.add_metric([name, code], float(stats.get(code, 0)))
            else:
                received.add_metric([name], float(getattr(sink, "stored", 0)))
        for name, pipeline in self.engine.pipelines.items():
            processed.add_metric([name], float(pipeline.processed))
        yield from (up, received, acks, processed)

    def _deliveries(self) -> Iterator[Metric]:
        sent = _counter("radbridge_delivery_sent", "Deliveries sent.", ["channel"])
        errors = _counter("radbridge_delivery_errors", "Deliveries that failed for good.",
                          ["channel"])
        retries = _counter("radbridge_delivery_retries", "Transient failures retried.",
                           ["channel"])
        backoff = _gauge("radbridge_delivery_backoff_seconds",
                         "Current retry delay of the queue head (0: healthy).", ["channel"])
        paused = _gauge("radbridge_queue_paused", "1 when an operator paused the queue.",
                        ["channel"])
        head_age = _gauge("radbridge_queue_head_age_seconds",
                          "How long the queue head has been the head (0: nothing to send).",
                          ["channel"])
        stalled = _gauge("radbridge_queue_stalled", "1 when the queue head has not moved for "
                         "[engine] stalled_queue_secs.", ["channel"])
        stuck = set(self.engine.stalled_queues())
        for name, worker in self.engine.workers.items():
            sent.add_metric([name], float(worker.sent))
            errors.add_metric([name], float(worker.errors))
            retries.add_metric([name], float(worker.retries))
            backoff.add_metric([name], float(worker.backoff))
            paused.add_metric([name], 1.0 if name in self.engine.controls.paused else 0.0)
            head_age.add_metric([name], worker.head_age())
            stalled.add_metric([name], 1.0 if name in stuck else 0.0)
        yield from (sent, errors, retries, backoff, paused, head_age, stalled)

    def _stored(self, snap: Snapshot) -> Iterator[Metric]:
        messages = _gauge("radbridge_messages", "Stored messages by channel and status.",
                          ["channel", "status"])
        for (channel, status), n in sorted(snap.counts.items()):
            messages.add_metric([channel, status], float(n))
        depth = _gauge("radbridge_queue_depth", "Deliveries waiting (QUEUED) per destination.",
                       ["channel"])
        oldest = _gauge("radbridge_queue_oldest_age_seconds",
                        "Age of the oldest waiting delivery's message.", ["channel"])
        now = time.time()
        for (dest, status), n in sorted(snap.deliveries.items()):
            if status == "QUEUED":
                depth.add_metric([dest], float(n))
        for dest, ts in sorted(snap.oldest_queued.items()):
            oldest.add_metric([dest], max(0.0, now - ts))
        studies = _gauge("radbridge_studies", "Studies by state.", ["state"])
        for state, n in sorted(snap.studies.items()):
            studies.add_metric([state], float(n))
        yield from (messages, depth, oldest, studies)


def gpu_memory() -> Iterator[Metric]:
    """GPU memory per device, only when this process already uses CUDA through torch."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized():
            return
        gauge = _gauge("radbridge_gpu_memory_bytes", "GPU memory held by this process.",
                       ["device", "kind"])
        for i in range(torch.cuda.device_count()):
            device = f"cuda:{i}"
            gauge.add_metric([device, "allocated"], float(torch.cuda.memory_allocated(i)))
            gauge.add_metric([device, "reserved"], float(torch.cuda.memory_reserved(i)))
    except Exception:  # a metrics scrape must never fail on a driver hiccup
        return
    yield gauge


def render(engine: Any, snapshot: Snapshot | None = None) -> bytes:
    """The Prometheus text exposition of the hooks plus *engine*'s state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, snapshot))
    return generate_latest(HOOKS) + generate_latest(registry)
