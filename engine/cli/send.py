"""``radbridge send``: replay message logs to an MLLP endpoint and summarise the ACKs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from channels.mllp.client import MLLPClient
from channels.mllp.logfile import split_messages
from engine.cli.args import number
from engine.errors import TransientDeliveryError
from mappings.hl7v2.ack import read_ack

POSITIVE = {"AA", "CA"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("send", help="replay message logs to an MLLP endpoint")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--to", required=True, help="mllp://host:port (mllps:// for TLS)")
    p.add_argument("--rate", type=number(), default=0, help="messages per second (0: unlimited)")
    p.add_argument("--timeout", type=number(above=True), default=30,
                   help="seconds to wait for each ACK")
    p.add_argument("--ca", help="CA bundle for mllps://")
    p.add_argument("--cert", help="client certificate for mutual TLS")
    p.add_argument("--key", help="client key for mutual TLS")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_send)


def _client(args: argparse.Namespace) -> MLLPClient:
    url = urlparse(args.to)
    if url.scheme not in ("mllp", "mllps") or not url.hostname or not url.port:
        raise SystemExit(f"radbridge send: --to must be mllp://host:port, got {args.to!r}")
    ctx = None
    if url.scheme == "mllps":
        import ssl

        ctx = ssl.create_default_context(cafile=args.ca)
        if args.cert:
            ctx.load_cert_chain(args.cert, args.key)
    return MLLPClient(url.hostname, url.port, ssl_context=ctx, ack_timeout=args.timeout)


async def _send_all(args: argparse.Namespace, messages: list[bytes]) -> Counter[str]:
    client = _client(args)
    codes: Counter[str] = Counter()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    started = time.monotonic()
    bar = tqdm(total=len(messages), unit="msg", disable=args.quiet, file=sys.stderr)
    try:
        for i, msg in enumerate(messages):
            if interval:
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            codes[await _send_one(client, msg)] += 1
            bar.update(1)
    finally:
        bar.close()
        await client.close()
    return codes


async def _send_one(client: MLLPClient, msg: bytes) -> str:
    try:
        code, _, reason = read_ack(await client.send(msg))
    except TransientDeliveryError as exc:
        print(f"radbridge send: {exc}", file=sys.stderr)
        return "NO-ACK"
    except ValueError:
        return "UNREADABLE"
    if code not in POSITIVE:
        print(f"radbridge send: {code}: {reason}", file=sys.stderr)
    return code


def cmd_send(args: argparse.Namespace) -> int:
    messages: list[bytes] = []
    for path in args.files:
        try:
            messages.extend(split_messages(path.read_bytes()))
        except OSError as exc:
            print(f"radbridge send: {path}: {exc.strerror}", file=sys.stderr)
            return 2
    codes = asyncio.run(_send_all(args, messages))
    summary = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
    print(f"sent {sum(codes.values())} messages: {summary or 'none'}")
    return 0 if set(codes) <= POSITIVE else 1
