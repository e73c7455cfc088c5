"""Structured, PHI-free logging with stable event codes.

Log ids, counts and hashes, never message bodies or names. Each line is
``CODE text key=value ...``; codes are stable per subsystem (MLLP-1xx,
STORE-2xx, PIPE-3xx, DLV-4xx, ENG-5xx, CFG-6xx).
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def event(logger: logging.Logger, code: str, text: str, /, *, level: int = logging.INFO,
          **fields: Any) -> None:
    """Log one event line; *fields* may use any name (``code`` included)."""
    if not logger.isEnabledFor(level):
        return
    kv = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    logger.log(level, "%s %s%s", code, text, f" {kv}" if kv else "")


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("radbridge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
