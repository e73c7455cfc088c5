"""Benchmark: remote inference (``format = "kserve"``) beside NVIDIA's own client.

    .venv/bin/python -m bench.remote [--seconds 3] [--image 224] [--batches 1,8]

Starts the test Triton server (``tests/fixtures/triton_server.py``, PyTriton on
CPU, from ``scripts/peers.sh``), then for each batch size sends the same
prepared FP32 batches ``[N, 1, image, image]`` to the model ``cxr-remote`` for
``--seconds`` each:

* radbridge, binary tensors: ``RemoteModel.run_batch`` (what the engine's
  device thread calls: request, response, activation and findings);
* radbridge, JSON tensors (``binary = false``);
* baseline: ``tritonclient.http`` (NVIDIA's client, binary tensors), run in the
  PyTriton environment where it is installed.

Prints items/s and ms per batch. The server's model is a few numpy reductions,
so the figures are the protocol's and the client's cost, not a model's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.config.inference import ModelConfig
from inference.models import Prepared
from inference.remote import RemoteModel
from tests.fixtures.triton import REPO, running_triton, triton_python

BASELINE = """
import json, sys, time
import numpy as np
import tritonclient.http as httpclient
url, batch, image, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
client = httpclient.InferenceServerClient(url.split("//", 1)[1])
x = np.random.default_rng(0).random((batch, 1, image, image), dtype=np.float32)
inp = httpclient.InferInput("image", list(x.shape), "FP32")
inp.set_data_from_numpy(x, binary_data=True)
out = [httpclient.InferRequestedOutput("scores", binary_data=True)]
client.infer("cxr-remote", [inp], outputs=out)  # warm
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    client.infer("cxr-remote", [inp], outputs=out).as_numpy("scores")
    n += 1
print(json.dumps({"batches": n, "secs": time.perf_counter() - start}))
"""

LABELS = [{"code": f"R{i}", "display": f"remote output {i}", "system": "99RADBRIDGE"}
          for i in range(4)]


def ours(url: str, batch: int, image: int, seconds: float, binary: bool) -> tuple[int, float]:
    config = ModelConfig.model_validate({
        "name": "bench-remote", "version": "1", "format": "kserve",
        "remote": {"url": url, "model": "cxr-remote", "binary": binary},
        "input": {"size": [image, image]}, "output": {"labels": LABELS}})
    model = RemoteModel(config, list(config.output.labels))
    model.verify()
    x = np.random.default_rng(0).random((batch, 1, image, image), dtype=np.float32)
    items = [Prepared(f"study-{i}", x[i]) for i in range(batch)]
    model.run_batch(items)  # warm
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run_batch(items)
        n += 1
    model.close()
    return n, time.perf_counter() - start


def baseline(url: str, batch: int, image: int, seconds: float) -> tuple[int, float]:
    out = subprocess.run([str(triton_python()), "-c", BASELINE, url, str(batch), str(image),
                          str(seconds)], capture_output=True, text=True, check=True, cwd=REPO)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return int(doc["batches"]), float(doc["secs"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    sizes = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as d, running_triton(Path(d)) as server:
        print(f"Triton (PyTriton, CPU) at {server.url}; input [N, 1, {args.image}, "
              f"{args.image}] FP32 ({args.image * args.image * 4 / 1024:.0f} KiB per item); "
              f"{args.seconds:g} s per row")
        print(f"{'client':34} {'batch':>5} {'items/s':>9} {'ms/batch':>9}")
        for batch in sizes:
            rows = [("radbridge, binary tensors", *ours(server.url, batch, args.image,
                                                         args.seconds, True)),
                    ("radbridge, JSON tensors", *ours(server.url, batch, args.image,
                                                       args.seconds, False)),
                    ("baseline: tritonclient.http binary", *baseline(server.url, batch,
                                                                    args.image, args.seconds))]
            for name, n, secs in rows:
                print(f"{name:34} {batch:>5} {n * batch / secs:>9.1f} {secs / n * 1000:>9.2f}")


if __name__ == "__main__":
    main()
