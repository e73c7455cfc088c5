"""Benchmark: what analyst steps cost per message, on the shipped ``ris-orders`` channel.

    .venv/bin/python -m bench.steps [--seconds 1] [--rounds 3]

Each row runs the channel's processor as the pipeline does (``processor_for``: filter,
transform, the orders mapping, routes, each destination's filter and transform) over the
1.3 KB ORM^O01 of ``bench.hl7gen.orm_o01``, on one core; rows are interleaved per round so
each meets the same machine load, and the best round is kept. Rows:

* ``no steps``: the shipped channel with its destination's steps taken out (the filter and
  the orders mapping only);
* ``shipped``: ``channels.toml`` as shipped (``order-archive`` maps OBR-4 through
  ``lookups/procedures.csv``: three destination steps);
* ``shipped + 2 channel steps``: and ``set MSH-5``, ``upper PID-5`` on the channel (the
  orders mapping then reads the transformed message).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from bench.hl7gen import orm_o01
from engine.config.schema import lint_text
from engine.flow.processors import processor_for
from engine.model import Message, Status

ROOT = Path(__file__).resolve().parents[1]
CHANNEL_STEPS = 'transform = [ { set = "MSH-5", value = "EHR" }, { upper = "PID-5" } ]'


def _configs() -> dict[str, str]:
    text = (ROOT / "channels.toml").read_text()
    bare = re.sub(r"transform = \[\n(  \{.*\},\n)+\]\n", "", text)
    if bare == text:
        raise RuntimeError("channels.toml has changed: no destination transform to take out")
    chan = text.replace('forward_to = ["order-archive"]',
                        f'forward_to = ["order-archive"]\n{CHANNEL_STEPS}', 1)
    return {"no steps": bare, "shipped": text, "shipped + 2 channel steps": chan}


def _processor(text: str) -> Any:
    config, problems = lint_text(text, str(ROOT / "channels.toml"))
    if config is None:
        raise RuntimeError("\n".join(map(str, problems)))
    return processor_for(config.channel_named("ris-orders"), config)


def _rate(processor: Any, msgs: list[Message], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for msg in msgs:
            processor.process(msg)
        done += len(msgs)
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    processors = {label: _processor(text) for label, text in _configs().items()}
    msgs = [Message(i, "ris-orders", 0.0, Status.RECEIVED, orm_o01(f"C{i}", seed=i))
            for i in range(200)]
    best = dict.fromkeys(processors, 0.0)
    for _ in range(args.rounds):
        for label, processor in processors.items():
            best[label] = max(best[label], _rate(processor, msgs, args.seconds))
    print(f"{'ris-orders processor (one core)':32s} {'msg/s':>8s} {'us/msg':>8s}")
    for label, rate in best.items():
        print(f"{label:32s} {rate:8.0f} {1e6 / rate:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
