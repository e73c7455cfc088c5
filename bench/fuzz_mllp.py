"""Coverage-guided fuzzing (atheris) of the MLLP framer and the HL7 readers.

    .venv/bin/python -m bench.fuzz_mllp -runs=200000
    .venv/bin/python -m bench.fuzz_mllp -runs=10000000 -seed=1   # bench.prove's long run

The input is cut into reads of fuzzer-chosen sizes and fed to the framer, which the fuzzer
may also tell to shed its unfinished frame (the listener's buffer budget); each frame goes
through the ACK path's header reader, the ACK builder (and its fallback), the batch/log
splitter and the full ADT/ORM mapping. Only the documented errors may come out; anything
else is a crash (libFuzzer exits non-zero and writes the input as crash-<sha1> in the working
directory). Prints the number of executions every 1,000. libFuzzer's own flags apply
(``-runs``, ``-seed``, ``-max_total_time``, ``-rss_limit_mb``); about 1,000 executions a
second on one loaded core, a few thousand on an idle one, at about 70 MB.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from channels.mllp.framing import HEAD_KEEP, Frame, MLLPFramer
    from channels.mllp.logfile import split_messages
    from mappings.hl7v2.ack import AckSpec, build_ack, fallback_ack, read_ack
    from mappings.hl7v2.header import HeaderError, parse_header
    from mappings.hl7v2.orders import MappingError, map_message

EXECUTIONS = 0


def one_input(data: bytes) -> None:
    global EXECUTIONS
    EXECUTIONS += 1
    if EXECUTIONS % 1000 == 0:  # libFuzzer exits with os._exit: report as we go
        print(f"executions: {EXECUTIONS} crashes: 0", flush=True)
    fdp = atheris.FuzzedDataProvider(data)
    framer = MLLPFramer(max_size=fdp.ConsumeIntInRange(1024, 65536))
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 512))
        for ev in framer.feed(chunk):
            if isinstance(ev, Frame):
                _check_frame(ev.payload)
            else:
                assert len(ev.head) <= HEAD_KEEP and ev.size >= len(ev.head)
        assert framer.buffered <= framer.max_size + 512
        if fdp.ConsumeIntInRange(0, 7) == 0 and framer.shed():  # the listener's budget
            assert framer.held <= HEAD_KEEP + 1


def _check_frame(payload: bytes) -> None:
    list(split_messages(payload))
    try:
        header = parse_header(payload)
    except HeaderError as exc:  # as engine.flow.ingest answers: AE once MSH was readable
        code = "AE" if exc.header is not None else "AR"
        ack = build_ack(exc.header, AckSpec(code, exc.reason, exc.code, exc.location))
        assert read_ack(fallback_ack(exc.header, code))[0] == code
    else:
        ack = build_ack(header, AckSpec("AA"))
        assert read_ack(fallback_ack(header, "AA"))[:2] == ("AA", header.control_id)
        with contextlib.suppress(MappingError):  # the one error mapping may raise
            map_message(payload)
    if ack is not None:
        read_ack(ack)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
