"""Benchmark: the lazy HL7 v2 reader beside python-hl7, on one core, in the same run.

    .venv/bin/python -m bench.reader [--seconds 1] [--rounds 3]

On the 1.3 KB ORM^O01 the other benchmarks send (``bench.hl7gen.orm_o01``), each row is
timed for *seconds* per round, rounds interleaved so every row meets the same machine
load, and the best round is kept. Rows:

* ``python-hl7 parse``: ``hl7.parse`` of the decoded bytes;
* ``python-hl7 parse + reads``: the same, then the values the orders mapping reads
  (``mappings.hl7v2.orders`` with the default ``FieldMap``: MSH-9, MSH-10, MSH-18, PID-3,
  PID-5, PID-7, PID-8, PV1-2, PV1-3, ORC-1/2/3/5/7.6/9, OBR-4, OBR-18, OBR-19, OBR-24, ZDS-1);
* ``reader parse``, ``reader parse + reads``: ``mappings.hl7v2.reader`` doing the same;
* ``orders mapping``: ``map_message`` itself, as the pipeline runs it.

Then, per message, the tracemalloc peak (bytes allocated at once while handling it) and
the blocks still held by the parsed message and its values (what a parsed message
costs in memory), for the reader and python-hl7 with the same reads. Target: reader parse
+ reads >= 20x python-hl7 parse + reads.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable

import hl7

from bench.hl7gen import orm_o01
from mappings.hl7v2.orders import map_message
from mappings.hl7v2.reader import compile_path, parse

# (reader path, python-hl7 key): the orders mapping's reads with the default FieldMap.
READS = [
    ("MSH-9", "MSH.F9.R1.C1"),
    ("MSH-9.2", "MSH.F9.R1.C2"),
    ("MSH-10", "MSH.F10"),
    ("MSH-18", "MSH.F18"),
    ("PID-3.1", "PID.F3.R1.C1"),
    ("PID-3.4", "PID.F3.R1.C4"),
    ("PID-3.5", "PID.F3.R1.C5"),
    ("PID-3[2].1", "PID.F3.R2.C1"),
    ("PID-5.1", "PID.F5.R1.C1"),
    ("PID-5.2", "PID.F5.R1.C2"),
    ("PID-7", "PID.F7"),
    ("PID-8", "PID.F8"),
    ("PV1-2", "PV1.F2"),
    ("PV1-3", "PV1.F3.R1.C1"),
    ("ORC-1", "ORC.F1"),
    ("ORC-2", "ORC.F2.R1.C1"),
    ("ORC-3", "ORC.F3.R1.C1"),
    ("ORC-5", "ORC.F5"),
    ("ORC-7.6", "ORC.F7.R1.C6"),
    ("ORC-9", "ORC.F9"),
    ("OBR-4.1", "OBR.F4.R1.C1"),
    ("OBR-4.2", "OBR.F4.R1.C2"),
    ("OBR-4.3", "OBR.F4.R1.C3"),
    ("OBR-18", "OBR.F18"),
    ("OBR-19", "OBR.F19"),
    ("OBR-24", "OBR.F24"),
    ("ZDS-1", "ZDS.F1.R1.C1"),
]
PATHS = [compile_path(p) for p, _ in READS]
KEYS = [k for _, k in READS]


def hl7_parse(raw: bytes) -> object:
    return hl7.parse(raw.decode("latin-1"))


def hl7_reads(raw: bytes) -> tuple[object, list[str]]:
    msg = hl7.parse(raw.decode("latin-1"))
    return msg, [msg[key] for key in KEYS]


def reader_parse(raw: bytes) -> object:
    return parse(raw)


def reader_reads(raw: bytes) -> tuple[object, list[str]]:
    msg = parse(raw)
    return msg, [path.get(msg) for path in PATHS]


ROWS: list[tuple[str, Callable[[bytes], object]]] = [
    ("python-hl7 parse", hl7_parse),
    ("python-hl7 parse + reads", hl7_reads),
    ("reader parse", reader_parse),
    ("reader parse + reads", reader_reads),
    ("orders mapping", map_message),
]


def rate(fn: Callable[[bytes], object], raw: bytes, seconds: float) -> float:
    """Messages per second for *fn* over about *seconds*."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn(raw)
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def memory(fn: Callable[[bytes], object], raw: bytes) -> tuple[int, int]:
    """(peak bytes while handling one message, blocks held by the message and its values)."""
    fn(raw)  # warm caches (compiled regexes, interned strings) outside the measurement
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        held = fn(raw)
        peak = tracemalloc.get_traced_memory()[1] - base
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    blocks = sum(d.count_diff for d in after.compare_to(before, "filename") if d.count_diff > 0)
    del held
    return peak, blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    raw = orm_o01("BENCH0001")
    assert reader_reads(raw)[1] == hl7_reads(raw)[1], "the reader and python-hl7 disagree"
    best = {label: 0.0 for label, _ in ROWS}
    for _ in range(args.rounds):
        for label, fn in ROWS:
            best[label] = max(best[label], rate(fn, raw, args.seconds))
    base = best["python-hl7 parse + reads"]
    print(f"ORM^O01, {len(raw)} bytes, {len(READS)} reads, one core, best of {args.rounds}")
    print(f"{'row':28} {'msg/s':>9} {'us/msg':>8} {'x python-hl7+reads':>19}")
    for label, _ in ROWS:
        r = best[label]
        print(f"{label:28} {r:>9.0f} {1e6 / r:>8.1f} {r / base:>19.1f}")
    print()
    print(f"{'per message':28} {'peak KiB':>9} {'blocks held':>12}")
    for label, fn in (
        ("python-hl7 parse + reads", hl7_reads),
        ("reader parse + reads", reader_reads),
    ):
        peak, blocks = memory(fn, raw)
        print(f"{label:28} {peak / 1024:>9.1f} {blocks:>12}")
    ratio = best["reader parse + reads"] / base
    print(f"\nreader parse + reads / python-hl7 parse + reads: {ratio:.1f}x (target >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
