"""Dynamic batching and the device threads. The event loop never runs a forward pass.

``Batcher`` (one per model, on the event loop) collects prepared studies in
two lanes, STAT first, and hands a batch to its device when it holds
``batch_max`` items or its oldest item has waited ``max_wait_ms``.
While the device is busy a partial batch keeps filling instead of queueing behind
the others. ``DeviceWorker`` (one thread per device) runs batches in lane order, then
arrival order, and resolves each item's future on the loop with its output
and timings. torch releases the GIL inside its kernels, so preprocessing
threads and the loop keep running beside a forward pass.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.errors import ForwardError, InferenceError
from inference.models import InferenceModel, ModelOutput, Prepared


@dataclass(slots=True)
class ItemResult:
    output: ModelOutput
    batch_size: int
    queue_ms: float  # ready (prepared) -> its batch started on the device
    forward_ms: float  # the batch's forward pass


@dataclass(slots=True)
class WorkItem:
    prepared: Prepared
    lane: int
    future: asyncio.Future[ItemResult]
    ready_at: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class Batch:
    model: InferenceModel
    items: list[WorkItem]
    lane: int


class DeviceWorker(threading.Thread):
    """Runs the batches of every model on one device, one at a time, STAT lane first."""

    def __init__(self, device: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name=f"radbridge-infer-{device}", daemon=True)
        self.device = device
        self._loop = loop
        self._q: queue.PriorityQueue[tuple[int, int, Batch | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.in_flight = 0  # batches submitted and not finished (read by the batchers)
        self.idle_callbacks: list[Callable[[], None]] = []  # run on the loop when it drains
        self.batches = 0

    def submit(self, batch: Batch) -> None:
        with self._lock:
            self.in_flight += 1
        self._q.put((batch.lane, next(self._seq), batch))

    def stop(self) -> None:
        self._q.put((-1, -1, None))  # before anything queued

    def run(self) -> None:
        while True:
            _, _, batch = self._q.get()
            if batch is None:
                return
            started = time.perf_counter()
            outputs: list[ModelOutput] | None = None
            error: BaseException | None = None
            try:
                outputs = batch.model.run_batch([i.prepared for i in batch.items])
                if len(outputs) != len(batch.items):
                    raise ForwardError("model returned a different number of outputs")
            except Exception as exc:  # a model failure fails its batch, never the thread
                error = exc
            ended = time.perf_counter()
            self.batches += 1
            with self._lock:
                self.in_flight -= 1
            try:
                self._loop.call_soon_threadsafe(self._resolve, batch, outputs, error, started,
                                                ended)
            except RuntimeError:  # loop closed while stopping: nobody waits any more
                return

    def _resolve(self, batch: Batch, outputs: list[ModelOutput] | None,
                 error: BaseException | None, started: float, ended: float) -> None:
        _resolve(batch, outputs, error, started, ended)
        if self.in_flight == 0:
            for callback in self.idle_callbacks:
                callback()


def _resolve(batch: Batch, outputs: list[ModelOutput] | None, error: BaseException | None,
             started: float, ended: float) -> None:
    forward_ms = (ended - started) * 1000
    for i, item in enumerate(batch.items):
        if item.future.done():  # timed out meanwhile
            continue
        if error is not None or outputs is None:
            if isinstance(error, InferenceError):  # keeps its type: retry-or-fail needs it
                item.future.set_exception(error)
                continue
            reason = f"{type(error).__name__}: {str(error)[:200]}" if error else "no output"
            item.future.set_exception(ForwardError(reason))
            continue
        item.future.set_result(ItemResult(outputs[i], len(batch.items),
                                          (started - item.ready_at) * 1000, forward_ms))


class Batcher:
    """Per-model dynamic batching on the event loop.

    A batch goes to the device when it is full, or when its oldest item has waited
    ``max_wait_ms`` and the device is idle; while the device is busy a partial batch keeps
    filling (as dynamic batchers do) and goes when the device drains. STAT items never
    wait for the device: the device queue puts their batch first.
    """

    def __init__(self, model: InferenceModel, worker: DeviceWorker) -> None:
        self.model = model
        self.worker = worker
        self.batch_max = model.config.batch_max
        self.max_wait = model.config.max_wait_ms / 1000.0
        self.lanes: tuple[deque[WorkItem], deque[WorkItem]] = (deque(), deque())
        # While the device is busy a partial batch waits at most this long.
        self.hold_max = max(5 * self.max_wait, 0.25)
        self._timer: asyncio.TimerHandle | None = None
        worker.idle_callbacks.append(self._on_device_idle)
        self.sizes: list[int] = []  # batch sizes handed to the device (for tests and benches)

    def __len__(self) -> int:
        return len(self.lanes[0]) + len(self.lanes[1])

    def submit(self, prepared: Prepared, lane: int) -> asyncio.Future[ItemResult]:
        item = WorkItem(prepared, min(max(lane, 0), 1),
                        asyncio.get_running_loop().create_future())
        self.lanes[item.lane].append(item)
        self._check()
        return item.future

    def _waited(self) -> float:
        return time.perf_counter() - min(q[0].ready_at for q in self.lanes if q)

    def _check(self) -> None:
        """Send what is due; otherwise make sure a timer looks again when it will be."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while len(self) >= self.batch_max:
            self._send()
        if not len(self):
            return
        waited = self._waited()
        busy = self.worker.in_flight > 0 and not self.lanes[0]
        due = self.hold_max if busy else self.max_wait
        if waited >= due:
            self._send()
            return
        # Look again at max_wait; busy past it, the idle callback sends, hold_max at worst.
        delay = (self.max_wait if waited < self.max_wait else due) - waited
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def _on_device_idle(self) -> None:
        if len(self) and self._waited() >= self.max_wait:
            self._check()

    def _send(self) -> None:
        items: list[WorkItem] = []
        for lane in self.lanes:
            while lane and len(items) < self.batch_max:
                item = lane.popleft()
                if not item.future.done():  # timed out while waiting: nobody wants it
                    items.append(item)
        if items:
            self.sizes.append(len(items))
            self.worker.submit(Batch(self.model, items, min(i.lane for i in items)))

    def drain(self) -> None:
        """Stopping: fail whatever is still waiting (its jobs are re-driven at the next start)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for lane in self.lanes:
            while lane:
                item = lane.popleft()
                if not item.future.done():
                    item.future.cancel()
