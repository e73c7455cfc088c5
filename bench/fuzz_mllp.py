"""Coverage-guided fuzzing (atheris) of the MLLP framer and the HL7 readers.

    .venv/bin/python -m bench.fuzz_mllp -runs=200000

The input is cut into reads of fuzzer-chosen sizes and fed to the framer;
each frame goes through the ACK path's header reader, the ACK builder, the
batch/log splitter and the full ADT/ORM mapping. Only the documented errors
may come out; anything else is a crash. Prints the number of executions.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from channels.mllp.framing import Frame, MLLPFramer
    from mappings.hl7v2.ack import AckSpec, build_ack, read_ack
    from mappings.hl7v2.header import HeaderError, parse_header
    from mappings.hl7v2.logfile import split_messages
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
        assert framer.buffered <= framer.max_size + 512


def _check_frame(payload: bytes) -> None:
    list(split_messages(payload))
    try:
        header = parse_header(payload)
    except HeaderError as exc:
        ack = build_ack(exc.header, AckSpec("AR", exc.reason, exc.code, exc.location))
    else:
        ack = build_ack(header, AckSpec("AA"))
        with contextlib.suppress(MappingError):  # the one error mapping may raise
            map_message(payload)
    if ack is not None:
        read_ack(ack)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
