"""Benchmark: inference through the engine beside the bare batched forward loop.

    .venv/bin/python -m bench.inference [--studies 256] [--batch 16] [--image 512]

Synthetic single-image CR chest studies (``--image`` pixels square, 12 bit) are
indexed into a fresh store as cases (not timed). Then, in one run, on the same
device with the same demo-cxr model:

* engine, batching on / off: ``InferenceService`` routes every case, persists
  its job, preprocesses (decode, window, resize) in its thread pool, batches
  (``batch_max`` = ``--batch`` or 1), runs the forward pass on the device
  thread, records findings and audit rows, and tells the result listener;
* bare, batching on / off: a loop of ``model(x)`` over pre-made tensors in
  batches of the same size, under ``torch.inference_mode`` (the forward work
  alone), and the same loop with the engine's preprocessing done serially in
  front of each batch (the same work as the engine, without the engine).

Prints studies/s, per-stage latency from the audit rows (p50 / p95), and the
overhead ratio engine : bare (target <= 1.15x). Each figure is the best of
``--repeat`` interleaved runs, so that a busy machine skews them less.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CONFIG = """
[store]
url = "sqlite:///{db}"
[[route]]
when = {{ modality = "CR", body_part = "CHEST" }}
models = ["demo-cxr"]
[[model]]
name = "demo-cxr"
version = "0.1.0"
format = "builtin"
batch_max = {batch}
max_wait_ms = {wait}
device = "{device}"
"""


def write_study(root: Path, image: int, seed: int) -> tuple[str, Path]:
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid, generate_uid()
    ds.PatientID, ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "BENCH", "CR", "CHEST", "PA"
    ds.Rows = ds.Columns = image
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, (image, image), dtype=np.uint16).tobytes()
    path = root / f"{uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return uid, path


async def make_cases(store: Any, root: Path, n: int, image: int) -> list[Any]:
    from engine.store.clinical import InstanceMeta

    cases = []
    for i in range(n):
        uid, path = write_study(root, image, i)
        meta = InstanceMeta(uid, uid + ".1", uid + ".1.1", "1.2.840.10008.5.1.4.1.1.1",
                            ExplicitVRLittleEndian, modality="CR", body_part="CHEST")
        await store.add_instance("bench", meta, str(path), path.stat().st_size, 1.0)
        await store.complete_study(uid)
        cases.append(await store.proceed_study_only(uid))
    return cases


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def engine_run(tmp: Path, n: int, image: int, batch: int, wait: float, device: str
                     ) -> dict[str, Any]:
    from engine.config.schema import lint_text
    from engine.store.sqlite import SQLiteStore
    from inference.service import InferenceService

    store = SQLiteStore(tmp / "engine.db")
    await store.open()
    cases = await make_cases(store, tmp, n, image)
    config, problems = lint_text(CONFIG.format(db=tmp / "engine.db", batch=batch, wait=wait,
                                               device=device))
    assert config is not None, problems
    done: list[Any] = []
    finished = asyncio.Event()

    def listener(result: Any) -> None:
        done.append(result)
        if len(done) == n:
            finished.set()

    svc = InferenceService(config, store, [listener], preprocess_threads=2,
                           max_inflight=max(4 * batch, 16))
    await svc.start()
    await svc.ready.wait()
    t0 = time.perf_counter()
    svc.on_cases(cases)
    await finished.wait()
    elapsed = time.perf_counter() - t0
    audit = await store.list_audit(limit=n * 2)
    await svc.stop()
    await store.close()
    ok = [a for a in audit if a.status == "ok"]
    stage = {k: [getattr(a, k) for a in ok] for k in ("queue_ms", "preprocess_ms",
                                                       "forward_ms", "total_ms")}
    return {"rate": n / elapsed, "stages": stage, "failed": n - len(ok),
            "mean_batch": statistics.mean(a.batch_size for a in ok) if ok else 0}


def bare_run(root: Path, n: int, image: int, batch: int, device: str) -> dict[str, float]:
    import torch

    from engine.config.inference import ModelConfig
    from engine.store.inference import CaseContext
    from inference.models import StudyInput
    from inference.registry import load_model

    model = load_model(ModelConfig.model_validate({"name": "demo-cxr", "version": "0.1.0",
                                                   "format": "builtin", "device": device}))
    paths = [write_study(root, image, i)[1] for i in range(n)]
    case = CaseContext(0, "", 0, "ready")
    studies = [StudyInput(case, [str(p)]) for p in paths]
    dev = torch.device(model.device)

    def forward(arrays: list[np.ndarray]) -> None:
        x = torch.from_numpy(np.stack(arrays))
        if dev.type == "cuda":
            x = x.pin_memory().to(dev, non_blocking=True)
        with torch.inference_mode():
            model.module(x).sigmoid().cpu()

    tensors = [model.prepare(s).array for s in studies]
    forward(tensors[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        forward(tensors[i:i + batch])  # type: ignore[arg-type]
    fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        forward([model.prepare(s).array for s in studies[i:i + batch]])  # type: ignore[misc]
    full = time.perf_counter() - t0
    return {"forward_rate": n / fwd, "serial_rate": n / full, "device": model.device}  # type: ignore[dict-item]


def report(engine: dict[int, dict[str, Any]], bare: dict[int, dict[str, float]],
           batch: int) -> None:
    print(f"{'path':34} {'batch':>5} {'studies/s':>10} {'ratio':>7}")
    for b in (batch, 1):
        e, r = engine[b], bare[b]
        print(f"{'engine (route..audit)':34} {b:>5} {e['rate']:>10.1f}")
        print(f"{'bare forward loop':34} {b:>5} {r['forward_rate']:>10.1f}"
              f" {r['forward_rate'] / e['rate']:>6.2f}x")
        print(f"{'bare preprocess + forward, serial':34} {b:>5} {r['serial_rate']:>10.1f}"
              f" {r['serial_rate'] / e['rate']:>6.2f}x")
    print("\nper-stage latency through the engine, ms (p50 / p95):")
    for b in (batch, 1):
        st = engine[b]["stages"]
        cells = "  ".join(f"{k.removesuffix('_ms')} {pct(v, 50):.1f}/{pct(v, 95):.1f}"
                          for k, v in st.items())
        print(f"  batch_max {b:>3} (mean batch {engine[b]['mean_batch']:.1f}): {cells}")
    on, off = engine[batch]["rate"], engine[1]["rate"]
    print(f"\nbatching on vs off through the engine: {on:.1f} vs {off:.1f} studies/s"
          f" ({on / off:.2f}x)")
    print(f"overhead ratio engine : bare forward loop at batch {batch}: "
          f"{bare[batch]['forward_rate'] / on:.2f}x (target <= 1.15x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--image", type=int, default=512, help="pixels per side of each study")
    ap.add_argument("--max-wait-ms", type=float, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    args = ap.parse_args()
    engine: dict[int, dict[str, Any]] = {}
    bare: dict[int, dict[str, float]] = {}
    for _ in range(args.repeat):  # interleaved; the best of each is kept (shared machines)
        for b in (args.batch, 1):
            with tempfile.TemporaryDirectory(prefix="radbridge-bench-") as d:
                e = asyncio.run(engine_run(Path(d), args.studies, args.image, b,
                                           args.max_wait_ms, args.device))
            with tempfile.TemporaryDirectory(prefix="radbridge-bench-") as d:
                r = bare_run(Path(d), args.studies, args.image, b, args.device)
            if b not in engine or e["rate"] > engine[b]["rate"]:
                engine[b] = e
            if b not in bare:
                bare[b] = r
            bare[b] = {k: max(v, r[k]) if k != "device" else v for k, v in bare[b].items()}
    print(f"{args.studies} studies of {args.image}x{args.image}, demo-cxr on "
          f"{bare[args.batch]['device']}, preprocessing threads 2, best of {args.repeat}\n")
    report(engine, bare, args.batch)
    return 1 if any(e["failed"] for e in engine.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
