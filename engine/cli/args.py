"""Argument types and the parser every ``radbridge`` command line is built with.

A value that does not parse (a time, a count, an id) is refused by argparse before the
command runs: one line on stderr naming the option and what it needs, exit code 2,
never a traceback::

    radbridge messages list: error: argument --since: 'bad' is not an ISO date/datetime
    or epoch seconds (see radbridge messages list --help)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

MAX_ID = 2**63 - 1  # the stores' integer ids are 64-bit


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {message} (see {self.prog} --help)"
        sys.stderr.write(" ".join(line.split()) + "\n")
        sys.exit(2)


def iso_time(value: str) -> float:
    """An ISO date or datetime (UTC when it has no offset) or epoch seconds -> epoch seconds."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number of seconds")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not an ISO date/datetime (2026-11-30, 2026-11-30T08:00) "
            "or epoch seconds"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def integer(lo: int = 1, hi: int = MAX_ID) -> Callable[[str], int]:
    """A type for an integer between *lo* and *hi*."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value[:40]!r} is not an integer") from None
        if not lo <= n <= hi:
            bound = f"at least {lo}" if hi == MAX_ID else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"{n} must be {bound}")
        return n

    parse.__name__ = "integer"
    return parse


def number(lo: float = 0.0, hi: float = 1e12, above: bool = False) -> Callable[[str], float]:
    """A type for a finite number from *lo* (excluded when *above*) to *hi*."""

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a number") from None
        low_ok = x > lo if above else x >= lo
        if not (math.isfinite(x) and low_ok and x <= hi):
            bound = f"greater than {lo:g}" if above else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(
                f"{value[:40]!r} must be a finite number {bound} and at most {hi:g}"
            )
        return x

    parse.__name__ = "number"
    return parse


def config_after_action(group: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Let every action of a command group also take ``--config`` after its name
    (``radbridge messages list --config c.toml``, as ``radbridge orders --config`` does), not
    only before it; given there, it wins."""
    for action in group.choices.values():
        action.add_argument("--config", default=argparse.SUPPRESS,
                            help="channels.toml (default: ./channels.toml)")
